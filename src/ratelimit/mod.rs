//! Rate limits (SPEC §5 "Rate limiting"): GCRA limiters compiled from `rate_limits`, each one
//! budget per key wherever it is used. A route lists limiters in `rate_limit`; all must admit,
//! and the most restrictive one speaks in the response headers.
//!
//! - [`gcra`]: the arithmetic, pure;
//! - [`key`]: what a request counts as for a limiter, hashed;
//! - [`local`]: the sharded, bounded in-memory store;
//! - `redis`: the shared store, with the local one as its fallback;
//! - `audit`: the sampled `rate_limited` event.

mod audit;
pub mod gcra;
pub mod key;
pub mod local;
mod redis;

use crate::session::RedisSettings;
use gcra::Params;
use http::{HeaderName, HeaderValue};
use key::Subject;
use local::LocalStore;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

/// The default cap on keys held by one limiter.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// The built-in limiter of Portcullis' own login and token endpoints.
pub const AUTH_ENDPOINTS: &str = "auth-endpoints";
/// The `/.portcullis/*` endpoints the `auth-endpoints` limiter counts.
pub const AUTH_ENDPOINT_PATHS: &[&str] = &[
    "start",
    "callback",
    "login",
    "token",
    "introspect",
    "revoke",
];

const NS: u64 = 1_000_000_000;

/// What a limiter keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// The real client address (after `trusted_proxies`).
    ClientIp,
    /// The authenticated user; the client address when anonymous.
    User,
    /// The route: one budget for everyone on it.
    Route,
    /// A request header's value; the client address when absent.
    Header(HeaderName),
}

/// Where a limiter keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process.
    Local,
    /// In Redis (the session store's), shared by every replica.
    Redis(RedisSettings),
}

/// A limiter as configured; two equal specs are the same limiter (a reload keeps its state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Names the limiter in `rate_limit`, metrics, headers and Redis keys.
    pub name: String,
    /// What the limiter counts by.
    pub kind: KeyKind,
    /// `count` requests per `period`.
    pub count: u64,
    /// The period of `limit`.
    pub period: Duration,
    /// Requests a fresh key may make at once.
    pub burst: u32,
    /// Where the state is kept.
    pub store: StoreKind,
    /// Keys held at most in the local store.
    pub max_keys: usize,
}

impl Spec {
    /// The built-in `auth-endpoints` limiter: 30/m, burst 10, per client address.
    pub fn auth_endpoints() -> Spec {
        Spec {
            name: AUTH_ENDPOINTS.into(),
            kind: KeyKind::ClientIp,
            count: 30,
            period: Duration::from_secs(60),
            burst: 10,
            store: StoreKind::Local,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// Nanoseconds on a monotonic clock, never 0.
pub fn now_ns() -> u64 {
    static ANCHOR: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(ANCHOR.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
}

/// One compiled limiter, with its state.
pub struct Limiter {
    /// As configured.
    pub spec: Spec,
    params: Params,
    /// The same rate in microseconds, for Redis.
    shared_params: Params,
    local: LocalStore,
    shared: OnceLock<redis::Shared>,
    seed: std::hash::RandomState,
    limit_value: HeaderValue,
    policy_value: HeaderValue,
    refused: prometheus::IntCounter,
    sampler: audit::Sampler,
    sweeping: AtomicBool,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("spec", &self.spec).finish()
    }
}

/// Who a request is, for a limiter's key and its audit line.
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    /// The real client address.
    pub client_ip: Option<IpAddr>,
    /// The route's name (the key of `route` limiters).
    pub route: &'a str,
    /// The authenticated user, when there is one.
    pub user: Option<&'a str>,
    /// Reads a request header (the first value).
    pub header: &'a (dyn Fn(&HeaderName) -> Option<&'a [u8]> + Sync),
}

/// No header at all.
pub fn no_headers(_: &HeaderName) -> Option<&'static [u8]> {
    None
}

