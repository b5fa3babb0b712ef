//! `Authorization: Bearer` JWTs on `bearer: true` routes, end to end: a real IdP (its own
//! `client_credentials` access tokens, and tokens it signs on request with its real key, a
//! fresh key, no key, or its public key as an HMAC secret), the real binary, a real upstream.
//!
//! Every refusal is checked both ways: the client's answer (401 `invalid_token` / 403
//! `insufficient_scope`, never a login redirect) and the app's side (the request never
//! arrived). Tokens never appear in Portcullis' output; refusals are audited.

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::idp::{jwt_parts, Idp, IdpClient, IdpConfig};
use support::{Portcullis, Setup, Upstream};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The relying party Portcullis is at the IdP: its client id is the default audience.
const CLIENT_ID: &str = "portcullis";

// Why a token is refused: the `error_description` of the `invalid_token` challenge, and the
// audit reason after `bearer token refused: `. Each refusal is checked against the one reason
// it must give, so a token refused for another reason fails the test.
const MALFORMED: &str = "the token is not a well-formed JWT";
const ALGORITHM: &str = "the token's algorithm is not accepted";
const UNKNOWN_KEY: &str = "the token is signed by an unknown key";
const SIGNATURE: &str = "the token's signature is invalid";
const EXPIRED: &str = "the token has expired";
const NOT_YET_VALID: &str = "the token is not valid yet";
const AUDIENCE: &str = "the token is not meant for this audience";
const ISSUER: &str = "the token was issued by another issuer";
const MISSING_CLAIM: &str = "the token lacks a required claim";
const ID_TOKEN: &str = "an ID token is not an access token";
const CLIENT: &str = "the token was issued to a client that is not accepted";

const ROUTES: &str = r#"  - { path: /api, upstream: "@UP@", bearer: true }
  - { path: /orders, upstream: "@UP@", bearer: true, scopes: ["orders:read"] }
  - { path: /orders-rw, upstream: "@UP@", bearer: true, scopes: ["orders:read", "orders:write"] }
  - { path: /admin, upstream: "@UP@", bearer: true, allow: { groups: [admins] } }
  - { path: /cookie-only, upstream: "@UP@" }
"#;

struct World {
    idp: Idp,
    up: Upstream,
    pc: Portcullis,
}

impl World {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }

    /// Portcullis' stdout and stderr together.
    fn logs(&self) -> String {
        format!("{}\n{}", self.pc.stdout(), self.pc.stderr())
    }

    /// No token, nor its signature alone, in anything Portcullis wrote. First the logs catch
    /// up: one more request, whose own access line must appear; log lines go out through one
    /// ordered queue, so every line from the requests before it is in the file by then.
    async fn assert_tokens_not_logged(&self, tokens: &[&str]) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static FLUSHES: AtomicUsize = AtomicUsize::new(0);
        let path = format!("/logs-flushed-{}", FLUSHES.fetch_add(1, Ordering::Relaxed));
        send(self, "GET", &path, None, &[]).await;
        let needle = format!("\"path\":\"{path}\"");
        self.pc
            .wait_for_stdout_line(|l| l.contains("\"target\":\"access\"") && l.contains(&needle))
            .await
            .unwrap_or_else(|| panic!("no access line for {path}:\n{}", self.pc.stdout()));
        let logs = self.logs();
        for token in tokens {
            assert!(!logs.contains(token), "a token was logged: {token}");
            let signature = token.rsplit('.').next().unwrap_or_default();
            if signature.len() >= 16 {
                assert!(
                    !logs.contains(signature),
                    "a token's signature was logged: {token}"
                );
            }
        }
    }
}

/// The IdP (with `idp`'s extras and the `portcullis` client), the upstream, and Portcullis
/// with [`ROUTES`]; `provider_extra` is more YAML for the provider (e.g. `audience:`).
fn world_with(idp: IdpConfig, provider_extra: &str, setup: Setup) -> World {
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = Idp::start(idp.client(IdpClient::new(
        CLIENT_ID,
        "portcullis-secret",
        &format!("{base}/.portcullis/callback"),
    )));
    let up = Upstream::start();
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\nadmin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: {CLIENT_ID}\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n{provider_extra}\
         routes:\n{ROUTES}",
        issuer = idp.issuer(),
    )
    .replace("@UP@", &up.url());
    let pc = setup.start(&yaml);
    World { idp, up, pc }
}

