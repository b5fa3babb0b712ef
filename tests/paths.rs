//! Path tricks, sent byte for byte: every path is either normalised (and the upstream receives
//! exactly the normalised form, which is also what was routed on) or refused with 400 before
//! it reaches anything.

mod support;

use support::{raw_get, raw_or_closed, Answer, Portcullis, Upstream};

fn proxy_to(up: &Upstream) -> Portcullis {
    Portcullis::with_routes(&format!(
        r#"
routes:
  - name: app
    upstream: {u}
  - name: public
    path: /public
    upstream: "static://204"
"#,
        u = up.url()
    ))
}

#[tokio::test]
async fn ambiguous_paths_are_normalised_before_the_upstream_sees_them() {
    let up = Upstream::start();
    let pc = proxy_to(&up);
    let cases = [
        ("/a/../b", "/b"),
        ("/a/./b", "/a/b"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E%2E/b", "/b"),
        ("/a/.%2e/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("//a///b", "/a/b"),
        ("/a//b/", "/a/b/"),
        ("/%61dmin", "/admin"),
        ("/a%7Eb", "/a~b"),
        ("/x%3fy", "/x%3Fy"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/a/b/..", "/a/"),
        ("/a/../b?q=/../x&r=%2F", "/b?q=/../x&r=%2F"),
    ];
    for (sent, expected) in cases {
        let before = up.count();
        let r = raw_get(pc.http_port(), "app.test", sent, &[]).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(up.count(), before + 1, "{sent}");
        assert_eq!(up.last().uri, expected, "{sent}");
    }
}

#[tokio::test]
async fn routing_uses_the_normalised_path() {
    let up = Upstream::start();
    let pc = proxy_to(&up);
    // Climbing out of /public lands on the app route, and the app sees the real target.
    let r = raw_get(pc.http_port(), "app.test", "/public/../secret", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/secret");
    let r = raw_get(pc.http_port(), "app.test", "/public/%2e%2e/secret2", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/secret2");
    // And dot segments into /public land there.
    let before = up.count();
    let r = raw_get(pc.http_port(), "app.test", "/x/../public/y", &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(up.count(), before);
}

#[tokio::test]
async fn paths_with_an_ambiguous_meaning_are_refused_with_400() {
    let up = Upstream::start();
    let pc = proxy_to(&up);
    let cases = [
        "/a%2Fb",
        "/a%2fb",
        "/public%2F..%2Fsecret",
        "/a%5Cb",
        "/a%5cb",
        "/a\\b",
        "/public\\..\\secret",
        "/a%00b",
        "/a%00",
        "/a%0d%0aX-Injected:%20yes",
        "/a%1Fb",
        "/a%7F",
        "/%C0%AF",
        "/%c0%ae%c0%ae/secret",
        "/%E0%80%AF",
        "/%FF",
        "/..",
        "/../secret",
        "/a/../../secret",
        "/%2e%2e/secret",
        "/public/..;/secret",
        "/x/..;/y",
        "/x/.;/y",
        "/%zz",
        "/a%4",
    ];
    for sent in cases {
        let r = raw_get(pc.http_port(), "app.test", sent, &[]).await;
        assert_eq!(r.status, 400, "{sent}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request", "{sent}");
        assert_eq!(
            up.count(),
            0,
            "{sent} reached the upstream as {:?}",
            up.received().last().map(|e| e.uri.clone())
        );
    }
}

#[tokio::test]
async fn a_path_with_a_raw_nul_byte_is_refused() {
    let up = Upstream::start();
    let pc = proxy_to(&up);
    let resp = raw_or_closed(
        pc.http_port(),
        b"GET /a\0b HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    // Either Portcullis (a 4xx) or its HTTP parser (a 4xx or a closed connection) refuses it;
    // never served, never a 5xx, never a hang.
    if let Answer::Response(r) = resp {
        assert!((400..500).contains(&r.status), "status {}", r.status);
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn bad_paths_answer_a_page_to_browsers() {
    let up = Upstream::start();
    let pc = proxy_to(&up);
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/a%2Fb",
        &[("Accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    assert!(r.text().contains("400"), "{}", r.text());
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header_all("cache-control"), ["no-store"]);
}
