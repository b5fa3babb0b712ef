//! `allow.mfa`: a session without multi-factor authentication is sent to log in again at the
//! IdP (`prompt=login`, and `acr_values` when configured) and comes back to the page it asked
//! for; a step-up that still brings no MFA ends in 403, never in a redirect loop.

mod support;

use support::idp::{Browser, Idp, IdpClient, IdpConfig, OTP, PASSWORD};
use support::{Portcullis, Setup, Upstream};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

struct World {
    idp: Idp,
    up: Upstream,
    pc: Portcullis,
}

impl World {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }
}

/// `mfa` is the provider's `mfa:` block (YAML flow map), or empty for the defaults.
fn world(mfa: &str) -> World {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = Idp::start(IdpConfig::default().client(IdpClient::new(
        "portcullis",
        "portcullis-secret",
        &format!("{base}/.portcullis/callback"),
    )));
    let up = Upstream::start();
    let mfa = if mfa.is_empty() {
        String::new()
    } else {
        format!("    mfa: {mfa}\n")
    };
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\nadmin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n{mfa}\
         routes:\n  - {{ path: /, upstream: \"{up}\" }}\n  - {{ path: /secure, upstream: \"{up}\", allow: {{ groups: [staff], mfa: true }} }}\n",
        issuer = idp.issuer(),
        up = up.url(),
    );
    let pc = setup.start(&yaml);
    World { idp, up, pc }
}

#[tokio::test]
async fn a_password_session_steps_up_with_a_second_factor_and_returns() {
    let w = world("");
    w.pc.ready().await;
    let browser = Browser::new();
    let home = browser
        .login(&format!("{}/", w.base()), "alice", PASSWORD)
        .await;
    assert_eq!(home.status, 200, "{}", home.body);

    // The first hop names the step-up; the IdP shows its login form although alice has an
    // IdP session (prompt=login).
    let first = browser
        .get_once(&format!("{}/secure/report?y=2", w.base()))
        .await;
    assert_eq!(first.status, 302);
    assert!(
        first.location().unwrap().contains("step_up=1"),
        "{:?}",
        first.location()
    );
    let form = browser
        .get(&format!("{}/secure/report?y=2", w.base()))
        .await;
    assert!(form.has_login_form(), "the IdP asks again: {}", form.body);

    let back = browser
        .complete_login_with_otp(form, "alice", PASSWORD, OTP)
        .await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.url.path(), "/secure/report");
    assert_eq!(back.url.query(), Some("y=2"));
    let seen = w.up.last();
    assert_eq!(seen.path(), "/secure/report");
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));

    // The IdP was asked for a fresh login.
    let line = w
        .idp
        .wait_for_line(|l| l.starts_with("LOGIN ") && l.contains("prompt=login"))
        .await
        .expect("a LOGIN event for the step-up");
    assert!(line.contains("mfa"), "{line}");
    // And the session now passes without further ado.
    let again = browser.get(&format!("{}/secure/other", w.base())).await;
    assert_eq!(again.status, 200);
    let steps =
        w.pc.metric(
            "portcullis_auth_decisions_total",
            &[("route", "*/secure"), ("decision", "step_up")],
        )
        .await;
    assert_eq!(
        steps, 2.0,
        "one step-up decision for each of the two first visits"
    );
}

#[tokio::test]
async fn a_step_up_without_a_second_factor_ends_in_403_not_a_loop() {
    let w = world("");
    w.pc.ready().await;
    let browser = Browser::new();
    browser
        .login(&format!("{}/", w.base()), "alice", PASSWORD)
        .await;
    let form = browser.get(&format!("{}/secure", w.base())).await;
    assert!(form.has_login_form());
    let after = browser.complete_login(form, "alice", PASSWORD).await;
    assert_eq!(after.status, 403, "{}", after.body);
    assert!(after.body.contains("multi-factor"), "{}", after.body);
    // Visiting again does not start another round trip.
    let again = browser.get_once(&format!("{}/secure", w.base())).await;
    assert_eq!(again.status, 403);
    let line = w
        .pc
        .wait_for_stdout_line(|l| l.contains("\"access_denied\"") && l.contains("multi-factor"))
        .await
        .expect("an access_denied event naming MFA");
    assert!(line.contains("\"user\":\"alice\""), "{line}");
}

#[tokio::test]
async fn mfa_sessions_pass_and_programs_get_403_not_a_redirect() {
    let w = world("");
    w.pc.ready().await;
    // bob's IdP login already reports amr [pwd, otp, mfa].
    let bob = Browser::new();
    let page = bob
        .login(&format!("{}/secure", w.base()), "bob", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("bob"));

    let alice = Browser::new();
    alice
        .login(&format!("{}/", w.base()), "alice", PASSWORD)
        .await;
    let cookie = alice.cookie_for(&w.base(), "_portcullis").unwrap();
    let r = support::http_client()
        .get(format!("{}/secure", w.base()))
        .header("cookie", format!("_portcullis={cookie}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn configured_acr_values_count_as_mfa_and_are_asked_for() {
    // Only the acr counts: amr values are ignored with an empty amr list.
    let w = world("{ amr: [], acr: [\"urn:portcullis:test:loa:2\"] }");
    w.pc.ready().await;
    let bob = Browser::new();
    let page = bob
        .login(&format!("{}/secure", w.base()), "bob", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "bob's acr is loa:2: {}", page.body);

    let alice = Browser::new();
    alice
        .login(&format!("{}/", w.base()), "alice", PASSWORD)
        .await;
    let form = alice.get(&format!("{}/secure", w.base())).await;
    assert!(form.has_login_form());
    let back = alice
        .complete_login_with_otp(form, "alice", PASSWORD, OTP)
        .await;
    assert_eq!(back.status, 200, "{}", back.body);
    let line = w
        .idp
        .wait_for_line(|l| l.starts_with("LOGIN ") && l.contains("acr_values="))
        .await
        .expect("the step-up asked for acr_values");
    assert!(line.contains("urn:portcullis:test:loa:2"), "{line}");
}
