//! The test IdP (`tests/idp/server.js`) and its Rust harness (`tests/support/idp.rs`) work:
//! discovery, a full browser-style login with PKCE, code exchange, userinfo, refresh, logout.

#[path = "support/idp.rs"]
mod idp;

use idp::{Browser, Idp, IdpClient, IdpConfig, IdpUser};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// RFC 7636 appendix B: a verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A relying party's landing page: answers 200 `landed` to anything; returns its base URL.
async fn landing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\nlanded")
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn json(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let text = resp.text().await.expect("response body");
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn discovery_document_names_the_issuer_and_s256() {
    let idp = Idp::start(IdpConfig::default());
    assert!(
        idp.issuer().starts_with("http://127.0.0.1:"),
        "{}",
        idp.issuer()
    );
    let doc = json(
        idp::direct_client()
            .get(idp.discovery_url())
            .send()
            .await
            .expect("discovery"),
    )
    .await;
    assert_eq!(doc["issuer"], idp.issuer());
    let methods = doc["code_challenge_methods_supported"]
        .as_array()
        .expect("methods");
    assert!(methods.iter().any(|m| m == "S256"), "{methods:?}");
    assert!(doc["end_session_endpoint"].is_string());
    let scopes = doc["scopes_supported"].as_array().expect("scopes");
    assert!(scopes.iter().any(|s| s == "groups"), "{scopes:?}");
}

#[tokio::test]
async fn browser_logs_in_exchanges_refreshes_and_logs_out() {
    let rp = landing_server().await;
    let redirect_uri = format!("{rp}/callback");
    let logged_out = format!("{rp}/logged-out");
    let idp = Idp::start(
        IdpConfig::default()
            .client(
                IdpClient::new("smoke", "smoke-secret", &redirect_uri)
                    .post_logout_redirect_uri(&logged_out),
            )
            .user(
                IdpUser::new("erin")
                    .email("erin@example.org")
                    .groups(&["auditors"]),
            )
            .token_ttl(Duration::from_secs(5)),
    );
    let doc = json(
        idp::direct_client()
            .get(idp.discovery_url())
            .send()
            .await
            .expect("discovery"),
    )
    .await;
    let endpoint = |name: &str| doc[name].as_str().expect(name).to_string();

    let mut authorize = reqwest::Url::parse(&endpoint("authorization_endpoint")).expect("url");
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "smoke")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid email profile groups")
        .append_pair("state", "st4te")
        .append_pair("nonce", "n0nce")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");

    // A wrong password shows the form again.
    let browser = Browser::new();
    let form_page = browser.get(authorize.as_str()).await;
    assert_eq!(form_page.status, 200);
    assert!(form_page.has_login_form(), "{form_page:?}");
    let again = idp::login_form_post(&browser, &form_page, "erin", "nope").await;
    assert_eq!(again.status, 401);
    assert!(again.has_login_form());

    // The right one lands on the redirect URI with a code.
    let landed = browser.complete_login(again, "erin", idp::PASSWORD).await;
    assert_eq!(landed.status, 200, "{landed:?}");
    assert_eq!(landed.body, "landed");
    assert!(
        landed.url.as_str().starts_with(&redirect_uri),
        "{}",
        landed.url
    );
    assert_eq!(landed.query_param("state").as_deref(), Some("st4te"));
    assert_eq!(landed.query_param("iss").as_deref(), Some(idp.issuer()));
    let code = landed.query_param("code").expect("code");
    assert_eq!(idp.login_count(), 1);

    let http = idp::direct_client();
    let tokens = json(
        http.post(endpoint("token_endpoint"))
            .basic_auth("smoke", Some("smoke-secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .expect("token request"),
    )
    .await;
    assert_eq!(tokens["expires_in"], 5);
    let access = tokens["access_token"].as_str().expect("access_token");
    let refresh = tokens["refresh_token"].as_str().expect("refresh_token");
    let id_token = tokens["id_token"].as_str().expect("id_token");
    assert_eq!(
        idp.wait_for_events("GRANT", &[("grant_type", "authorization_code")], 1)
            .await,
        1
    );

    let info = json(
        http.get(endpoint("userinfo_endpoint"))
            .bearer_auth(access)
            .send()
            .await
            .expect("userinfo"),
    )
    .await;
    assert_eq!(info["sub"], "erin");
    assert_eq!(info["email"], "erin@example.org");
    assert_eq!(info["groups"], serde_json::json!(["auditors"]));

    assert_eq!(idp.refresh_count(), 0);
    let refreshed = json(
        http.post(endpoint("token_endpoint"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", "smoke"),
                ("client_secret", "smoke-secret"),
            ])
            .send()
            .await
            .expect("refresh request"),
    )
    .await;
    assert!(refreshed["access_token"].is_string());
    assert_eq!(idp.counter("grant:refresh_token").await, 1);
    assert_eq!(
        idp.wait_for_events("GRANT", &[("grant_type", "refresh_token")], 1)
            .await,
        1
    );
    assert_eq!(idp.refresh_count(), 1);

    // RP-initiated logout with id_token_hint: no confirmation, straight back.
    let mut end = reqwest::Url::parse(&endpoint("end_session_endpoint")).expect("url");
    end.query_pairs_mut()
        .append_pair("id_token_hint", id_token)
        .append_pair("post_logout_redirect_uri", &logged_out)
        .append_pair("state", "bye");
    let out = browser.get(end.as_str()).await;
    assert!(out.url.as_str().starts_with(&logged_out), "{out:?}");
    assert_eq!(out.query_param("state").as_deref(), Some("bye"));
    assert_eq!(idp.wait_for_events("LOGOUT", &[], 1).await, 1);

    // The IdP session is gone: the next login asks for the password again.
    let next = browser.get_until(authorize.as_str(), &redirect_uri).await;
    assert!(
        next.stopped_at.is_none() && next.has_login_form(),
        "{next:?}"
    );
}

/// `remove_users` (`"carol": null`) takes the built-in user away at the IdP: her login fails
/// like an unknown user's, while a user left in place logs in on the same form.
#[tokio::test]
async fn a_removed_user_cannot_log_in() {
    let rp = landing_server().await;
    let redirect_uri = format!("{rp}/callback");
    let mut config =
        IdpConfig::default().client(IdpClient::new("smoke", "smoke-secret", &redirect_uri));
    config.remove_users.push("carol".into());
    let idp = Idp::start(config);
    let mut authorize = reqwest::Url::parse(&idp.url("/auth")).expect("url");
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "smoke")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", "st4te")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");
    let browser = Browser::new();
    let form = browser.get(authorize.as_str()).await;
    assert!(form.has_login_form(), "{form:?}");
    let refused = idp::login_form_post(&browser, &form, "carol", idp::PASSWORD).await;
    assert_eq!(refused.status, 401, "carol was removed: {refused:?}");
    assert!(refused.has_login_form());
    assert_eq!(
        idp.wait_for_events("LOGIN_FAILED", &[("username", "carol")], 1)
            .await,
        1
    );
    let landed = browser
        .complete_login(refused, "alice", idp::PASSWORD)
        .await;
    assert_eq!(landed.status, 200, "{landed:?}");
    assert_eq!(landed.body, "landed");
    assert_eq!(idp.login_count(), 1);
}

