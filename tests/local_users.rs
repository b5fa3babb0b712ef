//! The built-in directory's server side over raw HTTP: unknown, disabled and wrong-password
//! logins look and take the same; brute-force regulation per (user, client address) — a ban
//! with 429 and `Retry-After`, another address still logging in — shared by two replicas
//! through Redis along with used TOTP codes; the users file reloads on an edit and on a rename
//! (and an invalid one is refused); `check` points into a bad users file; forward auth with a
//! local provider.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use redis_support::RedisServer;
use std::time::{Duration, Instant};
use support::local::{
    config, fresh_code, session_cookie, state_of, users_yaml, FormClient, TestUser, TOTP_SECRET,
};
use support::{eventually, raw_get, run_cli, write_atomically, Portcullis, Setup};

const ECHO: &str = "  - name: app\n    path: /\n    upstream: echo://\n";
const TRUSTED: &str = "  trusted_proxies: [127.0.0.1]\n";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn unknown_disabled_and_wrong_password_look_and_take_the_same() {
    let setup = Setup::new();
    setup.write(
        "users.yaml",
        users_yaml(&[
            TestUser {
                name: "alice",
                password: "pw-alice",
                extra: &[],
            },
            TestUser {
                name: "dora",
                password: "pw-dora",
                extra: &["disabled: true"],
            },
        ]),
    );
    let pc = setup.start(&config(
        TRUSTED,
        "",
        "    regulation: { max_retries: 100 }\n",
        ECHO,
    ));
    let c = FormClient::new(pc.http_port());
    let mut times: Vec<(&str, Vec<Duration>)> = Vec::new();
    let mut pages: Vec<(u16, String)> = Vec::new();
    for (label, user, password) in [
        ("wrong password", "alice", "nope"),
        ("unknown user", "zed", "nope"),
        ("disabled user", "dora", "pw-dora"),
    ] {
        let mut samples = Vec::new();
        for i in 0..7 {
            let form = c.open("/").await;
            let started = Instant::now();
            let r = c
                .post(
                    &form.state,
                    form.cookie.as_deref(),
                    &[("username", user), ("password", password)],
                )
                .await;
            samples.push(started.elapsed());
            assert!(session_cookie(&r).is_none(), "{label}");
            if i == 0 {
                // The same page, but for the name typed back into the field.
                let page = r.text().replace(&format!("value=\"{user}\""), "value=\"\"");
                let page = match state_of(&page) {
                    Some(s) => page.replace(&s, "STATE"),
                    None => page,
                };
                pages.push((r.status, page));
            }
        }
        times.push((label, samples));
    }
    assert!(
        pages.iter().all(|p| p == &pages[0]),
        "the same status and page: {pages:#?}"
    );
    assert_eq!(pages[0].0, 401);
    let medians: Vec<(&str, Duration)> = times.into_iter().map(|(l, s)| (l, median(s))).collect();
    let fastest = medians.iter().map(|m| m.1).min().unwrap();
    let slowest = medians.iter().map(|m| m.1).max().unwrap();
    // Each costs one argon2id verification: the same order of magnitude, by a wide margin.
    assert!(
        slowest < fastest * 3 && fastest > Duration::from_millis(5),
        "medians differ too much: {medians:?}"
    );
    let audit = pc.stdout();
    for reason in ["wrong password", "unknown user", "user disabled"] {
        assert!(
            audit.contains(&format!("\"reason\":\"{reason}\"")),
            "{reason} audited"
        );
    }
    assert!(
        !audit.contains("pw-dora") && !audit.contains("nope"),
        "no password in logs"
    );
}

