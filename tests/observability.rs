//! What operators see: the admin listener (`/healthz`, `/readyz`, `/metrics`) and the access log
//! on stdout, which must never hold a query string, cookie or credential.

mod support;

use support::{closed_port, raw_get, raw_request, Portcullis, Upstream};

#[tokio::test]
async fn admin_listener_answers_health_and_readiness() {
    let pc = Portcullis::with_routes("routes:\n  - upstream: \"static://200\"\n");
    let r = raw_get(pc.admin_port(), "127.0.0.1", "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    let r = raw_get(pc.admin_port(), "127.0.0.1", "/readyz", &[]).await;
    assert_eq!(r.status, 200);
    let r = raw_get(pc.admin_port(), "127.0.0.1", "/nope", &[]).await;
    assert_eq!(r.status, 404);
    // The admin listener's own /metrics: the Prometheus text.
    let r = raw_get(pc.admin_port(), "127.0.0.1", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("# TYPE portcullis_requests_total "),
        "{}",
        r.text()
    );
    // The admin endpoints are not served on the public listener.
    let pc2 =
        Portcullis::with_routes("routes:\n  - { host: only.test, upstream: \"static://200\" }\n");
    let r = raw_get(pc2.http_port(), "127.0.0.1", "/metrics", &[]).await;
    assert_eq!(r.status, 404);
    // That 404 is only the proxy finding no route for the host, as for any path: it says
    // nothing about the admin endpoints (see the next test for that).
    assert!(!r.text().contains("# TYPE"), "{}", r.text());
    let any = raw_get(pc2.http_port(), "127.0.0.1", "/no-such-page", &[]).await;
    assert_eq!(any.status, 404);
    assert_eq!(any.text(), r.text(), "the same no-route answer");
}

/// On the public listener, with a route that takes every path, `/metrics`, `/healthz` and
/// `/readyz` are the app's: proxied to it like any path, never answered by Portcullis. And the
/// admin listener answers only its own paths, proxying nothing.
#[tokio::test]
async fn admin_paths_on_the_public_listener_belong_to_the_app() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    for path in ["/metrics", "/healthz", "/readyz"] {
        let before = up.count();
        let r = raw_get(pc.http_port(), "app.test", path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(up.count(), before + 1, "{path} reached the app");
        assert_eq!(up.last().uri, path);
        // The app's answer (its echo of the request), not Portcullis's.
        assert_eq!(r.json()["uri"], path, "{path}: {}", r.text());
        assert!(!r.text().contains("# TYPE"), "{path}: {}", r.text());
    }

    let before = up.count();
    let metrics = raw_get(pc.admin_port(), "app.test", "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("# TYPE portcullis_requests_total "),
        "{}",
        metrics.text()
    );
    for path in ["/", "/app/page", "/nope"] {
        let r = raw_get(pc.admin_port(), "app.test", path, &[]).await;
        assert_eq!(r.status, 404, "admin {path}: {}", r.text());
    }
    assert_eq!(up.count(), before, "the admin listener proxied a request");
}

/// `metrics::init` says every metric is registered "so that `/metrics` lists them before the
/// first request"; dashboards and `absent()` alerts rely on that.
#[tokio::test]
async fn metrics_are_listed_before_the_first_request() {
    let pc = Portcullis::with_routes("routes:\n  - name: app\n    upstream: \"static://200\"\n");
    let text = pc.metrics().await;
    let missing: Vec<_> = [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds",
        "portcullis_upstream_errors_total",
        "portcullis_config_reloads_total",
    ]
    .into_iter()
    .filter(|name| !text.contains(&format!("# TYPE {name} ")))
    .collect();
    assert!(missing.is_empty(), "not listed: {missing:?}\n{text}");
}

#[tokio::test]
async fn metrics_count_requests_durations_and_upstream_errors() {
    let up = Upstream::start();
    let down = closed_port();
    let pc = Portcullis::with_routes(&format!(
        r#"
routes:
  - name: app
    upstream: {}
  - name: gone
    path: /gone
    upstream: http://127.0.0.1:{down}
"#,
        up.url()
    ));
    for _ in 0..3 {
        assert_eq!(
            raw_get(pc.http_port(), "a.test", "/x", &[]).await.status,
            200
        );
    }
    assert_eq!(
        raw_get(pc.http_port(), "a.test", "/x?status=503", &[])
            .await
            .status,
        503
    );
    for _ in 0..2 {
        assert_eq!(
            raw_get(pc.http_port(), "a.test", "/gone", &[]).await.status,
            502
        );
    }

    // Counted once the response is done: poll briefly.
    // Polled: the counter is listed from its first sample on.
    let metric_ok = |text: &str| {
        let count = |labels: &[(&str, &str)]| {
            support::try_metric_value(text, "portcullis_requests_total", labels).unwrap_or(0.0)
        };
        count(&[("route", "app"), ("status", "200")]) >= 3.0
            && count(&[("route", "gone"), ("status", "502")]) >= 2.0
    };
    let text = support::eventually(
        std::time::Duration::from_secs(3),
        "request counters",
        || async {
            let t = pc.metrics().await;
            metric_ok(&t).then_some(t)
        },
    )
    .await;
    let value = |name: &str, labels: &[(&str, &str)]| support::metric_value(&text, name, labels);
    assert_eq!(
        value(
            "portcullis_requests_total",
            &[("route", "app"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        value(
            "portcullis_requests_total",
            &[("route", "app"), ("status", "503")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "portcullis_requests_total",
            &[("route", "gone"), ("status", "502")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "portcullis_request_duration_seconds_count",
            &[("route", "app")]
        ),
        4.0
    );
    assert_eq!(
        value(
            "portcullis_request_duration_seconds_count",
            &[("route", "gone")]
        ),
        2.0
    );
    assert!(
        value(
            "portcullis_request_duration_seconds_bucket",
            &[("route", "app"), ("le", "+Inf")]
        ) >= 4.0,
        "{text}"
    );
    assert!(
        value(
            "portcullis_request_duration_seconds_sum",
            &[("route", "app")]
        ) > 0.0
    );
    assert_eq!(
        value("portcullis_upstream_errors_total", &[("route", "gone")]),
        2.0
    );
    assert_eq!(
        value("portcullis_upstream_errors_total", &[("route", "app")]),
        0.0
    );
}

#[tokio::test]
async fn requests_without_a_route_are_counted_too() {
    let pc =
        Portcullis::with_routes("routes:\n  - { host: app.test, upstream: \"static://200\" }\n");
    raw_get(pc.http_port(), "nowhere.test", "/", &[]).await;
    raw_get(pc.http_port(), "app.test", "/a%2Fb", &[]).await;
    support::eventually(
        std::time::Duration::from_secs(3),
        "404 and 400 counted",
        || async {
            let t = pc.metrics().await;
            let count = |status: &str| {
                support::try_metric_value(&t, "portcullis_requests_total", &[("status", status)])
            };
            (count("404")? >= 1.0 && count("400")? >= 1.0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn access_log_has_method_path_and_status_but_no_query_or_credentials() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        "routes:\n  - name: app\n    upstream: {}\n",
        up.url()
    ));
    let r = raw_request(
        pc.http_port(),
        "POST",
        "app.test",
        "/logged/path?code=QUERYSECRET123&state=abc",
        &[
            (
                "Cookie",
                "_portcullis=COOKIESECRET456; other=COOKIESECRET789",
            ),
            ("Authorization", "Bearer AUTHSECRET000"),
            ("Proxy-Authorization", "Basic PROXYSECRET111"),
            ("X-Api-Key", "APIKEYSECRET222"),
        ],
        b"body=BODYSECRET333",
    )
    .await;
    assert_eq!(r.status, 200);
    let line = pc
        .wait_for_stdout_line(|l| l.contains("/logged/path"))
        .await
        .unwrap_or_else(|| panic!("no access log line in stdout:\n{}", pc.stdout()));
    let entry: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(entry["method"], "POST", "{line}");
    assert_eq!(entry["path"], "/logged/path", "{line}");
    assert_eq!(entry["status"], 200, "{line}");
    assert_eq!(entry["route"], "app", "{line}");

    // Also a failing request, which goes through a different code path.
    raw_get(
        pc.http_port(),
        "nowhere.test",
        "/bad%2Fpath?token=QUERYSECRET999",
        &[("Cookie", "s=COOKIESECRET999")],
    )
    .await;
    pc.wait_for_stdout_line(|l| l.contains("\"status\":400"))
        .await
        .unwrap_or_else(|| panic!("no access log line for the 400:\n{}", pc.stdout()));

    let logs = format!("{}\n{}", pc.stdout(), pc.stderr());
    for secret in [
        "QUERYSECRET",
        "COOKIESECRET",
        "AUTHSECRET",
        "PROXYSECRET",
        "APIKEYSECRET",
        "BODYSECRET",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn access_log_can_be_turned_off() {
    let pc = Portcullis::with_routes(
        "logging:\n  access_log: false\nroutes:\n  - upstream: \"static://200\"\n",
    );
    assert_eq!(
        raw_get(pc.http_port(), "a.test", "/quiet-path", &[])
            .await
            .status,
        200
    );
    // Counted when the request is over, where its access line would have been written.
    support::eventually(
        std::time::Duration::from_secs(3),
        "request counted",
        || async {
            (pc.try_metric("portcullis_requests_total", &[("status", "200")])
                .await?
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    // No fixed sleep: turn the access log on by reload and wait for the line of a later
    // request. Access lines go out through one queue, in order: once the later line is in the
    // file, a line for /quiet-path would be there too.
    pc.rewrite_config(&pc.yaml().replace("access_log: false", "access_log: true"));
    support::eventually(std::time::Duration::from_secs(3), "reload", || async {
        (pc.metric("portcullis_config_reloads_total", &[("result", "success")])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        raw_get(pc.http_port(), "a.test", "/loud-path", &[])
            .await
            .status,
        200
    );
    pc.wait_for_stdout_line(|l| l.contains("\"path\":\"/loud-path\""))
        .await
        .unwrap_or_else(|| panic!("no access log line once turned on:\n{}", pc.stdout()));
    assert!(!pc.stdout().contains("/quiet-path"), "{}", pc.stdout());
}

/// The harness's metric reader: an unknown metric name fails loudly instead of reading as 0
/// (which would pass every `== 0` check after a rename), while a known metric without a
/// sample for the given labels is 0.
#[test]
fn the_metric_reader_refuses_unknown_names() {
    let text = "# HELP portcullis_x_total X.\n# TYPE portcullis_x_total counter\n\
                portcullis_x_total{route=\"a\"} 2\n\
                # HELP portcullis_d_seconds D.\n# TYPE portcullis_d_seconds histogram\n\
                portcullis_d_seconds_count{route=\"a\"} 1\n\
                # HELP portcullis_empty_total Listed, no sample.\n# TYPE portcullis_empty_total counter\n";
    assert_eq!(
        support::metric_value(text, "portcullis_x_total", &[("route", "a")]),
        2.0
    );
    assert_eq!(
        support::metric_value(text, "portcullis_x_total", &[("route", "b")]),
        0.0
    );
    assert_eq!(
        support::metric_value(text, "portcullis_d_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        support::metric_value(text, "portcullis_empty_total", &[]),
        0.0
    );
    // A histogram's parts are known through its # TYPE line.
    assert_eq!(
        support::metric_value(text, "portcullis_d_seconds_sum", &[]),
        0.0
    );
    assert_eq!(
        support::try_metric_value(text, "portcullis_y_total", &[]),
        None
    );
    let typo = std::panic::catch_unwind(|| support::metric_value(text, "portcullis_y_total", &[]));
    let message = typo.expect_err("an unknown name panics");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("portcullis_y_total"), "{message}");
    // A prefix of a known name is not that name.
    assert_eq!(support::try_metric_value(text, "portcullis_x", &[]), None);
}
