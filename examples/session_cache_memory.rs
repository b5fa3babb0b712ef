//! Resident memory of the per-process session cache as distinct sessions keep arriving: for
//! bench/memory.sh. Inserts sessions shaped like real ones (an email, a name, three groups, an
//! ID token and an access token of realistic size) into a `SessionCache` with the default
//! capacity, and prints the process's RSS after each checkpoint, so the table shows memory
//! growing until the cache is full and flat afterwards, however many sessions go by.
//!
//! usage: session_cache_memory [SESSIONS (default 1000000)] [CAPACITY (default: the default)]

use portcullis::session::cache::DEFAULT_CACHE_CAPACITY;
use portcullis::session::{SessionCache, SessionRecord, SharedClock, StoreSettings, SystemClock};
use std::sync::Arc;
use std::time::Duration;

/// Resident set size in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let capacity: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CACHE_CAPACITY);
    let clock: SharedClock = Arc::new(SystemClock);
    let cache = SessionCache::new(
        capacity,
        Duration::from_secs(600),
        StoreSettings::default(),
        Arc::clone(&clock),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = "x".repeat(900);
    let start = rss_kib();
    println!("| sessions inserted | cached | RSS (MiB) | growth since start (MiB) |");
    println!("| ---: | ---: | ---: | ---: |");
    let mut next_report = 1usize;
    for i in 1..=sessions {
        let mut record = SessionRecord::new("corp", format!("sub-{i}"), format!("user{i}"));
        record.email = Some(format!("user{i}@example.com"));
        record.name = Some(format!("User Number {i}"));
        record.groups = vec!["staff".into(), "engineering".into(), "on-call".into()];
        record.id_token = Some(token.clone());
        record.access_token = Some(token.clone());
        record.expires_at = now + 3600;
        record.last_seen = now;
        cache.insert(Arc::new(record));
        if i == next_report || i == sessions {
            let rss = rss_kib();
            println!(
                "| {i} | {} | {:.1} | {:.1} |",
                cache.len(),
                rss as f64 / 1024.0,
                rss.saturating_sub(start) as f64 / 1024.0
            );
            next_report = next_report.saturating_mul(if next_report < 100_000 { 10 } else { 2 });
            if next_report > sessions && i < sessions {
                next_report = sessions;
            }
        }
    }
    println!();
    println!("(capacity {capacity})");
}
