//! WebSocket upgrades pass through to the upstream, unless the route says `websocket: false`;
//! on an `auth: required` route a handshake needs a session and, with a cookie, a same-origin
//! `Origin` (cross-site WebSocket hijacking rides on the cookie).

mod support;

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{Portcullis, Setup, Upstream};
use tokio_tungstenite::tungstenite::{self, Message};

fn start(up: &Upstream) -> Portcullis {
    Portcullis::with_routes(&format!(
        r#"
routes:
  - name: app
    upstream: {u}
  - name: blocked
    path: /blocked
    upstream: {u}
    websocket: false
"#,
        u = up.url()
    ))
}

async fn next_data(
    ws: &mut (impl StreamExt<Item = Result<Message, tungstenite::Error>> + Unpin),
) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no WebSocket message within 5 s")
            .expect("WebSocket closed")
            .expect("WebSocket error");
        if msg.is_text() || msg.is_binary() {
            return msg;
        }
    }
}

#[tokio::test]
async fn websocket_messages_echo_through_the_proxy() {
    let up = Upstream::start();
    let pc = start(&up);
    let url = format!("ws://127.0.0.1:{}/ws", pc.http_port());
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .expect("handshake within 5 s")
    .expect("WebSocket handshake through Portcullis");
    assert_eq!(resp.status(), 101);

    ws.send(Message::text("hello through the gate"))
        .await
        .expect("send text");
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("hello through the gate")
    );
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(blob.clone()))
        .await
        .expect("send binary");
    assert_eq!(next_data(&mut ws).await, Message::binary(blob));
    for i in 0..20 {
        ws.send(Message::text(format!("n{i}"))).await.expect("send");
        assert_eq!(next_data(&mut ws).await, Message::text(format!("n{i}")));
    }
    ws.close(None).await.expect("close");

    // The upstream saw a real upgrade, with the forwarding headers set.
    let seen = up.last();
    assert_eq!(seen.path(), "/ws");
    assert!(
        seen.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn websocket_false_refuses_the_upgrade() {
    let up = Upstream::start();
    let pc = start(&up);
    let url = format!("ws://127.0.0.1:{}/blocked/ws", pc.http_port());
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .expect("an answer within 5 s");
    match result {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
        }
        Err(e) => panic!("expected an HTTP 403 refusal, got {e}"),
        Ok((_, resp)) => panic!("upgrade accepted with {}", resp.status()),
    }
    assert_eq!(up.count(), 0, "the upgrade reached the upstream");

    // Plain requests on that route still work.
    let r = support::raw_get(pc.http_port(), "app.test", "/blocked/page", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().path(), "/blocked/page");
}

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// app.test (`auth: required`) in front of `up`, with a real IdP; returns the IdP (kept alive),
/// Portcullis and alice's session cookie (`Cookie` header value).
async fn with_login(up: &Upstream) -> (Idp, Portcullis, String) {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = Idp::start(IdpConfig::default().client(IdpClient::new(
        "portcullis",
        "portcullis-secret",
        &format!("{base}/.portcullis/callback"),
    )));
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n\
         admin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
         routes:\n\
         \x20 - {{ host: app.test, upstream: \"{up}\", auth: required }}\n",
        issuer = idp.issuer(),
        up = up.url(),
    );
    let pc = setup.start(&yaml);
    pc.ready().await;
    let browser = Browser::new();
    browser
        .login(
            &format!("{base}/.portcullis/start?rd=%2F"),
            "alice",
            PASSWORD,
        )
        .await;
    let cookie = browser
        .cookie_for(&base, "_portcullis")
        .expect("alice has a session cookie after login");
    (idp, pc, format!("_portcullis={cookie}"))
}

/// A WebSocket handshake for app.test/ws with the extra header lines `extra`.
async fn handshake(pc: &Portcullis, extra: &[(&str, &str)]) -> support::RawResponse {
    let mut req = String::from(
        "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    support::raw(pc.http_port(), req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("handshake with {extra:?}: {e}"))
}

/// Without a session the handshake is refused like any API request (401), and the app never
/// sees it.
#[tokio::test]
async fn an_upgrade_without_a_session_is_refused() {
    let up = Upstream::start();
    let (_idp, pc, _alice) = with_login(&up).await;
    for extra in [
        &[][..],
        &[("Origin", "http://app.test")][..],
        &[("Cookie", "_portcullis=not-a-session")][..],
    ] {
        let r = handshake(&pc, extra).await;
        assert_eq!(r.status, 401, "{extra:?}: {}", r.text());
        assert!(r.header("upgrade").is_none(), "{extra:?}: {:?}", r.headers);
        assert_eq!(r.json()["error"], "unauthenticated", "{extra:?}");
    }
    assert_eq!(up.count(), 0, "the app saw {:?}", up.received());
}

/// A cookie-authenticated handshake from another site is cross-site WebSocket hijacking: 403,
/// and the app never sees it. The same handshake from the app's own origin is upgraded.
#[tokio::test]
async fn a_cross_site_upgrade_with_a_session_cookie_is_refused() {
    let up = Upstream::start();
    let (_idp, pc, alice) = with_login(&up).await;
    for extra in [
        &[
            ("Cookie", alice.as_str()),
            ("Origin", "http://evil.example"),
        ][..],
        &[
            ("Cookie", alice.as_str()),
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ][..],
        &[("Cookie", alice.as_str()), ("Sec-Fetch-Site", "cross-site")][..],
        // Same host, another scheme: another origin.
        &[("Cookie", alice.as_str()), ("Origin", "https://app.test")][..],
    ] {
        let r = handshake(&pc, extra).await;
        assert_eq!(r.status, 403, "{extra:?}: {}", r.text());
        assert!(r.header("upgrade").is_none(), "{extra:?}: {:?}", r.headers);
    }
    assert_eq!(up.count(), 0, "the app saw {:?}", up.received());

    // The control: from the app's own origin the very same session is upgraded, so the
    // refusals above were for the origin.
    let r = handshake(
        &pc,
        &[("Cookie", alice.as_str()), ("Origin", "http://app.test")],
    )
    .await;
    assert_eq!(r.status, 101, "{}", r.text());
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.path()), ("GET", "/ws"));
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));
    assert_eq!(up.count(), 1);
}
