//! Sessions: the sealed cookie, the encrypted record, the stores that keep records (memory or
//! Redis), and the per-process cache in front of them.
//!
//! The engine only: nothing here knows HTTP or Pingora. The login flow creates sessions through
//! [`SessionStore::create`] and hands the browser a [`SessionCookie`]; each request decodes the
//! cookie and asks [`SessionCache::load`], which costs no store command while the session is
//! cached. Logout deletes the record, which also tells every replica's cache.

pub mod cache;
pub mod clock;
pub mod cookie;
pub mod keys;
pub mod memory;
pub mod opened;
pub mod record;
pub mod redis;
mod redis_conn;
mod rendered;
pub mod store;

pub use cache::SessionCache;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use cookie::{CookieSettings, SameSite, SessionCookie};
pub use keys::{KeyError, Purpose, SessionKeys};
pub use memory::MemoryStore;
pub use opened::OpenedCookies;
pub use record::{SessionId, SessionRecord, UserKey};
pub use redis::RedisStore;
/// The way to Redis, for the built-in directory's state (regulation, used codes).
pub(crate) use redis_conn::{store_error, Conn, Link, Used};
pub use redis_conn::{RedisSettings, RedisTarget};
pub use store::{
    Created, Invalidation, Invalidations, Lock, SessionStore, StoreError, StoreSettings,
    HANDOVER_TTL,
};
