//! The issuer's public face, end to end with the real binary: discovery and JWKS (caching,
//! validators, CORS, public parts only), keys of every algorithm from `gen-key`, and the
//! identity assertion on proxied requests and forward-auth answers — verified by an
//! independent implementation (node `jose`) from the JWKS alone — with a client's forged
//! assertion never reaching the app.

mod support;

use serde_json::{json, Value};
use support::local::{session_cookie, users_yaml, FormClient, TestUser, SECRET};
use support::{jose_verify, raw_request, run_cli, RawUpstream, Setup};

fn config(up: &str, issuer: &str) -> String {
    format!(
        r#"server:
  listen: ["127.0.0.1:@HTTP@"]
  threads: 1
  public_url: http://127.0.0.1:@HTTP@
  trusted_proxies: [127.0.0.1/32]
admin:
  listen: 127.0.0.1:@ADMIN@
session:
  secrets: ["{SECRET}"]
  cookie: {{ secure: false }}
providers:
  - id: local
    type: local
    users_file: users.yaml
{issuer}routes:
  - {{ host: open.test, path: /, upstream: "{up}", auth: none }}
  - {{ host: app.test, path: /, upstream: "{up}" }}
  - {{ path: /, upstream: "{up}" }}
"#
    )
}

fn users(setup: &Setup) {
    setup.write(
        "users.yaml",
        users_yaml(&[TestUser {
            name: "alice",
            password: "pw-alice",
            extra: &[
                "email: alice@example.com",
                "name: Alice Example",
                "groups: [staff, admins]",
            ],
        }]),
    );
}

async fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> support::RawResponse {
    raw_request(port, "GET", host, path, headers, b"").await
}