#[tokio::test]
async fn admin_hooks_fail_the_token_endpoint() {
    let idp = Idp::start(IdpConfig::default());
    idp.fail_token_requests(1, 503).await;
    let http = idp::direct_client();
    let token = idp.url("/token");
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    let first = http
        .post(&token)
        .basic_auth("portcullis", Some("portcullis-secret"))
        .form(&form)
        .send()
        .await
        .expect("token request");
    assert_eq!(first.status(), 503);
    let second = http
        .post(&token)
        .basic_auth("portcullis", Some("portcullis-secret"))
        .form(&form)
        .send()
        .await
        .expect("token request");
    assert_eq!(
        second.status(),
        400,
        "an unknown refresh token is invalid_grant"
    );
    assert_eq!(idp.counter("token_injected_failure").await, 1);
}

#[test]
fn forms_are_parsed_as_a_browser_would_submit_them() {
    let html = r#"<p>x</p><FORM method=post action='/interaction/a&amp;b/login'>
        <input type="hidden" name="xsrf" value="a&quot;b&#39;c&#x26;">
        <input name=username value=bob>
        <input type="checkbox" name="remember" checked>
        <input type="checkbox" name="other">
        <input type="submit" name="go" value="Sign in"><button name="second">No</button>
        </form><form><input name="q"></form>"#;
    let forms = idp::parse_forms(html);
    assert_eq!(forms.len(), 2);
    assert_eq!(forms[0].action, "/interaction/a&b/login");
    assert_eq!(forms[0].method, "POST");
    assert_eq!(
        forms[0].fields,
        [
            ("xsrf", "a\"b'c&"),
            ("username", "bob"),
            ("remember", "on"),
            ("go", "Sign in")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(forms[1].method, "GET");
    assert!(forms[1].has_field("q"));
}

#[test]
fn cookie_jar_honours_domain_path_and_expiry() {
    let b = Browser::new();
    b.set_cookie("http://a.example.com/x/y", "p=1");
    b.set_cookie("http://a.example.com/", "d=2; Domain=.example.com; Path=/");
    b.set_cookie(
        "http://a.example.com/",
        "gone=3; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    );
    b.set_cookie("http://a.example.com/", "evil=4; Domain=other.com");
    b.set_cookie("https://a.example.com/", "s=5; Secure; Max-Age=60");
    assert_eq!(
        b.cookie_for("http://a.example.com/x/z", "p").as_deref(),
        Some("1")
    );
    assert_eq!(b.cookie_for("http://a.example.com/", "p"), None);
    assert_eq!(
        b.cookie_for("http://b.example.com/", "d").as_deref(),
        Some("2")
    );
    assert!(!b.has_cookie("gone"));
    assert!(!b.has_cookie("evil"));
    assert_eq!(b.cookie_for("http://a.example.com/", "s"), None);
    assert_eq!(
        b.cookie_for("https://a.example.com/", "s").as_deref(),
        Some("5")
    );
    b.set_cookie("http://a.example.com/x/y", "p=1; Max-Age=0");
    assert!(!b.has_cookie("p"));
}

#[test]
fn every_config_field_reaches_server_js() {
    let mut config = IdpConfig::with_client("c", "s\"ecret", "http://127.0.0.1:1/cb")
        .user(
            IdpUser::new("zed")
                .amr(&["pwd", "mfa"])
                .acr("x")
                .claim("department", "eng"),
        )
        .token_ttl(Duration::from_secs(3));
    config.remove_users.push("carol".into());
    config.refresh_token_ttl = Some(Duration::from_secs(60));
    config.session_ttl = Some(Duration::from_secs(120));
    config.refresh_tokens = Some(idp::RefreshTokens::OfflineAccess);
    config.rotate_refresh_tokens = Some(false);
    config.consent_form = true;
    config.logout_prompt_always = true;
    config.minimal_id_token = true;
    config.clock_tolerance = Some(Duration::from_secs(1));
    config.signing_alg = Some("EdDSA".into());
    config
        .resource_servers
        .push(("https://api.test".into(), "a b".into()));
    let json: serde_json::Value = serde_json::from_str(&config.to_json()).expect("valid JSON");
    assert_eq!(json["clients"][0]["client_secret"], "s\"ecret");
    assert_eq!(json["users"]["carol"], serde_json::Value::Null);
    // Indexing a missing key also gives Null: server.js removes a built-in user only when its
    // key is present with null (a missing key keeps the user), so require exactly that.
    let users = json["users"].as_object().expect("users is an object");
    assert_eq!(
        users.get("carol"),
        Some(&serde_json::Value::Null),
        "carol must be listed as null to be removed: {users:?}"
    );
    assert!(users.get("zed").is_some_and(serde_json::Value::is_object));
    assert!(!users.contains_key("alice"), "untouched users are left out");
    assert_eq!(json["users"]["zed"]["claims"]["department"], "eng");
    assert_eq!(json["ttl"]["id_token"], 3);
    assert_eq!(json["refresh_tokens"], "offline_access");
    assert_eq!(json["resource_servers"]["https://api.test"]["scope"], "a b");
    // server.js validates its config and refuses to start on a bad one.
    let idp = Idp::start(config);
    assert!(idp.lines()[0].starts_with("READY "));
}

/// Every server a test talks to is on 127.0.0.1, and reqwest sends through a proxy named by
/// `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` unless told not to: on a machine with one set,
/// such a client fails (or is watched). So every client the tests build says `.no_proxy()`,
/// and none uses reqwest's shortcuts with the default client.
#[test]
fn every_http_client_of_the_tests_ignores_proxy_variables() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("support")] {
        for entry in std::fs::read_dir(&dir).expect("reading tests/") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 10, "{files:?}");
    // Spelt in pieces, so that this file does not find itself.
    let builder = ["Client::", "builder()"].concat();
    let shortcuts = [
        ["reqwest::", "get("].concat(),
        ["Client::", "new()"].concat(),
        ["ClientBuilder::", "new()"].concat(),
    ];
    let mut builders = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("reading a test file");
        let line_of = |at: usize| text[..at].lines().count() + 1;
        for (at, _) in text.match_indices(&builder) {
            builders += 1;
            let chain = &text[at..];
            let end = chain
                .find(".build()")
                .unwrap_or_else(|| panic!("{}:{}: no .build()", file.display(), line_of(at)));
            assert!(
                chain[..end].contains(".no_proxy()"),
                "{}:{}: an HTTP client without .no_proxy()",
                file.display(),
                line_of(at)
            );
        }
        for shortcut in &shortcuts {
            if let Some(at) = text.find(shortcut.as_str()) {
                panic!(
                    "{}:{}: {shortcut} uses a client that honours proxy variables",
                    file.display(),
                    line_of(at)
                );
            }
        }
    }
    assert!(builders >= 5, "found only {builders} client builders");
}
