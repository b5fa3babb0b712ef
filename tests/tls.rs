//! The TLS listener: serves with the configured certificate, tells the upstream the request was
//! https, and adds HSTS over TLS only.

mod support;

use support::{
    http_client, https_client, raw_get, raw_or_closed, self_signed_localhost, Answer, Portcullis,
    Setup, Upstream,
};

const HSTS: &str = "max-age=31536000; includeSubDomains";

fn start_with_tls(up: &Upstream, extra: &str) -> (Portcullis, String) {
    let setup = Setup::new();
    let (cert, key) = self_signed_localhost();
    setup.write("tls/cert.pem", &cert);
    setup.write("tls/key.pem", &key);
    let pc = setup.start(&format!(
        r#"
server:
  listen: ["127.0.0.1:@HTTP@"]
  threads: 1
  tls:
    listen: ["127.0.0.1:@TLS@"]
    cert_file: tls/cert.pem
    key_file: @DIR@/tls/key.pem
admin:
  listen: 127.0.0.1:@ADMIN@
{extra}
routes:
  - name: app
    upstream: {}
  - name: missing
    host: nowhere.test
    path: /
    upstream: "static://204"
"#,
        up.url()
    ));
    (pc, cert)
}

#[tokio::test]
async fn tls_listener_serves_and_adds_hsts() {
    let up = Upstream::start();
    let (pc, cert) = start_with_tls(&up, "");
    let client = https_client(&cert, pc.tls_port());
    let url = format!("https://localhost:{}/over/tls?x=1", pc.tls_port());
    let r = client.get(&url).send().await.expect("HTTPS request");
    assert_eq!(r.status(), 200);
    let hsts: Vec<_> = r
        .headers()
        .get_all("strict-transport-security")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(hsts, [HSTS]);
    assert_eq!(
        r.headers()
            .get("x-frame-options")
            .map(|v| v.to_str().unwrap()),
        Some("SAMEORIGIN")
    );
    let seen = up.last();
    assert_eq!(seen.uri, "/over/tls?x=1");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(format!("localhost:{}", pc.tls_port()).as_str())
    );
}

#[tokio::test]
async fn plain_http_never_gets_hsts() {
    let up = Upstream::start();
    let (pc, _cert) = start_with_tls(&up, "");
    let r = http_client()
        .get(format!("http://127.0.0.1:{}/", pc.http_port()))
        .send()
        .await
        .expect("HTTP request");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));

    // An untrusted client claiming https changes nothing.
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/",
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert!(
        !r.has_header("strict-transport-security"),
        "{:?}",
        r.headers
    );
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn hsts_follows_a_trusted_proxy_that_terminated_tls() {
    let up = Upstream::start();
    let pc = Portcullis::start(&format!(
        r#"
server:
  listen: ["127.0.0.1:@HTTP@"]
  threads: 1
  trusted_proxies: [127.0.0.1]
admin:
  listen: 127.0.0.1:@ADMIN@
routes:
  - upstream: {}
"#,
        up.url()
    ));
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/",
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(r.header_all("strict-transport-security"), [HSTS]);
    let r = raw_get(pc.http_port(), "app.test", "/", &[]).await;
    assert!(
        !r.has_header("strict-transport-security"),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn own_pages_over_tls_carry_hsts_too() {
    let up = Upstream::start();
    let (pc, cert) = start_with_tls(&up, "");
    let client = https_client(&cert, pc.tls_port());
    let r = client
        .get(format!("https://localhost:{}/a%2Fb", pc.tls_port()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some(HSTS)
    );
}

#[tokio::test]
async fn hsts_can_be_configured_and_turned_off() {
    let up = Upstream::start();
    let (pc, cert) = start_with_tls(
        &up,
        "headers:\n  security:\n    strict_transport_security: \"max-age=600\"\n",
    );
    let client = https_client(&cert, pc.tls_port());
    let r = client
        .get(format!("https://localhost:{}/", pc.tls_port()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(
        r.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=600")
    );

    let (pc, cert) = start_with_tls(
        &up,
        "headers:\n  security:\n    strict_transport_security: null\n",
    );
    let client = https_client(&cert, pc.tls_port());
    let r = client
        .get(format!("https://localhost:{}/", pc.tls_port()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn the_tls_listener_refuses_plain_http() {
    let up = Upstream::start();
    let (pc, cert) = start_with_tls(&up, "");
    // A plain request: a 4xx, or the TLS layer closes the connection (after an alert, which is
    // no HTTP response). A hang (the harness's timeout) fails.
    let r = raw_or_closed(
        pc.tls_port(),
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    if let Answer::Response(r) = r {
        assert!((400..500).contains(&r.status), "status {}", r.status);
    }
    assert_eq!(up.count(), 0);
    // The listener still serves TLS afterwards.
    let r = https_client(&cert, pc.tls_port())
        .get(format!("https://localhost:{}/after", pc.tls_port()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path(), "/after");
}
