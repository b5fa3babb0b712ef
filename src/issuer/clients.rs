//! Machine clients (`issuer.clients`) and their authentication.
//!
//! A secret is checked against its argon2id hash: slow by design (about 20–50 ms at OWASP's
//! parameters). An unknown client costs one verification against a dummy hash, the same as a
//! wrong secret. So that a returning client does not pay that on every token, a secret that
//! verified is remembered for [`REMEMBER`] as HMAC-SHA256 under a key drawn at random per
//! load, together with the hash it verified against: the next request with the same id and
//! secret compares one MAC, in constant time. Nothing an attacker does not already know lets
//! them use the shortcut — a wrong secret misses it and pays the full argon2 verification —
//! and it is forgotten when the client's hash changes and on every reload (the cache belongs
//! to one load). Verifications run on the blocking pool, at most [`PARALLEL_VERIFICATIONS`]
//! at once, so a flood of bad secrets neither stalls the proxy's event loops nor takes
//! 19 MiB per request without bound.

use crate::secret::Secret;
use hmac::Mac;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a verified secret is remembered.
pub const REMEMBER: Duration = Duration::from_secs(300);

/// Argon2 verifications running at once (each holds 19 MiB for tens of milliseconds).
pub const PARALLEL_VERIFICATIONS: usize = 4;

/// One machine client, compiled. `Debug` shows no secret hash.
#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub secret_hash: Secret<String>,
    /// SHA-256 of the hash: what a remembered verification was made against.
    hash_id: [u8; 32],
    pub scopes: Vec<String>,
    /// The tokens' `aud`.
    pub audience: String,
}

impl Client {
    pub fn new(
        id: String,
        secret_hash: Secret<String>,
        scopes: Vec<String>,
        audience: String,
    ) -> Client {
        let hash_id = sha2::Sha256::digest(secret_hash.expose().as_bytes()).into();
        Client {
            id,
            secret_hash,
            hash_id,
            scopes,
            audience,
        }
    }
}

/// Every configured client, by id.
#[derive(Debug, Default)]
pub struct Clients {
    by_id: HashMap<String, Arc<Client>>,
}

impl Clients {
    pub fn new(list: Vec<Client>) -> Clients {
        Clients {
            by_id: list
                .into_iter()
                .map(|c| (c.id.clone(), Arc::new(c)))
                .collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Client>> {
        self.by_id.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every scope some client may ask for, sorted.
    pub fn all_scopes(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .by_id
            .values()
            .flat_map(|c| c.scopes.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// A client's id and secret as presented. `Debug` hides the secret.
pub struct Credentials {
    pub id: String,
    pub secret: Secret<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

struct Remembered {
    mac: [u8; 32],
    hash_id: [u8; 32],
    until: Instant,
}

/// Recently verified secrets (see the module's documentation). One entry per configured
/// client at most.
pub struct VerifiedSecrets {
    key: Secret<[u8; 32]>,
    entries: Mutex<HashMap<String, Remembered>>,
    permits: Arc<tokio::sync::Semaphore>,
}

type HmacSha256 = hmac::Hmac<sha2_10::Sha256>;

impl VerifiedSecrets {
    pub fn new() -> VerifiedSecrets {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        VerifiedSecrets {
            key: Secret::new(key),
            entries: Mutex::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(PARALLEL_VERIFICATIONS)),
        }
    }

    fn mac(&self, c: &Credentials) -> [u8; 32] {
        // Accepting any key length, HMAC cannot fail to be built.
        let mut m = HmacSha256::new_from_slice(self.key.expose()).expect("any key length");
        m.update(&(c.id.len() as u64).to_be_bytes());
        m.update(c.id.as_bytes());
        m.update(c.secret.expose().as_bytes());
        m.finalize().into_bytes().into()
    }

    /// The client these credentials authenticate, or `None` (unknown client or wrong
    /// secret, told apart by nothing: both cost one argon2 verification).
    pub async fn authenticate(&self, clients: &Clients, c: &Credentials) -> Option<Arc<Client>> {
        let client = clients.get(&c.id).cloned();
        let mac = self.mac(c);
        if let Some(client) = &client {
            let now = Instant::now();
            if let Ok(entries) = self.entries.lock() {
                if let Some(r) = entries.get(&client.id) {
                    let same = r.mac.ct_eq(&mac) & r.hash_id.ct_eq(&client.hash_id);
                    if bool::from(same) && r.until > now {
                        return Some(Arc::clone(client));
                    }
                }
            }
        }
        let secret = c.secret.expose().clone();
        let hash = client.as_ref().map(|c| c.secret_hash.expose().clone());
        let ok = {
            let _permit = self.permits.acquire().await.ok()?;
            tokio::task::spawn_blocking(move || match hash {
                Some(h) => crate::password::verify(&secret, &h),
                None => crate::password::verify_missing(&secret),
            })
            .await
            .unwrap_or(false)
        };
        let client = client.filter(|_| ok)?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                client.id.clone(),
                Remembered {
                    mac,
                    hash_id: client.hash_id,
                    until: Instant::now() + REMEMBER,
                },
            );
        }
        Some(client)
    }
}

impl Default for VerifiedSecrets {
    fn default() -> Self {
        VerifiedSecrets::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(id: &str, secret: &str) -> Credentials {
        Credentials {
            id: id.into(),
            secret: Secret::new(secret.into()),
        }
    }

    #[tokio::test]
    async fn remembers_only_what_verified() {
        let hash = crate::password::hash("s3cret").unwrap();
        let clients = Clients::new(vec![Client::new(
            "billing".into(),
            Secret::new(hash),
            vec!["a".into()],
            "https://x".into(),
        )]);
        let v = VerifiedSecrets::new();
        assert!(v
            .authenticate(&clients, &creds("billing", "s3cret"))
            .await
            .is_some());
        // Remembered: fast now.
        let t = Instant::now();
        assert!(v
            .authenticate(&clients, &creds("billing", "s3cret"))
            .await
            .is_some());
        assert!(t.elapsed() < Duration::from_millis(5));
        // A wrong secret after a right one is still wrong.
        assert!(v
            .authenticate(&clients, &creds("billing", "s3cret2"))
            .await
            .is_none());
        assert!(v
            .authenticate(&clients, &creds("nobody", "s3cret"))
            .await
            .is_none());
        // A changed hash forgets the remembered secret.
        let other = Clients::new(vec![Client::new(
            "billing".into(),
            Secret::new(crate::password::hash("new").unwrap()),
            vec![],
            "https://x".into(),
        )]);
        assert!(v
            .authenticate(&other, &creds("billing", "s3cret"))
            .await
            .is_none());
        assert!(v
            .authenticate(&other, &creds("billing", "new"))
            .await
            .is_some());
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = creds("billing", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        let client = Client::new(
            "b".into(),
            Secret::new("$argon2id$x".into()),
            vec![],
            "a".into(),
        );
        assert!(!format!("{client:?}").contains("argon2id"));
    }
}
