//! Secrets in the config: `Debug` of what the file is read into, and of the compiled (and
//! activated) `Runtime`, shows none of them; the reload fingerprint follows the *values* read
//! from `*_file` files, not their paths.

use super::*;
use crate::runtime::Runtime;
use std::path::PathBuf;
use std::sync::Arc;

const SESSION_INLINE: &str = "c2Vzc2lvbi1zZWNyZXQtaW5saW5lLTMyLWJ5dGVzISE=";
const SESSION_FILE: &str = "c2Vzc2lvbi1zZWNyZXQtZnJvbS1maWxlLTMyYnl0ZXM=";
const SESSION_ROTATED: &str = "c2Vzc2lvbi1zZWNyZXQtcm90YXRlZC0zMi1ieXRlcyE=";
const REDIS_FILE_PASS: &str = "redis-file-pass-4f1d";
const REDIS_INLINE_PASS: &str = "redis-inline-pass-9c03";
const CLUSTER_PASS: &str = "cluster-pass-d2e8";
const SENTINEL_PASS: &str = "sentinel-pass-61b7";
const CLIENT_INLINE: &str = "client-secret-inline-8a2c";
const CLIENT_FILE: &str = "client-secret-file-77e0";
const HEADER_FILE: &str = "upstream-token-from-file-3b9e";
const HEADER_VAR: &str = "upstream-token-from-var-51aa";

/// Every secret the tests put into a config.
const ALL: &[&str] = &[
    SESSION_INLINE,
    SESSION_FILE,
    SESSION_ROTATED,
    REDIS_FILE_PASS,
    REDIS_INLINE_PASS,
    CLUSTER_PASS,
    SENTINEL_PASS,
    CLIENT_INLINE,
    CLIENT_FILE,
    HEADER_FILE,
    HEADER_VAR,
];