#[tokio::test]
async fn discovery_and_jwks_are_public_cacheable_and_hold_no_private_part() {
    let up = RawUpstream::start();
    let setup = Setup::new();
    users(&setup);
    let pc = setup.start(&config(&up.url(), "issuer: {}\n"));
    let port = pc.http_port();
    let base = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");

    let r = get(port, &host, "/.well-known/openid-configuration", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let d: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(d["issuer"], base);
    assert_eq!(d["jwks_uri"], format!("{base}/.well-known/jwks.json"));
    assert_eq!(d["token_endpoint"], format!("{base}/.portcullis/token"));
    assert_eq!(
        d["introspection_endpoint"],
        format!("{base}/.portcullis/introspect")
    );
    assert_eq!(
        d["revocation_endpoint"],
        format!("{base}/.portcullis/revoke")
    );
    assert_eq!(d["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    let r = get(port, &host, "/.well-known/jwks.json", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let etag = r.header("etag").expect("an ETag").to_string();
    assert!(etag.starts_with('"'), "a strong validator: {etag}");
    let jwks: Value = serde_json::from_slice(&r.body).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["use"], "sig");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(keys[0].get(private).is_none(), "{private} published");
    }
    // 304 on If-None-Match, with the validator again and no body.
    let r = get(
        port,
        &host,
        "/.well-known/jwks.json",
        &[("If-None-Match", &etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = get(
        port,
        &host,
        "/.well-known/jwks.json",
        &[("If-None-Match", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);

    // The same keys on every route host, under /.portcullis/.
    let r = get(port, "app.test", "/.portcullis/jwks.json", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap(), jwks);
    // An app's own /.well-known/ is never shadowed on its host.
    let before = up.count();
    let r = get(port, "open.test", "/.well-known/openid-configuration", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), before + 1, "the app answered its own document");
    // Not a document of ours on the issuer host: the route's (login needed here).
    let r = get(
        port,
        &host,
        "/.well-known/other",
        &[("Accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, 401);
    // Only GET and HEAD.
    let r = raw_request(port, "POST", &host, "/.well-known/jwks.json", &[], b"x").await;
    assert_eq!(r.status, 405);
    // The generated key is announced as dying with the process.
    let logs = format!("{}{}", pc.stdout(), pc.stderr());
    assert!(logs.contains("die with this process"), "{logs}");
}

#[tokio::test]
async fn the_assertion_reaches_the_app_signed_and_a_forged_one_never_does() {
    let up = RawUpstream::start();
    let setup = Setup::new();
    users(&setup);
    let pc = setup.start(&config(&up.url(), "issuer:\n  assertion: { ttl: 5m }\n"));
    let port = pc.http_port();
    let host = format!("127.0.0.1:{port}");
    let base = format!("http://{host}");
    let forged = "eyJhbGciOiJub25lIn0.eyJ1c2VyIjoiYWRtaW4ifQ.";

    // Anonymous, on an open route: the forged header is stripped, none is added.
    let r = get(
        port,
        "open.test",
        "/x",
        &[
            ("X-Portcullis-Assertion", forged),
            ("x_portcullis_assertion", forged),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert!(seen.header_all("x-portcullis-assertion").is_empty());
    assert!(seen.header_all("x_portcullis_assertion").is_empty());

    // Logged in.
    let client = FormClient::new(port);
    let (r, _) = client
        .password(&format!("{base}/"), "alice", "pw-alice")
        .await;
    let cookie = session_cookie(&r).expect("a session cookie");
    let r = get(
        port,
        &host,
        "/app?x=1",
        &[("Cookie", &cookie), ("X-Portcullis-Assertion", forged)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    let all = seen.header_all("x-portcullis-assertion");
    assert_eq!(all.len(), 1, "exactly one assertion upstream");
    let assertion = String::from_utf8(all[0].clone()).unwrap();
    assert_ne!(assertion, forged);
    let jwks = format!("{base}/.portcullis/jwks.json");
    let v = jose_verify(&jwks, &base, "127.0.0.1", "JWT", &assertion);
    assert_eq!(v["ok"], true, "{v}");
    let p = &v["payload"];
    assert_eq!(p["user"], "alice");
    assert_eq!(p["sub"], "alice");
    assert_eq!(p["email"], "alice@example.com");
    assert_eq!(p["name"], "Alice Example");
    assert_eq!(p["groups"], json!(["staff", "admins"]));
    assert!(p["sid"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(p["jti"].as_str().is_some());
    assert_eq!(p["exp"].as_u64().unwrap() - p["iat"].as_u64().unwrap(), 300);
    assert_eq!(v["header"]["typ"], "JWT");
    assert!(v["header"]["kid"].is_string());
    // The session id itself is not in it.
    let sid_cookie = cookie.split('=').nth(1).unwrap();
    assert!(!assertion.contains(sid_cookie));
    // Audience is the host: another route host gets its own.
    assert_eq!(
        jose_verify(&jwks, &base, "app.test", "JWT", &assertion)["ok"],
        false
    );
    let r = get(port, "app.test", "/", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    let other = up.last().header("x-portcullis-assertion").unwrap();
    assert_eq!(
        jose_verify(&jwks, &base, "app.test", "JWT", &other)["ok"],
        true
    );

    // Cached: the next request carries the very same assertion (no signing per request).
    let r = get(port, &host, "/again", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        up.last().header("x-portcullis-assertion").unwrap(),
        assertion
    );

    // Forward auth: the assertion in the allowed answer, for the original host.
    let r = get(
        port,
        &host,
        "/.portcullis/auth",
        &[
            ("Cookie", &cookie),
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "app.test"),
            ("X-Forwarded-Uri", "/page"),
            ("X-Portcullis-Assertion", forged),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fa = r
        .header("x-portcullis-assertion")
        .expect("the assertion")
        .to_string();
    let v = jose_verify(&jwks, &base, "app.test", "JWT", &fa);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["payload"]["user"], "alice");
    // Anonymous allowed check: the header is there, empty (front proxies overwrite a forged one).
    let r = get(
        port,
        &host,
        "/.portcullis/auth",
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "open.test"),
            ("X-Forwarded-Uri", "/"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-portcullis-assertion"), Some(""));

    let logs = format!("{}{}", pc.stdout(), pc.stderr());
    assert!(
        !logs.contains(&assertion) && !logs.contains(&fa),
        "an assertion in the logs"
    );
}

#[tokio::test]
async fn a_renamed_assertion_header_is_stripped_too() {
    let up = RawUpstream::start();
    let setup = Setup::new();
    users(&setup);
    let pc = setup.start(&config(
        &up.url(),
        "issuer:\n  assertion: { header: X-Identity-Jwt }\n",
    ));
    let port = pc.http_port();
    let host = format!("127.0.0.1:{port}");
    let forged = [
        ("X-Identity-Jwt", "forged"),
        ("x_identity_jwt", "forged"),
        ("X-Portcullis-Assertion", "forged"),
    ];
    let r = get(port, "open.test", "/", &forged).await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    for (name, _) in forged {
        assert!(seen.header_all(name).is_empty(), "{name} reached the app");
    }
    let client = FormClient::new(port);
    let (r, _) = client
        .password(&format!("http://{host}/"), "alice", "pw-alice")
        .await;
    let cookie = session_cookie(&r).unwrap();
    let mut headers = forged.to_vec();
    headers.push(("Cookie", &cookie));
    let r = get(port, &host, "/", &headers).await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    let all = seen.header_all("x-identity-jwt");
    assert_eq!(all.len(), 1);
    assert_ne!(all[0], b"forged");
    assert!(seen.header_all("x_identity_jwt").is_empty());
    assert!(seen.header_all("x-portcullis-assertion").is_empty());
}

#[tokio::test]
async fn keys_of_every_algorithm_from_gen_key() {
    let setup = Setup::new();
    users(&setup);
    let mut kinds = Vec::new();
    for alg in ["EdDSA", "ES256", "RS256"] {
        let (code, pem, err) = run_cli(&["gen-key", "--alg", alg], setup.path(), &[]);
        assert_eq!(code, Some(0), "{err}");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        setup.write(&format!("{alg}.pem"), &pem);
        kinds.push(alg);
    }
    let (code, _, err) = run_cli(&["gen-key"], setup.path(), &[]);
    assert_eq!(code, Some(0), "ES256 by default: {err}");
    let (code, _, err) = run_cli(&["gen-key", "--alg", "HS256"], setup.path(), &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("HS256"), "{err}");

    let up = RawUpstream::start();
    let issuer =
        "issuer:\n  keys: [{ file: EdDSA.pem }, { file: ES256.pem }, { file: RS256.pem }]\n";
    let pc = setup.start(&config(&up.url(), issuer));
    let port = pc.http_port();
    let host = format!("127.0.0.1:{port}");
    let base = format!("http://{host}");
    let r = get(port, &host, "/.well-known/jwks.json", &[]).await;
    let jwks: Value = serde_json::from_slice(&r.body).unwrap();
    let ktys: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    assert_eq!(ktys, ["OKP", "EC", "RSA"]);
    for k in jwks["keys"].as_array().unwrap() {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none());
        }
        assert_eq!(k["kid"].as_str().unwrap().len(), 43, "a SHA-256 thumbprint");
    }
    // The first key signs.
    let client = FormClient::new(port);
    let (r, _) = client
        .password(&format!("{base}/"), "alice", "pw-alice")
        .await;
    let cookie = session_cookie(&r).unwrap();
    let r = get(port, &host, "/", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    let assertion = up.last().header("x-portcullis-assertion").unwrap();
    let v = jose_verify(
        &format!("{base}/.well-known/jwks.json"),
        &base,
        "127.0.0.1",
        "JWT",
        &assertion,
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["header"]["alg"], "EdDSA");
    assert_eq!(v["header"]["kid"], jwks["keys"][0]["kid"]);
}

#[test]
fn check_explains_issuer_mistakes() {
    let setup = Setup::new();
    users(&setup);
    setup.write(
        "bad.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let cases = [
        (
            "issuer:\n  keys: [{ file: bad.pem }]\n",
            "issuer.keys[0].file",
        ),
        ("issuer:\n  keys: [{ file: missing.pem }]\n", "cannot read"),
        ("issuer:\n  store: redis\n", "needs session.store: redis"),
        ("issuer:\n  store: memcached\n", "issuer.store"),
        ("issuer:\n  rotate_every: 1s\n", "issuer.rotate_every"),
        ("issuer:\n  algorithm: HS256\n", "issuer.algorithm"),
        (
            "issuer:\n  assertion: { ttl: 1s }\n",
            "issuer.assertion.ttl",
        ),
        (
            "issuer:\n  clients: [{ id: a, secret_hash: plain, scopes: [x] }]\n",
            "issuer.clients[0].secret_hash",
        ),
        ("issuer:\n  clients: [{ id: a, scopes: [x] }]\n", "required"),
        (
            "issuer:\n  url: https://auth.example.com/path\n",
            "issuer.url",
        ),
        ("issuer:\n  unknown_key: 1\n", "unknown key"),
    ];
    for (issuer, want) in cases {
        let yaml = setup.render(&config("http://127.0.0.1:9", issuer));
        setup.write("portcullis.yaml", &yaml);
        let (code, out, err) =
            run_cli(&["check", "--config", "portcullis.yaml"], setup.path(), &[]);
        assert_ne!(code, Some(0), "{issuer}: {out}");
        assert!(err.contains(want), "{issuer}: want {want:?} in {err}");
        assert!(err.contains("portcullis.yaml:"), "file:line:col: {err}");
    }
    // A valid one: the summary names the issuer.
    let yaml = setup.render(&config("http://127.0.0.1:9", "issuer: {}\n"));
    setup.write("portcullis.yaml", &yaml);
    let (code, out, err) = run_cli(&["check", "--config", "portcullis.yaml"], setup.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("issuer: http://127.0.0.1:"), "{out}");
}
