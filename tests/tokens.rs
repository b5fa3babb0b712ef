//! The issuer's OAuth 2 endpoints for machine clients, end to end with the real binary:
//! `client_credentials` tokens (verified by an independent JWT implementation from the JWKS
//! alone), introspection, revocation (also across two replicas sharing a real Redis), the
//! tokens on `bearer: true` routes, hostile tokens and malformed requests, the timing of
//! unknown clients, and logs that never hold a secret or a token.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use base64::Engine;
use redis_support::RedisServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{jose_verify, raw_request, Portcullis, RawUpstream, Setup};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const BILLING_SECRET: &str = "billing-s3cret-with-enough-entropy";
const OTHER_SECRET: &str = "other+secret:with/odd chars";

/// A raw request: method, headers, body, and the status it must get.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);

/// The DER inside a PEM block.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A config with a local provider (for routes), the issuer with a PEM key and two clients,
/// and `store` lines under `session`.
fn config(up: &str, session_extra: &str) -> String {
    // These tests ask the token endpoints far more often than the built-in auth-endpoints
    // limiter (30/m per address) allows one address: a roomy one replaces it.
    config_limited(
        up,
        session_extra,
        "rate_limits: [{ name: auth-endpoints, key: client_ip, limit: 10000/s, burst: 10000 }]\n",
    )
}

/// [`config`] with `limits` (a `rate_limits:` block) instead of the roomy one.
fn config_limited(up: &str, session_extra: &str, limits: &str) -> String {
    let billing = portcullis::password::hash(BILLING_SECRET).unwrap();
    let other = portcullis::password::hash(OTHER_SECRET).unwrap();
    format!(
        r#"server:
  listen: ["127.0.0.1:@HTTP@"]
  threads: 2
  public_url: http://127.0.0.1:@HTTP@
admin:
  listen: 127.0.0.1:@ADMIN@
session:
  secrets: ["{SECRET}"]
  cookie: {{ secure: false }}
{session_extra}providers:
  - id: local
    type: local
    users_file: users.yaml
issuer:
  keys:
    - file: issuer.pem
  access_token_ttl: 15m
  clients:
    - id: billing
      secret_hash: "{billing}"
      scopes: [orders:read, orders:write]
    - id: other
      secret_hash: "{other}"
      scopes: [reports:read]
      audience: http://api.test:@HTTP@
{limits}routes:
  - {{ host: api.test, path: /, upstream: "{up}", bearer: true, scopes: [reports:read] }}
  - {{ path: /orders, upstream: "{up}", bearer: true, scopes: [orders:read] }}
  - {{ path: /write, upstream: "{up}", bearer: true, scopes: [orders:write] }}
  - {{ path: /, upstream: "{up}" }}
"#
    )
}

fn setup_with_key() -> Setup {
    let setup = Setup::new();
    setup.write("users.yaml", "users: {}\n");
    setup.write(
        "issuer.pem",
        portcullis::gen_key_pem("ES256").expect("a key"),
    );
    setup
}

fn start(up: &str) -> Portcullis {
    setup_with_key().start(&config(up, ""))
}

struct Client<'a> {
    pc: &'a Portcullis,
}

impl Client<'_> {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }

    /// POSTs a form to `/.portcullis/<endpoint>` with optional Basic credentials.
    async fn post(
        &self,
        endpoint: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = support::http_client()
            .post(format!("{}/.portcullis/{endpoint}", self.base()))
            .form(form);
        if let Some((id, secret)) = basic {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let cred = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(id),
                enc(secret)
            ));
            req = req.header("Authorization", format!("Basic {cred}"));
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn token(&self, scope: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let (status, body, _) = self
            .post("token", Some(("billing", BILLING_SECRET)), &form)
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn get(&self, host: &str, path: &str, token: &str) -> u16 {
        let auth = format!("Bearer {token}");
        raw_request(
            self.pc.http_port(),
            "GET",
            host,
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Accept", "application/json"),
            ],
            b"",
        )
        .await
        .status
    }
}