/// The default world: RS256, no `audience:` (so the client id is the audience).
async fn world() -> World {
    let w = world_with(IdpConfig::default(), "", Setup::new());
    w.pc.ready().await;
    w
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims of a token Portcullis must accept: the IdP's issuer, the client id as audience,
/// valid for five minutes, a user with an email and groups.
fn good_claims(idp: &Idp) -> Value {
    let t = now();
    json!({
        "iss": idp.issuer(),
        "aud": CLIENT_ID,
        "sub": "u-1001",
        "preferred_username": "alice",
        "email": "alice@example.com",
        "groups": ["staff", "eng"],
        "iat": t,
        "exp": t + 300,
    })
}

/// `base` with the fields of `patch` set; a `null` field is removed.
fn with(base: &Value, patch: Value) -> Value {
    let mut out = base.clone();
    let map = out.as_object_mut().expect("claims are an object");
    for (k, v) in patch.as_object().expect("patch is an object") {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    out
}

/// A token signed with the IdP's real key, default header.
async fn signed(idp: &Idp, claims: Value) -> String {
    idp.sign_jwt(Value::Null, claims, "real").await
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// `method path` with `Authorization: <authorization>` (if any) and `extra` headers; an API
/// client's `Accept` unless `extra` sets one.
async fn send(
    w: &World,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    extra: &[(&str, &str)],
) -> Answer {
    let mut req = support::http_client().request(
        method.parse().expect("method"),
        format!("{}{path}", w.base()),
    );
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
        req = req.header("accept", "application/json");
    }
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// `GET path` with `token` as a Bearer token.
async fn get_with(w: &World, path: &str, token: &str) -> Answer {
    send(w, "GET", path, Some(&format!("Bearer {token}")), &[]).await
}

/// `GET path` with `token` must pass, and reach the app; returns what the app received.
async fn accepted(w: &World, path: &str, token: &str) -> support::Echoed {
    let before = w.up.count();
    let r = get_with(w, path, token).await;
    assert_eq!(
        r.status,
        200,
        "GET {path} with {:?}: {}",
        jwt_parts(token),
        r.body
    );
    assert_eq!(w.up.count(), before + 1, "GET {path} reached the app once");
    let seen = w.up.last();
    assert_eq!(seen.path(), path);
    seen
}

/// `GET path` with `token` must be refused as an invalid token (401, JSON, an
/// `invalid_token` challenge whose description is exactly `why`, one of the reasons above, no
/// redirect), and must not reach the app.
async fn refused_on(w: &World, path: &str, token: &str, why: &str, extra: &[(&str, &str)]) {
    let before = w.up.count();
    let r = send(w, "GET", path, Some(&format!("Bearer {token}")), extra).await;
    assert_eq!(r.status, 401, "{why}: {}", r.body);
    assert_eq!(r.json()["error"], "unauthenticated", "{why}: {}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{why}: {challenge}"
    );
    assert!(challenge.contains(why), "{why}: {challenge}");
    assert_eq!(
        challenge,
        format!("Bearer error=\"invalid_token\", error_description=\"{why}\""),
        "refused for another reason than {why:?}"
    );
    assert!(!challenge.contains(token), "the challenge echoes the token");
    assert!(!r.body.contains(token), "the body echoes the token");
    assert_eq!(
        r.header("location"),
        None,
        "{why}: a refused token is redirected"
    );
    assert_eq!(
        r.header("set-cookie"),
        None,
        "{why}: a refused token gets a cookie"
    );
    assert_eq!(
        w.up.count(),
        before,
        "{why}: a refused token reached the app"
    );
}

async fn refused(w: &World, token: &str, why: &str) {
    refused_on(w, "/api/things", token, why, &[]).await;
}

// ---------------------------------------------------------------------------------------------
// Accepted tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_credentials_tokens_from_the_idp_pass_for_the_configured_audiences() {
    let w = world_with(
        IdpConfig::default()
            .client(IdpClient::service("billing", "billing-secret"))
            .resource_server("https://api.test", "orders:read orders:write", 300)
            .resource_server("https://other.test", "other:read", 300)
            .resource_server("https://third.test", "third:read", 300),
        "    audience: [https://api.test, https://other.test]\n",
        Setup::new(),
    );
    w.pc.ready().await;

    // A real machine token: no user name, no email; the client id is who it is.
    let token = w
        .idp
        .client_credentials_token(
            "billing",
            "billing-secret",
            "https://api.test",
            "orders:read",
        )
        .await;
    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["aud"], "https://api.test");
    let seen = accepted(&w, "/orders/17", &token).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("billing"));
    assert_eq!(seen.method, "GET");
    // Reused: the same answer (and the cached verification must not change the identity).
    let seen = accepted(&w, "/api/things", &token).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("billing"));

    // The second configured audience passes too.
    let other = w
        .idp
        .client_credentials_token(
            "billing",
            "billing-secret",
            "https://other.test",
            "other:read",
        )
        .await;
    let seen = accepted(&w, "/api/other", &other).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("billing"));
    // ... but lacks the scope /orders wants.
    let before = w.up.count();
    let r = get_with(&w, "/orders/17", &other).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(w.up.count(), before);

    // A real token of this IdP for an audience not configured here.
    let third = w
        .idp
        .client_credentials_token(
            "billing",
            "billing-secret",
            "https://third.test",
            "third:read",
        )
        .await;
    refused(&w, &third, AUDIENCE).await;

    // `audience:` replaces the default: the client id is no longer accepted.
    let for_client = signed(&w.idp, good_claims(&w.idp)).await;
    refused(&w, &for_client, AUDIENCE).await;
    // An `aud` list needs one configured audience among its entries.
    let listed = signed(
        &w.idp,
        with(
            &good_claims(&w.idp),
            json!({ "aud": ["https://elsewhere.test", "https://other.test"] }),
        ),
    )
    .await;
    let seen = accepted(&w, "/api/x", &listed).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));

    w.assert_tokens_not_logged(&[&token, &other, &third, &for_client, &listed])
        .await;
}