/// One limiter's answer, kept for the response headers.
#[derive(Debug, Clone)]
pub struct Note {
    /// The limiter that answered.
    pub limiter: Arc<Limiter>,
    /// Whether it admitted the request.
    pub admitted: bool,
    /// Requests that could be made now.
    pub remaining: u32,
    /// Seconds until the budget is whole again.
    pub reset: u64,
    /// Seconds until a request would be admitted (0 when admitted).
    pub retry_after: u64,
}

impl Note {
    /// Whether `self` is more restrictive than `other`: a refusal over an admission, then the
    /// longer wait, then the fewer remaining.
    pub fn stricter_than(&self, other: &Note) -> bool {
        (
            !self.admitted,
            self.retry_after,
            std::cmp::Reverse(self.remaining),
            self.reset,
        ) > (
            !other.admitted,
            other.retry_after,
            std::cmp::Reverse(other.remaining),
            other.reset,
        )
    }

    /// The informational headers: `RateLimit-Limit` (the burst), `-Remaining`, `-Reset`, and
    /// the IETF draft's `RateLimit-Policy` and `RateLimit`.
    ///
    /// Each comes as its `HeaderName` and its spelling as a `&'static str`: a proxied
    /// response keeps spellings (Pingora's case map), and a `HeaderName` given to Pingora would
    /// be title-cased into a fresh copy on every insert; an answer written here keeps none and
    /// takes the name as it is (these are on every response of a limited route).
    pub fn headers(&self, mut put: impl FnMut(&'static HeaderName, &'static str, HeaderValue)) {
        put(&LIMIT.0, LIMIT.1, self.limiter.limit_value.clone());
        put(&REMAINING.0, REMAINING.1, HeaderValue::from(self.remaining));
        put(&RESET.0, RESET.1, HeaderValue::from(self.reset));
        put(&POLICY.0, POLICY.1, self.limiter.policy_value.clone());
        // `"name";r=R;t=T`, written without a format string.
        let name = &self.limiter.spec.name;
        let mut v = Vec::with_capacity(name.len() + 32);
        v.push(b'"');
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(b"\";r=");
        v.extend_from_slice(itoa_buf(&mut [0; 20], u64::from(self.remaining)));
        v.extend_from_slice(b";t=");
        v.extend_from_slice(itoa_buf(&mut [0; 20], self.reset));
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(v)) {
            put(&RATELIMIT.0, RATELIMIT.1, value);
        }
    }
}

