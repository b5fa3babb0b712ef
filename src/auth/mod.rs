//! Login and sessions, put together: the compiled settings ([`AuthConfig`]), the live services
//! built from them ([`Auth`]: store, cache, providers), and authentication of a request from
//! its session cookie. Nothing here knows Pingora.

pub mod bearer;
pub mod endpoints;
mod identity;

pub use identity::render_identity_headers;

use crate::directory::state::DirectoryState;
use crate::directory::LocalProvider;
use crate::oidc::{OidcProvider, ProviderSettings};
use crate::redirect::RedirectPolicy;
use crate::secret::Fingerprint;
use crate::session::{
    CookieSettings, MemoryStore, OpenedCookies, RedisSettings, RedisStore, SessionCache,
    SessionCookie, SessionKeys, SessionRecord, SessionStore, SharedClock, StoreError,
    StoreSettings, SystemClock,
};
use crate::telemetry::metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Sessions kept in one process's cache at most.
const CACHE_CAPACITY: usize = 100_000;
/// Sessions kept by the memory store at most.
const MEMORY_CAPACITY: usize = 1_000_000;
/// How long a refresh may hold its lock (one refresh per session across replicas).
const REFRESH_LOCK: Duration = Duration::from_secs(15);
/// Timeout for requests to the identity provider.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Hash)]
pub enum StoreBackend {
    Memory,
    Redis(RedisSettings),
}

/// Everything about login that the config says, compiled; pure data. `Debug` shows no secret
/// (the keys, Redis passwords and client secrets have their own redacting `Debug`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub public_url: url::Url,
    pub keys: Arc<SessionKeys>,
    pub backend: StoreBackend,
    pub store: StoreSettings,
    /// The session cookie; named `__Host-<name>` when secure and host-only.
    pub cookie: CookieSettings,
    /// The host-only cookie set by the hand-over on hosts outside `cookie.domain`.
    pub handover_cookie: CookieSettings,
    /// `session.cookie.name` as configured, without prefix: every cookie of ours is named
    /// after it ([`CookieSettings::is_own_cookie`]).
    pub cookie_base: String,
    pub cache_ttl: Duration,
    pub refresh: bool,
    /// The OpenID Connect providers, in config order.
    pub providers: Vec<ProviderSettings>,
    /// The `type: local` providers (built-in directory), in config order.
    pub local: Vec<Arc<LocalProvider>>,
    /// The first provider of the file, of either kind: where a login without a named
    /// provider goes.
    pub default_provider: Option<String>,
    pub redirects: RedirectPolicy,
    /// Hash of the settings the live services are built from (see
    /// `config::compile_auth::services_fingerprint`): the values of the secrets, those read
    /// from `*_file` files included, never their paths. A reload with the same fingerprint
    /// keeps the services ([`Auth::reconfigure`]).
    pub fingerprint: Fingerprint,
}

/// The live services: built once, shared by every request, reused across reloads.
pub struct Auth {
    /// The settings of the configuration this `Auth` serves (always the current one: a
    /// reload that keeps the services gets a new `Auth` with its own settings).
    pub config: AuthConfig,
    pub store: Arc<dyn SessionStore>,
    pub cache: Arc<SessionCache>,
    /// Session cookie values opened under `config`'s keys. Never carried to another `Auth`:
    /// a cache answers only for the keys that opened its values.
    opened: OpenedCookies,
    pub providers: HashMap<String, Arc<OidcProvider>>,
    /// What the built-in directory remembers (regulation, used codes), beside the sessions.
    pub directory: Arc<DirectoryState>,
    pub clock: SharedClock,
    /// Verified Bearer tokens.
    tokens: Arc<bearer::TokenCache>,
    /// Background tasks of the services, shared by every `Auth` on them.
    tasks: Arc<Tasks>,
}