#[tokio::test]
async fn a_valid_token_passes_with_its_identity_headers() {
    let w = world().await;
    let claims = good_claims(&w.idp);
    let token = signed(&w.idp, claims.clone()).await;

    // A forged identity header from the client is replaced, not passed along.
    let before = w.up.count();
    let r = send(
        &w,
        "GET",
        "/api/me?x=1",
        Some(&format!("Bearer {token}")),
        &[("x-auth-request-user", "mallory")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(w.up.count(), before + 1);
    let seen = w.up.last();
    assert_eq!(seen.uri, "/api/me?x=1");
    assert_eq!(seen.header_all("x-auth-request-user"), vec!["alice"]);
    assert_eq!(
        seen.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(seen.header("x-auth-request-groups"), Some("staff,eng"));

    // The scheme is case-insensitive; an `aud` list holding the client id is fine.
    let r = send(&w, "GET", "/api/me", Some(&format!("bearer {token}")), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = signed(
        &w.idp,
        with(
            &claims,
            json!({ "aud": ["https://elsewhere.test", CLIENT_ID] }),
        ),
    )
    .await;
    accepted(&w, "/api/list", &listed).await;

    // Who the user is falls back: preferred_username, then email, then sub, then client_id.
    let no_name = signed(&w.idp, with(&claims, json!({ "preferred_username": null }))).await;
    let seen = accepted(&w, "/api/a", &no_name).await;
    assert_eq!(
        seen.header("x-auth-request-user"),
        Some("alice@example.com")
    );
    let no_email = signed(
        &w.idp,
        with(
            &claims,
            json!({ "preferred_username": null, "email": null }),
        ),
    )
    .await;
    let seen = accepted(&w, "/api/b", &no_email).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("u-1001"));
    let machine = signed(
        &w.idp,
        with(
            &claims,
            json!({ "preferred_username": null, "email": null, "sub": null, "groups": null,
                    "client_id": "reporting" }),
        ),
    )
    .await;
    let seen = accepted(&w, "/api/c", &machine).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("reporting"));

    // 30 s of leeway: just expired, or valid in a moment, still passes.
    let t = now();
    let just_expired = signed(
        &w.idp,
        with(&claims, json!({ "exp": t - 10, "iat": t - 310 })),
    )
    .await;
    accepted(&w, "/api/d", &just_expired).await;
    let nearly_valid = signed(&w.idp, with(&claims, json!({ "nbf": t + 10 }))).await;
    accepted(&w, "/api/e", &nearly_valid).await;

    w.assert_tokens_not_logged(&[
        &token,
        &listed,
        &no_name,
        &no_email,
        &machine,
        &just_expired,
        &nearly_valid,
    ])
    .await;
}

// ---------------------------------------------------------------------------------------------
// Refused tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_tokens_get_401_invalid_token_are_audited_and_never_logged() {
    let w = world().await;
    let idp = &w.idp;
    let claims = good_claims(idp);
    let t = now();
    let jwks = idp.jwks().await;
    let real_kid = jwks["keys"][0]["kid"].as_str().expect("a kid").to_string();

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired an hour ago",
            signed(
                idp,
                with(&claims, json!({ "exp": t - 3600, "iat": t - 7200 })),
            )
            .await,
            EXPIRED,
        ),
        (
            "another audience",
            signed(
                idp,
                with(&claims, json!({ "aud": "https://elsewhere.test" })),
            )
            .await,
            AUDIENCE,
        ),
        (
            "no audience",
            signed(idp, with(&claims, json!({ "aud": null }))).await,
            MISSING_CLAIM,
        ),
        (
            "another issuer",
            signed(idp, with(&claims, json!({ "iss": "https://evil.test" }))).await,
            ISSUER,
        ),
        (
            "the issuer with a trailing slash",
            signed(
                idp,
                with(&claims, json!({ "iss": format!("{}/", idp.issuer()) })),
            )
            .await,
            ISSUER,
        ),
        (
            "a kid not in the JWKS",
            idp.sign_jwt(Value::Null, claims.clone(), "fresh").await,
            UNKNOWN_KEY,
        ),
        (
            "another key under the real kid",
            idp.sign_jwt(json!({ "kid": real_kid }), claims.clone(), "fresh")
                .await,
            SIGNATURE,
        ),
        (
            "alg none",
            idp.sign_jwt(Value::Null, claims.clone(), "none").await,
            ALGORITHM,
        ),
        (
            "alg none under the real kid",
            idp.sign_jwt(json!({ "kid": real_kid }), claims.clone(), "none")
                .await,
            ALGORITHM,
        ),
        (
            "HS256 keyed with the public key",
            idp.sign_jwt(Value::Null, claims.clone(), "hs256_jwks")
                .await,
            ALGORITHM,
        ),
        (
            "not valid for another hour",
            signed(idp, with(&claims, json!({ "nbf": t + 3600 }))).await,
            NOT_YET_VALID,
        ),
        (
            "no exp",
            signed(idp, with(&claims, json!({ "exp": null }))).await,
            MISSING_CLAIM,
        ),
        ("garbage", "abc.def".to_string(), MALFORMED),
        ("one segment", "abcdef".to_string(), MALFORMED),
        (
            "a payload that is not JSON",
            idp.sign_jwt(Value::Null, json!("not json"), "real").await,
            MALFORMED,
        ),
    ];
    for (name, token, why) in &cases {
        eprintln!("case: {name}");
        refused(&w, token, why).await;
    }

    // A valid token with a flipped bit in its claims (signature unchanged).
    let good = signed(idp, claims.clone()).await;
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let altered = with(&claims, json!({ "preferred_username": "admin" }));
    parts[1] = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(altered.to_string())
    };
    let tampered = parts.join(".");
    refused(&w, &tampered, SIGNATURE).await;

    // A browser's Accept changes nothing: still 401 JSON, no login redirect, on any method.
    let html = [(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    )];
    refused_on(&w, "/api/page", &cases[0].1, EXPIRED, &html).await;
    refused_on(&w, "/api/page", "abc.def", MALFORMED, &html).await;
    refused_on(&w, "/orders/1", &cases[5].1, UNKNOWN_KEY, &html).await;
    let before = w.up.count();
    let r = send(
        &w,
        "POST",
        "/api/form",
        Some("Bearer abc.def"),
        &[
            html[0],
            ("content-type", "application/x-www-form-urlencoded"),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("location"), None);
    assert_eq!(w.up.count(), before);

    // The valid one still passes (nothing above poisoned the cache or the keys).
    accepted(&w, "/api/ok", &good).await;

    // Each refusal is an access_denied audit event giving its own reason, exactly, with no
    // user: one event per refused request on /api, each reason as often as it was the answer.
    let mut expected: Vec<&str> = cases.iter().map(|(_, _, why)| *why).collect();
    // The tampered token, the two with a browser's Accept, and the POST.
    expected.extend([SIGNATURE, EXPIRED, MALFORMED, MALFORMED]);
    let audited = |l: &str| -> Option<Value> {
        let v: Value = serde_json::from_str(l.trim()).ok()?;
        (v["event"] == "access_denied" && v["route"] == "*/api").then_some(v)
    };
    for why in [
        EXPIRED,
        AUDIENCE,
        ISSUER,
        UNKNOWN_KEY,
        SIGNATURE,
        ALGORITHM,
        NOT_YET_VALID,
        MISSING_CLAIM,
        MALFORMED,
    ] {
        let reason = format!("bearer token refused: {why}");
        let line =
            w.pc.wait_for_stdout_line(|l| {
                l.contains("\"access_denied\"")
                    && l.contains("bearer token refused: ")
                    && l.contains(why)
                    && audited(l).is_some_and(|v| v["reason"] == reason.as_str())
            })
            .await
            .unwrap_or_else(|| panic!("no access_denied event for {why}:\n{}", w.pc.stdout()));
        let v: Value = serde_json::from_str(line.trim()).expect("a JSON audit line");
        assert_eq!(v["route"], "*/api", "{line}");
        assert!(v["user"].is_null(), "{line}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("bearer token refused: "),
            "{line}"
        );
    }
    let stdout = w.pc.stdout();
    let mut seen: Vec<String> = stdout
        .lines()
        .filter_map(audited)
        .map(|v| v["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    seen.sort();
    let mut wanted: Vec<String> = expected
        .iter()
        .map(|why| format!("bearer token refused: {why}"))
        .collect();
    wanted.sort();
    assert_eq!(seen, wanted, "one audit event per refusal, with its reason");
    let refusals =
        w.pc.metric(
            "portcullis_auth_decisions_total",
            &[("route", "*/api"), ("decision", "unauthenticated")],
        )
        .await;
    assert!(refusals >= cases.len() as f64, "{refusals}");
    assert_eq!(
        refusals,
        expected.len() as f64,
        "one unauthenticated decision per refused request on /api"
    );

    let mut all: Vec<&str> = cases.iter().map(|(_, t, _)| t.as_str()).collect();
    all.retain(|t| t.len() > 20);
    all.push(&good);
    all.push(&tampered);
    w.assert_tokens_not_logged(&all).await;
}

#[tokio::test]
async fn other_credentials_on_a_bearer_route_count_as_none() {
    let w = world().await;
    let before = w.up.count();
    for authorization in [
        "Basic YWxpY2U6cGFzc3dvcmQ=",
        "Bearer",
        "Bearer ",
        "Token abc.def.ghi",
    ] {
        let r = send(&w, "GET", "/api/things", Some(authorization), &[]).await;
        assert_eq!(r.status, 401, "{authorization}: {}", r.body);
        assert_eq!(r.json()["error"], "unauthenticated", "{authorization}");
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Bearer"),
            "{authorization}: no token, no token error"
        );
        assert_eq!(r.header("location"), None, "{authorization}");
    }
    assert_eq!(w.up.count(), before, "no credentials reached the app");
}

// ---------------------------------------------------------------------------------------------
// Scopes, policies, CSRF, routes without bearer
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn route_scopes_are_all_required_from_scope_or_scp() {
    let w = world().await;
    let claims = good_claims(&w.idp);
    let token = |patch: Value| {
        let c = with(&claims, patch);
        let idp = &w.idp;
        async move { signed(idp, c).await }
    };

    let insufficient = |r: &Answer, wanted: &str| {
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some(format!("Bearer error=\"insufficient_scope\", scope=\"{wanted}\"").as_str()),
        );
        assert_eq!(r.header("location"), None);
    };

    let before = w.up.count();
    for lacking in [
        token(json!({})).await,
        token(json!({ "scope": "orders:write profile" })).await,
        token(json!({ "scope": "orders:readx" })).await,
        token(json!({ "scope": "ORDERS:READ" })).await,
        token(json!({ "scp": ["orders"] })).await,
    ] {
        let r = get_with(&w, "/orders/1", &lacking).await;
        insufficient(&r, "orders:read");
    }
    // A browser gets the same answer, not a login redirect.
    let lacking = token(json!({ "scope": "profile" })).await;
    let r = send(
        &w,
        "GET",
        "/orders/1",
        Some(&format!("Bearer {lacking}")),
        &[("accept", "text/html")],
    )
    .await;
    insufficient(&r, "orders:read");
    // One of two is not enough.
    let read_only = token(json!({ "scope": "openid orders:read" })).await;
    insufficient(
        &get_with(&w, "/orders-rw/1", &read_only).await,
        "orders:read orders:write",
    );
    assert_eq!(
        w.up.count(),
        before,
        "a token lacking scopes reached the app"
    );

    let line =
        w.pc.wait_for_stdout_line(|l| {
            l.contains("\"access_denied\"") && l.contains("bearer token lacks scope orders:")
        })
        .await
        .expect("an access_denied event for the missing scope");
    assert!(line.contains("\"user\":\"alice\""), "{line}");

    // Granted by `scope` (space-separated) or by `scp` (a list, as some IdPs issue it).
    accepted(&w, "/orders/1", &read_only).await;
    accepted(
        &w,
        "/orders/2",
        &token(json!({ "scope": "orders:read" })).await,
    )
    .await;
    accepted(
        &w,
        "/orders/3",
        &token(json!({ "scp": ["orders:read"] })).await,
    )
    .await;
    accepted(
        &w,
        "/orders-rw/1",
        &token(json!({ "scope": "orders:write  orders:read" })).await,
    )
    .await;
    accepted(
        &w,
        "/orders-rw/2",
        &token(json!({ "scp": ["orders:write", "orders:read"] })).await,
    )
    .await;
    // No scopes on the route: none needed.
    accepted(&w, "/api/x", &token(json!({})).await).await;
}

