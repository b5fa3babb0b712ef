//! What a request counts as, for one limiter: its [`Subject`] (an address, a user name, a
//! route name or a header's value), hashed. Locally the hash is a keyed SipHash of the
//! subject's bytes, computed without allocating: an IPv4 client hashes its four bytes, an
//! IPv6 client the eight of its /64 (rotating addresses inside one host's prefix buys no fresh
//! budget, as for the login regulation). In Redis, where every replica must find the same
//! key, the key is a SHA-256 of the limiter name and the subject: Redis never holds an address,
//! user name or API key in the clear.

use crate::request::canonical;
use sha2::{Digest, Sha256};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

/// What a request counts as. The tag keeps kinds apart (a user named `10.0.0.1` is not the
/// address 10.0.0.1).
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A client address (IPv6 by its /64).
    Ip(IpAddr),
    /// A user name (key `user`).
    User(&'a str),
    /// A route name (key `route`).
    Route(&'a str),
    /// A header's value (key `header:NAME`): possibly a secret, never logged as is.
    Header(&'a [u8]),
    /// No client address known (a request over a Unix socket, say): one budget for all.
    Unknown,
}

impl Subject<'_> {
    /// The tag and bytes hashed; at most 16 bytes are copied, for an address.
    fn parts(&self, buf: &mut [u8; 8]) -> (u8, usize) {
        match self {
            Subject::Ip(ip) => match canonical(*ip) {
                IpAddr::V4(v4) => {
                    buf[..4].copy_from_slice(&v4.octets());
                    (4, 4)
                }
                IpAddr::V6(v6) => {
                    buf.copy_from_slice(&v6.octets()[..8]);
                    (6, 8)
                }
            },
            Subject::User(_) => (b'u', 0),
            Subject::Route(_) => (b'r', 0),
            Subject::Header(_) => (b'h', 0),
            Subject::Unknown => (0, 0),
        }
    }

    fn bytes<'b>(&'b self, buf: &'b [u8; 8], n: usize) -> &'b [u8] {
        match self {
            Subject::Ip(_) => &buf[..n],
            Subject::User(s) | Subject::Route(s) => s.as_bytes(),
            Subject::Header(b) => b,
            Subject::Unknown => &[],
        }
    }

    /// The local key: a keyed 64-bit hash. Two subjects share a budget only if their hashes
    /// collide (about one chance in 2^64 per pair; a collision only makes limiting stricter).
    pub fn local_key(&self, seed: &std::hash::RandomState) -> u64 {
        let mut buf = [0u8; 8];
        let (tag, n) = self.parts(&mut buf);
        let mut h = seed.build_hasher();
        h.write_u8(tag);
        h.write(self.bytes(&buf, n));
        h.finish()
    }

    /// The Redis key's last part: 32 hex digits of SHA-256(limiter, tag, subject).
    pub fn shared_key(&self, limiter: &str) -> String {
        let mut buf = [0u8; 8];
        let (tag, n) = self.parts(&mut buf);
        let mut h = Sha256::new();
        h.update(limiter.as_bytes());
        h.update([0, tag]);
        h.update(self.bytes(&buf, n));
        hex16(&h.finalize()[..16])
    }

    /// How the subject appears in the audit log: addresses, user and route names as they
    /// are; a header's value (an API key, say) only as a fingerprint.
    pub fn shown(&self) -> String {
        match self {
            Subject::Ip(ip) => canonical(*ip).to_string(),
            Subject::User(s) | Subject::Route(s) => (*s).to_string(),
            Subject::Header(b) => {
                format!("sha256:{}", &hex16(&Sha256::digest(b)[..8]))
            }
            Subject::Unknown => "-".into(),
        }
    }
}

fn hex16(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_prefixes() {
        let seed = std::hash::RandomState::new();
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            Subject::Ip(a).local_key(&seed),
            Subject::Ip(b).local_key(&seed)
        );
        assert_ne!(
            Subject::Ip(a).local_key(&seed),
            Subject::Ip(c).local_key(&seed)
        );
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            Subject::Ip(v4).local_key(&seed),
            Subject::Ip(mapped).local_key(&seed)
        );
        assert_ne!(
            Subject::User("10.0.0.1").local_key(&seed),
            Subject::Route("10.0.0.1").local_key(&seed)
        );
        assert_eq!(
            Subject::User("alice").shared_key("l"),
            Subject::User("alice").shared_key("l")
        );
        assert_ne!(
            Subject::User("alice").shared_key("l"),
            Subject::User("alice").shared_key("m")
        );
        let shown = Subject::Header(b"sk_live_secret").shown();
        assert!(
            shown.starts_with("sha256:") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
