//! The built-in login form (`type: local`) in a real browser (Debian's chromium, driven by
//! playwright-core): a protected page sends the browser to the form, the password (and a TOTP
//! code computed here, as an authenticator app would) logs in, and the app receives the
//! identity headers; `mfa: true` routes accept a TOTP login and step a password-only session
//! up; a form posted from another site is refused. Raw-HTTP checks of the second step
//! (replayed codes, recovery codes, a replayed step) and of hostile return URLs complete it.

mod support;

use serde_json::json;
use support::local::{
    browser, config, fresh_code, last_step, session_cookie, users_yaml, FormClient, TestUser,
    TOTP_SECRET,
};
use support::{raw_get, Portcullis, Setup};

const ROUTES: &str = "  - name: app
    path: /
    upstream: echo://
  - name: admin
    path: /admin
    upstream: echo://
    allow: { mfa: true }
";

fn start(users: &[TestUser<'_>], provider_extra: &str) -> Portcullis {
    let setup = Setup::new();
    setup.write("users.yaml", users_yaml(users));
    setup.start(&config("", "", provider_extra, ROUTES))
}

fn alice_totp() -> String {
    format!("totp: {TOTP_SECRET}")
}

#[tokio::test]
async fn a_browser_logs_in_and_the_app_sees_who() {
    let pc = start(
        &[TestUser {
            name: "alice",
            password: "correct horse",
            extra: &[
                "email: alice@example.com",
                "name: Alice Example",
                "groups: [staff, admins]",
            ],
        }],
        "",
    );
    let base = format!("http://127.0.0.1:{}", pc.http_port());
    let report = browser(json!({
        "url": format!("{base}/hello?x=1"),
        "user": "alice",
        "password": "correct horse",
        "then": [format!("{base}/.portcullis/userinfo")],
    }));
    let steps = report["steps"].as_array().unwrap();
    // The protected page sent the browser to the form, on the public URL.
    assert!(
        steps[0]["url"]
            .as_str()
            .unwrap()
            .contains("/.portcullis/login?rd="),
        "{report:#}"
    );
    assert_eq!(steps[0]["fields"], json!(["state", "username", "password"]));
    // After the password, the page it asked for, with the identity headers.
    let echo = &steps[1];
    assert_eq!(echo["url"], format!("{base}/hello?x=1"), "{report:#}");
    let text = echo["text"].as_str().unwrap();
    for want in [
        "x-auth-request-user\talice",
        "x-auth-request-email\talice@example.com",
        "x-auth-request-groups\tstaff,admins",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    assert!(
        !text.contains("_portcullis"),
        "no cookie of ours reaches the app: {text}"
    );
    let info: serde_json::Value =
        serde_json::from_str(last_step(&report)["text"].as_str().unwrap()).unwrap();
    assert_eq!(info["user"], "alice");
    assert_eq!(info["provider"], "local");
    assert_eq!(info["amr"], json!(["pwd"]));
    let line = pc
        .wait_for_stdout_line(|l| l.contains("\"login_success\"") && l.contains("alice"))
        .await
        .expect("a login_success audit event");
    assert!(!line.contains("correct horse"), "{line}");
}

#[tokio::test]
async fn totp_logs_in_with_mfa_and_mfa_routes_accept_it() {
    let totp = alice_totp();
    let pc = start(
        &[TestUser {
            name: "alice",
            password: "pw-alice",
            extra: &[&totp],
        }],
        "",
    );
    let base = format!("http://127.0.0.1:{}", pc.http_port());
    let code = fresh_code(TOTP_SECRET, 10).await;
    let report = browser(json!({
        "url": format!("{base}/admin/panel"),
        "user": "alice",
        "password": "pw-alice",
        "codes": [code],
        "then": [format!("{base}/.portcullis/userinfo")],
    }));
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[1]["title"], "Two-step verification", "{report:#}");
    assert_eq!(steps[1]["fields"], json!(["state", "code"]));
    assert_eq!(steps[2]["url"], format!("{base}/admin/panel"), "{report:#}");
    assert!(steps[2]["text"]
        .as_str()
        .unwrap()
        .contains("x-auth-request-user\talice"));
    let info: serde_json::Value =
        serde_json::from_str(last_step(&report)["text"].as_str().unwrap()).unwrap();
    assert_eq!(info["amr"], json!(["pwd", "otp"]));
}

#[tokio::test]
async fn a_password_only_session_is_stepped_up_then_refused() {
    let pc = start(
        &[TestUser {
            name: "bob",
            password: "pw-bob",
            extra: &[],
        }],
        "",
    );
    let base = format!("http://127.0.0.1:{}", pc.http_port());
    // bob logs in for /admin (mfa: true): his session has no second factor, so the browser is
    // sent to log in again (step-up); a step-up login that still brings none gets 403.
    let report = browser(json!({
        "url": format!("{base}/admin"),
        "user": "bob",
        "password": "pw-bob",
        "logins": 2,
        "then": [format!("{base}/")],
    }));
    let steps = report["steps"].as_array().unwrap();
    let again = steps[1]["url"].as_str().unwrap();
    assert!(
        again.contains("/.portcullis/login") && again.contains("step_up=1"),
        "{report:#}"
    );
    assert_eq!(steps[2]["status"], 403, "{report:#}");
    assert!(
        steps[2]["text"].as_str().unwrap().contains("multi-factor"),
        "{report:#}"
    );
    // The rest of the app still works for him.
    assert_eq!(steps[3]["status"], 200);
    assert!(steps[3]["text"]
        .as_str()
        .unwrap()
        .contains("x-auth-request-user\tbob"));
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused() {
    let pc = start(
        &[TestUser {
            name: "mallory",
            password: "pw-mallory",
            extra: &[],
        }],
        "",
    );
    let base = format!("http://127.0.0.1:{}", pc.http_port());
    // The attacker's own form token and the attacker's credentials, posted from another page
    // (about:blank: `Origin: null`, `Sec-Fetch-Site: cross-site`) after the victim opened the
    // form once (so the victim has a binding cookie of its own).
    let c = FormClient::new(pc.http_port());
    let attacker = c.open("/").await;
    let report = browser(json!({
        "url": format!("{base}/.portcullis/login?rd=%2F"),
        "cross_site": {
            "action": format!("{base}/.portcullis/login"),
            "fields": { "state": attacker.state, "username": "mallory", "password": "pw-mallory" },
        },
        "then": [format!("{base}/.portcullis/userinfo")],
    }));
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[1]["status"], 403, "{report:#}");
    assert_eq!(last_step(&report)["status"], 401, "no session: {report:#}");
    pc.wait_for_stdout_line(|l| l.contains("\"login_failure\"") && l.contains("cross-site"))
        .await
        .expect("a login_failure audit event");
}

#[tokio::test]
async fn the_form_token_must_be_this_browsers_own() {
    let pc = start(
        &[TestUser {
            name: "alice",
            password: "pw",
            extra: &[],
        }],
        "",
    );
    let c = FormClient::new(pc.http_port());
    let mine = c.open("/").await;
    let theirs = c.open("/").await;
    let creds = [("username", "alice"), ("password", "pw")];
    // No token, a forged one, no cookie, another browser's cookie: an expired form (400).
    for (state, cookie) in [
        ("", mine.cookie.as_deref()),
        ("forged", mine.cookie.as_deref()),
        (mine.state.as_str(), None),
        (mine.state.as_str(), theirs.cookie.as_deref()),
    ] {
        let r = c.post(state, cookie, &creds).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("expired"), "{}", r.text());
        assert!(session_cookie(&r).is_none());
    }
    // A foreign Origin, Origin: null, Sec-Fetch-Site: cross-site: 403.
    for extra in [
        [("Origin", "http://evil.test")],
        [("Origin", "null")],
        [("Sec-Fetch-Site", "cross-site")],
    ] {
        let r = c
            .post_raw(&mine.state, mine.cookie.as_deref(), &creds, &extra)
            .await;
        assert_eq!(r.status, 403, "{extra:?}: {}", r.text());
    }
    // Its own token and cookie: signed in (303 to the return URL, on this origin).
    let r = c.post(&mine.state, mine.cookie.as_deref(), &creds).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(session_cookie(&r).is_some());
    let page = c.open("/").await;
    assert!(page.body.contains("autocomplete=\"current-password\""));
}