#[tokio::test]
async fn policies_apply_to_the_token_claims() {
    let w = world().await;
    let claims = good_claims(&w.idp);
    let staff = signed(&w.idp, claims.clone()).await;
    let admin = signed(
        &w.idp,
        with(&claims, json!({ "groups": ["staff", "admins"] })),
    )
    .await;

    let before = w.up.count();
    let r = get_with(&w, "/admin/panel", &staff).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(r.header("location"), None);
    assert_eq!(w.up.count(), before, "a forbidden token reached the app");

    let seen = accepted(&w, "/admin/panel", &admin).await;
    assert_eq!(seen.header("x-auth-request-groups"), Some("staff,admins"));

    let line =
        w.pc.wait_for_stdout_line(|l| {
            l.contains("\"access_denied\"") && l.contains("allow rule 0 not met: groups")
        })
        .await
        .expect("an access_denied event for the policy refusal");
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["user"], "alice", "{line}");
    assert_eq!(v["route"], "*/admin", "{line}");
    w.assert_tokens_not_logged(&[&staff, &admin]).await;
}

#[tokio::test]
async fn bearer_tokens_are_ignored_on_routes_without_bearer() {
    let w = world().await;
    let token = signed(&w.idp, good_claims(&w.idp)).await;
    // The same token works where it is accepted ...
    accepted(&w, "/api/x", &token).await;
    // ... and counts for nothing elsewhere: the answer for no credentials at all.
    let before = w.up.count();
    let r = get_with(&w, "/cookie-only/x", &token).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthenticated");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = send(
        &w,
        "POST",
        "/cookie-only/x",
        Some(&format!("Bearer {token}")),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    // A bad token there is not even looked at: no invalid_token error.
    let r = get_with(&w, "/cookie-only/x", "abc.def").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(
        w.up.count(),
        before,
        "a token let a request through a cookie route"
    );
    w.assert_tokens_not_logged(&[&token]).await;
}