#[tokio::test]
async fn issues_rfc9068_tokens_verified_by_an_independent_library() {
    let up = RawUpstream::start();
    let pc = start(&up.url());
    let c = Client { pc: &pc };
    let base = c.base();

    // client_secret_basic, all the client's scopes.
    let (status, body, headers) = c
        .post(
            "token",
            Some(("billing", BILLING_SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "orders:read orders:write");
    let token = body["access_token"].as_str().unwrap();

    let jwks = format!("{base}/.well-known/jwks.json");
    let v = jose_verify(&jwks, &base, &base, "at+jwt", token);
    assert_eq!(v["ok"], true, "{v}");
    let p = &v["payload"];
    assert_eq!(p["iss"], base);
    assert_eq!(p["sub"], "billing");
    assert_eq!(p["client_id"], "billing");
    assert_eq!(p["aud"], base);
    assert_eq!(p["scope"], "orders:read orders:write");
    assert_eq!(p["exp"].as_u64().unwrap() - p["iat"].as_u64().unwrap(), 900);
    assert!(p["jti"].as_str().unwrap().len() >= 16);
    assert_eq!(v["header"]["typ"], "at+jwt");
    assert_eq!(v["header"]["alg"], "ES256");
    // The same verifier refuses it for another audience, issuer or type.
    assert_eq!(
        jose_verify(&jwks, &base, "http://elsewhere", "at+jwt", token)["ok"],
        false
    );
    assert_eq!(
        jose_verify(&jwks, "http://evil", &base, "at+jwt", token)["ok"],
        false
    );
    assert_eq!(jose_verify(&jwks, &base, &base, "JWT", token)["ok"], false);

    // client_secret_post, a subset of scopes; an odd secret form-encoded both ways.
    let (status, body, _) = c
        .post(
            "token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "other"),
                ("client_secret", OTHER_SECRET),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "reports:read");
    let other = body["access_token"].as_str().unwrap();
    let aud = format!("http://api.test:{}", pc.http_port());
    let v = jose_verify(&jwks, &base, &aud, "at+jwt", other);
    assert_eq!(v["ok"], true, "the client's audience: {v}");
    let (status, _, _) = c
        .post(
            "token",
            Some(("other", OTHER_SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, 200, "Basic with form-encoded special characters");

    let (status, body, _) = c
        .post(
            "token",
            Some(("billing", BILLING_SECRET)),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "orders:read"),
            ],
        )
        .await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("orders:read")));

    // Metric and audit.
    let metrics = support::http_client()
        .get(format!("http://127.0.0.1:{}/metrics", pc.admin_port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let issued = support::metric_value(
        &metrics,
        "portcullis_tokens_issued_total",
        &[("grant", "client_credentials")],
    );
    assert_eq!(issued, 4.0);
    let logs = format!("{}\n{}", pc.stdout(), pc.stderr());
    assert!(logs.contains("\"token_issued\""), "{logs}");
    for secret in [BILLING_SECRET, OTHER_SECRET, token, other] {
        assert!(!logs.contains(secret), "a secret or token in the logs");
    }
    // The signature part alone never appears either.
    assert!(!logs.contains(token.rsplit('.').next().unwrap()));
}

#[tokio::test]
async fn token_errors_follow_rfc_6749_and_never_500() {
    let up = RawUpstream::start();
    let pc = start(&up.url());
    let c = Client { pc: &pc };
    let gt = ("grant_type", "client_credentials");

    let check = |status: u16, body: &Value, want_status: u16, want: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"], want, "{body}");
    };
    let (s, b, h) = c.post("token", Some(("billing", "wrong")), &[gt]).await;
    check(s, &b, 401, "invalid_client");
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let (s, b, _) = c.post("token", Some(("nobody", "wrong")), &[gt]).await;
    check(s, &b, 401, "invalid_client");
    let (s, b, _) = c.post("token", None, &[gt]).await;
    check(s, &b, 401, "invalid_client");
    let (s, b, _) = c
        .post(
            "token",
            Some(("billing", BILLING_SECRET)),
            &[gt, ("scope", "orders:read admin")],
        )
        .await;
    check(s, &b, 400, "invalid_scope");
    let (s, b, _) = c
        .post(
            "token",
            Some(("billing", BILLING_SECRET)),
            &[("grant_type", "password")],
        )
        .await;
    check(s, &b, 400, "unsupported_grant_type");
    let (s, b, _) = c
        .post("token", Some(("billing", BILLING_SECRET)), &[])
        .await;
    check(s, &b, 400, "invalid_request");
    // Both authentication methods at once.
    let (s, b, _) = c
        .post(
            "token",
            Some(("billing", BILLING_SECRET)),
            &[
                gt,
                ("client_id", "billing"),
                ("client_secret", BILLING_SECRET),
            ],
        )
        .await;
    check(s, &b, 400, "invalid_request");

    // Raw requests: GET, JSON, duplicate parameters, a huge body, garbage Basic.
    let port = pc.http_port();
    let host = format!("127.0.0.1:{port}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("billing:{BILLING_SECRET}"))
    );
    let form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", basic.as_str()),
    ];
    let cases: Vec<Case> = vec![
        (
            "GET",
            vec![("Authorization", basic.as_str())],
            Vec::new(),
            405,
        ),
        (
            "POST",
            vec![
                ("Content-Type", "application/json"),
                ("Authorization", basic.as_str()),
            ],
            br#"{"grant_type":"client_credentials"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            form.to_vec(),
            b"grant_type=client_credentials&grant_type=client_credentials".to_vec(),
            400,
        ),
        (
            "POST",
            form.to_vec(),
            b"grant_type=client_credentials&scope=a&scope=b".to_vec(),
            400,
        ),
        ("POST", form.to_vec(), vec![b'a'; 200_000], 413),
        ("POST", form.to_vec(), b"%zz%%&&==".to_vec(), 400),
        (
            "POST",
            vec![
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", "Basic !!!notbase64"),
            ],
            b"grant_type=client_credentials".to_vec(),
            401,
        ),
        (
            "POST",
            vec![
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", "Basic Yml6YXJyZQ=="),
            ],
            b"grant_type=client_credentials".to_vec(),
            401,
        ),
        (
            "PUT",
            form.to_vec(),
            b"grant_type=client_credentials".to_vec(),
            405,
        ),
    ];
    for (method, headers, body, want) in cases {
        for endpoint in ["token", "introspect", "revoke"] {
            let r = raw_request(
                port,
                method,
                &host,
                &format!("/.portcullis/{endpoint}"),
                &headers,
                &body,
            )
            .await;
            assert_eq!(
                r.status,
                want,
                "{method} {endpoint} {:?}: {}",
                String::from_utf8_lossy(&body[..body.len().min(60)]),
                r.text()
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            assert!(
                v["error"].is_string(),
                "an OAuth error object: {}",
                r.text()
            );
        }
    }
    assert!(pc.stderr().matches("panicked").count() == 0);
}

#[tokio::test]
async fn unknown_clients_cost_what_wrong_secrets_cost() {
    let up = RawUpstream::start();
    let pc = start(&up.url());
    let c = Client { pc: &pc };
    let gt = ("grant_type", "client_credentials");
    // A first right answer, remembered: wrong secrets must not profit from it.
    c.token(None).await;
    // Interleaved, so that whatever else the machine does weighs on both alike.
    let (mut wrong, mut unknown) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..8 {
        for (id, total) in [("billing", &mut wrong), ("nobody-at-all", &mut unknown)] {
            let t = Instant::now();
            let (s, _, _) = c.post("token", Some((id, "wrong-secret")), &[gt]).await;
            *total += t.elapsed();
            assert_eq!(s, 401);
        }
    }
    let ratio = wrong.as_secs_f64() / unknown.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "wrong secret {wrong:?} vs unknown client {unknown:?}"
    );
    // Both pay a real argon2 verification (tens of ms), unlike a returning client.
    let t = Instant::now();
    for _ in 0..8 {
        c.token(None).await;
    }
    let warm = t.elapsed();
    assert!(
        warm < wrong,
        "a returning client is fast: {warm:?} vs {wrong:?}"
    );
}

