//! Hot reload: a valid change to the file is served within 2 s, an invalid one is refused (the
//! running configuration keeps serving, a metric and an audit line say so), SIGHUP reloads.

mod support;

use std::time::Duration;
use support::{eventually, raw_get, Portcullis, Setup, Upstream, SERVER};

const WITHIN: Duration = Duration::from_secs(2);

async fn status_of(pc: &Portcullis, path: &str) -> u16 {
    raw_get(pc.http_port(), "app.test", path, &[]).await.status
}

#[tokio::test]
async fn a_valid_change_is_served_within_two_seconds() {
    let v1 = format!("{SERVER}routes:\n  - {{ path: /, upstream: \"static://200\" }}\n");
    let pc = Portcullis::start(&v1);
    assert_eq!(status_of(&pc, "/new").await, 200);

    let v2 = format!(
        "{SERVER}routes:\n  - {{ path: /, upstream: \"static://200\" }}\n  - {{ path: /new, upstream: \"static://204\" }}\n"
    );
    pc.rewrite_config(&v2);
    eventually(WITHIN, "the new route to be served", || async {
        (status_of(&pc, "/new").await == 204).then_some(())
    })
    .await;
    assert_eq!(status_of(&pc, "/other").await, 200);

    let line = pc
        .wait_for_stdout_line(|l| l.contains("\"event\":\"config_reloaded\""))
        .await
        .unwrap_or_else(|| panic!("no config_reloaded audit line:\n{}", pc.stdout()));
    assert!(line.contains("\"audit\":true"), "{line}");
    assert_eq!(
        pc.metric("portcullis_config_reloads_total", &[("result", "success")])
            .await,
        1.0
    );
    assert_eq!(
        pc.metric("portcullis_config_reloads_total", &[("result", "failure")])
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_reload_changes_headers_and_upstreams_too() {
    let a = Upstream::start();
    let b = Upstream::start();
    let pc = Portcullis::start(&format!("{SERVER}routes:\n  - upstream: {}\n", a.url()));
    assert_eq!(status_of(&pc, "/x").await, 200);
    assert_eq!(a.count(), 1);

    pc.rewrite_config(&format!(
        "{SERVER}routes:\n  - upstream: {}\n    headers:\n      add: {{ X-Generation: two }}\n",
        b.url()
    ));
    eventually(WITHIN, "requests to reach the new upstream", || async {
        status_of(&pc, "/y").await;
        (b.count() > 0).then_some(())
    })
    .await;
    assert_eq!(b.last().header("x-generation"), Some("two"));
}

#[tokio::test]
async fn an_invalid_change_is_refused_and_the_old_config_keeps_serving() {
    let v1 = format!("{SERVER}routes:\n  - {{ path: /, upstream: \"static://200\" }}\n");
    let pc = Portcullis::start(&v1);
    assert_eq!(status_of(&pc, "/").await, 200);

    let broken = format!(
        "{SERVER}routes:\n  - {{ path: /, upstream: \"static://204\" }}\n  - {{ path: /x, upstream: \"ftp://nope\" }}\n"
    );
    pc.rewrite_config(&broken);
    eventually(WITHIN, "a failed reload to be counted", || async {
        (pc.metric("portcullis_config_reloads_total", &[("result", "failure")])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let line = pc
        .wait_for_stdout_line(|l| l.contains("\"event\":\"config_rejected\""))
        .await
        .unwrap_or_else(|| panic!("no config_rejected audit line:\n{}", pc.stdout()));
    assert!(line.contains("ftp"), "the reason names the problem: {line}");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("audit line is JSON");
    assert_eq!(entry["event"], "config_rejected");
    assert!(entry["time"].is_string(), "{line}");

    // Still the old configuration: 200, not the 204 of the refused file.
    for _ in 0..5 {
        assert_eq!(status_of(&pc, "/").await, 200);
    }
    assert_eq!(
        pc.metric("portcullis_config_reloads_total", &[("result", "success")])
            .await,
        0.0
    );

    // Fixing the file is picked up.
    let fixed = format!("{SERVER}routes:\n  - {{ path: /, upstream: \"static://204\" }}\n");
    pc.rewrite_config(&fixed);
    eventually(WITHIN, "the fixed file to be served", || async {
        (status_of(&pc, "/").await == 204).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_file_that_is_not_yaml_is_refused_too() {
    let v1 = format!("{SERVER}routes:\n  - {{ path: /, upstream: \"static://200\" }}\n");
    let pc = Portcullis::start(&v1);
    pc.rewrite_config("routes: [ {{{ not yaml\n");
    eventually(WITHIN, "a failed reload to be counted", || async {
        (pc.metric("portcullis_config_reloads_total", &[("result", "failure")])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(status_of(&pc, "/").await, 200);
}

#[tokio::test]
async fn sighup_reloads_even_when_only_a_referenced_file_changed() {
    let up = Upstream::start();
    let setup = Setup::new();
    // In a subdirectory, where the config watcher does not look: only SIGHUP can pick it up.
    setup.write("secrets/token", "one\n");
    let pc = setup.start(&format!(
        "{SERVER}routes:\n  - upstream: {}\n    headers:\n      add_file: {{ X-Token: secrets/token }}\n",
        up.url()
    ));
    assert_eq!(status_of(&pc, "/").await, 200);
    assert_eq!(up.last().header("x-token"), Some("one"));

    std::fs::write(pc.dir().join("secrets/token"), "two\n").expect("rotating the secret");
    pc.sighup();
    eventually(WITHIN, "the rotated secret to be sent upstream", || async {
        status_of(&pc, "/").await;
        (up.last().header("x-token") == Some("two")).then_some(())
    })
    .await;
    let line = pc
        .wait_for_stdout_line(|l| l.contains("\"event\":\"config_reloaded\""))
        .await
        .unwrap_or_else(|| panic!("no config_reloaded audit line:\n{}", pc.stdout()));
    assert!(line.contains("sighup"), "{line}");
    assert!(!line.contains("two"), "a secret in the audit line: {line}");
}

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_serving() {
    let pc = Portcullis::start(&format!(
        "{SERVER}routes:\n  - {{ path: /, upstream: \"static://200\" }}\n"
    ));
    // Written and signalled at once: whichever trigger sees it first, it must be refused. Renamed
    // into place, so SIGHUP never reads a truncated file (which could even be a valid one).
    support::write_atomically(
        &pc.config_path(),
        pc.setup
            .render(&format!(
                "{SERVER}routes:\n  - {{ upstream: \"static://204\", bogus: 1 }}\n"
            ))
            .as_bytes(),
    );
    pc.sighup();
    eventually(WITHIN, "a failed reload to be counted", || async {
        (pc.metric("portcullis_config_reloads_total", &[("result", "failure")])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(status_of(&pc, "/").await, 200);
    let mut pc = pc;
    assert!(pc.is_running());
}

/// A request in flight when a reload lands is answered under the configuration it started
/// with, while a request after the reload gets the new one. The slow request observably spans
/// the reload: it has reached the upstream (which then sleeps) before the file is rewritten,
/// and it is still unanswered once the reload is confirmed (audit line, metric) and the new
/// configuration serves.
#[tokio::test]
async fn in_flight_requests_finish_on_the_old_configuration() {
    // The upstream's sleep: long against a reload (150 ms debounce and a load), short of the
    // raw client's 5 s limit.
    const SLEEP_MS: u64 = 3000;
    let up = Upstream::start();
    let pc = Portcullis::start(&format!(
        "{SERVER}routes:\n  - upstream: {}\n    headers:\n      add_response: {{ X-Generation: one }}\n",
        up.url()
    ));
    let port = pc.http_port();
    let slow_uri = format!("/slow?sleep_ms={SLEEP_MS}");
    let slow = {
        let slow_uri = slow_uri.clone();
        tokio::spawn(async move { raw_get(port, "app.test", &slow_uri, &[]).await })
    };
    eventually(WITHIN, "the slow request to reach the upstream", || async {
        (up.count() == 1).then_some(())
    })
    .await;
    assert!(
        !slow.is_finished(),
        "the slow request must be in flight when the reload starts"
    );
    pc.rewrite_config(&format!(
        "{SERVER}routes:\n  - {{ upstream: \"static://204\", headers: {{ add_response: {{ X-Generation: two }} }} }}\n"
    ));
    let line = pc
        .wait_for_stdout_line(|l| l.contains("\"event\":\"config_reloaded\""))
        .await
        .unwrap_or_else(|| panic!("no config_reloaded audit line:\n{}", pc.stdout()));
    assert!(line.contains("\"trigger\":\"file\""), "{line}");
    assert_eq!(
        pc.metric("portcullis_config_reloads_total", &[("result", "success")])
            .await,
        1.0
    );
    eventually(WITHIN, "the new configuration to be served", || async {
        (status_of(&pc, "/fast").await == 204).then_some(())
    })
    .await;
    // A new request: the new configuration (the built-in 204, its response header), and the
    // old upstream does not see it.
    let fresh = raw_get(port, "app.test", "/fresh", &[]).await;
    assert_eq!(fresh.status, 204);
    assert_eq!(fresh.header("x-generation"), Some("two"));
    assert_eq!(
        up.count(),
        1,
        "a request after the reload reached the old upstream"
    );
    // The reload landed while the slow request was in flight: it is still unanswered.
    assert!(
        !slow.is_finished(),
        "the slow request was answered before the reload was confirmed: the test proves nothing"
    );

    let r = slow.await.expect("the slow request task");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], slow_uri);
    assert_eq!(
        r.header("x-generation"),
        Some("one"),
        "the in-flight request must be answered under the configuration it started with"
    );
}

#[tokio::test]
async fn a_changed_listen_address_waits_for_a_restart_and_the_rest_reloads() {
    let pc = Portcullis::start(&format!(
        "{SERVER}routes:\n  - {{ upstream: \"static://200\" }}\n"
    ));
    let other = support::free_port();
    pc.rewrite_config(&format!(
        "server:\n  listen: [\"127.0.0.1:{other}\"]\n  threads: 1\nadmin:\n  listen: 127.0.0.1:@ADMIN@\nroutes:\n  - {{ upstream: \"static://204\" }}\n"
    ));
    eventually(WITHIN, "the new routes on the old listener", || async {
        (status_of(&pc, "/").await == 204).then_some(())
    })
    .await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "a new listener was opened without a restart"
    );
    assert!(
        pc.wait_for_stdout_line(|l| l.contains("restart"))
            .await
            .is_some(),
        "no warning that the listen change needs a restart:\n{}",
        pc.stdout()
    );
}
