//! Memory of the local rate limit store: offers N distinct client addresses to one limiter
//! (1/h, burst 1, so every key stays active for the whole run) and prints the growth of the
//! process' resident memory. Driven by `bench/ratelimit_memory.sh`.
//!
//! Usage: `ratelimit_memory N [MAX_KEYS]` (MAX_KEYS defaults to the limiter default, 1 000 000).

use portcullis::ratelimit::gcra::Params;
use portcullis::ratelimit::key::Subject;
use portcullis::ratelimit::local::LocalStore;
use portcullis::ratelimit::DEFAULT_MAX_KEYS;
use std::net::{IpAddr, Ipv4Addr};

/// VmRSS of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: ratelimit_memory N [MAX_KEYS]");
    let max_keys: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(DEFAULT_MAX_KEYS);
    let seed = std::hash::RandomState::new();
    let params = Params::new(1, 3_600_000_000_000, 1);
    let before = rss_kib();
    let store = LocalStore::new(max_keys);
    let now = 1_000_000_000;
    let mut refused = 0u64;
    for i in 0..n {
        // 10.0.0.0/8 and up: distinct addresses, as distinct clients would be.
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i)));
        let key = Subject::Ip(ip).local_key(&seed);
        if !store.check(key, &params, now + u64::from(i)).admitted {
            refused += 1;
        }
    }
    let after = rss_kib();
    println!(
        "keys_offered={n} keys_held={} evicted={} refused={refused} max_keys={max_keys} rss_growth_mib={:.1}",
        store.len(),
        store.evicted(),
        (after.saturating_sub(before)) as f64 / 1024.0
    );
}