#[tokio::test]
async fn bans_one_user_from_one_address_only() {
    let setup = Setup::new();
    setup.write(
        "users.yaml",
        users_yaml(&[TestUser {
            name: "alice",
            password: "pw-alice",
            extra: &[],
        }]),
    );
    let pc = setup.start(&config(
        TRUSTED,
        "",
        "    regulation: { max_retries: 3, find_time: 10m, ban_time: 60s }\n",
        ECHO,
    ));
    let attacker = FormClient::from_address(pc.http_port(), "203.0.113.7");
    for _ in 0..2 {
        let (r, _) = attacker.password("/", "alice", "guess").await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // The third failure starts the ban.
    let (r, _) = attacker.password("/", "alice", "guess").await;
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "Retry-After: {retry}");
    // Even the right password from there is refused now.
    let (r, _) = attacker.password("/", "alice", "pw-alice").await;
    assert_eq!(r.status, 429);
    assert!(r.has_header("retry-after"));
    assert!(session_cookie(&r).is_none());
    // Alice, from her own address, is not locked out.
    let alice = FormClient::from_address(pc.http_port(), "198.51.100.20");
    let (r, _) = alice.password("/", "alice", "pw-alice").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(session_cookie(&r).is_some());
    // Unknown names count as well (no user is told apart by the ban).
    for _ in 0..2 {
        let (r, _) = attacker.password("/", "ghost", "x").await;
        assert_eq!(r.status, 401);
    }
    let (r, _) = attacker.password("/", "ghost", "x").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        pc.metric("portcullis_login_bans_total", &[("provider", "local")])
            .await,
        2.0
    );
    assert!(
        pc.metric(
            "portcullis_logins_total",
            &[("provider", "local"), ("result", "failure")]
        )
        .await
            >= 6.0
    );
    let line = pc
        .wait_for_stdout_line(|l| l.contains("\"login_failure\"") && l.contains("banned for 60s"))
        .await
        .expect("the ban is audited");
    assert!(line.contains("203.0.113.7"), "{line}");
}

/// Two replicas on one Redis: failures counted on either ban on both, and a TOTP code used on
/// one is refused by the other.
#[tokio::test]
async fn replicas_share_bans_and_used_codes_through_redis() {
    let redis = RedisServer::start();
    let users = users_yaml(&[TestUser {
        name: "alice",
        password: "pw",
        extra: &[&format!("totp: {TOTP_SECRET}")],
    }]);
    let session = format!("  store: redis\n  redis: {{ url: \"{}\" }}\n", redis.url());
    let yaml = config(
        TRUSTED,
        &session,
        "    regulation: { max_retries: 3, ban_time: 60s }\n",
        ECHO,
    );
    let start = || {
        let setup = Setup::new();
        setup.write("users.yaml", &users);
        setup.start(&yaml)
    };
    let (a, b) = (start(), start());
    a.ready().await;
    b.ready().await;

    let code = fresh_code(TOTP_SECRET, 12).await;
    let on_a = FormClient::new(a.http_port());
    let on_b = FormClient::new(b.http_port());
    let (r, form) = on_a.password("/", "alice", "pw").await;
    let second = state_of(&r.text()).expect("the second step");
    let r = on_a
        .post(&second, form.cookie.as_deref(), &[("code", &code)])
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let (r, form) = on_b.password("/", "alice", "pw").await;
    let second = state_of(&r.text()).expect("the second step");
    let r = on_b
        .post(&second, form.cookie.as_deref(), &[("code", &code)])
        .await;
    assert_eq!(
        r.status,
        401,
        "the code was used on the other replica: {}",
        r.text()
    );

    // One failure so far (the replayed code, from 127.0.0.1); two more across replicas ban.
    let x = FormClient::from_address(a.http_port(), "192.0.2.9");
    let y = FormClient::from_address(b.http_port(), "192.0.2.9");
    assert_eq!(x.password("/", "alice", "bad").await.0.status, 401);
    assert_eq!(y.password("/", "alice", "bad").await.0.status, 401);
    assert_eq!(x.password("/", "alice", "bad").await.0.status, 429);
    let (r, _) = y.password("/", "alice", "pw").await;
    assert_eq!(r.status, 429, "banned on the other replica too");
}