#[tokio::test]
async fn bearer_requests_are_exempt_from_csrf_checks() {
    let w = world().await;
    let token = signed(&w.idp, good_claims(&w.idp)).await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let before = w.up.count();
        let r = send(
            &w,
            method,
            "/api/orders",
            Some(&format!("Bearer {token}")),
            &[
                ("origin", "http://evil.test"),
                ("sec-fetch-site", "cross-site"),
                ("content-type", "application/json"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        assert_eq!(w.up.count(), before + 1);
        let seen = w.up.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.header("x-auth-request-user"), Some("alice"));
    }
    // A refused token cross-site is still refused as a bad token.
    let before = w.up.count();
    let r = send(
        &w,
        "POST",
        "/api/orders",
        Some("Bearer abc.def"),
        &[("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(w.up.count(), before);
}

// ---------------------------------------------------------------------------------------------
// Algorithms other than RS256
// ---------------------------------------------------------------------------------------------

async fn algorithm_pinned_by_the_key(alg: &str) {
    let w = world_with(
        IdpConfig {
            signing_alg: Some(alg.into()),
            ..IdpConfig::default()
        }
        .client(IdpClient::service("billing", "billing-secret"))
        .resource_server(&format!("urn:{CLIENT_ID}"), "orders:read", 300),
        &format!("    audience: [{CLIENT_ID}, \"urn:{CLIENT_ID}\"]\n"),
        Setup::new(),
    );
    w.pc.ready().await;
    let claims = good_claims(&w.idp);

    let token = signed(&w.idp, claims.clone()).await;
    assert_eq!(jwt_parts(&token).0["alg"], alg);
    let seen = accepted(&w, "/api/x", &token).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));

    let machine = w
        .idp
        .client_credentials_token(
            "billing",
            "billing-secret",
            &format!("urn:{CLIENT_ID}"),
            "orders:read",
        )
        .await;
    assert_eq!(jwt_parts(&machine).0["alg"], alg);
    let seen = accepted(&w, "/orders/1", &machine).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("billing"));

    // The header claims another algorithm (the signature stays the key's own): refused as an
    // algorithm the key does not take, except another algorithm of an RSA key whose JWKS entry
    // names none (PS256 for RS256), which the key takes, and whose check then fails on the
    // signature.
    let key_names_its_alg = w.idp.jwks().await["keys"][0].get("alg").is_some();
    for other in ["RS256", "PS256", "ES384", "HS256", "EdDSA", "ES256"] {
        if other == alg {
            continue;
        }
        let same_rsa_key = !key_names_its_alg && alg == "RS256" && other == "PS256";
        let why = if same_rsa_key { SIGNATURE } else { ALGORITHM };
        let t = w
            .idp
            .sign_jwt(json!({ "alg": other }), claims.clone(), "real")
            .await;
        let before = w.up.count();
        let r = get_with(&w, "/api/x", &t).await;
        assert_eq!(r.status, 401, "{alg} key, header {other}: {}", r.body);
        assert!(
            r.header("www-authenticate")
                .unwrap_or_default()
                .starts_with("Bearer error=\"invalid_token\""),
            "{alg} key, header {other}"
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{why}\""
            )),
            "{alg} key, header {other}"
        );
        assert_eq!(w.up.count(), before, "{alg} key, header {other}");
    }
    let kid = w.idp.jwks().await["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    refused(
        &w,
        &w.idp
            .sign_jwt(Value::Null, claims.clone(), "hs256_jwks")
            .await,
        ALGORITHM,
    )
    .await;
    refused(
        &w,
        &w.idp.sign_jwt(Value::Null, claims.clone(), "none").await,
        ALGORITHM,
    )
    .await;
    refused(
        &w,
        &w.idp
            .sign_jwt(json!({ "kid": kid }), claims.clone(), "fresh")
            .await,
        SIGNATURE,
    )
    .await;
    refused(
        &w,
        &w.idp.sign_jwt(Value::Null, claims.clone(), "fresh").await,
        UNKNOWN_KEY,
    )
    .await;
    w.assert_tokens_not_logged(&[&token, &machine]).await;
}