#[tokio::test]
async fn codes_are_single_use_and_the_second_step_needs_the_first() {
    let totp = alice_totp();
    let recovery = portcullis::password::hash("rcv-1111-2222").unwrap();
    let recovery_line = format!("recovery_codes: [\"{recovery}\"]");
    let pc = start(
        &[TestUser {
            name: "alice",
            password: "pw",
            extra: &[&totp, &recovery_line],
        }],
        "    regulation: { max_retries: 20 }\n",
    );
    let c = FormClient::new(pc.http_port());
    let code = fresh_code(TOTP_SECRET, 12).await;

    // The password leads to the second step.
    let (r, form) = c.password("/", "alice", "pw").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = support::local::state_of(&r.text()).unwrap();
    assert!(session_cookie(&r).is_none(), "no session before the code");
    let ok = c
        .post(&second, form.cookie.as_deref(), &[("code", &code)])
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert!(session_cookie(&ok).is_some());
    // The same second-step form again: single use.
    let again = c
        .post(&second, form.cookie.as_deref(), &[("code", &code)])
        .await;
    assert_eq!(again.status, 400, "{}", again.text());

    // The same code in a new login: refused.
    let (r, form) = c.password("/", "alice", "pw").await;
    let second = support::local::state_of(&r.text()).unwrap();
    let replay = c
        .post(&second, form.cookie.as_deref(), &[("code", &code)])
        .await;
    assert_eq!(replay.status, 401, "{}", replay.text());
    assert!(session_cookie(&replay).is_none());
    pc.wait_for_stdout_line(|l| l.contains("TOTP code already used"))
        .await
        .expect("the replay is audited");

    // A recovery code works once, then never again.
    let retry = support::local::state_of(&replay.text()).unwrap();
    let r = c
        .post(&retry, form.cookie.as_deref(), &[("code", "rcv-1111-2222")])
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let (r, form) = c.password("/", "alice", "pw").await;
    let second = support::local::state_of(&r.text()).unwrap();
    let r = c
        .post(
            &second,
            form.cookie.as_deref(),
            &[("code", "rcv-1111-2222")],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    pc.wait_for_stdout_line(|l| l.contains("recovery code already used"))
        .await
        .expect("the reuse is audited");

    // A second-step state cannot be made without the first: a first-step token is no
    // second-step one, and the code field alone does nothing.
    let form = c.open("/").await;
    let r = c
        .post(&form.state, form.cookie.as_deref(), &[("code", &code)])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(session_cookie(&r).is_none());
}

#[tokio::test]
async fn totp_required_refuses_users_without_a_secret() {
    let totp = alice_totp();
    let pc = start(
        &[
            TestUser {
                name: "alice",
                password: "pw",
                extra: &[&totp],
            },
            TestUser {
                name: "bob",
                password: "pw",
                extra: &[],
            },
        ],
        "    totp: required\n",
    );
    let c = FormClient::new(pc.http_port());
    let (r, _) = c.password("/", "bob", "pw").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("Two-step verification is required"),
        "{}",
        r.text()
    );
    assert!(session_cookie(&r).is_none());
    let (r, _) = c.password("/", "alice", "pw").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("name=\"code\""));
}

#[tokio::test]
async fn hostile_return_urls_are_refused() {
    let pc = start(
        &[TestUser {
            name: "a",
            password: "pw",
            extra: &[],
        }],
        "",
    );
    let port = pc.http_port();
    for rd in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "javascript:alert(1)",
        "http://127.0.0.1:1/",
        "http://127.0.0.1@evil.example/",
        "/\t/evil.example",
    ] {
        let enc: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let r = raw_get(
            port,
            &format!("127.0.0.1:{port}"),
            &format!("/.portcullis/login?rd={enc}"),
            &[("Accept", "text/html")],
        )
        .await;
        assert_eq!(r.status, 400, "{rd}: {}", r.text());
        assert!(!r.text().contains("name=\"password\""), "{rd}");
    }
    // A relative one is fine, and is where the login returns.
    let c = FormClient::new(port);
    let (r, _) = c.password("/somewhere?q=1", "a", "pw").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:{port}/somewhere?q=1").as_str())
    );
}