#[tokio::test]
async fn introspection_and_revocation() {
    let up = RawUpstream::start();
    let pc = start(&up.url());
    let c = Client { pc: &pc };
    let token = c.token(Some("orders:read")).await;

    // Any configured client may introspect.
    let (s, v, _) = c
        .post(
            "introspect",
            Some(("other", OTHER_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["client_id"], "billing");
    assert_eq!(v["scope"], "orders:read");
    assert_eq!(v["token_type"], "Bearer");
    for claim in ["sub", "aud", "iss", "exp", "iat", "jti"] {
        assert!(!v[claim].is_null(), "{claim} in {v}");
    }
    // Without client authentication: refused.
    let (s, v, _) = c.post("introspect", None, &[("token", &token)]).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    // Garbage, a foreign signature, an assertion-typed token: inactive.
    let forged = {
        let mut parts: Vec<&str> = token.split('.').collect();
        let other_sig = b64url(&[7u8; 64]);
        parts[2] = &other_sig;
        parts.join(".")
    };
    for t in ["garbage", "a.b.c", forged.as_str()] {
        let (s, v, _) = c
            .post(
                "introspect",
                Some(("billing", BILLING_SECRET)),
                &[("token", t)],
            )
            .await;
        assert_eq!((s, v.clone()), (200, json!({"active": false})));
    }

    // The route accepts it before revocation.
    let host = format!("127.0.0.1:{}", pc.http_port());
    assert_eq!(c.get(&host, "/orders", &token).await, 200);

    // Only the client it was issued to may revoke it.
    let (s, v, _) = c
        .post(
            "revoke",
            Some(("other", OTHER_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(c.get(&host, "/orders", &token).await, 200);
    let (s, _, _) = c
        .post(
            "revoke",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(s, 200);
    let (s, v, _) = c
        .post(
            "introspect",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!((s, v), (200, json!({"active": false})));
    assert_eq!(c.get(&host, "/orders", &token).await, 401);
    // Revoking an unknown token: 200.
    let (s, _, _) = c
        .post(
            "revoke",
            Some(("billing", BILLING_SECRET)),
            &[("token", "nonsense")],
        )
        .await;
    assert_eq!(s, 200);
    let logs = pc.stdout();
    assert!(logs.contains("\"token_revoked\""), "{logs}");
    assert!(!logs.contains(&token));
}

#[tokio::test]
async fn bearer_routes_accept_our_tokens_and_refuse_hostile_ones() {
    let up = RawUpstream::start();
    let pc = start(&up.url());
    let c = Client { pc: &pc };
    let host = format!("127.0.0.1:{}", pc.http_port());
    let read = c.token(Some("orders:read")).await;
    assert_eq!(c.get(&host, "/orders/1", &read).await, 200);
    // The app gets the assertion for the machine client.
    let seen = up.last();
    let assertion = seen.header("x-portcullis-assertion").expect("an assertion");
    let base = c.base();
    let v = jose_verify(
        &format!("{base}/.portcullis/jwks.json"),
        &base,
        "127.0.0.1",
        "JWT",
        &assertion,
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["payload"]["sub"], "billing");
    assert_eq!(v["payload"]["groups"], json!([]));
    assert!(seen.header("authorization").is_some());
    // The same token again: the same identity, the same (cached) assertion.
    assert_eq!(c.get(&host, "/orders/2", &read).await, 200);
    assert_eq!(
        up.last().header("x-portcullis-assertion").unwrap(),
        assertion
    );
    // Scopes are enforced.
    assert_eq!(c.get(&host, "/write", &read).await, 403);
    // aud: the issuer url here; a token for api.test's origin works there only.
    let (s, body, _) = c
        .post(
            "token",
            Some(("other", OTHER_SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(s, 200);
    let other = body["access_token"].as_str().unwrap().to_string();
    let api = format!("api.test:{}", pc.http_port());
    assert_eq!(
        c.get(&api, "/", &other).await,
        200,
        "aud = the route's origin"
    );
    assert_eq!(
        c.get(&host, "/orders", &other).await,
        401,
        "aud is another origin"
    );
    assert_eq!(
        c.get(&api, "/", &read).await,
        403,
        "issuer aud accepted, but no reports:read"
    );

    // Hostile tokens built from a real one.
    let parts: Vec<&str> = read.split('.').collect();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    let mut payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap().to_string();
    let enc = |v: &Value| b64url(v.to_string().as_bytes());
    let mut hostile: Vec<(&str, String)> = Vec::new();
    // Tampered payload (more scopes), original signature.
    payload["scope"] = json!("orders:read orders:write");
    hostile.push((
        "tampered",
        format!("{}.{}.{}", parts[0], enc(&payload), parts[2]),
    ));
    // alg none.
    let none = json!({"alg": "none", "typ": "at+jwt", "kid": kid});
    hostile.push(("alg none", format!("{}.{}.", enc(&none), parts[1])));
    // HS256 keyed with the public JWK (as text) — the classic confusion.
    let jwks: Value = support::http_client()
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hs = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let input = format!("{}.{}", enc(&hs), parts[1]);
    {
        use hmac::Mac;
        let mut m =
            hmac::Hmac::<sha2_10::Sha256>::new_from_slice(jwks["keys"][0].to_string().as_bytes())
                .unwrap();
        m.update(input.as_bytes());
        let sig = m.finalize().into_bytes();
        hostile.push((
            "hs256 with the public key",
            format!("{input}.{}", b64url(&sig)),
        ));
    }
    // typ JWT (an assertion is not an access token): the real assertion itself.
    hostile.push(("assertion as bearer", assertion.clone()));
    // A foreign signature: a key of the right type, under our kid.
    let stranger = portcullis::gen_key_pem("ES256").unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(kid.clone());
    h.typ = Some("at+jwt".into());
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    let foreign = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&pem_der(&stranger)),
    )
    .unwrap();
    hostile.push(("foreign signature", foreign));
    // Wrong issuer and wrong audience can only be signed by us: checked by jose above.
    for (what, token) in &hostile {
        assert_eq!(c.get(&host, "/orders", token).await, 401, "{what}");
    }
    // The independent verifier agrees on each.
    for (what, token) in &hostile[..3] {
        let v = jose_verify(
            &format!("{base}/.well-known/jwks.json"),
            &base,
            &base,
            "at+jwt",
            token,
        );
        assert_eq!(v["ok"], false, "{what}: {v}");
    }
    let logs = format!("{}\n{}", pc.stdout(), pc.stderr());
    assert!(!logs.contains(&read));
    assert!(!logs.contains(&assertion));
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let up = RawUpstream::start();
    let setup = setup_with_key();
    let yaml = config(&up.url(), "").replace("access_token_ttl: 15m", "access_token_ttl: 10s");
    let pc = setup.start(&yaml);
    let c = Client { pc: &pc };
    let token = c.token(None).await;
    let host = format!("127.0.0.1:{}", pc.http_port());
    assert_eq!(c.get(&host, "/orders", &token).await, 200);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(c.get(&host, "/orders", &token).await, 401);
    let (s, v, _) = c
        .post(
            "introspect",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!((s, v), (200, json!({"active": false})));
    let base = c.base();
    let v = jose_verify(
        &format!("{base}/.well-known/jwks.json"),
        &base,
        &base,
        "at+jwt",
        &token,
    );
    assert_eq!(v["ok"], false, "{v}");
}

#[tokio::test]
async fn a_revocation_counts_on_every_replica_sharing_redis() {
    let redis = RedisServer::start();
    let up = RawUpstream::start();
    let store = format!("  store: redis\n  redis: {{ url: \"{}\" }}\n", redis.url());
    // Two replicas with the same key and clients.
    let a_setup = setup_with_key();
    let pem = std::fs::read_to_string(a_setup.path().join("issuer.pem")).unwrap();
    let yaml = config(&up.url(), &store);
    let a = a_setup.start(&yaml);
    let b_setup = Setup::new();
    b_setup.write("users.yaml", "users: {}\n");
    b_setup.write("issuer.pem", &pem);
    let b = b_setup.start(&yaml);
    let ca = Client { pc: &a };
    let cb = Client { pc: &b };
    let token = ca.token(Some("orders:read")).await;
    let b_host = format!("127.0.0.1:{}", b.http_port());
    // B accepts A's token only if aud is B's issuer url: give B the same one.
    // (Each replica's issuer url is its own public_url here, so introspect through A's url.)
    let (s, v, _) = cb
        .post(
            "introspect",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(s, 200);
    // Different issuer urls (ports) per replica in this test: B sees another `iss`.
    assert_eq!(v["active"], false);
    let _ = b_host;

    // Same issuer url for both: put both behind the same public_url.
    let shared = format!("http://127.0.0.1:{}", a.http_port());
    let yaml_b = yaml
        .replace(
            "public_url: http://127.0.0.1:@HTTP@",
            &format!("public_url: {shared}"),
        )
        .replace(
            "audience: http://api.test:@HTTP@",
            &format!("audience: http://api.test:{}", a.http_port()),
        );
    b.rewrite_config(&yaml_b);
    b.sighup();
    let mut active = false;
    for _ in 0..50 {
        let (_, v, _) = cb
            .post(
                "introspect",
                Some(("billing", BILLING_SECRET)),
                &[("token", &token)],
            )
            .await;
        if v["active"] == true {
            active = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        active,
        "replica B accepts A's token once it shares the issuer url"
    );
    // Revoke on A; B refuses at once.
    let (s, _, _) = ca
        .post(
            "revoke",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(s, 200);
    let (_, v, _) = cb
        .post(
            "introspect",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(v, json!({"active": false}));
    let shared_host = format!("127.0.0.1:{}", b.http_port());
    let auth = format!("Bearer {token}");
    let r = raw_request(
        b.http_port(),
        "GET",
        &shared_host,
        "/orders",
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn tokens_signed_with_the_real_key_but_wrong_claims_are_refused() {
    let up = RawUpstream::start();
    let setup = setup_with_key();
    let pem = std::fs::read_to_string(setup.path().join("issuer.pem")).unwrap();
    let pc = setup.start(&config(&up.url(), ""));
    let c = Client { pc: &pc };
    let base = c.base();
    let host = format!("127.0.0.1:{}", pc.http_port());
    let real = c.token(Some("orders:read")).await;
    let kid = {
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(real.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&h).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pem_der(&pem));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |typ: Option<&str>, claims: Value| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.clone());
        h.typ = typ.map(str::to_string);
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    let good = json!({
        "iss": base, "sub": "billing", "client_id": "billing", "aud": base,
        "scope": "orders:read", "iat": now, "exp": now + 300, "jti": "test-jti-1",
    });
    // Signed by the test with the real key and the right claims: accepted (so the refusals
    // below are about the claims, not about how the test signs).
    assert_eq!(
        c.get(&host, "/orders", &sign(Some("at+jwt"), good.clone()))
            .await,
        200
    );
    let with = |name: &str, value: Value| {
        let mut v = good.clone();
        v[name] = value;
        v
    };
    let mut without_jti = good.clone();
    without_jti.as_object_mut().unwrap().remove("jti");
    let cases = [
        (
            "wrong iss",
            sign(Some("at+jwt"), with("iss", json!("http://evil.test"))),
        ),
        (
            "wrong aud",
            sign(Some("at+jwt"), with("aud", json!("http://elsewhere.test"))),
        ),
        ("expired", sign(Some("at+jwt"), with("exp", json!(now - 5)))),
        (
            "typ JWT (an assertion or ID token)",
            sign(Some("JWT"), good.clone()),
        ),
        ("no typ", sign(None, good.clone())),
        ("no jti", sign(Some("at+jwt"), without_jti)),
    ];
    for (what, token) in &cases {
        assert_eq!(c.get(&host, "/orders", token).await, 401, "{what}");
        let (s, v, _) = c
            .post(
                "introspect",
                Some(("billing", BILLING_SECRET)),
                &[("token", token)],
            )
            .await;
        if *what != "wrong aud" {
            assert_eq!((s, v), (200, json!({"active": false})), "{what}");
        }
    }
}

#[tokio::test]
async fn token_endpoints_share_the_auth_endpoints_budget() {
    let up = RawUpstream::start();
    let pc = setup_with_key().start(&config_limited(
        &up.url(),
        "",
        "rate_limits: [{ name: auth-endpoints, key: client_ip, limit: 1/m, burst: 3 }]\n",
    ));
    let c = Client { pc: &pc };
    let gt = ("grant_type", "client_credentials");
    // One budget per address across token, introspect and revoke, right or wrong secret.
    let (s, body, h) = c
        .post("token", Some(("billing", BILLING_SECRET)), &[gt])
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "2");
    let token = body["access_token"].as_str().unwrap().to_string();
    let (s, _, _) = c.post("token", Some(("billing", "wrong")), &[gt]).await;
    assert_eq!(s, 401);
    let (s, body, _) = c
        .post(
            "introspect",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["active"], true);
    for endpoint in ["token", "introspect", "revoke"] {
        let (s, body, h) = c
            .post(
                endpoint,
                Some(("billing", BILLING_SECRET)),
                &[gt, ("token", &token)],
            )
            .await;
        assert_eq!(s, 429, "{endpoint}: {body}");
        assert_eq!(body["error"], "rate_limited");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((59..=60).contains(&retry), "Retry-After {retry}");
    }
    // The refused revocation did not happen.
    let (s, body, _) = c
        .post(
            "introspect",
            Some(("billing", BILLING_SECRET)),
            &[("token", &token)],
        )
        .await;
    assert_eq!((s, body["error"].as_str()), (429, Some("rate_limited")));
    let status = c.get("127.0.0.1", "/orders", &token).await;
    assert_eq!(
        status, 200,
        "the token was not revoked by a refused request"
    );
}