#[tokio::test]
async fn rs256_keys_take_rs256_tokens_only() {
    algorithm_pinned_by_the_key("RS256").await;
}

#[tokio::test]
async fn es256_keys_take_es256_tokens_only() {
    algorithm_pinned_by_the_key("ES256").await;
}

#[tokio::test]
async fn eddsa_keys_take_eddsa_tokens_only() {
    algorithm_pinned_by_the_key("EdDSA").await;
}

// ---------------------------------------------------------------------------------------------
// Unknown keys and JWKS re-fetches
// ---------------------------------------------------------------------------------------------

/// Requests Portcullis sent through [`counting_proxy`]: path and when.
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

/// A plain HTTP forward proxy on its own threads (Portcullis reaches its IdP through
/// `HTTP_PROXY`): it records each request's path, delays `/jwks` answers by `jwks_delay` (an
/// IdP across a network), and forwards everything to the origin with `Connection: close`.
fn counting_proxy(jwks_delay: Duration) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let _ = proxy_one(conn, &log, jwks_delay);
            });
        }
    });
    (port, seen)
}

fn proxy_one(client: TcpStream, log: &Seen, jwks_delay: Duration) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Ok(());
    };
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name == "content-length" {
            length = line[line.find(':').map_or(0, |i| i + 1)..]
                .trim()
                .parse()
                .unwrap_or(0);
        }
        if !matches!(
            name.as_str(),
            "connection" | "proxy-connection" | "keep-alive"
        ) {
            head.push_str(&line);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let path_only = path.split('?').next().unwrap_or(path).to_string();
    log.lock()
        .expect("proxy log")
        .push((path_only.clone(), Instant::now()));
    if path_only == "/jwks" {
        std::thread::sleep(jwks_delay);
    }
    let mut origin = TcpStream::connect(authority)?;
    origin.write_all(head.as_bytes())?;
    origin.write_all(&body)?;
    let mut client = client;
    std::io::copy(&mut origin, &mut client)?;
    client.shutdown(std::net::Shutdown::Both)
}

