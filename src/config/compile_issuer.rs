//! `issuer:`, compiled into an [`IssuerConfig`]. Reads the PEM key files and the clients'
//! `secret_hash_file`s; generates nothing (a generated key is made when serving starts, so
//! `check` has no side effect).

use super::compile::{note, read_secret_file, resolve};
use super::error::Problems;
use super::schema;
use super::values;
use crate::auth::{AuthConfig, StoreBackend};
use crate::issuer::clients::{Client, Clients};
use crate::issuer::keys::{Alg, Key};
use crate::issuer::{IssuerConfig, KeySource};
use crate::secret::{Fingerprinter, Secret};
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest lifetime accepted for assertions and access tokens.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The assertion header of an enabled issuer, for the list of stripped headers (errors are
/// reported by [`compile_issuer`]).
pub fn assertion_header(file: &schema::File) -> Option<http::HeaderName> {
    let i = file.issuer.as_ref().filter(|i| i.enabled)?;
    http::HeaderName::from_bytes(i.assertion.header.as_bytes()).ok()
}

pub fn compile_issuer(
    file: &schema::File,
    auth: Option<&AuthConfig>,
    base: &Path,
    p: &mut Problems,
) -> Option<IssuerConfig> {
    let i = file.issuer.as_ref().filter(|i| i.enabled)?;
    let url = match i.url.as_deref().or(file.server.public_url.as_deref()) {
        None => {
            p.add(
                "issuer.url",
                "required without server.public_url: the URL tokens are issued under, e.g. https://auth.example.com",
            );
            None
        }
        Some(s) => note(p, "issuer.url".into(), issuer_url(s)),
    };
    let algorithm = match Alg::parse(&i.algorithm) {
        Some(a) => Some(a),
        None => {
            p.add(
                "issuer.algorithm",
                format!(
                    "unknown algorithm {:?}: use ES256, EdDSA or RS256",
                    i.algorithm
                ),
            );
            None
        }
    };
    let keys = match i.store.as_deref() {
        Some("redis") if !i.keys.is_empty() => {
            p.add("issuer.keys", "give keys or store: redis, not both");
            None
        }
        Some("redis") => match auth.map(|a| (&a.backend, &a.keys)) {
            Some((StoreBackend::Redis(settings), sealing)) => {
                let rotate = values::duration(&i.rotate_every)
                    .ok()
                    .filter(|d| d.as_secs() >= 10);
                algorithm.zip(rotate).map(|(algorithm, rotate_every)| {
                    KeySource::Redis(crate::issuer::store::StoreSettings {
                        redis: settings.clone(),
                        sealing: Arc::clone(sealing),
                        algorithm,
                        rotate_every,
                        longest_ttl: Duration::ZERO,
                    })
                })
            }
            _ => {
                p.add(
                    "issuer.store",
                    "store: redis needs session.store: redis (the keys are kept there, sealed with the session secrets)",
                );
                None
            }
        },
        Some(other) => {
            p.add(
                "issuer.store",
                format!("unknown store {other:?}: use redis, or give keys"),
            );
            None
        }
        None if i.keys.is_empty() => algorithm.map(KeySource::Generated),
        None => {
            let mut keys = Vec::new();
            for (n, k) in i.keys.iter().enumerate() {
                let key = format!("issuer.keys[{n}].file");
                if k.file.is_empty() {
                    p.add(key, "a PEM file is required (portcullis gen-key)");
                    continue;
                }
                let path = resolve(base, &k.file);
                let pem = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        p.add(key, format!("cannot read {}: {e}", path.display()));
                        continue;
                    }
                };
                match Key::from_pem(&pem) {
                    Ok(parsed) if keys.iter().any(|k: &Arc<Key>| k.kid == parsed.kid) => {
                        p.add(key, "the same key is listed twice")
                    }
                    Ok(parsed) => keys.push(Arc::new(parsed)),
                    Err(e) => p.add(key, format!("{}: {e}", path.display())),
                }
            }
            Some(KeySource::Files(keys))
        }
    };
    let mut ttl = |key: &str, s: &str| {
        note(
            p,
            format!("issuer.{key}"),
            values::duration(s).and_then(|d| {
                if d < Duration::from_secs(10) || d > MAX_TTL {
                    Err("must be between 10s and 24h".into())
                } else {
                    Ok(d)
                }
            }),
        )
    };
    let assertion_ttl = ttl("assertion.ttl", &i.assertion.ttl);
    let access_token_ttl = ttl("access_token_ttl", &i.access_token_ttl);
    match values::duration(&i.rotate_every) {
        Err(e) => p.add("issuer.rotate_every", e),
        Ok(d) if d.as_secs() < 10 => p.add("issuer.rotate_every", "must be at least 10s"),
        Ok(_) => {}
    }
    let assertion_header = note(
        p,
        "issuer.assertion.header".into(),
        http::HeaderName::from_bytes(i.assertion.header.as_bytes())
            .map_err(|_| format!("invalid header name {:?}", i.assertion.header)),
    );
    let iss = url.as_ref().map(|(iss, _)| iss.clone());
    let mut list: Vec<Client> = Vec::new();
    for (n, c) in i.clients.iter().enumerate() {
        let key = format!("issuer.clients[{n}]");
        if c.id.is_empty() || c.id.contains(':') || c.id.chars().any(char::is_control) {
            p.add(
                format!("{key}.id"),
                "an id is required, without ':' or control characters",
            );
            continue;
        }
        if list.iter().any(|l| l.id == c.id) {
            p.add(
                format!("{key}.id"),
                format!("client {:?} is listed twice", c.id),
            );
            continue;
        }
        let hash = match (&c.secret_hash, &c.secret_hash_file) {
            (Some(_), Some(_)) => {
                p.add(
                    format!("{key}.secret_hash_file"),
                    "give secret_hash or secret_hash_file, not both",
                );
                None
            }
            (Some(h), None) => Some(h.clone()),
            (None, Some(f)) => note(
                p,
                format!("{key}.secret_hash_file"),
                read_secret_file(&resolve(base, f)),
            )
            .map(Secret::new),
            (None, None) => {
                p.add(
                    format!("{key}.secret_hash"),
                    "required: an argon2id hash from portcullis hash-password",
                );
                None
            }
        };
        let Some(hash) = hash else { continue };
        if let Err(m) = crate::password::check_phc(hash.expose()) {
            p.add(format!("{key}.secret_hash"), m);
            continue;
        }
        for (s, scope) in c.scopes.iter().enumerate() {
            if scope.is_empty()
                || scope
                    .chars()
                    .any(|ch| ch == ' ' || ch == '"' || ch == '\\' || ch.is_control())
            {
                p.add(
                    format!("{key}.scopes[{s}]"),
                    "a scope is a non-empty word without spaces or quotes",
                );
            }
        }
        let audience = match &c.audience {
            Some(a) if a.trim().is_empty() => {
                p.add(format!("{key}.audience"), "must not be empty");
                continue;
            }
            Some(a) => a.clone(),
            None => iss.clone().unwrap_or_default(),
        };
        list.push(Client::new(c.id.clone(), hash, c.scopes.clone(), audience));
    }
    let backend = auth.map_or(StoreBackend::Memory, |a| a.backend.clone());
    let (
        Some(url),
        Some(iss),
        Some(keys),
        Some(assertion_ttl),
        Some(access_token_ttl),
        Some(assertion_header),
    ) = (
        url,
        iss,
        keys,
        assertion_ttl,
        access_token_ttl,
        assertion_header,
    )
    else {
        return None;
    };
    let mut keys = keys;
    let mut fp = Fingerprinter::new();
    match &mut keys {
        KeySource::Files(k) => k.iter().for_each(|k| k.kid.hash(&mut fp)),
        KeySource::Generated(alg) => alg.hash(&mut fp),
        KeySource::Redis(s) => {
            s.longest_ttl = assertion_ttl.max(access_token_ttl);
            (s.algorithm, s.rotate_every, s.longest_ttl).hash(&mut fp);
            auth.map(|a| a.fingerprint).hash(&mut fp);
        }
    }
    backend.hash(&mut fp);
    Some(IssuerConfig {
        host: url.1,
        iss,
        keys,
        assertion_header: assertion_header.into(),
        assertion_ttl,
        access_token_ttl,
        clients: Arc::new(Clients::new(list)),
        backend,
        fingerprint: fp.fingerprint(),
    })
}

/// The issuer url: http(s), a host, no path, query or fragment. Kept as written (less a
/// trailing slash): it is every token's `iss`.
fn issuer_url(s: &str) -> Result<(String, String), String> {
    let url = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{s:?} must be an http(s) URL with a host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a path, query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{s:?} must not carry credentials"));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    Ok((url.as_str().trim_end_matches('/').to_string(), host))
}
