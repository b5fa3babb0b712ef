//! The test IdP's hooks for token-verification and step-up suites, against the real IdP:
//! `POST /__test/sign` (real, fresh, unsigned and HS256-confused JWTs), `client_credentials`
//! JWT access tokens for a resource server, and step-up logins with a one-time code.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use support::idp::{self, jwt_parts, Browser, Idp, IdpClient, IdpConfig, IdpUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// RFC 7636 appendix B: a verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

const LOA1: &str = "urn:portcullis:test:loa:1";

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

/// The one key of the IdP's JWKS (as served at its `jwks_uri`) and every kid in it.
async fn jwks_key(idp: &Idp) -> (Value, Vec<String>) {
    let jwks = idp.jwks().await;
    let keys = jwks["keys"].as_array().expect("JWKS keys").clone();
    assert_eq!(keys.len(), 1, "{jwks}");
    let kids = keys
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect();
    (keys[0].clone(), kids)
}

/// Whether Node's own crypto accepts `token`'s signature: made by `jwk` with the JWK's `alg`,
/// or, with `hs256_pem`, an HMAC-SHA256 keyed with that public key's PEM text.
fn node_verifies(token: &str, jwk: &Value, hs256_pem: bool) -> bool {
    const SCRIPT: &str = r#"
const crypto = require('node:crypto');
const [token, jwkText, mode] = process.argv.slice(1);
const jwk = JSON.parse(jwkText);
const [h, p, s] = token.split('.');
const data = Buffer.from(`${h}.${p}`);
const sig = Buffer.from(s, 'base64url');
const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
let ok;
if (mode === 'hs256_pem') {
  const mac = crypto.createHmac('sha256', key.export({ type: 'spki', format: 'pem' })).update(data).digest();
  ok = mac.length === sig.length && crypto.timingSafeEqual(mac, sig);
} else if (jwk.alg === 'RS256') {
  ok = crypto.verify('sha256', data, key, sig);
} else if (jwk.alg === 'ES256') {
  ok = crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
} else {
  ok = crypto.verify(null, data, key, sig);
}
process.stdout.write(ok ? 'valid' : 'invalid');
"#;
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_string());
    let mode = if hs256_pem { "hs256_pem" } else { "key" };
    let out = Command::new(node)
        .args(["-e", SCRIPT, token, &jwk.to_string(), mode])
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout == "valid"
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims(idp: &Idp) -> Value {
    let t = now();
    json!({
        "iss": idp.issuer(),
        "aud": "https://api.test",
        "sub": "alice",
        "iat": t,
        "exp": t + 300,
        "scope": "orders:read",
    })
}

#[tokio::test]
async fn sign_real_uses_the_jwks_key_and_kid() {
    let idp = Idp::start(IdpConfig::default());
    let (jwk, kids) = jwks_key(&idp).await;
    let payload = claims(&idp);

    let token = idp.sign_jwt(Value::Null, payload.clone(), "real").await;
    let (header, body) = jwt_parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["alg"], jwk["alg"]);
    assert!(kids.contains(&header["kid"].as_str().unwrap().to_string()));
    assert_eq!(body, payload, "the payload is used verbatim");
    assert!(node_verifies(&token, &jwk, false));

    // Header fields given are added, or override the defaults; null removes one.
    let token = idp
        .sign_jwt(
            json!({ "typ": "at+jwt", "kid": null }),
            payload.clone(),
            "real",
        )
        .await;
    let (header, _) = jwt_parts(&token);
    assert_eq!(header, json!({ "alg": "RS256", "typ": "at+jwt" }));
    assert!(node_verifies(&token, &jwk, false));

    // A header alg override changes only what the header says.
    let token = idp
        .sign_jwt(json!({ "alg": "RS512" }), payload.clone(), "real")
        .await;
    assert_eq!(jwt_parts(&token).0["alg"], "RS512");
    assert!(node_verifies(&token, &jwk, false));

    assert_eq!(idp.counter("signed:real").await, 3);
    assert_eq!(
        idp.wait_for_events("SIGNED", &[("key", "real")], 3).await,
        3
    );
}

