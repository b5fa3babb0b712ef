//! Revoked access tokens, by `jti`, each kept until its token would have expired anyway.
//!
//! With `session.store: redis` they are kept in Redis (`<key_prefix>i:r:<jti>`, expiring
//! with the token), and every replica asks Redis when it meets one of our tokens: a
//! revocation counts everywhere at once. A replica that cannot reach Redis refuses the
//! token (counted in `portcullis_store_errors_total{op="token_revoked"}`): a revoked token
//! must never slip through an outage. With the memory store they are kept in this process.

use crate::auth::StoreBackend;
use crate::session::{store_error, Link, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Revoked ids kept in memory at most (beyond that, the soonest to expire are dropped first
/// only in the sense that expired ones go; a full table refuses nothing new — see `revoke`).
const MEMORY_CAPACITY: usize = 1_000_000;

/// The revocation list.
pub enum Revoked {
    Memory(Mutex<HashMap<String, u64>>),
    Redis {
        link: Box<Link>,
        prefix: String,
        op_timeout: Duration,
    },
}

impl Revoked {
    pub fn new(backend: &StoreBackend) -> Result<Revoked, StoreError> {
        Ok(match backend {
            StoreBackend::Memory => Revoked::Memory(Mutex::default()),
            StoreBackend::Redis(settings) => Revoked::Redis {
                link: Box::new(Link::new(settings)?),
                prefix: format!("{}i:r:", settings.key_prefix),
                op_timeout: settings.op_timeout,
            },
        })
    }

    /// Revokes `jti` until `exp` (Unix seconds).
    pub async fn revoke(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let now = super::now_secs();
        if exp <= now {
            return Ok(());
        }
        match self {
            Revoked::Memory(m) => {
                if let Ok(mut m) = m.lock() {
                    if m.len() >= MEMORY_CAPACITY {
                        m.retain(|_, e| *e > now);
                    }
                    m.insert(jti.to_string(), exp);
                }
                Ok(())
            }
            Revoked::Redis {
                link,
                prefix,
                op_timeout,
            } => {
                let key = format!("{prefix}{jti}");
                let ttl = exp - now;
                let attempt = async {
                    let (mut conn, used) = link.conn().await.map_err(|e| (None, e))?;
                    ::redis::cmd("SET")
                        .arg(&key)
                        .arg(1)
                        .arg("EX")
                        .arg(ttl)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(|e| (used, e))
                };
                match tokio::time::timeout(*op_timeout, attempt).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err((used, e))) => {
                        link.failed(&used, Some(&e));
                        Err(store_error("token_revoke", e))
                    }
                    Err(_) => Err(StoreError::Timeout {
                        op: "token_revoke",
                        after: *op_timeout,
                    }),
                }
            }
        }
    }

    /// Whether `jti` is revoked; `true` when that cannot be known (Redis unreachable).
    pub async fn contains(&self, jti: &str) -> bool {
        match self {
            Revoked::Memory(m) => m
                .lock()
                .map(|m| m.get(jti).is_some_and(|exp| *exp > super::now_secs()))
                .unwrap_or(true),
            Revoked::Redis {
                link,
                prefix,
                op_timeout,
            } => {
                let key = format!("{prefix}{jti}");
                let attempt = async {
                    let (mut conn, used) = link.conn().await.map_err(|e| (None, e))?;
                    ::redis::cmd("EXISTS")
                        .arg(&key)
                        .query_async::<u64>(&mut conn)
                        .await
                        .map_err(|e| (used, e))
                };
                match tokio::time::timeout(*op_timeout, attempt).await {
                    Ok(Ok(n)) => n > 0,
                    Ok(Err((used, e))) => {
                        link.failed(&used, Some(&e));
                        crate::telemetry::metrics::count_store_error(&store_error(
                            "token_revoked",
                            e,
                        ));
                        true
                    }
                    Err(_) => {
                        crate::telemetry::metrics::count_store_error(&StoreError::Timeout {
                            op: "token_revoked",
                            after: *op_timeout,
                        });
                        true
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_keeps_until_exp() {
        let r = Revoked::new(&StoreBackend::Memory).unwrap();
        let now = super::super::now_secs();
        r.revoke("a", now + 60).await.unwrap();
        r.revoke("old", now - 1).await.unwrap();
        assert!(r.contains("a").await);
        assert!(!r.contains("b").await);
        assert!(!r.contains("old").await);
    }
}
