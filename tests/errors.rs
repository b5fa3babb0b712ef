//! Portcullis' own answers to requests it cannot serve: 404 (no route), 502 (upstream down),
//! 504 (upstream too slow), 400/4xx (broken requests). Each one is a page for browsers and JSON
//! otherwise, with strict headers, and never a 5xx or a hang for bad client input.

mod support;

use support::{
    closed_port, raw, raw_get, raw_keepalive, raw_or_closed, Answer, Portcullis, RawConn,
    RawResponse, Upstream,
};

const OWN_CSP: &str = "default-src 'none'";

fn assert_own_page_headers(r: &RawResponse) {
    let csp = r.header_all("content-security-policy");
    assert_eq!(csp.len(), 1, "{:?}", r.headers);
    assert!(csp[0].starts_with(OWN_CSP), "{csp:?}");
    assert!(csp[0].contains("frame-ancestors 'none'"), "{csp:?}");
    assert_eq!(
        r.header_all("cache-control"),
        ["no-store"],
        "{:?}",
        r.headers
    );
    assert_eq!(r.header_all("x-content-type-options"), ["nosniff"]);
}

fn assert_html(r: &RawResponse, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.headers
    );
    let page = r.text();
    assert!(page.contains("<html"), "{page}");
    assert!(page.contains(&status.to_string()), "{page}");
    assert_own_page_headers(r);
}

fn assert_json_error(r: &RawResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let doc = r.json();
    assert_eq!(doc["error"], code, "{doc}");
    assert!(doc["message"].is_string(), "{doc}");
    assert_own_page_headers(r);
}

#[tokio::test]
async fn unknown_host_is_404_page_for_browsers_and_json_otherwise() {
    let pc = Portcullis::with_routes(
        "routes:\n  - { host: app.example.test, upstream: \"static://200\" }\n",
    );
    let r = raw_get(
        pc.http_port(),
        "unknown.test",
        "/",
        &[("Accept", "text/html,application/xhtml+xml")],
    )
    .await;
    assert_html(&r, 404);
    let r = raw_get(
        pc.http_port(),
        "unknown.test",
        "/",
        &[("Accept", "application/json")],
    )
    .await;
    assert_json_error(&r, 404, "not_found");
    let r = raw_get(pc.http_port(), "unknown.test", "/", &[]).await;
    assert_json_error(&r, 404, "not_found");
    // The known host still works.
    let r = raw_get(pc.http_port(), "app.example.test", "/", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn upstream_down_is_502_page_or_json() {
    let port = closed_port();
    let pc = Portcullis::with_routes(&format!(
        "routes:\n  - {{ name: gone, upstream: \"http://127.0.0.1:{port}\" }}\n"
    ));
    let r = raw_get(pc.http_port(), "app.test", "/", &[("Accept", "text/html")]).await;
    assert_html(&r, 502);
    let r = raw_get(pc.http_port(), "app.test", "/api", &[]).await;
    assert_json_error(&r, 502, "bad_gateway");
    // The page never echoes internal details such as the upstream address.
    assert!(!r.text().contains(&port.to_string()), "{}", r.text());
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = Upstream::start();
    let pc = Portcullis::start(&format!(
        r#"
server:
  listen: ["127.0.0.1:@HTTP@"]
  threads: 1
  timeouts: {{ upstream_read: 300ms }}
admin:
  listen: 127.0.0.1:@ADMIN@
routes:
  - upstream: {}
"#,
        up.url()
    ));
    let started = std::time::Instant::now();
    let r = raw_get(pc.http_port(), "app.test", "/slow?sleep_ms=3000", &[]).await;
    assert_json_error(&r, 504, "gateway_timeout");
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));
    // A fast answer on the same route is fine.
    let r = raw_get(pc.http_port(), "app.test", "/fast", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_untouched() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    for status in [404, 500, 503] {
        let r = raw_get(
            pc.http_port(),
            "app.test",
            &format!("/x?status={status}"),
            &[],
        )
        .await;
        assert_eq!(r.status, status);
        // The application's own body, not a Portcullis page.
        assert_eq!(r.json()["uri"], format!("/x?status={status}"));
    }
}

#[tokio::test]
async fn invalid_host_header_is_400() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    for host in [
        "evil.test/x",
        "a b.test",
        "a..b",
        "app.test:port",
        "user@app.test",
        "[not-v6]",
        "app.test\\x",
    ] {
        let r = raw_get(pc.http_port(), host, "/", &[]).await;
        assert_eq!(r.status, 400, "Host: {host}: {}", r.text());
        // Some are refused by Pingora's HTTP parser already (an empty 400); the rest get
        // Portcullis' own answer.
        if !r.body.is_empty() {
            assert_eq!(r.json()["error"], "bad_request", "Host: {host}");
        }
    }
    assert_eq!(up.count(), 0, "{:?}", up.received());
    // A valid one still works.
    let r = raw_get(pc.http_port(), "app.test:8080", "/", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn host_header_and_absolute_target_must_agree() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        r#"
routes:
  - {{ host: public.test, upstream: "static://204" }}
  - {{ host: internal.test, upstream: {} }}
"#,
        up.url()
    ));
    let r = raw(
        pc.http_port(),
        b"GET http://internal.test/ HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(up.count(), 0);
}

/// RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without a Host header or
/// with more than one.
#[tokio::test]
async fn missing_or_repeated_host_header_is_400() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let r = raw(
        pc.http_port(),
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 400, "no Host: {}", r.text());
    let r = raw(
        pc.http_port(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("a response");
    assert_eq!(r.status, 400, "two Hosts: {}", r.text());
    assert_eq!(up.count(), 0, "{:?}", up.received());
}

#[tokio::test]
async fn oversized_request_headers_get_a_4xx_never_a_5xx_or_a_hang() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let one_huge = format!(
        "GET /big HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let mut many = String::from("GET /many HTTP/1.1\r\nHost: app.test\r\n");
    for i in 0..400 {
        many.push_str(&format!("X-Filler-{i}: {}\r\n", "b".repeat(1000)));
    }
    many.push_str("Connection: close\r\n\r\n");
    let huge_cookie = format!(
        "GET /cookie HTTP/1.1\r\nHost: app.test\r\nCookie: c={}\r\nConnection: close\r\n\r\n",
        "c".repeat(1024 * 1024)
    );
    for (what, req) in [
        ("one 256 KiB header", one_huge),
        ("400 headers of 1 KiB", many),
        ("a 1 MiB cookie", huge_cookie),
    ] {
        let r = raw(pc.http_port(), req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{what}: no HTTP answer ({e})"));
        assert!(
            (400..500).contains(&r.status),
            "{what}: status {} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(up.count(), 0, "an oversized request reached the upstream");
    // Still serving.
    let r = raw_get(pc.http_port(), "app.test", "/after", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_overlong_request_target_gets_a_4xx() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let target = format!("/{}", "p".repeat(200 * 1024));
    let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    let r = raw(pc.http_port(), req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("no HTTP answer ({e})"));
    assert!((400..500).contains(&r.status), "status {}", r.status);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn garbage_requests_get_a_4xx_or_a_closed_connection_never_a_5xx() {
    let pc = Portcullis::with_routes("routes:\n  - upstream: \"static://200\"\n");
    for req in [
        &b"NOT-HTTP\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header Name: x\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        // A 4xx or a closed connection; a hang (the harness's timeout) fails.
        if let Answer::Response(r) = raw_or_closed(pc.http_port(), req).await {
            assert!(
                (400..500).contains(&r.status),
                "{:?}: status {}",
                String::from_utf8_lossy(req),
                r.status
            );
        }
    }
    let r = raw_get(pc.http_port(), "a", "/", &[]).await;
    assert_eq!(r.status, 200);
}

/// RFC 9112 §6.1: a request with both `Content-Length` and `Transfer-Encoding` is the classic
/// request-smuggling vector, and Portcullis refuses it with 400 (the server may, and must then
/// close the connection). Sent on a keep-alive connection, with a second request hidden in the
/// body where a Content-Length reader and a chunked reader disagree about where the body ends:
/// the upstream receives nothing (never `/smuggled`), and after the 400 the connection is
/// either closed or answers the client's real follow-up request, and only that one.
#[tokio::test]
async fn conflicting_body_framing_is_refused_and_smuggles_nothing() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        "routes:\n  - {{ host: app.test, upstream: {} }}\n  - {{ host: echo.test, upstream: \"echo://\" }}\n",
        up.url()
    ));
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    // CL.TE: a chunked reader ends the body at `0`, then reads `GET /smuggled`; a
    // Content-Length reader takes it all as the body.
    let cl_te = |te_first: bool| {
        let body = format!("0\r\n\r\n{smuggled}");
        let (a, b) = (
            format!("Content-Length: {}\r\n", body.len()),
            "Transfer-Encoding: chunked\r\n".to_string(),
        );
        let (a, b) = if te_first { (b, a) } else { (a, b) };
        format!("POST /submit HTTP/1.1\r\nHost: app.test\r\n{a}{b}\r\n{body}")
    };
    // TE.CL: a Content-Length reader takes the chunk-size line as the whole body, then reads
    // `GET /smuggled` (whose own 7-byte body swallows the chunk's end, `\r\n0\r\n\r\n`).
    let te_cl = {
        let inner = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\nContent-Length: 7\r\n\r\n";
        let size_line = format!("{:x}\r\n", inner.len());
        format!(
            "POST /submit HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{size_line}{inner}\r\n0\r\n\r\n",
            size_line.len()
        )
    };
    let follow_up = b"GET /follow-up HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n";
    for (what, request) in [
        ("CL.TE", cl_te(false)),
        ("CL.TE, Transfer-Encoding first", cl_te(true)),
        ("TE.CL", te_cl),
    ] {
        let mut conn = RawConn::open(pc.http_port()).await;
        conn.send(request.as_bytes()).await;
        let first = conn.next(false).await;
        conn.send(follow_up).await;
        let second = conn.next(false).await;
        let third = match &second {
            Answer::Response(_) => Some(conn.next(false).await),
            Answer::Closed(_) => None,
        };
        // Nothing reached the app, whatever the answers were.
        let brief = |a: &Answer| match a {
            Answer::Response(r) => format!("{} {}", r.status, r.text()),
            Answer::Closed(how) => how.clone(),
        };
        assert_eq!(
            up.count(),
            0,
            "{what}: the upstream received {:?}; answers: {:?}, then {:?}",
            up.received()
                .iter()
                .map(|e| format!(
                    "{} {} body {:?}",
                    e.method,
                    e.uri,
                    String::from_utf8_lossy(&e.body)
                ))
                .collect::<Vec<_>>(),
            brief(&first),
            brief(&second),
        );
        let first = first.response(what);
        assert_eq!(first.status, 400, "{what}: {}", first.text());
        match second {
            Answer::Closed(_) => {}
            Answer::Response(r) => {
                // Kept open: the next answer is the follow-up's (echo.test echoes what it got),
                // and then the connection closes as the follow-up asked.
                assert_eq!(r.status, 200, "{what}: after the 400: {}", r.text());
                let doc = r.json();
                assert_eq!(
                    (doc["method"].as_str(), doc["uri"].as_str()),
                    (Some("GET"), Some("/follow-up")),
                    "{what}: the answer after the 400 is not the follow-up's: {doc}"
                );
                match third {
                    Some(Answer::Closed(_)) => {}
                    Some(Answer::Response(r)) => panic!(
                        "{what}: a third answer on the connection: {} {}",
                        r.status,
                        r.text()
                    ),
                    None => unreachable!("read after every response"),
                }
            }
        }
    }
}

#[tokio::test]
async fn own_answers_keep_the_connection_usable() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        "routes:\n  - {{ host: app.test, upstream: {} }}\n  - {{ host: s.test, upstream: \"static://204\" }}\n  - {{ host: e.test, upstream: \"echo://\" }}\n",
        up.url()
    ));
    let rs = raw_keepalive(
        pc.http_port(),
        &[
            b"GET / HTTP/1.1\r\nHost: unknown.test\r\n\r\n",
            b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: s.test\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: e.test\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: e.test\r\n\r\n",
            b"GET /two HTTP/1.1\r\nHost: app.test\r\n\r\n",
        ],
    )
    .await
    .expect("six answers on one connection");
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [404, 200, 204, 200, 200, 200]);
    assert_eq!(rs[5].json()["uri"], "/two");
}