#[tokio::test]
async fn sign_fresh_none_and_hs256_jwks() {
    let idp = Idp::start(IdpConfig::default());
    let (jwk, kids) = jwks_key(&idp).await;
    let real_kid = kids[0].clone();
    let payload = claims(&idp);

    // fresh: another key, under a kid the JWKS does not have.
    let fresh = idp.sign_jwt(Value::Null, payload.clone(), "fresh").await;
    let (header, body) = jwt_parts(&fresh);
    assert_eq!(header["alg"], "RS256");
    let kid = header["kid"].as_str().expect("a kid").to_string();
    assert!(!kids.contains(&kid), "{kid} is in the JWKS");
    assert_eq!(body, payload);
    assert!(!node_verifies(&fresh, &jwk, false));

    // fresh under the real kid: the wrong key where the right one is expected.
    let wrong = idp
        .sign_jwt(json!({ "kid": real_kid }), payload.clone(), "fresh")
        .await;
    let (header, _) = jwt_parts(&wrong);
    assert_eq!(header["kid"], real_kid.as_str());
    assert_eq!(header["alg"], "RS256");
    assert!(!node_verifies(&wrong, &jwk, false));

    // none: unsigned.
    let none = idp.sign_jwt(Value::Null, payload.clone(), "none").await;
    assert!(none.ends_with('.'), "{none}");
    assert_eq!(none.split('.').count(), 3);
    let (header, body) = jwt_parts(&none);
    assert_eq!(header, json!({ "alg": "none" }));
    assert_eq!(body, payload);

    // hs256_jwks: an HMAC keyed with the public key's PEM, under the real kid.
    let confused = idp
        .sign_jwt(Value::Null, payload.clone(), "hs256_jwks")
        .await;
    let (header, body) = jwt_parts(&confused);
    assert_eq!(header, json!({ "alg": "HS256", "kid": real_kid }));
    assert_eq!(body, payload);
    assert!(node_verifies(&confused, &jwk, true));
    assert!(!node_verifies(&confused, &jwk, false));

    // A string payload is sent as it is, e.g. not JSON at all.
    let raw = idp.sign_jwt(Value::Null, json!("not json"), "real").await;
    assert_eq!(raw.split('.').nth(1), Some("bm90IGpzb24"));
    assert!(node_verifies(&raw, &jwk, false));

    // Bad requests are refused.
    let http = idp::direct_client();
    for body in [
        json!({ "payload": {}, "key": "other" }),
        json!({ "key": "real" }),
        json!({ "payload": {}, "key": "real", "header": [1] }),
    ] {
        let resp = http
            .post(idp.url("/__test/sign"))
            .body(body.to_string())
            .send()
            .await
            .expect("sign request");
        assert_eq!(resp.status(), 400, "{body}");
    }
}

#[tokio::test]
async fn sign_follows_the_configured_algorithm() {
    let idp = Idp::start(IdpConfig {
        signing_alg: Some("ES256".into()),
        ..IdpConfig::default()
    });
    let (jwk, kids) = jwks_key(&idp).await;
    assert_eq!(jwk["alg"], "ES256");
    let real = idp.sign_jwt(Value::Null, claims(&idp), "real").await;
    assert_eq!(
        jwt_parts(&real).0,
        json!({ "alg": "ES256", "kid": kids[0] })
    );
    assert!(node_verifies(&real, &jwk, false));
    let fresh = idp.sign_jwt(Value::Null, claims(&idp), "fresh").await;
    assert_eq!(jwt_parts(&fresh).0["alg"], "ES256");
    assert!(!node_verifies(&fresh, &jwk, false));
    let confused = idp.sign_jwt(Value::Null, claims(&idp), "hs256_jwks").await;
    assert!(node_verifies(&confused, &jwk, true));
}

#[tokio::test]
async fn client_credentials_gives_a_jwt_for_the_resource_server() {
    let idp = Idp::start(
        IdpConfig::default()
            .client(IdpClient::service("svc", "svc-secret"))
            .client(
                IdpClient::new("web", "web-secret", "http://127.0.0.1:9/cb").grant_types(&[
                    "authorization_code",
                    "refresh_token",
                    "client_credentials",
                ]),
            )
            .resource_server("https://api.test", "orders:read orders:write", 120)
            .resource_server("https://other.test", "other:read", 30),
    );
    let (jwk, kids) = jwks_key(&idp).await;

    let token = idp
        .client_credentials_token("svc", "svc-secret", "https://api.test", "orders:read")
        .await;
    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(kids.contains(&header["kid"].as_str().unwrap().to_string()));
    assert!(node_verifies(&token, &jwk, false));
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], "https://api.test");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["client_id"], "svc");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 120, "{claims}");
    assert!(iat.abs_diff(now()) < 60, "{claims}");
    assert_eq!(
        idp.wait_for_events(
            "GRANT",
            &[("grant_type", "client_credentials"), ("client_id", "svc")],
            1
        )
        .await,
        1
    );

    // Scopes outside the resource server's are dropped; the other server's TTL applies.
    let token = idp
        .client_credentials_token(
            "web",
            "web-secret",
            "https://other.test",
            "other:read orders:read",
        )
        .await;
    let (_, claims) = jwt_parts(&token);
    assert_eq!(claims["aud"], "https://other.test");
    assert_eq!(claims["scope"], "other:read");
    assert_eq!(claims["client_id"], "web");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        30
    );

    // The default client lacks the grant; an unknown resource is refused.
    let http = idp::direct_client();
    for (id, secret, resource) in [
        ("portcullis", "portcullis-secret", "https://api.test"),
        ("svc", "svc-secret", "https://unknown.test"),
        ("svc", "wrong", "https://api.test"),
    ] {
        let resp = http
            .post(idp.url("/token"))
            .basic_auth(id, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", "orders:read"),
            ])
            .send()
            .await
            .expect("token request");
        assert!(
            resp.status().is_client_error(),
            "{id} {resource}: {}",
            resp.status()
        );
    }
}

