//! The login part of the config: `server.public_url`, `session`, `providers`, compiled into an
//! [`AuthConfig`]. Reads only `*_file` secrets, and reads them on every load: their values (not
//! their paths) go into the fingerprint that decides whether a reload rebuilds the services.

use super::compile::{note, read_secret_file, resolve};
use super::error::Problems;
use super::schema;
use super::values;
use crate::auth::{AuthConfig, StoreBackend};
use crate::directory::LocalProvider;
use crate::oidc::{ClaimNames, ProviderSettings};
use crate::redirect::RedirectPolicy;
use crate::routes::HostPattern;
use crate::secret::{redact_url, Fingerprint, Fingerprinter, Secret, SecretUrl};
use crate::session::{
    CookieSettings, RedisSettings, RedisTarget, SameSite, SessionKeys, StoreSettings,
};
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Compiles the login settings; `None` when no provider is configured.
pub fn compile_auth(
    file: &schema::File,
    hosts: &[HostPattern],
    base: &Path,
    p: &mut Problems,
) -> Option<AuthConfig> {
    if file.providers.is_empty() {
        if file.session.is_some() {
            p.add(
                "session",
                "a session store needs at least one entry in providers",
            );
        }
        return None;
    }

    let public_url = match &file.server.public_url {
        None => {
            p.add("server.public_url", "required with providers: the URL users reach Portcullis at, e.g. https://auth.example.com");
            None
        }
        Some(s) => note(p, "server.public_url".into(), public_url(s)),
    };
    let default_session = schema::Session::default();
    let session = file.session.as_ref().unwrap_or(&default_session);
    let skey = if file.session.is_some() {
        "session"
    } else {
        "providers"
    };

    // Secrets: inline and/or from a file, one per line.
    let mut secrets: Vec<Secret<String>> = session.secrets.clone();
    if let Some(f) = &session.secrets_file {
        if let Some(text) = note(
            p,
            "session.secrets_file".into(),
            read_secret_file(&resolve(base, f)),
        ) {
            secrets.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Secret::new(l.to_string())),
            );
        }
    }
    let keys = if secrets.is_empty() {
        p.add(
            format!("{skey}{}", if skey == "session" { ".secrets" } else { "" }),
            "session.secrets is required with providers: generate one with `portcullis gen-secret`",
        );
        None
    } else {
        let plain: Vec<&str> = secrets.iter().map(|s| s.expose().as_str()).collect();
        note(
            p,
            "session.secrets".into(),
            SessionKeys::from_secrets(&plain).map_err(|e| e.to_string()),
        )
    };

    let dur = |p: &mut Problems, key: &str, s: &str| {
        note(p, format!("session.{key}"), values::duration(s))
    };
    let lifetime = dur(p, "lifetime", &session.lifetime);
    let idle = dur(p, "idle_timeout", &session.idle_timeout);
    let cache_ttl = dur(p, "cache_ttl", &session.cache_ttl);
    let store = StoreSettings {
        lifetime: lifetime.unwrap_or(Duration::from_secs(43200)),
        idle_timeout: idle.unwrap_or(Duration::from_secs(3600)),
        max_per_user: session.max_per_user,
    };
    note(p, "session.lifetime".into(), store.validate());

    let backend = match session.store.as_str() {
        "memory" => {
            if session.redis.is_some() {
                p.add("session.redis", "only used with store: redis");
            }
            Some(StoreBackend::Memory)
        }
        "redis" => redis(session.redis.as_ref(), base, p).map(StoreBackend::Redis),
        other => {
            p.add(
                "session.store",
                format!("unknown store {other:?}: use memory or redis"),
            );
            None
        }
    };

    let c = &session.cookie;
    let same_site = match c.same_site.to_ascii_lowercase().as_str() {
        "lax" => SameSite::Lax,
        "strict" => SameSite::Strict,
        "none" => SameSite::None,
        other => {
            p.add(
                "session.cookie.same_site",
                format!("unknown value {other:?}: use lax, strict or none"),
            );
            SameSite::Lax
        }
    };
    let cookie = CookieSettings {
        name: c.name.clone(),
        domain: c.domain.as_ref().map(|d| d.to_ascii_lowercase()),
        same_site,
        secure: c.secure,
    };
    note(p, "session.cookie".into(), cookie.validate());
    let handover_cookie = cookie.host_only();
    let cookie = cookie.with_host_prefix();

    let mut providers = Vec::new();
    let mut local: Vec<LocalProvider> = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    for (i, pr) in file.providers.iter().enumerate() {
        let key = format!("providers[{i}]");
        if !pr.id.is_empty() && ids.contains(&pr.id.as_str()) {
            p.add(
                format!("{key}.id"),
                format!("duplicate provider id {:?}", pr.id),
            );
            continue;
        }
        ids.push(&pr.id);
        if pr.kind == "local" {
            check_id(pr, &key, p);
            if let Some(l) = super::compile_local::local_provider(pr, &key, base, p) {
                local.push(l);
            }
            continue;
        }
        super::compile_local::refuse_local_keys(pr, &key, p);
        if let Some(settings) = provider(pr, &key, public_url.as_ref(), base, p) {
            if providers
                .iter()
                .any(|q: &ProviderSettings| q.id == settings.id)
            {
                p.add(
                    format!("{key}.id"),
                    format!("duplicate provider id {:?}", settings.id),
                );
                continue;
            }
            providers.push(settings);
        }
    }

    let mut redirects = RedirectPolicy::default();
    for h in hosts {
        redirects.allow_pattern(h);
    }
    if let Some(url) = &public_url {
        redirects.allow_origin(url);
    }
    for (i, d) in file.server.allowed_redirect_domains.iter().enumerate() {
        if let Err(e) = redirects.allow_domain(d) {
            p.add(format!("server.allowed_redirect_domains[{i}]"), e);
        }
    }

    let (Some(public_url), Some(keys), Some(backend), Some(cache_ttl)) =
        (public_url, keys, backend, cache_ttl)
    else {
        return None;
    };
    let fingerprint = services_fingerprint(&secrets, &backend, &store, cache_ttl, &providers);
    Some(AuthConfig {
        public_url,
        keys: Arc::new(keys),
        backend,
        store,
        cookie_base: c.name.clone(),
        cookie,
        handover_cookie,
        cache_ttl,
        refresh: session.refresh,
        providers,
        local: local.into_iter().map(Arc::new).collect(),
        default_provider: file.providers.first().map(|pr| pr.id.clone()),
        redirects,
        fingerprint,
    })
}

