//! The generic cell rate algorithm, as pure arithmetic on one number per key: the theoretical
//! arrival time (TAT), the instant at which the key's budget is whole again. No clock, no
//! store: the local and Redis stores both run exactly this (the Redis script is its Lua twin),
//! so the two cannot disagree on an answer.
//!
//! With `interval` = the time one request "costs" (the period over the count of `limit`) and
//! `capacity` = `burst × interval`, a request at `now` is admitted when
//! `max(tat, now) + interval ≤ now + capacity`; the new TAT is then that sum. A key whose TAT
//! is not after `now` has its whole budget, exactly like a key never seen: it can be forgotten
//! without changing any answer.

/// A limiter's rate, in ticks (nanoseconds locally, microseconds in Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// What one request costs: the period divided by the count (at least one tick).
    pub interval: u64,
    /// `burst × interval`: how far ahead of `now` the TAT may run.
    pub capacity: u64,
    /// Requests a fresh key may make at once.
    pub burst: u32,
}

impl Params {
    /// `count` requests per `period_ticks`, `burst` at once.
    pub fn new(count: u64, period_ticks: u64, burst: u32) -> Params {
        let interval = (period_ticks / count.max(1)).max(1);
        Params {
            interval,
            capacity: interval.saturating_mul(u64::from(burst.max(1))),
            burst: burst.max(1),
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request is admitted.
    pub admitted: bool,
    /// The TAT to store (unchanged when refused).
    pub tat: u64,
    /// Requests that could be made now, after this one.
    pub remaining: u32,
    /// Ticks until the budget is whole again.
    pub reset: u64,
    /// Ticks until a request would be admitted (0 when admitted).
    pub retry: u64,
}

/// Decides a request at `now` for a key whose stored TAT is `tat` (0 or any past instant for
/// a key never seen or forgotten).
pub fn check(p: &Params, tat: u64, now: u64) -> Outcome {
    let base = tat.max(now);
    let next = base.saturating_add(p.interval);
    let limit = now.saturating_add(p.capacity);
    if next > limit {
        return Outcome {
            admitted: false,
            tat,
            remaining: 0,
            reset: base - now,
            retry: next - limit,
        };
    }
    let room = (limit - next) / p.interval;
    Outcome {
        admitted: true,
        tat: next,
        remaining: u32::try_from(room).unwrap_or(u32::MAX).min(p.burst),
        reset: next - now,
        retry: 0,
    }
}

/// Ticks to whole seconds, rounded up: a client that waits that long is admitted.
pub fn ceil_secs(ticks: u64, per_sec: u64) -> u64 {
    ticks.div_ceil(per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn one_a_minute_burst_three() {
        let p = Params::new(1, 60 * S, 3);
        let now = 1000 * S;
        let mut tat = 0;
        for expected_remaining in [2, 1, 0] {
            let o = check(&p, tat, now);
            assert!(o.admitted);
            assert_eq!(o.remaining, expected_remaining);
            tat = o.tat;
        }
        let fourth = check(&p, tat, now);
        assert!(!fourth.admitted);
        assert_eq!(ceil_secs(fourth.retry, S), 60);
        assert_eq!(ceil_secs(fourth.reset, S), 180);
        assert_eq!(fourth.tat, tat, "a refusal costs nothing");
        // One interval later exactly one more is admitted.
        let later = check(&p, tat, now + 60 * S);
        assert!(later.admitted);
        assert_eq!(later.remaining, 0);
        assert!(!check(&p, later.tat, now + 60 * S).admitted);
        // Half an interval early: still refused, retry in 30 s.
        let early = check(&p, tat, now + 30 * S);
        assert!(!early.admitted);
        assert_eq!(ceil_secs(early.retry, S), 30);
        // Long idle: the whole burst again, as for a new key.
        let idle = check(&p, tat, now + 1000 * S);
        assert_eq!(idle, check(&p, 0, now + 1000 * S));
        assert_eq!(idle.remaining, 2);
    }

    #[test]
    fn sustained_rate_is_exact() {
        // 10/s, burst 1: over 10 s of requests every millisecond, exactly 100 admitted.
        let p = Params::new(10, S, 1);
        let mut tat = 0;
        let mut admitted = 0;
        let start = 5 * S;
        for ms in 0..10_000u64 {
            let o = check(&p, tat, start + ms * 1_000_000);
            if o.admitted {
                admitted += 1;
                tat = o.tat;
            }
        }
        assert_eq!(admitted, 100);
    }

    #[test]
    fn remaining_and_reset_after_one() {
        let p = Params::new(100, S, 200);
        let o = check(&p, 0, S);
        assert!(o.admitted);
        assert_eq!(o.remaining, 199);
        assert_eq!(o.reset, 10_000_000);
    }
}
