//! Rate limits end to end, with real parts only: the `portcullis` binary, a private
//! `redis-server` on a free port (killed and restarted), and raw HTTP clients that claim
//! addresses through `X-Forwarded-For`. Exact counts and bursts, `Retry-After` and the
//! RateLimit headers, refill, every key kind, forged `X-Forwarded-For`, two replicas sharing
//! one Redis budget, Redis dying under load, the built-in `auth-endpoints` limiter, and the
//! config errors. (Forward auth through real nginx and Caddy: tests/forward_auth_front.rs.)

mod support;

#[path = "support/redis.rs"]
mod redis_support;

use redis_support::RedisServer;
use std::time::Duration;
use support::local::{config, session_cookie, users_yaml, FormClient, TestUser};
use support::{eventually, raw_request, run_cli, Portcullis, RawResponse, Setup, SERVER};

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw_request(
        port,
        "GET",
        &format!("127.0.0.1:{port}"),
        path,
        headers,
        b"",
    )
    .await
}

fn num(r: &RawResponse, name: &str) -> u64 {
    r.header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name}: a number, got {:?} ({r:?})", r.header(name)))
}

const JSON: (&str, &str) = ("accept", "application/json");

#[tokio::test]
async fn burst_is_exact_then_429_with_headers_then_refill() {
    let pc = Portcullis::with_routes(
        "rate_limits:
  - name: per-ip
    key: client_ip
    limit: 1/m
    burst: 3
  - name: fast
    key: client_ip
    limit: 2/s
    burst: 2
routes:
  - path: /
    upstream: static://200
    auth: none
    rate_limit: [per-ip]
  - path: /fast
    upstream: static://200
    auth: none
    rate_limit: [fast]
  - path: /free
    upstream: static://200
    auth: none
",
    );
    let port = pc.http_port();
    for (i, left) in [2u64, 1, 0].into_iter().enumerate() {
        let r = get(port, "/", &[JSON]).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        assert_eq!(num(&r, "ratelimit-remaining"), left);
        assert_eq!(num(&r, "ratelimit-reset"), 60 * (i as u64 + 1));
        assert_eq!(r.header("ratelimit-policy"), Some("\"per-ip\";q=3;w=180"));
        let expected = format!("\"per-ip\";r={left};t={}", 60 * (i + 1));
        assert_eq!(r.header("ratelimit"), Some(expected.as_str()));
        assert!(!r.has_header("retry-after"));
    }
    let r = get(port, "/", &[JSON]).await;
    assert_eq!(r.status, 429, "{r:?}");
    let retry = num(&r, "retry-after");
    assert!((59..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.json()["error"], "rate_limited");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit"), Some("\"per-ip\";r=0;t=180"));
    // A browser gets a page.
    let r = get(port, "/", &[("accept", "text/html")]).await;
    assert_eq!(r.status, 429);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(r.text().contains("429"), "{}", r.text());
    // A route without limiters carries no rate limit headers and is not limited.
    let r = get(port, "/free", &[]).await;
    assert_eq!(r.status, 200);
    assert!(!r.has_header("ratelimit-limit"), "{r:?}");

    // Refill: 2/s is one request every 500 ms.
    assert_eq!(get(port, "/fast", &[]).await.status, 200);
    assert_eq!(get(port, "/fast", &[]).await.status, 200);
    let r = get(port, "/fast", &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(num(&r, "retry-after"), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(port, "/fast", &[]).await.status, 200, "refilled by one");
    assert_eq!(get(port, "/fast", &[]).await.status, 429, "by one only");

    assert_eq!(
        pc.metric("portcullis_rate_limited_total", &[("limiter", "per-ip")])
            .await,
        2.0
    );
    assert_eq!(
        pc.metric("portcullis_rate_limited_total", &[("limiter", "fast")])
            .await,
        2.0
    );
    // The audit event is sampled: one line for the first refusal of a key, the others
    // counted into the line that closes the interval.
    let line = pc
        .wait_for_stdout_line(|l| l.contains("rate_limited") && l.contains("\"per-ip\""))
        .await
        .expect("a rate_limited audit line");
    assert!(line.contains("\"count\":1"), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
    let lines = pc
        .stdout()
        .lines()
        .filter(|l| l.contains("\"rate_limited\"") && l.contains("\"per-ip\""))
        .count();
    assert_eq!(lines, 1, "{}", pc.stdout());
}

#[tokio::test]
async fn every_key_kind_and_forged_forwarded_for() {
    let pc = Portcullis::with_routes(
        "rate_limits:
  - name: api
    key: header:X-Api-Key
    limit: 1/m
  - name: per-route
    key: route
    limit: 1/m
  - name: per-ip
    key: client_ip
    limit: 1/m
routes:
  - path: /api
    upstream: static://200
    auth: none
    rate_limit: [api]
  - name: a
    path: /a
    upstream: static://200
    auth: none
    rate_limit: [per-route]
  - name: b
    path: /b
    upstream: static://200
    auth: none
    rate_limit: [per-route]
  - path: /ip
    upstream: static://200
    auth: none
    rate_limit: [per-ip]
",
    );
    let port = pc.http_port();
    // header: one budget per value; without the header, the client address.
    let key_a = ("x-api-key", "sk-live-AAAA-secret");
    let key_b = ("x-api-key", "sk-live-BBBB-secret");
    assert_eq!(get(port, "/api", &[key_a]).await.status, 200);
    assert_eq!(get(port, "/api", &[key_a]).await.status, 429);
    assert_eq!(get(port, "/api", &[key_b]).await.status, 200);
    assert_eq!(get(port, "/api", &[]).await.status, 200);
    assert_eq!(get(port, "/api", &[]).await.status, 429);
    // A long header value is a key like any other.
    let long = "k".repeat(6000);
    assert_eq!(get(port, "/api", &[("x-api-key", &long)]).await.status, 200);
    assert_eq!(get(port, "/api", &[("x-api-key", &long)]).await.status, 429);
    // route: one budget per route, for everyone.
    assert_eq!(get(port, "/a", &[]).await.status, 200);
    assert_eq!(get(port, "/a", &[]).await.status, 429);
    assert_eq!(get(port, "/b", &[]).await.status, 200);
    // client_ip: 127.0.0.1 is no trusted proxy here, so X-Forwarded-For buys nothing.
    assert_eq!(
        get(port, "/ip", &[("x-forwarded-for", "1.1.1.1")])
            .await
            .status,
        200
    );
    for forged in ["2.2.2.2", "3.3.3.3, 4.4.4.4", "::1"] {
        let r = get(port, "/ip", &[("x-forwarded-for", forged)]).await;
        assert_eq!(r.status, 429, "forged X-Forwarded-For {forged}");
    }
    pc.wait_for_stdout_line(|l| l.contains("\"api\"") && l.contains("rate_limited"))
        .await
        .expect("an audit line for the api limiter");
    let out = pc.stdout();
    assert!(!out.contains("AAAA"), "an API key in the log:\n{out}");
    assert!(out.contains("sha256:"), "{out}");

    // Behind a trusted proxy, its X-Forwarded-For names the client: one budget each.
    let pc = Portcullis::start(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  trusted_proxies: [127.0.0.1/32]\n\
         admin:\n  listen: 127.0.0.1:@ADMIN@\n\
         rate_limits:\n  - { name: per-ip, key: client_ip, limit: 1/m }\n\
         routes:\n  - { path: /, upstream: \"static://200\", auth: none, rate_limit: [per-ip] }\n",
    );
    let port = pc.http_port();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(get(port, "/", &from("192.0.2.1")).await.status, 200);
    assert_eq!(get(port, "/", &from("192.0.2.2")).await.status, 200);
    assert_eq!(get(port, "/", &from("192.0.2.1")).await.status, 429);
    // IPv6 clients count by their /64.
    assert_eq!(get(port, "/", &from("2001:db8::1")).await.status, 200);
    assert_eq!(get(port, "/", &from("2001:db8::2:3")).await.status, 429);
}

fn alice_users(setup: &Setup) {
    setup.write(
        "users.yaml",
        users_yaml(&[TestUser {
            name: "alice",
            password: "pw-alice",
            extra: &[],
        }]),
    );
}

#[tokio::test]
async fn user_keys_after_authentication_and_the_auth_endpoints_limiter() {
    let setup = Setup::new();
    alice_users(&setup);
    let yaml = config(
        "  trusted_proxies: [127.0.0.1/32]\n",
        "",
        "",
        "  - path: /
    upstream: static://200
    auth: required
    rate_limit: [per-user]
rate_limits:
  - name: per-user
    key: user
    limit: 1/m
    burst: 2
",
    );
    let pc = setup.start(&yaml);
    let port = pc.http_port();
    let login = FormClient::from_address(port, "10.1.1.1");
    let (r, _) = login.password("/", "alice", "pw-alice").await;
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = session_cookie(&r).expect("a session cookie");
    let cookie = cookie.split(';').next().unwrap().to_string();
    // Alice's budget follows her from address to address.
    for (ip, status) in [("10.0.0.1", 200), ("10.0.0.2", 200), ("10.0.0.3", 429)] {
        let r = get(
            port,
            "/",
            &[JSON, ("cookie", &cookie), ("x-forwarded-for", ip)],
        )
        .await;
        assert_eq!(r.status, status, "alice from {ip}: {r:?}");
    }
    // Anonymous requests count by address, and requests refused for authentication count.
    let anon = [JSON, ("x-forwarded-for", "10.0.0.9")];
    assert_eq!(get(port, "/", &anon).await.status, 401);
    assert_eq!(get(port, "/", &anon).await.status, 401);
    assert_eq!(get(port, "/", &anon).await.status, 429);

    // auth-endpoints (built in: 30/m, burst 10, per client address) on the login form.
    let path = "/.portcullis/login?rd=/";
    let from = [("accept", "text/html"), ("x-forwarded-for", "10.2.2.2")];
    for i in 0..10 {
        let r = get(port, path, &from).await;
        assert_eq!(r.status, 200, "login form {i}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"auth-endpoints\";q=10;w=20")
        );
    }
    let r = get(port, path, &from).await;
    assert_eq!(r.status, 429);
    assert_eq!(num(&r, "retry-after"), 2);
    // Another address is not affected.
    let r = get(port, path, &[("x-forwarded-for", "10.2.2.3")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        pc.metric(
            "portcullis_rate_limited_total",
            &[("limiter", "auth-endpoints")]
        )
        .await,
        1.0
    );
}

fn redis_config(redis: &RedisServer, store: &str, rest: &str) -> String {
    config(
        "  trusted_proxies: [127.0.0.1/32]\n",
        &format!("  store: redis\n  redis: {{ url: \"{}\" }}\n", redis.url()),
        "",
        &format!(
            "  - path: /
    upstream: static://200
    auth: none
    rate_limit: [shared]
rate_limits:
  - name: shared
    key: client_ip
    store: {store}
{rest}"
        ),
    )
}

#[tokio::test]
async fn two_replicas_share_one_redis_budget_exactly() {
    let redis = RedisServer::start();
    let yaml = redis_config(&redis, "redis", "    limit: 1/m\n    burst: 5\n");
    let one = Setup::new();
    alice_users(&one);
    let one = one.start(&yaml);
    let two = Setup::new();
    alice_users(&two);
    let two = two.start(&yaml);
    let from = [("x-forwarded-for", "198.51.100.7")];
    let mut statuses = Vec::new();
    for i in 0..8 {
        let port = if i % 2 == 0 {
            one.http_port()
        } else {
            two.http_port()
        };
        let r = get(port, "/", &from).await;
        if r.status == 429 {
            let retry = num(&r, "retry-after");
            assert!((59..=60).contains(&retry), "Retry-After {retry}");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // One key per subject under the session prefix, expiring with its TAT; no address in it.
    let mut conn = redis.raw();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("portcullis:rl:shared:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains("198.51"), "{keys:?}");
    let pttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut conn).unwrap();
    assert!(pttl > 240_000 && pttl <= 300_000, "PTTL {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dies_under_load_and_limiting_goes_on() {
    let mut redis = RedisServer::start();
    let yaml = redis_config(&redis, "redis", "    limit: 1/m\n    burst: 3\n");
    let setup = Setup::new();
    alice_users(&setup);
    let pc = setup.start(&yaml);
    let port = pc.http_port();
    let spent = [("x-forwarded-for", "203.0.113.1")];
    for _ in 0..3 {
        assert_eq!(get(port, "/", &spent).await.status, 200);
    }
    assert_eq!(get(port, "/", &spent).await.status, 429);

    // Load from four clients on their own addresses all through the outage and the restart:
    // every answer is 200 or 429, never a 500.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let ip = format!("198.18.0.{i}");
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.push(get(port, "/", &[("x-forwarded-for", &ip)]).await.status);
                }
                seen
            })
        })
        .collect();

    redis.stop();
    // A key Redis had refused stays refused (the local state followed Redis), and a key new
    // to this replica gets exactly its burst from local state: no 500, no open door.
    let mut fresh = Vec::new();
    for i in 0..40 {
        let r = get(port, "/", &spent).await;
        assert_eq!(
            r.status, 429,
            "spent key, request {i} with Redis down: {r:?}"
        );
        let r = get(port, "/", &[("x-forwarded-for", "203.0.113.2")]).await;
        fresh.push(r.status);
    }
    assert_eq!(&fresh[..4], [200, 200, 200, 429]);
    assert!(fresh[3..].iter().all(|s| *s == 429), "{fresh:?}");
    let errors = pc
        .metric("portcullis_store_errors_total", &[("op", "ratelimit")])
        .await;
    assert!(errors >= 1.0, "store errors {errors}");

    // Redis back (empty): the limiter uses it again.
    redis.restart();
    let back = [("x-forwarded-for", "203.0.113.3")];
    eventually(
        Duration::from_secs(10),
        "rate limits back on Redis",
        || async {
            let status = get(port, "/", &back).await.status;
            assert!(status == 200 || status == 429, "status {status}");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("portcullis:rl:shared:*")
                .query(&mut redis.raw())
                .ok()?;
            (!keys.is_empty()).then_some(())
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for task in load {
        let seen = task.await.unwrap();
        answered += seen.len();
        assert!(seen.iter().all(|s| *s == 200 || *s == 429), "{seen:?}");
        assert!(seen.contains(&429), "each client is limited: {seen:?}");
    }
    assert!(answered > 40, "the load ran: {answered} answers");
}

#[test]
fn check_refuses_bad_limiters_with_their_place() {
    let setup = Setup::new();
    let path = setup.write(
        "portcullis.yaml",
        format!(
            "{SERVER}rate_limits:\n  - name: a\n    key: cookie\n    limit: 0/m\n  - name: b\n    key: client_ip\n    limit: fast\nroutes:\n  - path: /\n    upstream: static://200\n    auth: none\n    rate_limit: [a, missing]\n"
        ),
    );
    let path = path.to_string_lossy().to_string();
    let (code, out, err) = run_cli(&["check", "--config", &path], setup.path(), &[]);
    assert_ne!(code, Some(0), "{out}");
    for expected in [
        format!("{path}:8:5: rate_limits[0].key: unknown key kind \"cookie\""),
        format!("{path}:9:5: rate_limits[0].limit: invalid rate \"0/m\""),
        format!("{path}:12:5: rate_limits[1].limit: invalid rate \"fast\""),
        format!("{path}:17:21: routes[0].rate_limit[1]: no limiter named \"missing\""),
    ] {
        assert!(err.contains(&expected), "{expected}\n--- stderr ---\n{err}");
    }
}

/// A reload keeps the state of every limiter whose definition did not change, and starts a
/// changed one afresh.
#[tokio::test]
async fn a_reload_keeps_unchanged_limiters() {
    let v1 = format!(
        "{SERVER}rate_limits:
  - {{ name: kept, key: client_ip, limit: 1/m }}
  - {{ name: changed, key: client_ip, limit: 1/m }}
routes:
  - {{ path: /kept, upstream: \"static://200\", auth: none, rate_limit: [kept] }}
  - {{ path: /changed, upstream: \"static://200\", auth: none, rate_limit: [changed] }}
"
    );
    let pc = Portcullis::start(&v1);
    let port = pc.http_port();
    for path in ["/kept", "/changed"] {
        assert_eq!(get(port, path, &[]).await.status, 200);
        assert_eq!(get(port, path, &[]).await.status, 429);
    }
    pc.rewrite_config(&v1.replace(
        "name: changed, key: client_ip, limit: 1/m",
        "name: changed, key: client_ip, limit: 2/m",
    ));
    pc.wait_for_stdout_line(|l| l.contains("\"event\":\"config_reloaded\""))
        .await
        .unwrap_or_else(|| panic!("no reload:\n{}", pc.stdout()));
    assert_eq!(get(port, "/kept", &[]).await.status, 429, "state kept");
    let r = get(port, "/changed", &[]).await;
    assert_eq!(r.status, 200, "a new definition starts afresh");
    assert_eq!(r.header("ratelimit-policy"), Some("\"changed\";q=1;w=30"));
}
