//! The per-address rate limit of activation and confirmation requests,
//! page and API alike (`[http].rate_limit_per_minute`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts requests per client address (IPv6 per /64) over a sliding window.
pub(super) struct RateLimiter {
    limit: usize,
    window: Duration,
    state: Mutex<Buckets>,
}

struct Buckets {
    by_key: HashMap<IpAddr, Bucket>,
    prune_at: usize,
}

#[derive(Default)]
struct Bucket {
    times: VecDeque<Instant>,
    denied: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Allowed,
    /// Over the limit; `first` for the first refusal since the last allowed
    /// request, which is the one worth an audit line.
    Denied {
        first: bool,
    },
}

impl RateLimiter {
    pub(super) fn new(limit: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            window,
            state: Mutex::new(Buckets {
                by_key: HashMap::new(),
                prune_at: 4096,
            }),
        }
    }

    /// The address requests are counted by: IPv4 as is, IPv6 by its /64.
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        }
    }

    /// Counts a request from `ip` at `now`, unless it is over the limit.
    pub(super) fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.by_key.len() >= state.prune_at {
            let window = self.window;
            state.by_key.retain(|_, b| {
                b.times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            state.prune_at = (state.by_key.len() * 2).max(4096);
        }
        let bucket = state.by_key.entry(Self::key(ip)).or_default();
        while bucket
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            bucket.times.pop_front();
        }
        if bucket.times.len() >= self.limit {
            let first = !bucket.denied;
            bucket.denied = true;
            return Verdict::Denied { first };
        }
        bucket.denied = false;
        bucket.times.push_back(now);
        Verdict::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_window_slides_and_groups_ipv6_by_64() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(limiter.check(a, t0), Verdict::Allowed);
        assert_eq!(
            limiter.check(b, t0 + Duration::from_secs(30)),
            Verdict::Allowed
        );
        assert_eq!(
            limiter.check(a, t0 + Duration::from_secs(31)),
            Verdict::Denied { first: true }
        );
        assert_eq!(
            limiter.check(a, t0 + Duration::from_secs(32)),
            Verdict::Denied { first: false }
        );
        assert_eq!(
            limiter.check(c, t0 + Duration::from_secs(32)),
            Verdict::Allowed
        );
        assert_eq!(
            limiter.check(a, t0 + Duration::from_secs(61)),
            Verdict::Allowed
        );
    }
}
