//! Routing: which route serves a request (host specificity, longest path prefix on segment
//! boundaries, host normalisation), and the built-in `static://` and `echo://` upstreams.

mod support;

use support::{raw_get, raw_request, Portcullis, Upstream};

/// Routes named after what they match; every one answers with `echo://`, which reports the
/// route's name, so the test sees which route was chosen.
const TABLE: &str = r#"
routes:
  - { name: any-root, path: /, upstream: "echo://" }
  - { name: any-only, path: /only-any, upstream: "echo://" }
  - { name: wild-root, host: "*.example.test", path: /, upstream: "echo://" }
  - { name: deep-wild, host: "*.eu.example.test", path: /, upstream: "echo://" }
  - { name: app-root, host: app.example.test, path: /, upstream: "echo://" }
  - { name: app-api, host: app.example.test, path: /api, upstream: "echo://" }
  - { name: app-api-v2, host: app.example.test, path: /api/v2/, upstream: "echo://" }
  - { name: app-static, host: App.Example.Test, path: /static/, upstream: "echo://" }
"#;

async fn route_for(pc: &Portcullis, host: &str, path: &str) -> String {
    let r = raw_get(
        pc.http_port(),
        host,
        path,
        &[("Accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
    r.json()["route"]
        .as_str()
        .unwrap_or_else(|| panic!("{host}{path}: no route in {}", r.text()))
        .to_string()
}

#[tokio::test]
async fn exact_host_beats_wildcard_beats_hostless() {
    let pc = Portcullis::with_routes(TABLE);
    assert_eq!(route_for(&pc, "app.example.test", "/").await, "app-root");
    assert_eq!(route_for(&pc, "other.example.test", "/").await, "wild-root");
    assert_eq!(route_for(&pc, "unrelated.test", "/").await, "any-root");
    assert_eq!(route_for(&pc, "127.0.0.1", "/x").await, "any-root");
}

#[tokio::test]
async fn wildcard_hosts_match_any_depth_and_longest_suffix_wins() {
    let pc = Portcullis::with_routes(TABLE);
    assert_eq!(route_for(&pc, "a.example.test", "/").await, "wild-root");
    assert_eq!(route_for(&pc, "a.b.c.example.test", "/").await, "wild-root");
    assert_eq!(route_for(&pc, "x.eu.example.test", "/").await, "deep-wild");
    assert_eq!(
        route_for(&pc, "y.x.eu.example.test", "/").await,
        "deep-wild"
    );
    // `*.example.test` is for subdomains: neither the bare domain nor a look-alike match.
    assert_eq!(route_for(&pc, "example.test", "/").await, "any-root");
    assert_eq!(route_for(&pc, "evilexample.test", "/").await, "any-root");
    assert_eq!(route_for(&pc, "example.test.evil", "/").await, "any-root");
}

#[tokio::test]
async fn longest_path_prefix_wins_on_segment_boundaries() {
    let pc = Portcullis::with_routes(TABLE);
    let h = "app.example.test";
    assert_eq!(route_for(&pc, h, "/api").await, "app-api");
    assert_eq!(route_for(&pc, h, "/api/").await, "app-api");
    assert_eq!(route_for(&pc, h, "/api/x").await, "app-api");
    assert_eq!(route_for(&pc, h, "/api?x=1").await, "app-api");
    assert_eq!(route_for(&pc, h, "/apix").await, "app-root");
    assert_eq!(route_for(&pc, h, "/api-docs").await, "app-root");
    assert_eq!(route_for(&pc, h, "/api/v2/users").await, "app-api-v2");
    // A prefix written with a trailing slash also covers the bare directory.
    assert_eq!(route_for(&pc, h, "/api/v2").await, "app-api-v2");
    assert_eq!(route_for(&pc, h, "/api/v20").await, "app-api");
    assert_eq!(route_for(&pc, h, "/static/app.css").await, "app-static");
    assert_eq!(route_for(&pc, h, "/staticx").await, "app-root");
}

#[tokio::test]
async fn a_host_without_a_matching_path_falls_back_to_less_specific_routes() {
    let pc = Portcullis::with_routes(
        r#"
routes:
  - { name: any-root, path: /, upstream: "echo://" }
  - { name: app-admin, host: app.example.test, path: /admin, upstream: "echo://" }
"#,
    );
    assert_eq!(
        route_for(&pc, "app.example.test", "/admin/x").await,
        "app-admin"
    );
    assert_eq!(
        route_for(&pc, "app.example.test", "/other").await,
        "any-root"
    );
}

#[tokio::test]
async fn host_is_matched_case_insensitively_without_port_or_trailing_dot() {
    let pc = Portcullis::with_routes(TABLE);
    for host in [
        "APP.EXAMPLE.TEST",
        "App.Example.Test",
        "app.example.test:8080",
        "app.example.test.",
        "APP.example.test.:443",
    ] {
        assert_eq!(route_for(&pc, host, "/api/x").await, "app-api", "{host}");
    }
    // The route was written in mixed case; it still matches lower-case requests.
    assert_eq!(
        route_for(&pc, "app.example.test", "/static/x").await,
        "app-static"
    );
    assert_eq!(
        route_for(&pc, "Sub.EXAMPLE.test:1234", "/").await,
        "wild-root"
    );
}

#[tokio::test]
async fn a_path_matched_only_by_a_hostless_route_is_served_there() {
    let pc = Portcullis::with_routes(TABLE);
    assert_eq!(
        route_for(&pc, "nowhere.test", "/only-any/x").await,
        "any-only"
    );
    assert_eq!(
        route_for(&pc, "nowhere.test", "/only-anyx").await,
        "any-root"
    );
}

#[tokio::test]
async fn no_matching_route_is_404() {
    let pc = Portcullis::with_routes(
        r#"
routes:
  - { name: app, host: app.example.test, path: /app, upstream: "echo://" }
"#,
    );
    let r = raw_get(pc.http_port(), "app.example.test", "/elsewhere", &[]).await;
    assert_eq!(r.status, 404);
    let r = raw_get(pc.http_port(), "other.example.test", "/app", &[]).await;
    assert_eq!(r.status, 404);
    let r = raw_get(pc.http_port(), "app.example.test", "/app/x", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn static_upstreams_answer_with_their_status_and_an_empty_body() {
    let pc = Portcullis::with_routes(
        r#"
routes:
  - { path: /nothing, upstream: "static://204" }
  - { path: /maintenance, upstream: "static://503" }
  - { path: /ok, upstream: "static://200" }
"#,
    );
    for (path, status) in [("/nothing", 204), ("/maintenance", 503), ("/ok", 200)] {
        let r = raw_get(pc.http_port(), "static.test", path, &[]).await;
        assert_eq!(r.status, status, "{path}");
        assert!(r.body.is_empty(), "{path}: body {:?}", r.text());
        // Answered like any upstream response: with the security headers.
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let r = raw_get(pc.http_port(), "static.test", "/maintenance/page", &[]).await;
    assert_eq!(r.status, 503);
}

/// RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in any response with
/// a status code of ... 204 (No Content)."
#[tokio::test]
async fn static_204_carries_no_content_length() {
    let pc = Portcullis::with_routes("routes:\n  - { upstream: \"static://204\" }\n");
    let r = raw_get(pc.http_port(), "static.test", "/", &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("content-length"),
        None,
        "204 response headers: {:?}",
        r.headers
    );
}

#[tokio::test]
async fn echo_answers_json_by_default_describing_the_forwarded_request() {
    let pc = Portcullis::with_routes("routes:\n  - { name: echo, upstream: \"echo://\" }\n");
    let r = raw_get(
        pc.http_port(),
        "echo.test:8080",
        "/hello/world?q=1",
        &[
            ("X-Custom", "kept"),
            ("X-Auth-Request-User", "mallory"),
            ("X-Portcullis-Assertion", "forged.jwt.value"),
            ("X-Forwarded-For", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let doc = r.json();
    assert_eq!(doc["method"], "GET");
    assert_eq!(doc["uri"], "/hello/world?q=1");
    assert_eq!(doc["route"], "echo");
    let h = &doc["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("x-auth-request-user").is_none(), "{h}");
    assert!(h.get("x-portcullis-assertion").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "echo.test:8080");
}

#[tokio::test]
async fn echo_answers_html_to_browsers() {
    let pc = Portcullis::with_routes("routes:\n  - { name: echo, upstream: \"echo://\" }\n");
    let r = raw_get(
        pc.http_port(),
        "echo.test",
        "/page",
        &[
            ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
            ("X-Forwarded-User", "mallory"),
            ("X-Probe", "<script>alert(1)</script>"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.headers
    );
    let page = r.text();
    assert!(page.contains("<html"), "{page}");
    assert!(page.contains("/page"), "{page}");
    assert!(page.contains("x-forwarded-for"), "{page}");
    assert!(!page.contains("mallory"), "forged identity shown: {page}");
    // Request data is escaped, never interpreted as markup.
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");
}

#[tokio::test]
async fn http_upstream_receives_method_path_query_and_body() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let r = raw_request(
        pc.http_port(),
        "POST",
        "app.test",
        "/submit/form?a=1&b=two",
        &[("Content-Type", "text/plain")],
        b"hello upstream",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/submit/form?a=1&b=two");
    assert_eq!(seen.body, b"hello upstream");
    assert_eq!(seen.header("host"), Some("app.test"));
    // The client gets the upstream's own answer.
    assert_eq!(r.json()["uri"], "/submit/form?a=1&b=two");
}