/// `n` in decimal, in `buf`.
fn itoa_buf(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A rate limit header's name, and its spelling where a response keeps spellings.
type Field = (HeaderName, &'static str);
static LIMIT: Field = (
    HeaderName::from_static("ratelimit-limit"),
    "RateLimit-Limit",
);
static REMAINING: Field = (
    HeaderName::from_static("ratelimit-remaining"),
    "RateLimit-Remaining",
);
static RESET: Field = (
    HeaderName::from_static("ratelimit-reset"),
    "RateLimit-Reset",
);
static POLICY: Field = (
    HeaderName::from_static("ratelimit-policy"),
    "RateLimit-Policy",
);
static RATELIMIT: Field = (HeaderName::from_static("ratelimit"), "RateLimit");

impl Limiter {
    /// Compiles `spec` (already validated: a name of token characters, count, period and
    /// burst not zero).
    pub fn new(spec: Spec) -> Limiter {
        let period_ns = u64::try_from(spec.period.as_nanos()).unwrap_or(u64::MAX);
        let params = Params::new(spec.count, period_ns, spec.burst);
        let shared_params = Params::new(spec.count, period_ns / 1000, spec.burst);
        // The window of the draft's policy: the time the whole burst takes to come back.
        let window = gcra::ceil_secs(params.capacity, NS);
        let policy = format!("\"{}\";q={};w={}", spec.name, spec.burst, window.max(1));
        Limiter {
            params,
            shared_params,
            local: LocalStore::new(spec.max_keys),
            shared: OnceLock::new(),
            seed: std::hash::RandomState::new(),
            limit_value: HeaderValue::from(spec.burst),
            policy_value: HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| HeaderValue::from_static("\"limit\"")),
            refused: crate::telemetry::metrics::RATE_LIMITED.with_label_values(&[&spec.name]),
            sampler: audit::Sampler::default(),
            sweeping: AtomicBool::new(false),
            spec,
        }
    }

    /// Connects a `redis` limiter (lazily: nothing is dialled yet) and starts the background
    /// sweep of expired keys. Runs once per limiter, when a configuration goes live.
    pub fn activate(self: &Arc<Self>) -> Result<(), String> {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let io = crate::background::handle();
        if let StoreKind::Redis(settings) = &self.spec.store {
            let _enter = io.enter();
            match redis::Shared::new(settings, &self.spec.name) {
                Ok(shared) => {
                    let _ = self.shared.set(shared);
                }
                Err(e) => {
                    // Not active: a later configuration retries rather than run local only.
                    self.sweeping.store(false, Ordering::Release);
                    return Err(format!("rate_limits {}: {e}", self.spec.name));
                }
            }
        }
        let weak = Arc::downgrade(self);
        io.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                let now = now_ns();
                limiter.local.sweep(now);
                limiter.sampler.flush(&limiter.spec.name, now);
            }
        });
        Ok(())
    }

    /// The subject of a request for this limiter.
    pub fn subject<'a>(&self, asker: &Asker<'a>) -> Subject<'a> {
        let ip = || asker.client_ip.map_or(Subject::Unknown, Subject::Ip);
        match &self.spec.kind {
            KeyKind::ClientIp => ip(),
            KeyKind::User => asker.user.map_or_else(ip, Subject::User),
            KeyKind::Route => Subject::Route(asker.route),
            KeyKind::Header(name) => (asker.header)(name).map_or_else(ip, Subject::Header),
        }
    }

    /// Whether this limiter keys on the user, known only after authentication.
    pub fn after_authentication(&self) -> bool {
        self.spec.kind == KeyKind::User
    }

    /// Counts a request and says whether it is admitted.
    pub async fn check(self: &Arc<Self>, asker: &Asker<'_>) -> Note {
        let subject = self.subject(asker);
        let now = now_ns();
        let key = subject.local_key(&self.seed);
        let outcome = match self.shared.get() {
            None => self.local.check(key, &self.params, now),
            Some(shared) => {
                let p = &self.shared_params;
                // Boxed: a Redis call's future is kilobytes, and kept inline it would be part
                // of every request's future (which Pingora copies whole), limiter or not. A
                // request that goes to Redis can afford an allocation.
                let asked = shared.check(&subject, &self.spec.name, p.interval, p.capacity, now);
                match Box::pin(asked).await {
                    Some(o) => {
                        self.local.raise(
                            key,
                            now.saturating_add(o.reset_us.saturating_mul(1000)),
                            now,
                        );
                        let remaining = if o.admitted {
                            (p.capacity.saturating_sub(o.reset_us) / p.interval.max(1))
                                .min(u64::from(p.burst)) as u32
                        } else {
                            0
                        };
                        gcra::Outcome {
                            admitted: o.admitted,
                            tat: 0,
                            remaining,
                            reset: o.reset_us.saturating_mul(1000),
                            retry: o.retry_us.saturating_mul(1000),
                        }
                    }
                    None => self.local.check(key, &self.params, now),
                }
            }
        };
        if !outcome.admitted {
            self.refused.inc();
            self.sampler
                .refused(&self.spec.name, key, now, || audit::Facts {
                    key: subject.shown(),
                    client_ip: asker.client_ip,
                    route: asker.route.to_string(),
                    user: asker.user.map(str::to_string),
                });
        }
        Note {
            limiter: Arc::clone(self),
            admitted: outcome.admitted,
            remaining: outcome.remaining,
            reset: gcra::ceil_secs(outcome.reset, NS),
            retry_after: gcra::ceil_secs(outcome.retry, NS).max(u64::from(!outcome.admitted)),
        }
    }

    /// The local store, for benchmarks and tests.
    pub fn local(&self) -> &LocalStore {
        &self.local
    }
}