fn jwks_fetches(seen: &Seen) -> Vec<Instant> {
    seen.lock()
        .expect("proxy log")
        .iter()
        .filter(|(p, _)| p == "/jwks")
        .map(|(_, at)| *at)
        .collect()
}

/// Waits until `at` plus the 10 s re-fetch interval plus a margin has passed.
async fn after_refetch_interval(at: Instant) {
    let until = at + Duration::from_millis(11_500);
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
}

/// Portcullis reaching its IdP through a [`counting_proxy`] (its HTTP client honours
/// `HTTP_PROXY`; if that ever stops, these tests fail rather than count nothing).
async fn proxied_world() -> (World, Seen) {
    let (proxy, seen) = counting_proxy(Duration::from_millis(150));
    let setup = Setup::new()
        .env("HTTP_PROXY", &format!("http://127.0.0.1:{proxy}"))
        .env("http_proxy", &format!("http://127.0.0.1:{proxy}"))
        .env("NO_PROXY", "")
        .env("no_proxy", "");
    let w = world_with(IdpConfig::default(), "", setup);
    w.pc.ready().await;
    assert_eq!(
        jwks_fetches(&seen).len(),
        1,
        "one JWKS fetch at discovery, seen through HTTP_PROXY"
    );
    (w, seen)
}