/// Background tasks (cache invalidations, discovery), stopped when the last `Auth` using
/// them is dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Builds the services on the I/O runtime: the store connects lazily, discovery runs in
    /// the background, so this returns at once even when Redis or the IdP is down. On a
    /// reload, providers unchanged since `previous` start with what it discovered.
    pub fn start(
        config: AuthConfig,
        io: &tokio::runtime::Handle,
        previous: Option<&Auth>,
    ) -> Result<Arc<Auth>, String> {
        let clock: SharedClock = Arc::new(SystemClock);
        let store: Arc<dyn SessionStore> = match &config.backend {
            StoreBackend::Memory => Arc::new(MemoryStore::new(
                config.store,
                MEMORY_CAPACITY,
                Arc::clone(&clock),
            )),
            StoreBackend::Redis(settings) => Arc::new(
                io.block_on(RedisStore::connect(
                    settings.clone(),
                    config.store,
                    Arc::clone(&config.keys),
                    Arc::clone(&clock),
                ))
                .map_err(|e| format!("session store: {e}"))?,
            ),
        };
        // Tasks spawned from here on (cache invalidations, discovery) run on the I/O runtime.
        let _enter = io.enter();
        let directory = Arc::new(match &config.backend {
            StoreBackend::Memory => DirectoryState::memory(Arc::clone(&clock)),
            StoreBackend::Redis(settings) => DirectoryState::redis(settings, Arc::clone(&clock))
                .map_err(|e| format!("directory state: {e}"))?,
        });
        if !config.local.is_empty() {
            // The dummy hash that unknown names are checked against, computed now, so that
            // the first unknown name costs no more than a known one.
            crate::password::warm_up();
        }
        for l in &config.local {
            crate::telemetry::metrics::login_series(&l.id);
        }
        let cache = Arc::new(SessionCache::new(
            CACHE_CAPACITY,
            config.cache_ttl,
            config.store,
            Arc::clone(&clock),
        ));
        let mut tasks = vec![cache.listen(store.invalidations())];
        let mut providers = HashMap::new();
        for p in &config.providers {
            // Each provider's login series exist from start, at zero.
            for result in ["success", "failure", "error"] {
                metrics::LOGINS.with_label_values(&[p.id.as_str(), result]);
            }
            let provider =
                Arc::new(OidcProvider::new(p.clone(), IDP_TIMEOUT).map_err(|e| e.to_string())?);
            if let Some(old) = previous.and_then(|prev| prev.providers.get(&p.id)) {
                provider.carry_over(old);
            }
            tasks.push(provider.spawn_discovery());
            providers.insert(p.id.clone(), provider);
        }
        Ok(Arc::new(Auth {
            config,
            store,
            cache,
            opened: OpenedCookies::new(crate::session::opened::DEFAULT_CAPACITY),
            providers,
            directory,
            clock,
            tokens: Arc::default(),
            tasks: Arc::new(Tasks(tasks)),
        }))
    }

    /// The same live services (store, cache, providers: every session and connection) under
    /// `config`, for a reload whose settings differ only in what is read per request
    /// (cookies, return-URL domains, refresh): `config.fingerprint` must equal this one's.
    pub fn reconfigure(&self, config: AuthConfig) -> Arc<Auth> {
        debug_assert!(config.fingerprint == self.config.fingerprint);
        Arc::new(Auth {
            config,
            store: Arc::clone(&self.store),
            cache: Arc::clone(&self.cache),
            opened: OpenedCookies::new(crate::session::opened::DEFAULT_CAPACITY),
            providers: self.providers.clone(),
            directory: Arc::clone(&self.directory),
            clock: Arc::clone(&self.clock),
            tokens: Arc::clone(&self.tokens),
            tasks: Arc::clone(&self.tasks),
        })
    }

    pub fn provider(&self, id: &str) -> Option<&Arc<OidcProvider>> {
        self.providers.get(id)
    }

    /// The `type: local` provider `id`.
    pub fn local(&self, id: &str) -> Option<&Arc<LocalProvider>> {
        self.config.local.iter().find(|l| l.id == id)
    }

    pub fn default_provider(&self) -> Option<&Arc<OidcProvider>> {
        self.config
            .providers
            .first()
            .and_then(|p| self.providers.get(&p.id))
    }

    /// The session named by the request's cookie, if any and still valid. A cache hit costs no
    /// store command. `Err` only when the store cannot answer for an uncached session.
    pub async fn session(
        &self,
        cookie_header: Option<&str>,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(match self.session_lookup(cookie_header).await? {
            Lookup::Found(record) => Some(record),
            Lookup::Absent | Lookup::Stale => None,
        })
    }

    /// Like [`Auth::session`], telling a request without a session cookie from one whose cookie
    /// names no live session (tampered, under a retired key, expired, logged out, revoked).
    pub async fn session_lookup(&self, cookie_header: Option<&str>) -> Result<Lookup, StoreError> {
        let Some(header) = cookie_header else {
            return Ok(Lookup::Absent);
        };
        let now = self.clock.now_secs();
        let names = [
            self.config.cookie.name.as_str(),
            self.config.handover_cookie.name.as_str(),
        ];
        let mut presented = false;
        let mut found: Option<SessionCookie> = None;
        for (_, value) in
            crate::session::cookie::cookie_pairs(header).filter(|(name, _)| names.contains(name))
        {
            presented = true;
            let Some(cookie) = self.opened.decode(value, &self.config.keys, now) else {
                continue;
            };
            match found {
                None => found = Some(cookie),
                Some(first) if first.sid == cookie.sid => {}
                Some(_) => {
                    // Two live session cookies: one may have been planted by a sibling
                    // subdomain (cookie tossing), and nothing tells which. Neither counts.
                    tracing::warn!("several session cookies name different sessions; none is used");
                    return Ok(Lookup::Absent);
                }
            }
        }
        let Some(sid) = found.map(|c| c.sid) else {
            if presented {
                metrics::INVALID_COOKIES.inc();
                return Ok(Lookup::Stale);
            }
            return Ok(Lookup::Absent);
        };
        let record = match self.cache.load(self.store.as_ref(), &sid).await {
            Ok(r) => r,
            Err(e) => {
                metrics::count_store_error(&e);
                return Err(e);
            }
        };
        // The refresh (a round trip to the IdP) and the end of a session are boxed: kept
        // out of the size of every request's future, which Pingora moves into the heap
        // whole on each request.
        let live = match record {
            Some(r) if self.config.refresh && refresh_due(&r, now) => {
                Box::pin(self.refresh(r)).await
            }
            Some(r) if !self.directory_allows(&r) => {
                Box::pin(self.end_directory_session(&r)).await;
                None
            }
            other => other,
        };
        Ok(live.map_or(Lookup::Stale, Lookup::Found))
    }

    /// Whether a session may go on as far as the built-in directory knows: a session of a
    /// local provider ends once its user is removed from the users file or disabled.
    fn directory_allows(&self, r: &SessionRecord) -> bool {
        match self.local(&r.provider) {
            Some(l) => l.active(&r.user),
            None => true,
        }
    }

    async fn end_directory_session(&self, r: &SessionRecord) {
        if let Err(e) = self.store.delete(&r.sid).await {
            metrics::count_store_error(&e);
        }
        self.cache.invalidate(&r.sid);
        crate::telemetry::audit(
            "session_revoked",
            serde_json::json!({
                "user": r.user,
                "session": r.sid.fingerprint(),
                "reason": "the user was removed from the users file or disabled",
            }),
        );
    }

    /// Refreshes the IdP tokens of `record`, once per session across every request and
    /// replica: whoever takes the lock re-reads the record (someone may have just refreshed
    /// it) and refreshes; everyone else carries on with the tokens they have.
    async fn refresh(&self, record: Arc<SessionRecord>) -> Option<Arc<SessionRecord>> {
        let lock_name = format!("refresh:{}", record.sid.to_text());
        let lock = match self.store.try_lock(&lock_name, REFRESH_LOCK).await {
            Ok(Some(lock)) => lock,
            Ok(None) => return Some(record),
            Err(e) => {
                metrics::count_store_error(&e);
                return Some(record);
            }
        };
        let (result, retry_now) = self.refresh_locked(record).await;
        // After a failure the lock is left to expire: it doubles as a back-off, so an IdP that
        // is down sees one attempt per session every REFRESH_LOCK, not one per request.
        if retry_now {
            if let Err(e) = self.store.unlock(&lock).await {
                metrics::count_store_error(&e);
            }
        }
        result
    }

    /// The refreshed (or unchanged) session, and whether the lock may be released now.
    async fn refresh_locked(
        &self,
        record: Arc<SessionRecord>,
    ) -> (Option<Arc<SessionRecord>>, bool) {
        let result = self.refresh_inner(record).await;
        let release = !matches!(result, Refreshed::Failed(_));
        (result.into_session(), release)
    }

    async fn refresh_inner(&self, record: Arc<SessionRecord>) -> Refreshed {
        let now = self.clock.now_secs();
        let fresh = match self.store.get(&record.sid).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.cache.invalidate(&record.sid);
                return Refreshed::Ended;
            }
            Err(_) => return Refreshed::Failed(record),
        };
        if !refresh_due(&fresh, now) {
            let fresh = Arc::new(fresh);
            self.cache.insert(Arc::clone(&fresh));
            return Refreshed::Done(fresh);
        }
        let (Some(token), Some(provider)) = (
            fresh.refresh_token.clone(),
            self.providers.get(&fresh.provider),
        ) else {
            return Refreshed::Done(record);
        };
        match provider.refresh(&token).await {
            Ok(tokens) => {
                let mut next = fresh;
                apply_tokens(&mut next, &tokens, now);
                match self.store.update(&next).await {
                    Ok(true) => {}
                    Ok(false) => return Refreshed::Ended,
                    Err(e) => {
                        metrics::count_store_error(&e);
                    }
                }
                // Other replicas hold the old record (and its spent refresh token).
                let _ = self.store.publish_invalidation(&next.sid).await;
                let next = Arc::new(next);
                self.cache.insert(Arc::clone(&next));
                tracing::debug!(sid = %next.sid.fingerprint(), "session tokens refreshed");
                Refreshed::Done(next)
            }
            Err(crate::oidc::RefreshError::Revoked) => {
                let _ = self.store.delete(&fresh.sid).await;
                self.cache.invalidate(&fresh.sid);
                crate::telemetry::audit(
                    "session_revoked",
                    serde_json::json!({
                        "user": fresh.user,
                        "session": fresh.sid.fingerprint(),
                        "reason": "the identity provider refused the refresh token",
                    }),
                );
                Refreshed::Ended
            }
            Err(crate::oidc::RefreshError::Unavailable(e)) => {
                tracing::warn!(sid = %fresh.sid.fingerprint(), error = %e, "token refresh failed; the session continues");
                Refreshed::Failed(record)
            }
        }
    }

    /// Whether the store answers and every provider has been discovered (for `/readyz`).
    pub async fn ready(&self) -> Result<(), String> {
        self.store
            .ping()
            .await
            .map_err(|e| format!("session store: {e}"))?;
        for (id, p) in &self.providers {
            if !p.is_ready() {
                return Err(format!("provider {id} not discovered yet"));
            }
        }
        Ok(())
    }
}

