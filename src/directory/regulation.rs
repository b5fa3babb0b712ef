//! Brute-force regulation of the login form, keyed on the pair (user name, client address):
//! `max_retries` failures within `find_time` ban that pair for `ban_time`, and each further
//! ban of the same pair doubles, up to [`MAX_BAN`]. Another address can still log in as the
//! same user, so an attacker cannot lock a user out from elsewhere; the limiter of the
//! auth endpoints caps what one address may try overall.
//!
//! A pair's state is tiny ([`PairState`]); the memory backend applies [`PairState::fail`]
//! under a lock, the Redis backend runs the same steps in one Lua script, so every replica
//! counts together.

use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::time::Duration;

/// The longest a ban grows to by doubling.
pub const MAX_BAN: Duration = Duration::from_secs(24 * 3600);
/// How long a pair's ban count is remembered after its last ban ended, for doubling.
pub const REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// `providers[].regulation`, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegulationSettings {
    /// Failures within `find_time` that start a ban.
    pub max_retries: u32,
    pub find_time: Duration,
    /// The first ban's length; each further one doubles.
    pub ban_time: Duration,
}

impl Default for RegulationSettings {
    fn default() -> Self {
        RegulationSettings {
            max_retries: 5,
            find_time: Duration::from_secs(15 * 60),
            ban_time: Duration::from_secs(15 * 60),
        }
    }
}

impl RegulationSettings {
    /// The length of ban number `n` (1-based): `ban_time` doubled `n - 1` times, at most
    /// [`MAX_BAN`].
    pub fn ban_length_ms(&self, n: u32) -> u64 {
        let base = u64::try_from(self.ban_time.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(MAX_BAN.as_millis()).unwrap_or(u64::MAX);
        let doubled = base.saturating_mul(1u64 << n.saturating_sub(1).min(32));
        doubled.min(max.max(base))
    }
}

/// What is remembered about one (user, address) pair. Times are Unix milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairState {
    /// Failures in the current window.
    pub fails: u32,
    /// When the current window began (its first failure).
    pub window_start: u64,
    /// The end of the current ban (0: none).
    pub ban_until: u64,
    /// Bans so far (for doubling).
    pub bans: u32,
}

impl PairState {
    /// Milliseconds left of a ban at `now`, if banned.
    pub fn banned(&self, now: u64) -> Option<u64> {
        (self.ban_until > now).then(|| self.ban_until - now)
    }

    /// Counts a failure at `now`; returns the ban's end when this failure starts one.
    pub fn fail(&mut self, now: u64, s: &RegulationSettings) -> Option<u64> {
        if self.banned(now).is_some() {
            return None;
        }
        let find = u64::try_from(s.find_time.as_millis()).unwrap_or(u64::MAX);
        if self.fails == 0 || self.window_start.saturating_add(find) <= now {
            self.fails = 0;
            self.window_start = now;
        }
        self.fails += 1;
        if self.fails < s.max_retries {
            return None;
        }
        self.bans = self.bans.saturating_add(1);
        self.ban_until = now.saturating_add(s.ban_length_ms(self.bans));
        self.fails = 0;
        self.window_start = 0;
        Some(self.ban_until)
    }

    /// When this state may be forgotten: nothing about it matters any more after then.
    pub fn forget_at(&self, s: &RegulationSettings) -> u64 {
        let find = u64::try_from(s.find_time.as_millis()).unwrap_or(u64::MAX);
        let remember = u64::try_from(REMEMBER.as_millis()).unwrap_or(u64::MAX);
        let window_end = self.window_start.saturating_add(find);
        let ban_memory = if self.bans > 0 {
            self.ban_until.saturating_add(remember)
        } else {
            0
        };
        window_end.max(ban_memory)
    }
}

/// The key of a pair: a hash of provider, user name and address, so that store keys carry no
/// user name or address. The name is compared case-insensitively here (whatever the case
/// typed, it is the same person's budget). An IPv6 address counts by its /64: one host usually
/// has a whole /64 to pick addresses from, and must not get a fresh budget with each.
pub fn pair_key(provider: &str, user: &str, ip: Option<IpAddr>) -> String {
    let mut h = Sha256::new();
    h.update(provider.as_bytes());
    h.update([0]);
    h.update(user.to_lowercase().as_bytes());
    h.update([0]);
    h.update(ip.map_or_else(|| "unknown".to_string(), address_key));
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// An address as regulation sees it: IPv4 (IPv4-mapped IPv6 included) whole, IPv6 by its /64.
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> RegulationSettings {
        RegulationSettings {
            max_retries: 3,
            find_time: Duration::from_secs(60),
            ban_time: Duration::from_secs(10),
        }
    }

    #[test]
    fn bans_after_max_retries_and_doubles() {
        let s = s();
        let mut p = PairState::default();
        assert_eq!(p.fail(1_000, &s), None);
        assert_eq!(p.fail(2_000, &s), None);
        assert_eq!(p.fail(3_000, &s), Some(13_000));
        assert_eq!(p.banned(5_000), Some(8_000));
        // Failures while banned do not extend the ban.
        assert_eq!(p.fail(6_000, &s), None);
        assert_eq!(p.banned(13_000), None);
        for t in [14_000, 15_000] {
            assert_eq!(p.fail(t, &s), None);
        }
        assert_eq!(p.fail(16_000, &s), Some(36_000), "the second ban doubles");
        assert!(p.forget_at(&s) >= 36_000 + REMEMBER.as_millis() as u64);
    }

    #[test]
    fn the_window_slides_on() {
        let s = s();
        let mut p = PairState::default();
        p.fail(0, &s);
        p.fail(1_000, &s);
        // The window of the first failure is over: counting starts again.
        assert_eq!(p.fail(61_000, &s), None);
        assert_eq!(p.fail(62_000, &s), None);
        assert_eq!(p.fail(63_000, &s), Some(73_000));
    }

    #[test]
    fn ban_lengths_cap_at_a_day() {
        let s = s();
        assert_eq!(s.ban_length_ms(1), 10_000);
        assert_eq!(s.ban_length_ms(2), 20_000);
        assert_eq!(s.ban_length_ms(40), MAX_BAN.as_millis() as u64);
        assert_ne!(
            pair_key("local", "alice", None),
            pair_key("local", "alice", Some("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            pair_key("local", "Alice", None),
            pair_key("local", "alice", None)
        );
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            pair_key("local", "a", ip("2001:db8:1:2::1")),
            pair_key("local", "a", ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            pair_key("local", "a", ip("2001:db8:1:2::1")),
            pair_key("local", "a", ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            pair_key("local", "a", ip("::ffff:192.0.2.1")),
            pair_key("local", "a", ip("192.0.2.1"))
        );
    }
}