#[tokio::test]
async fn unknown_kids_refetch_the_jwks_at_most_every_ten_seconds() {
    let (mut w, seen) = proxied_world().await;
    let claims = good_claims(&w.idp);
    let good = signed(&w.idp, claims.clone()).await;
    let unknown = w.idp.sign_jwt(Value::Null, claims.clone(), "fresh").await;

    // Right after discovery: an unknown kid is refused without asking the IdP again.
    refused(&w, &unknown, UNKNOWN_KEY).await;
    accepted(&w, "/api/x", &good).await;
    refused(&w, &unknown, UNKNOWN_KEY).await;
    let fetches = jwks_fetches(&seen);
    assert_eq!(fetches.len(), 1, "no re-fetch within 10 s of discovery");

    // Once the keys are older than 10 s, an unknown kid re-fetches them once; more unknown
    // kids (the same or others) in the next 10 s do not.
    after_refetch_interval(fetches[0]).await;
    for i in 0..6 {
        let other_unknown = if i % 2 == 0 {
            unknown.clone()
        } else {
            w.idp.sign_jwt(Value::Null, claims.clone(), "fresh").await
        };
        refused(&w, &other_unknown, UNKNOWN_KEY).await;
    }
    let fetches = jwks_fetches(&seen);
    assert_eq!(fetches.len(), 2, "one re-fetch for six unknown kids");
    // The keys fetched again still verify.
    accepted(&w, "/api/y", &good).await;
    assert!(w.pc.is_running(), "Portcullis survives unknown kids");

    // 10 s later the keys may be fetched again, once.
    after_refetch_interval(fetches[1]).await;
    refused(&w, &unknown, UNKNOWN_KEY).await;
    refused(&w, &unknown, UNKNOWN_KEY).await;
    assert_eq!(
        jwks_fetches(&seen).len(),
        3,
        "a re-fetch every 10 s at most"
    );
    accepted(&w, "/api/z", &good).await;
    assert!(w.pc.is_running());
    w.assert_tokens_not_logged(&[&good, &unknown]).await;
}

#[tokio::test]
async fn a_burst_of_unknown_kids_refetches_the_jwks_once() {
    let (mut w, seen) = proxied_world().await;
    let claims = good_claims(&w.idp);
    let good = signed(&w.idp, claims.clone()).await;
    let unknown = w.idp.sign_jwt(Value::Null, claims.clone(), "fresh").await;

    // Ten requests at once with an unknown kid, once the keys are older than 10 s: all are
    // refused, and the IdP is asked for its keys once, not once per request.
    after_refetch_interval(jwks_fetches(&seen)[0]).await;
    let burst = (0..10).map(|_| get_with(&w, "/api/burst", &unknown));
    let answers = futures_util::future::join_all(burst).await;
    for r in &answers {
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(
            r.header("www-authenticate")
                .unwrap_or_default()
                .contains("unknown key"),
            "{:?}",
            r.header("www-authenticate")
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{UNKNOWN_KEY}\""
            )),
        );
    }
    assert_eq!(w.up.count(), 0, "a refused token reached the app");
    let count = jwks_fetches(&seen).len();
    assert_eq!(
        count,
        2,
        "10 concurrent unknown-kid requests re-fetched the JWKS {} times",
        count.saturating_sub(1)
    );
    accepted(&w, "/api/z", &good).await;
    assert!(w.pc.is_running());
    w.assert_tokens_not_logged(&[&good, &unknown]).await;
}

/// ID tokens are signed by the same keys for the same audience (the client id) but are no
/// access credential: a leaked one must not open Bearer routes.
#[tokio::test]
async fn id_tokens_are_not_bearer_credentials() {
    let w = world().await;
    let base = good_claims(&w.idp);
    for claim in ["nonce", "at_hash", "c_hash"] {
        let token = signed(&w.idp, with(&base, serde_json::json!({ claim: "x" }))).await;
        refused(&w, &token, ID_TOKEN).await;
    }
}

/// `bearer_clients`: only tokens issued to the listed clients (`azp` / `client_id`) pass, so
/// another client of the same IdP cannot mint tokens for this audience and be let in.
#[tokio::test]
async fn bearer_clients_limit_which_clients_tokens_pass() {
    let w = world_with(
        IdpConfig::default()
            .client(IdpClient::service("billing", "billing-secret"))
            .client(IdpClient::service("intruder", "intruder-secret"))
            .resource_server("https://api.test", "orders:read orders:write", 300),
        "    audience: https://api.test\n    bearer_clients: [billing]\n",
        Setup::new(),
    );
    w.pc.ready().await;
    let billing = w
        .idp
        .client_credentials_token(
            "billing",
            "billing-secret",
            "https://api.test",
            "orders:read",
        )
        .await;
    let seen = accepted(&w, "/api/things", &billing).await;
    assert_eq!(seen.header("x-auth-request-user"), Some("billing"));
    let intruder = w
        .idp
        .client_credentials_token(
            "intruder",
            "intruder-secret",
            "https://api.test",
            "orders:read",
        )
        .await;
    refused(&w, &intruder, CLIENT).await;
    // A hand-made token claiming to be a user, but issued to no listed client.
    let user_like = signed(
        &w.idp,
        with(&good_claims(&w.idp), json!({ "aud": "https://api.test" })),
    )
    .await;
    refused(&w, &user_like, CLIENT).await;
}