#[tokio::test]
async fn the_users_file_reloads_on_edit_and_rename() {
    let setup = Setup::new();
    let path = setup.write(
        "users.yaml",
        users_yaml(&[
            TestUser {
                name: "alice",
                password: "pw-alice",
                extra: &[],
            },
            TestUser {
                name: "bob",
                password: "pw-bob",
                extra: &[],
            },
        ]),
    );
    let pc = setup.start(&config("", "", "", ECHO));
    let c = FormClient::new(pc.http_port());
    let (r, _) = c.password("/", "bob", "pw-bob").await;
    let bob = session_cookie(&r).expect("bob logs in");
    let port = pc.http_port();
    let host = format!("127.0.0.1:{port}");
    let bob_headers = [("Cookie", bob.as_str())];
    let as_bob = || raw_get(port, &host, "/.portcullis/userinfo", &bob_headers);
    assert_eq!(as_bob().await.status, 200);

    // An edit in place adds carol.
    std::fs::write(
        &path,
        users_yaml(&[
            TestUser {
                name: "alice",
                password: "pw-alice",
                extra: &[],
            },
            TestUser {
                name: "bob",
                password: "pw-bob",
                extra: &[],
            },
            TestUser {
                name: "carol",
                password: "pw-carol",
                extra: &[],
            },
        ]),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "carol can log in", || async {
        let (r, _) = c.password("/", "carol", "pw-carol").await;
        (r.status == 303).then_some(())
    })
    .await;

    // A new file renamed over it removes bob: he cannot log in, and his session ends.
    write_atomically(
        &path,
        users_yaml(&[TestUser {
            name: "alice",
            password: "pw-alice",
            extra: &[],
        }])
        .as_bytes(),
    );
    eventually(Duration::from_secs(10), "bob is gone", || async {
        let (r, _) = c.password("/", "bob", "pw-bob").await;
        (r.status == 401).then_some(())
    })
    .await;
    assert_eq!(
        as_bob().await.status,
        401,
        "bob's session ended with his entry"
    );

    // An invalid file is refused and logged: the users stay as they were.
    write_atomically(&path, b"users:\n  alice:\n    pasword: x\n");
    pc.wait_for_stdout_line(|l| {
        l.contains("configuration rejected") && l.contains("users.yaml:3:5")
    })
    .await
    .expect("the invalid users file is logged with its place");
    let (r, _) = c.password("/", "alice", "pw-alice").await;
    assert_eq!(r.status, 303, "alice still logs in: {}", r.text());
}

#[test]
fn check_points_into_a_bad_users_file() {
    let setup = Setup::new();
    setup.write(
        "users.yaml",
        "users:\n  alice:\n    password: plaintext\n    emial: a@example.com\n  bob:\n    password: \"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1c1yS5eMAP3rhTEaTjkdWq5cQaJqb6b2vGvyRPlwhOo\"\n    totp: \"not base32!\"\n",
    );
    let yaml = setup.render(&config("", "", "    totp: sometimes\n", ECHO));
    let config_path = setup.write("portcullis.yaml", yaml);
    let (code, out, err) = run_cli(
        &["check", "--config", &config_path.to_string_lossy()],
        setup.path(),
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    let users = setup.path().join("users.yaml");
    let users = users.to_string_lossy();
    let config_file = config_path.to_string_lossy();
    for want in [
        format!("{users}:3:5: users.alice.password: not a PHC hash string"),
        format!("{users}:4:5: users.alice.emial: unknown key"),
        format!("{users}:7:5: users.bob.totp: not a base32 secret"),
        format!("{config_file}:14:5: providers[0].totp: unknown value \"sometimes\""),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "{want}\nnot in:\n{err}"
        );
    }
}