/// What a request's session cookie stands for.
#[derive(Debug)]
pub enum Lookup {
    /// No session cookie.
    Absent,
    /// A session cookie that names no live session: the answer should clear it.
    Stale,
    Found(Arc<SessionRecord>),
}

/// The outcome of one refresh attempt.
enum Refreshed {
    Done(Arc<SessionRecord>),
    /// The session is over (revoked, or gone from the store).
    Ended,
    /// The IdP or the store could not be used; the session goes on as it was.
    Failed(Arc<SessionRecord>),
}

impl Refreshed {
    fn into_session(self) -> Option<Arc<SessionRecord>> {
        match self {
            Refreshed::Done(r) | Refreshed::Failed(r) => Some(r),
            Refreshed::Ended => None,
        }
    }
}

/// Refresh when the access token has less than a fifth of its life left (at most a minute,
/// at least a second), so short test tokens and hour-long real ones both refresh in time.
pub fn refresh_due(r: &SessionRecord, now: u64) -> bool {
    let (Some(expires), Some(_)) = (r.access_token_expires_at, r.refresh_token.as_ref()) else {
        return false;
    };
    let life = r.access_token_lifetime.unwrap_or(300);
    let margin = (life / 5).clamp(1, 60);
    now + margin >= expires
}

/// Writes new IdP tokens into a record.
pub fn apply_tokens(r: &mut SessionRecord, t: &crate::oidc::Tokens, now: u64) {
    r.access_token = Some(t.access_token.clone());
    r.access_token_lifetime = t.expires_in.map(|d| d.as_secs());
    r.access_token_expires_at = t.expires_in.map(|d| now + d.as_secs());
    if t.refresh_token.is_some() {
        r.refresh_token = t.refresh_token.clone();
    }
    if t.id_token.is_some() {
        r.id_token = t.id_token.clone();
    }
}