/// Every limiter of one configuration.
#[derive(Debug, Clone)]
pub struct Limiters {
    /// In the order of the file, the built-in one last.
    pub list: Vec<Arc<Limiter>>,
    /// Index of `auth-endpoints` (the built-in one unless the config defines it).
    pub auth_endpoints: usize,
}

impl Default for Limiters {
    fn default() -> Self {
        Limiters {
            list: vec![Arc::new(Limiter::new(Spec::auth_endpoints()))],
            auth_endpoints: 0,
        }
    }
}

impl Limiters {
    /// Takes over the limiters of `previous` whose spec is unchanged (with their state), and
    /// activates the others.
    pub fn activate(&mut self, previous: Option<&Limiters>) -> Result<(), String> {
        for l in &mut self.list {
            if let Some(prev) = previous
                .and_then(|p| p.list.iter().find(|o| o.spec == l.spec))
                .cloned()
            {
                *l = prev;
            }
            l.activate()?;
        }
        Ok(())
    }

    /// Runs the limiters at `indices` in order, stopping at the first refusal; the most
    /// restrictive answer, or `None` without limiters.
    pub async fn check(
        &self,
        indices: impl Iterator<Item = usize>,
        asker: &Asker<'_>,
        mut into: Option<Note>,
    ) -> Option<Note> {
        for i in indices {
            let Some(l) = self.list.get(i) else { continue };
            let note = l.check(asker).await;
            let refused = !note.admitted;
            if into.as_ref().is_none_or(|n| note.stricter_than(n)) {
                into = Some(note);
            }
            if refused {
                break;
            }
        }
        into
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asker(ip: &str) -> Asker<'static> {
        Asker {
            client_ip: Some(ip.parse().unwrap()),
            route: "r",
            user: None,
            header: &no_headers,
        }
    }

    #[tokio::test]
    async fn notes_and_headers() {
        let l = Arc::new(Limiter::new(Spec {
            name: "per-ip".into(),
            count: 1,
            period: Duration::from_secs(60),
            burst: 3,
            ..Spec::auth_endpoints()
        }));
        let a = asker("10.0.0.1");
        let first = l.check(&a).await;
        assert!(first.admitted);
        assert_eq!((first.remaining, first.reset), (2, 60));
        l.check(&a).await;
        l.check(&a).await;
        let fourth = l.check(&a).await;
        assert!(!fourth.admitted);
        assert_eq!(fourth.retry_after, 60);
        assert_eq!(fourth.reset, 180);
        assert!(fourth.stricter_than(&first));
        let mut seen = Vec::new();
        fourth.headers(|n, spelling, v| {
            // The spelling is the name.
            assert!(spelling.eq_ignore_ascii_case(n.as_str()), "{spelling}");
            seen.push((spelling.to_string(), v.to_str().unwrap().to_string()));
        });
        assert_eq!(seen.len(), 5);
        let get = |n: &str| {
            seen.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ratelimit-limit"), Some("3"));
        assert_eq!(get("ratelimit-remaining"), Some("0"));
        assert_eq!(get("ratelimit-reset"), Some("180"));
        assert_eq!(get("ratelimit-policy"), Some("\"per-ip\";q=3;w=180"));
        assert_eq!(get("ratelimit"), Some("\"per-ip\";r=0;t=180"));
        // Another address has its own budget.
        assert!(l.check(&asker("10.0.0.2")).await.admitted);
    }

    #[test]
    fn decimal() {
        assert_eq!(itoa_buf(&mut [0; 20], 0), b"0");
        assert_eq!(itoa_buf(&mut [0; 20], 1234567), b"1234567");
        assert_eq!(
            itoa_buf(&mut [0; 20], u64::MAX),
            u64::MAX.to_string().as_bytes()
        );
    }
}