/// What the live services ([`crate::auth::Auth`]) are built from, hashed by value: the session
/// secrets (those from `secrets_file` included), the store and how to reach it (the URL from
/// `url_file`, password and all), the cache, and every provider setting (a
/// `client_secret_file`'s secret included). Paths are not in it: changing only what a file
/// holds changes the fingerprint, and the next reload builds new services with the new value.
///
/// What requests read from `Auth::config` (cookies, return-URL domains, `refresh`) is not in
/// it either: a reload that changes only those keeps the services (and with them every
/// session of the memory store) under the new settings.
fn services_fingerprint(
    secrets: &[Secret<String>],
    backend: &StoreBackend,
    store: &StoreSettings,
    cache_ttl: Duration,
    providers: &[ProviderSettings],
) -> Fingerprint {
    let mut fp = Fingerprinter::new();
    (secrets, backend, store, cache_ttl, providers).hash(&mut fp);
    fp.fingerprint()
}

fn public_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{s:?} must be an http(s) URL with a host"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!("{s:?} must not have a path or query"));
    }
    Ok(url)
}

fn redis(r: Option<&schema::Redis>, base: &Path, p: &mut Problems) -> Option<RedisSettings> {
    let Some(r) = r else {
        p.add(
            "session.redis",
            "store: redis needs session.redis.url, .cluster or .sentinel",
        );
        return None;
    };
    let url = match (&r.url, &r.url_file) {
        (Some(_), Some(_)) => {
            p.add("session.redis.url_file", "give url or url_file, not both");
            None
        }
        (Some(u), None) => Some(u.clone()),
        (None, Some(f)) => note(
            p,
            "session.redis.url_file".into(),
            read_secret_file(&resolve(base, f)),
        )
        .map(SecretUrl::new),
        (None, None) => None,
    };
    let check_url = |p: &mut Problems, key: String, u: &SecretUrl| {
        let ok = url::Url::parse(u.expose())
            .ok()
            .filter(|x| matches!(x.scheme(), "redis" | "rediss") && x.host_str().is_some());
        if ok.is_none() {
            // The URL may hold a password: never echo it.
            p.add(
                key,
                format!(
                    "invalid Redis URL {}: expected redis://host:port/db or rediss://",
                    redact_url(u.expose())
                ),
            );
        }
        ok.is_some()
    };
    let given = [url.is_some(), !r.cluster.is_empty(), r.sentinel.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given != 1 {
        p.add(
            "session.redis",
            "give exactly one of url, cluster or sentinel",
        );
        return None;
    }
    let target = if let Some(u) = url {
        check_url(p, "session.redis.url".into(), &u).then(|| RedisTarget::Url(u.into_inner()))?
    } else if !r.cluster.is_empty() {
        let ok = r
            .cluster
            .iter()
            .enumerate()
            .all(|(i, u)| check_url(p, format!("session.redis.cluster[{i}]"), u));
        ok.then(|| {
            RedisTarget::Cluster(r.cluster.iter().map(|u| u.expose().to_string()).collect())
        })?
    } else {
        let s = r.sentinel.as_ref()?;
        if s.master.is_empty() || s.urls.is_empty() {
            p.add(
                "session.redis.sentinel",
                "needs master and at least one of urls",
            );
            return None;
        }
        let ok = s
            .urls
            .iter()
            .enumerate()
            .all(|(i, u)| check_url(p, format!("session.redis.sentinel.urls[{i}]"), u));
        ok.then(|| RedisTarget::Sentinel {
            master: s.master.clone(),
            urls: s.urls.iter().map(|u| u.expose().to_string()).collect(),
            db: 0,
            username: None,
            password: None,
            tls: false,
        })?
    };
    let mut settings = RedisSettings::new(target);
    if let Some(prefix) = &r.key_prefix {
        settings.key_prefix = prefix.clone();
    }
    Some(settings)
}

fn check_id(pr: &schema::Provider, key: &str, p: &mut Problems) {
    if pr.id.is_empty()
        || !pr
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.add(
            format!("{key}.id"),
            "an id of letters, digits, - and _ is required",
        );
    }
}