#[tokio::test]
async fn forward_auth_sends_browsers_to_the_form_and_passes_identities() {
    let setup = Setup::new();
    setup.write(
        "users.yaml",
        users_yaml(&[TestUser {
            name: "alice",
            password: "pw",
            extra: &["groups: [staff]"],
        }]),
    );
    let routes = "  - host: app.test\n    allow: { groups: [staff] }\n";
    let pc = setup.start(&config(TRUSTED, "", "", routes));
    let port = pc.http_port();
    let check = |cookie: Option<String>| async move {
        let mut headers = vec![
            ("x-forwarded-method", "GET".to_string()),
            ("x-forwarded-proto", "http".to_string()),
            ("x-forwarded-host", "app.test".to_string()),
            ("x-forwarded-uri", "/private".to_string()),
            ("accept", "text/html".to_string()),
        ];
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        raw_get(port, "127.0.0.1", "/.portcullis/auth", &h).await
    };
    let r = check(None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!(
            "http://127.0.0.1:{port}/.portcullis/login?rd=http%3A%2F%2Fapp.test%2Fprivate"
        )),
        "{location}"
    );
    let c = FormClient::new(port);
    let (r, _) = c.password("http://app.test/private", "alice", "pw").await;
    assert_eq!(
        r.status,
        200,
        "another host: a page that moves on: {}",
        r.text()
    );
    assert!(
        r.text()
            .contains("http://app.test/.portcullis/session?code="),
        "{}",
        r.text()
    );
    let cookie = session_cookie(&r).unwrap();
    let r = check(Some(cookie)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-auth-request-user"), Some("alice"));
    assert_eq!(r.header("x-auth-request-groups"), Some("staff"));
    // An unauthenticated API call through the same door: 401, never the form.
    let r = raw_get(
        port,
        "127.0.0.1",
        "/.portcullis/auth",
        &[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/api"),
        ],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_config_may_have_both_kinds_and_start_goes_to_the_form() {
    let setup = Setup::new();
    setup.write(
        "users.yaml",
        users_yaml(&[TestUser {
            name: "alice",
            password: "pw",
            extra: &[],
        }]),
    );
    let yaml = config("", "", "", "  - name: app\n    path: /\n    upstream: echo://\n    provider: local\n")
        .replace(
            "providers:\n",
            "providers:\n  - id: corp\n    type: oidc\n    issuer: http://127.0.0.1:1\n    client_id: portcullis\n    client_secret: s\n",
        );
    let pc: Portcullis = setup.start(&yaml);
    let port = pc.http_port();
    let host = format!("127.0.0.1:{port}");
    let r = raw_get(port, &host, "/x", &[("Accept", "text/html")]).await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .contains("/.portcullis/login?rd="),
        "{:?}",
        r.headers
    );
    let r = raw_get(
        port,
        &host,
        "/.portcullis/start?rd=%2Fx&provider=local",
        &[],
    )
    .await;
    assert_eq!(r.status, 302);
    assert!(r
        .header("location")
        .unwrap()
        .contains("/.portcullis/login?rd="));
    let c = FormClient::new(port);
    let (r, _) = c.password("/x", "alice", "pw").await;
    assert_eq!(r.status, 303, "{}", r.text());
}

#[test]
fn gen_totp_prints_a_secret_its_uri_and_a_qr_code() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_cli(&["gen-totp", "--user", "alice"], dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    let secret = out.lines().nth(1).unwrap().trim();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    assert_eq!(bytes.len(), 20, "160 bits");
    assert!(out.contains(&format!("    totp: {secret}")), "{out}");
    assert!(
        out.contains(&format!(
            "otpauth://totp/Portcullis:alice?secret={secret}&issuer=Portcullis"
        )),
        "{out}"
    );
    let qr: Vec<&str> = out.lines().filter(|l| l.contains('█')).collect();
    assert!(qr.len() > 10, "a QR code drawn in the terminal: {out}");
    // Two runs, two secrets; a bad name is refused.
    let (_, again, _) = run_cli(&["gen-totp", "--user", "alice"], dir.path(), &[]);
    assert_ne!(again.lines().nth(1), out.lines().nth(1));
    let (code, _, err) = run_cli(&["gen-totp", "--user", "a b"], dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn bearer_routes_need_an_oidc_provider() {
    let setup = Setup::new();
    setup.write(
        "users.yaml",
        users_yaml(&[TestUser {
            name: "alice",
            password: "pw",
            extra: &[],
        }]),
    );
    let yaml = setup.render(&config(
        "",
        "",
        "",
        "  - path: /\n    upstream: echo://\n    bearer: true\n",
    ));
    let path = setup.write("portcullis.yaml", yaml);
    let (code, _, err) = run_cli(
        &["check", "--config", &path.to_string_lossy()],
        setup.path(),
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("routes[0].bearer: bearer tokens need an OpenID Connect provider"),
        "{err}"
    );
}
