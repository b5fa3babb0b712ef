//! WebSocket upgrades pass through to the upstream, unless the route says `websocket: false`.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use support::{Portcullis, Upstream};
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