fn provider(
    pr: &schema::Provider,
    key: &str,
    public_url: Option<&url::Url>,
    base: &Path,
    p: &mut Problems,
) -> Option<ProviderSettings> {
    let before = p.0.len();
    check_id(pr, key, p);
    match pr.kind.as_str() {
        "oidc" => {}
        "" => p.add(format!("{key}.type"), "required: oidc or local"),
        other => p.add(
            format!("{key}.type"),
            format!("unknown provider type {other:?}: use oidc or local"),
        ),
    }
    let issuer = url::Url::parse(&pr.issuer)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    if issuer.is_none() {
        p.add(
            format!("{key}.issuer"),
            format!("invalid issuer URL {:?}", pr.issuer),
        );
    }
    if pr.client_id.is_empty() {
        p.add(format!("{key}.client_id"), "required");
    }
    let secret = match (&pr.client_secret, &pr.client_secret_file) {
        (Some(_), Some(_)) => {
            p.add(
                format!("{key}.client_secret_file"),
                "give client_secret or client_secret_file, not both",
            );
            None
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(f)) => note(
            p,
            format!("{key}.client_secret_file"),
            read_secret_file(&resolve(base, f)),
        )
        .map(Secret::new),
        (None, None) => None,
    };
    let scopes = pr
        .scopes
        .clone()
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        p.add(format!("{key}.scopes"), "must include openid");
    }
    let d = ClaimNames::default();
    let claims = ClaimNames {
        user: pr.claims.user.clone().unwrap_or(d.user),
        email: pr.claims.email.clone().unwrap_or(d.email),
        groups: pr.claims.groups.clone().unwrap_or(d.groups),
        name: pr.claims.name.clone().unwrap_or(d.name),
    };
    if p.0.len() > before {
        return None;
    }
    let mut redirect = public_url?.clone();
    redirect.set_path("/.portcullis/callback");
    if pr.bearer_clients.as_ref().is_some_and(Vec::is_empty) {
        p.add(
            format!("{key}.bearer_clients"),
            "an empty list accepts no Bearer token: leave the key out to accept any client",
        );
    }
    Some(ProviderSettings {
        id: pr.id.clone(),
        issuer: pr.issuer.clone(),
        client_id: pr.client_id.clone(),
        client_secret: secret,
        scopes,
        claims,
        extra_auth_params: pr
            .extra_auth_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        redirect_uri: redirect.to_string(),
        audiences: pr
            .audience
            .as_ref()
            .map(|a| a.to_vec())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| vec![pr.client_id.clone()]),
        mfa_acr: pr.mfa.acr.clone(),
        bearer_clients: pr.bearer_clients.clone(),
    })
}