/// An authorization request for `client` with PKCE, plus `extra` parameters.
fn authorize_url(idp: &Idp, client: &str, redirect_uri: &str, extra: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse(&idp.url("/auth")).expect("url");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email")
        .append_pair("state", "st4te")
        .append_pair("nonce", "n0nce")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256")
        .extend_pairs(extra);
    url.to_string()
}

/// The ID token for the code on `landed`.
async fn id_token(idp: &Idp, landed: &idp::Page, redirect_uri: &str) -> Value {
    assert_eq!(landed.body, "landed", "{landed:?}");
    let code = landed.query_param("code").expect("code");
    let resp = idp::direct_client()
        .post(idp.url("/token"))
        .basic_auth("rp", Some("rp-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .expect("token request");
    let text = resp.text().await.expect("body");
    let tokens: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    jwt_parts(tokens["id_token"].as_str().expect("id_token")).1
}

async fn rp_idp(users: &[IdpUser]) -> (Idp, String) {
    let rp = landing_server().await;
    let redirect_uri = format!("{rp}/callback");
    let mut config = IdpConfig::with_client("rp", "rp-secret", &redirect_uri);
    for u in users {
        config = config.user(u.clone());
    }
    (Idp::start(config), redirect_uri)
}

#[tokio::test]
async fn the_right_otp_makes_a_step_up_login() {
    let (idp, redirect_uri) = rp_idp(&[]).await;
    let browser = Browser::new();
    let form = browser
        .get(&authorize_url(&idp, "rp", &redirect_uri, &[]))
        .await;
    assert!(form.has_login_form(), "{form:?}");
    assert_eq!(
        form.forms()[0].field("otp"),
        Some(""),
        "the form has an empty otp field"
    );
    // alice's own acr is loa:1 with amr pwd; the code makes it loa:2, pwd otp mfa.
    let landed = browser
        .complete_login_with_otp(form, "alice", idp::PASSWORD, idp::OTP)
        .await;
    let claims = id_token(&idp, &landed, &redirect_uri).await;
    assert_eq!(claims["acr"], idp::STEP_UP_ACR);
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    let line = idp
        .wait_for_line(|l| l.starts_with("LOGIN "))
        .await
        .expect("a LOGIN line");
    assert_eq!(
        line,
        format!("LOGIN sub=alice acr={} amr=pwd,otp,mfa", idp::STEP_UP_ACR)
    );
    assert_eq!(idp.counter("login_otp").await, 1);

    // Without a code, the user's own acr and amr.
    let browser = Browser::new();
    let landed = browser
        .login(
            &authorize_url(&idp, "rp", &redirect_uri, &[]),
            "alice",
            idp::PASSWORD,
        )
        .await;
    let claims = id_token(&idp, &landed, &redirect_uri).await;
    assert_eq!(claims["acr"], LOA1);
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert_eq!(
        idp.wait_for_events("LOGIN", &[("sub", "alice"), ("amr", "pwd")], 1)
            .await,
        1
    );
}

#[tokio::test]
async fn a_wrong_otp_fails_like_a_wrong_password() {
    let (idp, redirect_uri) = rp_idp(&[IdpUser::new("erin").otp("424242")]).await;
    let browser = Browser::new();
    let form = browser
        .get(&authorize_url(&idp, "rp", &redirect_uri, &[]))
        .await;
    let again = browser
        .complete_login_with_otp(form, "alice", idp::PASSWORD, "000000")
        .await;
    assert_eq!(again.status, 401);
    assert!(again.has_login_form());
    assert!(
        again.body.contains("Invalid one-time code"),
        "{}",
        again.body
    );
    assert_eq!(
        idp.wait_for_events(
            "LOGIN_FAILED",
            &[("username", "alice"), ("reason", "otp")],
            1
        )
        .await,
        1
    );

    // erin has her own code: the default one is wrong for her.
    let again = browser
        .complete_login_with_otp(again, "erin", idp::PASSWORD, idp::OTP)
        .await;
    assert_eq!(again.status, 401);
    assert_eq!(idp.counter("login_failure").await, 2);
    assert_eq!(idp.counter("login").await, 0);

    // A wrong password with the right code is a wrong password.
    let again = browser
        .complete_login_with_otp(again, "erin", "nope", "424242")
        .await;
    assert_eq!(again.status, 401);
    assert_eq!(
        idp.wait_for_events("LOGIN_FAILED", &[("reason", "password")], 1)
            .await,
        1
    );

    let landed = browser
        .complete_login_with_otp(again, "erin", idp::PASSWORD, "424242")
        .await;
    let claims = id_token(&idp, &landed, &redirect_uri).await;
    assert_eq!(claims["sub"], "erin");
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(idp.counter("login").await, 1);
}

#[tokio::test]
async fn prompt_login_asks_again_despite_a_session_and_is_logged() {
    let (idp, redirect_uri) = rp_idp(&[]).await;
    let browser = Browser::new();
    let landed = browser
        .login(
            &authorize_url(&idp, "rp", &redirect_uri, &[]),
            "carol",
            idp::PASSWORD,
        )
        .await;
    assert_eq!(landed.body, "landed");
    assert_eq!(idp.wait_for_events("LOGIN", &[], 1).await, 1);

    // The IdP session is alive: a plain request goes straight back, no form.
    let silent = browser
        .get_until(
            &authorize_url(&idp, "rp", &redirect_uri, &[]),
            &redirect_uri,
        )
        .await;
    assert!(silent.stopped_at.is_some(), "{silent:?}");
    assert!(silent.query_param("code").is_some());

    // prompt=login shows the form anyway; the LOGIN line says what was asked for.
    let step_up = authorize_url(
        &idp,
        "rp",
        &redirect_uri,
        &[
            ("prompt", "login"),
            ("acr_values", idp::STEP_UP_ACR),
            ("max_age", "300"),
        ],
    );
    let form = browser.get_until(&step_up, &redirect_uri).await;
    assert!(
        form.stopped_at.is_none() && form.has_login_form(),
        "{form:?}"
    );
    let landed = browser
        .complete_login_with_otp(form, "carol", idp::PASSWORD, idp::OTP)
        .await;
    let claims = id_token(&idp, &landed, &redirect_uri).await;
    assert_eq!(claims["acr"], idp::STEP_UP_ACR);
    assert_eq!(idp.wait_for_events("LOGIN", &[], 2).await, 2);
    let line = idp
        .lines()
        .into_iter()
        .rfind(|l| l.starts_with("LOGIN "))
        .unwrap();
    assert_eq!(
        line,
        format!(
            "LOGIN sub=carol acr={0} amr=pwd,otp,mfa prompt=login acr_values={0} max_age=300",
            idp::STEP_UP_ACR
        )
    );
    assert_eq!(
        idp.count_events("LOGIN", &[("prompt", "login"), ("amr", "pwd,otp,mfa")]),
        1
    );

    // max_age=0 asks again too: oidc-provider turns it into prompt=login, logged as such.
    let form = browser
        .get_until(
            &authorize_url(&idp, "rp", &redirect_uri, &[("max_age", "0")]),
            &redirect_uri,
        )
        .await;
    assert!(
        form.stopped_at.is_none() && form.has_login_form(),
        "{form:?}"
    );
    let landed = browser.complete_login(form, "carol", idp::PASSWORD).await;
    assert_eq!(landed.body, "landed");
    assert_eq!(idp.wait_for_events("LOGIN", &[], 3).await, 3);
    let line = idp
        .lines()
        .into_iter()
        .rfind(|l| l.starts_with("LOGIN "))
        .unwrap();
    assert_eq!(
        line,
        format!("LOGIN sub=carol acr={LOA1} amr=pwd prompt=login")
    );
}

#[test]
fn new_config_fields_reach_server_js() {
    let config = IdpConfig::default()
        .client(IdpClient::service("svc", "s"))
        .user(IdpUser::new("erin").otp("999"))
        .resource_server("https://api.test", "a b", 42);
    let json: Value = serde_json::from_str(&config.to_json()).expect("valid JSON");
    assert_eq!(
        json["clients"][0]["grant_types"],
        json!(["client_credentials"])
    );
    assert_eq!(json["clients"][0]["redirect_uris"], json!([]));
    assert_eq!(json["users"]["erin"]["otp"], "999");
    assert_eq!(
        json["resource_servers"]["https://api.test"],
        json!({ "scope": "a b", "access_token_ttl": 42 })
    );
}