/// A directory with a config's secret files.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        let d = Dir(tempfile::tempdir().expect("temp dir"));
        d.write("session-secrets", &format!("{SESSION_FILE}\n"));
        d.write(
            "redis-url",
            &format!("redis://:{REDIS_FILE_PASS}@127.0.0.1:6379/0\n"),
        );
        d.write("client-secret", &format!("{CLIENT_FILE}\n"));
        d.write("upstream-token", &format!("Bearer {HEADER_FILE}\n"));
        d
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.path().join(name), text).expect("writing a secret file");
    }

    fn config(&self) -> PathBuf {
        self.0.path().join("portcullis.yaml")
    }

    fn load(&self, text: &str) -> Runtime {
        load_str(text, &self.config(), secret_env).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn secret_env(name: &str) -> Option<String> {
    (name == "UPSTREAM_KEY").then(|| HEADER_VAR.to_string())
}

/// A config with every kind of secret, `store` being the `session:` lines that choose the store.
fn config_with(store: &str) -> String {
    format!(
        "server:\n  public_url: https://auth.example.com\n\
         session:\n{store}  secrets: [\"{SESSION_INLINE}\"]\n  secrets_file: session-secrets\n\
         providers:\n\
         \x20 - {{ id: inline, type: oidc, issuer: \"http://127.0.0.1:9\", client_id: a, client_secret: {CLIENT_INLINE} }}\n\
         \x20 - {{ id: filed, type: oidc, issuer: \"http://127.0.0.1:9\", client_id: b, client_secret_file: client-secret }}\n\
         routes:\n\
         \x20 - upstream: http://127.0.0.1:3000\n\
         \x20   headers:\n\
         \x20     add: {{ X-Api-Key: \"${{UPSTREAM_KEY}}\" }}\n\
         \x20     add_file: {{ Authorization: upstream-token }}\n"
    )
}

const REDIS_URL_FILE: &str = "  store: redis\n  redis: { url_file: redis-url }\n";

fn assert_hidden(what: &str, value: &impl std::fmt::Debug) {
    for shown in [format!("{value:?}"), format!("{value:#?}")] {
        for secret in ALL {
            assert!(
                !shown.contains(secret),
                "{what}: {secret} is shown in\n{shown}"
            );
        }
    }
}

#[test]
fn the_compiled_runtime_shows_no_secret() {
    let dir = Dir::new();
    let rt = dir.load(&config_with(REDIS_URL_FILE));
    // The values did get in, under their own keys.
    let route = &rt.routes.routes()[0];
    let sent: Vec<_> = route
        .headers
        .request_add
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert!(sent.contains(&("authorization", &*format!("Bearer {HEADER_FILE}"))));
    assert!(sent.contains(&("x-api-key", HEADER_VAR)));
    let auth = rt.auth_config.as_ref().unwrap();
    assert_eq!(auth.keys.secret_count(), 2);
    let secret = |i: usize| auth.providers[i].client_secret.as_ref().unwrap().expose();
    assert_eq!(
        (secret(0).as_str(), secret(1).as_str()),
        (CLIENT_INLINE, CLIENT_FILE)
    );
    let crate::auth::StoreBackend::Redis(redis) = &auth.backend else {
        panic!("a Redis store")
    };
    assert!(matches!(&redis.target,
        crate::session::RedisTarget::Url(u) if u.contains(REDIS_FILE_PASS)));

    assert_hidden("the runtime", &rt);
    // Still useful: names and hosts show.
    let shown = format!("{rt:?}");
    for visible in ["authorization", "x-api-key", "127.0.0.1:6379", "filed"] {
        assert!(shown.contains(visible), "{visible} missing from\n{shown}");
    }
}

#[test]
fn inline_redis_cluster_and_sentinel_passwords_are_hidden() {
    let dir = Dir::new();
    for store in [
        format!("  store: redis\n  redis: {{ url: \"redis://u:{REDIS_INLINE_PASS}@10.0.0.1:6379/1\" }}\n"),
        format!("  store: redis\n  redis: {{ cluster: [\"redis://:{CLUSTER_PASS}@10.0.0.2:7000\"] }}\n"),
        format!(
            "  store: redis\n  redis: {{ sentinel: {{ master: m, urls: [\"redis://:{SENTINEL_PASS}@10.0.0.3:26379\"] }} }}\n"
        ),
    ] {
        let text = config_with(&store);
        let rt = dir.load(&text);
        assert_hidden("the runtime", &rt);
        let file: schema::File = serde_yaml::from_str(&expand::expand(&text, secret_env).0)
            .expect("the config parses");
        assert_hidden("the parsed file", &file);
        assert!(format!("{file:?}").contains("10.0.0."), "{file:?}");
    }
}

#[test]
fn the_parsed_file_shows_no_secret() {
    let text = config_with(REDIS_URL_FILE);
    let file: schema::File =
        serde_yaml::from_str(&expand::expand(&text, secret_env).0).expect("the config parses");
    assert_eq!(
        file.providers[0].client_secret.as_ref().unwrap().expose(),
        CLIENT_INLINE
    );
    assert_hidden("the parsed file", &file);
}

#[test]
fn the_activated_runtime_shows_no_secret() {
    let dir = Dir::new();
    let mut rt = dir.load(&config_with("  store: memory\n"));
    rt.activate(None).expect("the services start");
    assert!(rt.auth.is_some());
    assert_hidden("the activated runtime", &rt);
}

/// The fingerprint of the login services of `text` loaded from `dir`.
fn fingerprint(dir: &Dir, text: &str) -> crate::secret::Fingerprint {
    dir.load(text).auth_config.unwrap().fingerprint
}

#[test]
fn the_fingerprint_follows_what_url_file_holds() {
    let dir = Dir::new();
    let text = config_with(REDIS_URL_FILE);
    let before = fingerprint(&dir, &text);
    assert_eq!(
        fingerprint(&dir, &text),
        before,
        "same files, same fingerprint"
    );
    // Same path, new password: the services must be rebuilt.
    dir.write("redis-url", "redis://:rotated@127.0.0.1:6379/0\n");
    assert_ne!(fingerprint(&dir, &text), before);
}

#[test]
fn the_fingerprint_follows_an_inline_redis_password() {
    // It used to come from `Debug` of the Redis settings, which now hides the password.
    let dir = Dir::new();
    let with = |pass: &str| {
        config_with(&format!(
            "  store: redis\n  redis: {{ url: \"redis://:{pass}@127.0.0.1:6379/0\" }}\n"
        ))
    };
    assert_ne!(
        fingerprint(&dir, &with("one")),
        fingerprint(&dir, &with("two"))
    );
}

#[test]
fn the_fingerprint_follows_what_client_secret_file_holds() {
    let dir = Dir::new();
    let text = config_with("  store: memory\n");
    let before = fingerprint(&dir, &text);
    dir.write("client-secret", "rotated-client-secret\n");
    assert_ne!(fingerprint(&dir, &text), before);
}

#[test]
fn the_fingerprint_follows_what_secrets_file_holds() {
    let dir = Dir::new();
    let text = config_with("  store: memory\n");
    let before = fingerprint(&dir, &text);
    dir.write(
        "session-secrets",
        &format!("{SESSION_ROTATED}\n{SESSION_FILE}\n"),
    );
    assert_ne!(fingerprint(&dir, &text), before);
}

#[test]
fn add_file_is_read_again_on_every_load() {
    let dir = Dir::new();
    let text = config_with("  store: memory\n");
    let value = |rt: &Runtime| {
        rt.routes.routes()[0]
            .headers
            .request_add
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        value(&dir.load(&text)).as_deref(),
        Some(&*format!("Bearer {HEADER_FILE}"))
    );
    dir.write("upstream-token", "Bearer rotated\n");
    assert_eq!(value(&dir.load(&text)).as_deref(), Some("Bearer rotated"));
}

#[test]
fn a_reload_that_keeps_the_services_serves_its_own_settings() {
    let dir = Dir::new();
    let text = config_with("  store: memory\n");
    let mut first = dir.load(&text);
    first.activate(None).expect("the services start");
    let mut second = dir.load(&format!(
        "{text}  - {{ host: new.example.com, upstream: echo:// }}\n"
    ));
    second.activate(Some(&first)).expect("reactivated");
    let (a, b) = (first.auth.as_ref().unwrap(), second.auth.as_ref().unwrap());
    assert!(Arc::ptr_eq(&a.store, &b.store), "the sessions are kept");
    assert!(Arc::ptr_eq(&a.cache, &b.cache));
    let here = url::Url::parse("https://auth.example.com").unwrap();
    let rd = "https://new.example.com/x";
    assert!(a.config.redirects.check(rd, &here).is_none());
    assert!(
        b.config.redirects.check(rd, &here).is_some(),
        "the new route's host is a valid return URL after the reload"
    );

    // A rotated client secret: new services.
    dir.write("client-secret", "rotated-client-secret\n");
    let mut third = dir.load(&text);
    third.activate(Some(&second)).expect("reactivated");
    let c = third.auth.as_ref().unwrap();
    assert!(!Arc::ptr_eq(&b.store, &c.store));
    let filed = &c.providers["filed"].settings;
    assert_eq!(
        filed.client_secret.as_ref().unwrap().expose(),
        "rotated-client-secret"
    );
}
