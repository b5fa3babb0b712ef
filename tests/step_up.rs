//! `allow.mfa`: a session without multi-factor authentication is sent to log in again at the
//! IdP (`prompt=login`, and `acr_values` when configured) and comes back to the page it asked
//! for; a step-up that still brings no MFA ends in 403, never in a redirect loop.

mod support;

use support::idp::{Browser, Idp, IdpClient, IdpConfig, IdpUser, OTP, PASSWORD};
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
    world_with_users(mfa, &[])
}

/// As [`world`], with more users at the IdP.
fn world_with_users(mfa: &str, users: &[IdpUser]) -> World {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let mut config = IdpConfig::default().client(IdpClient::new(
        "portcullis",
        "portcullis-secret",
        &format!("{base}/.portcullis/callback"),
    ));
    for user in users {
        config = config.user(user.clone());
    }
    let idp = Idp::start(config);
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

// ---------------------------------------------------------------------------------------------
// `amr` and `acr`, each on its own
// ---------------------------------------------------------------------------------------------

/// The `acr` of [`ACR_ONLY`]'s logins: listed by no provider unless a test lists it.
const LOA3: &str = "urn:portcullis:test:loa:3";
/// A staff member whose every login (no one-time code) reports a second factor in `amr`
/// (`hwk`, a hardware key) and a single-factor `acr`.
const AMR_ONLY: &str = "amra";
/// A staff member whose every login reports [`LOA3`] as `acr` and a password-only `amr`.
const ACR_ONLY: &str = "acra";

fn mfa_users() -> [IdpUser; 2] {
    [
        IdpUser::new(AMR_ONLY)
            .email("amra@example.com")
            .groups(&["staff"])
            .acr("urn:portcullis:test:loa:1")
            .amr(&["pwd", "hwk"]),
        IdpUser::new(ACR_ONLY)
            .email("acra@example.com")
            .groups(&["staff"])
            .acr(LOA3)
            .amr(&["pwd"]),
    ]
}

/// The IdP's `LOGIN` line for `user`'s first login must report exactly `acr` and `amr`, and
/// no step-up (`prompt=login`): the control that the user is what the test says it is.
async fn first_login_reported(w: &World, user: &str, acr: &str, amr: &str) {
    let line = w
        .idp
        .wait_for_line(|l| l.starts_with(&format!("LOGIN sub={user} ")))
        .await
        .unwrap_or_else(|| panic!("no LOGIN line for {user}: {:?}", w.idp.lines()));
    let fields: Vec<&str> = line.split(' ').collect();
    assert!(fields.contains(&format!("acr={acr}").as_str()), "{line}");
    assert!(fields.contains(&format!("amr={amr}").as_str()), "{line}");
    assert!(!line.contains("prompt=login"), "{line}");
}

/// `user` logs in straight at `/secure/...` and lands there: no step-up, the app sees them.
async fn passes_as_mfa(w: &World, user: &str) {
    let browser = Browser::new();
    let target = format!("/secure/{user}");
    let page = browser
        .login(&format!("{}{target}", w.base()), user, PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{user} passes as MFA: {}", page.body);
    assert_eq!(page.url.path(), target, "{user} was not stepped up");
    let seen = w.up.last();
    assert_eq!(seen.path(), target);
    assert_eq!(seen.header("x-auth-request-user"), Some(user));
}

/// `user`'s session is refused on `/secure` for lack of MFA, and so is a fresh login with the
/// same factors: a program gets 403 without a redirect; a browser is stepped up, logs in again
/// without a one-time code and gets the 403 page naming MFA; the app never sees either.
async fn refused_as_not_mfa(w: &World, user: &str) {
    let browser = Browser::new();
    let home = browser
        .login(&format!("{}/", w.base()), user, PASSWORD)
        .await;
    assert_eq!(home.status, 200, "{user} logs in: {}", home.body);
    let cookie = browser
        .cookie_for(&w.base(), "_portcullis")
        .expect("a session cookie after login");
    let before = w.up.count();
    let r = support::http_client()
        .get(format!("{}/secure/{user}", w.base()))
        .header("cookie", format!("_portcullis={cookie}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{user} is not MFA here");
    assert!(r.headers().get("location").is_none());
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("multi-factor"), "{user}: {body}");

    let form = browser.get(&format!("{}/secure/{user}", w.base())).await;
    assert!(
        form.has_login_form(),
        "{user} is stepped up: {} {}",
        form.status,
        form.body
    );
    let after = browser.complete_login(form, user, PASSWORD).await;
    assert_eq!(
        after.status, 403,
        "{user} again without MFA: {}",
        after.body
    );
    assert!(after.body.contains("multi-factor"), "{}", after.body);
    assert_eq!(w.up.count(), before, "{user} reached the MFA route");
    let step_up = w
        .idp
        .wait_for_line(|l| {
            l.starts_with(&format!("LOGIN sub={user} ")) && l.contains("prompt=login")
        })
        .await
        .unwrap_or_else(|| panic!("no step-up LOGIN for {user}: {:?}", w.idp.lines()));
    assert!(!step_up.contains("amr=pwd,otp,mfa"), "{step_up}");
    w.pc.wait_for_stdout_line(|l| {
        l.contains("\"access_denied\"")
            && l.contains("multi-factor")
            && l.contains(&format!("\"user\":\"{user}\""))
    })
    .await
    .unwrap_or_else(|| panic!("no access_denied event naming MFA for {user}"));
}

/// An `amr` method in the provider's `mfa.amr` is MFA on its own (the `acr` counts for
/// nothing here); an `acr` that `mfa.acr` does not list is not MFA, whatever else.
#[tokio::test]
async fn an_amr_method_alone_is_mfa_when_mfa_amr_lists_it() {
    let w = world_with_users("{ amr: [hwk], acr: [] }", &mfa_users());
    w.pc.ready().await;
    passes_as_mfa(&w, AMR_ONLY).await;
    first_login_reported(&w, AMR_ONLY, "urn:portcullis:test:loa:1", "pwd,hwk").await;
    refused_as_not_mfa(&w, ACR_ONLY).await;
    first_login_reported(&w, ACR_ONLY, LOA3, "pwd").await;
}

/// An `acr` in the provider's `mfa.acr` is MFA on its own (the `amr` holds no second
/// factor); with `mfa.amr` empty, an `amr` second factor is not MFA.
#[tokio::test]
async fn an_acr_alone_is_mfa_when_mfa_acr_lists_it() {
    let w = world_with_users(&format!("{{ amr: [], acr: [\"{LOA3}\"] }}"), &mfa_users());
    w.pc.ready().await;
    passes_as_mfa(&w, ACR_ONLY).await;
    first_login_reported(&w, ACR_ONLY, LOA3, "pwd").await;
    refused_as_not_mfa(&w, AMR_ONLY).await;
    first_login_reported(&w, AMR_ONLY, "urn:portcullis:test:loa:1", "pwd,hwk").await;
}

/// Lists that name other methods and other levels: neither `hwk` nor loa:3 counts, while a
/// user with a listed `amr` and `acr` (bob) still passes, so the route can be passed at all.
#[tokio::test]
async fn neither_counts_when_the_mfa_settings_do_not_list_it() {
    let w = world_with_users(
        "{ amr: [otp], acr: [\"urn:portcullis:test:loa:2\"] }",
        &mfa_users(),
    );
    w.pc.ready().await;
    passes_as_mfa(&w, "bob").await;
    refused_as_not_mfa(&w, AMR_ONLY).await;
    first_login_reported(&w, AMR_ONLY, "urn:portcullis:test:loa:1", "pwd,hwk").await;
    refused_as_not_mfa(&w, ACR_ONLY).await;
    first_login_reported(&w, ACR_ONLY, LOA3, "pwd").await;
}
