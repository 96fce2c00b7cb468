//! What the RADIUS listener remembers about the datagrams it drops. Anyone
//! can send datagrams from addresses of their choosing, so every drop costs
//! the same small, constant work and the memory is fixed, however many
//! addresses the datagrams claim: drops are counted by reason; within one
//! window, the first drop from each source gets a line of its own until
//! [`LINES_PER_WINDOW`] lines were written; and when the window closes, a
//! summary line counts everything, by reason, whenever some drops went
//! without a line.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// Most drops logged on a line of their own in one window.
pub(super) const LINES_PER_WINDOW: usize = 20;
/// Distinct sources counted in one window; beyond, the summary says "more
/// than".
const SOURCES_COUNTED: usize = 4096;

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    NotAClient,
    Malformed,
    BadAuthenticator,
    NoMessageAuthenticator,
    NotServed,
    Overloaded,
    /// A RadSec connection whose TLS handshake failed or took too long
    /// (no certificate from the client CA, say).
    Handshake,
    /// A RadSec connection from an address that has too many open.
    TooManyConnections,
}

impl Reason {
    const ALL: [Reason; 8] = [
        Reason::NotAClient,
        Reason::Malformed,
        Reason::BadAuthenticator,
        Reason::NoMessageAuthenticator,
        Reason::NotServed,
        Reason::Overloaded,
        Reason::Handshake,
        Reason::TooManyConnections,
    ];

    /// The reason as a metric label: `not_a_client`, `malformed`, ...
    pub(super) fn name(self) -> &'static str {
        match self {
            Reason::NotAClient => "not_a_client",
            Reason::Malformed => "malformed",
            Reason::BadAuthenticator => "bad_authenticator",
            Reason::NoMessageAuthenticator => "no_message_authenticator",
            Reason::NotServed => "not_served",
            Reason::Overloaded => "overloaded",
            Reason::Handshake => "handshake",
            Reason::TooManyConnections => "too_many_connections",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Reason::NotAClient => "not a configured client",
            Reason::Malformed => "malformed",
            Reason::BadAuthenticator => "bad authenticator",
            Reason::NoMessageAuthenticator => "no Message-Authenticator",
            Reason::NotServed => "code not served",
            Reason::Overloaded => "too many requests in verification",
            Reason::Handshake => "RadSec handshake failed",
            Reason::TooManyConnections => "too many RadSec connections",
        }
    }
}

/// Where drops come from, as a sender pays for addresses: an IPv4 address,
/// or an IPv6 /64, the smallest network a site or subscriber is given (one
/// host can send from all of its 2^64 addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Source {
    V4(Ipv4Addr),
    V6Net(u64),
}

impl Source {
    pub(super) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*net) << 64)),
        }
    }
}

/// The drops of the current window.
pub(super) struct DropLog {
    since: Instant,
    counts: [u64; Reason::ALL.len()],
    /// The sources seen this window, at most [`SOURCES_COUNTED`]. The
    /// standard library's hasher is keyed at random, so a sender cannot
    /// pick addresses that collide.
    sources: HashSet<Source>,
    /// Whether a source beyond [`SOURCES_COUNTED`] came.
    more_sources: bool,
    lines: usize,
}

impl DropLog {
    /// An empty window that starts at `now`.
    pub(super) fn new(now: Instant) -> DropLog {
        DropLog {
            since: now,
            counts: [0; Reason::ALL.len()],
            sources: HashSet::with_capacity(SOURCES_COUNTED),
            more_sources: false,
            lines: 0,
        }
    }

    /// Counts one drop; true when it gets a line of its own: it is the
    /// first from `source` in this window and fewer than
    /// [`LINES_PER_WINDOW`] lines were written.
    pub(super) fn record(&mut self, source: Source, reason: Reason) -> bool {
        if let Some(count) = self.counts.get_mut(reason as usize) {
            *count = count.saturating_add(1);
        }
        let first = if self.sources.len() < SOURCES_COUNTED {
            self.sources.insert(source)
        } else {
            // Not told apart any more; by now every line was written.
            self.more_sources |= !self.sources.contains(&source);
            false
        };
        let line = first && self.lines < LINES_PER_WINDOW;
        if line {
            self.lines += 1;
        }
        line
    }

    /// Ends the window at `now` and starts the next one; returns the
    /// summary of the ended window when some of its drops got no line.
    pub(super) fn close(&mut self, now: Instant) -> Option<Summary> {
        let total = self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
        let summary = (total > self.lines as u64).then(|| Summary {
            seconds: now.saturating_duration_since(self.since).as_secs(),
            total,
            counts: self.counts,
            sources: self.sources.len(),
            more_sources: self.more_sources,
            lines: self.lines,
        });
        self.since = now;
        self.counts = [0; Reason::ALL.len()];
        self.sources.clear();
        self.more_sources = false;
        self.lines = 0;
        summary
    }
}

/// One window's drops, as one log line.
#[derive(Debug)]
pub(super) struct Summary {
    seconds: u64,
    total: u64,
    counts: [u64; Reason::ALL.len()],
    sources: usize,
    more_sources: bool,
    lines: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let more = if self.more_sources { "more than " } else { "" };
        write!(
            f,
            "{} datagrams dropped from {more}{} sources (IPv4 addresses, IPv6 /64s) in the last {} s (",
            self.total, self.sources, self.seconds
        )?;
        let mut separator = "";
        for (reason, count) in Reason::ALL.iter().zip(self.counts) {
            if count > 0 {
                write!(f, "{separator}{}: {count}", reason.label())?;
                separator = ", ";
            }
        }
        write!(
            f,
            "); {} of them were logged one by one, the first from each source",
            self.lines
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn v4(n: u32) -> Source {
        Source::V4(Ipv4Addr::from_bits(n))
    }

    #[test]
    fn one_line_per_source_and_window_and_a_summary_of_the_rest() {
        let t0 = Instant::now();
        let mut log = DropLog::new(t0);
        assert!(log.record(v4(1), Reason::NotAClient));
        assert!(!log.record(v4(1), Reason::NotAClient));
        assert!(!log.record(v4(1), Reason::BadAuthenticator));
        assert!(log.record(v4(2), Reason::Malformed));
        let summary = log.close(t0 + Duration::from_secs(60)).expect("a summary");
        assert_eq!(
            summary.to_string(),
            "4 datagrams dropped from 2 sources (IPv4 addresses, IPv6 /64s) in the last 60 s \
             (not a configured client: 2, malformed: 1, bad authenticator: 1); \
             2 of them were logged one by one, the first from each source"
        );
        // A new window: the same source gets a line again.
        assert!(log.record(v4(1), Reason::NotAClient));
        // Every drop had its line: nothing to sum up.
        assert!(log.close(t0 + Duration::from_secs(120)).is_none());
        assert!(log.close(t0 + Duration::from_secs(180)).is_none());
    }

    #[test]
    fn a_flood_from_many_sources_stays_bounded() {
        let t0 = Instant::now();
        let mut log = DropLog::new(t0);
        let mut lines = 0;
        for n in 0..100_000u32 {
            if log.record(v4(n), Reason::NotAClient) {
                lines += 1;
            }
            assert!(log.sources.len() <= SOURCES_COUNTED);
        }
        assert_eq!(lines, LINES_PER_WINDOW);
        let summary = log.close(t0 + Duration::from_secs(60)).expect("a summary");
        let text = summary.to_string();
        assert!(
            text.starts_with("100000 datagrams dropped from more than 4096 sources"),
            "{text}"
        );
        assert!(text.contains("(not a configured client: 100000)"), "{text}");
        assert!(log.sources.is_empty() && log.lines == 0);
        assert!(log.sources.capacity() < 4 * SOURCES_COUNTED);
    }

    #[test]
    fn ipv6_sources_are_64_bit_networks() {
        let a = Source::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            Source::of("192.0.2.7".parse().unwrap()).to_string(),
            "192.0.2.7"
        );
        let mut log = DropLog::new(Instant::now());
        assert!(log.record(a, Reason::BadAuthenticator));
        assert!(!log.record(b, Reason::BadAuthenticator));
        assert!(log.record(c, Reason::BadAuthenticator));
    }

    /// One step of a sender's life: a drop from source `n` for `reason`,
    /// or the end of the window.
    #[derive(Debug, Clone)]
    enum Step {
        Drop(u32, usize),
        Close,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let drop = (0u32..20_000, 0..Reason::ALL.len()).prop_map(|(n, r)| Step::Drop(n, r));
        proptest::collection::vec(prop_oneof![40 => drop, 1 => Just(Step::Close)], 0..6000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn lines_stay_capped_and_each_source_has_one_per_window(steps in steps()) {
            let t0 = Instant::now();
            let mut log = DropLog::new(t0);
            let mut lines_by_source: HashMap<u32, usize> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            let mut drops = 0u64;
            for (i, step) in steps.iter().enumerate() {
                match *step {
                    Step::Drop(n, reason) => {
                        drops += 1;
                        let first = seen.insert(n);
                        let room = lines_by_source.len() < LINES_PER_WINDOW;
                        let line = log.record(v4(n), Reason::ALL[reason]);
                        prop_assert_eq!(line, first && room);
                        if line {
                            *lines_by_source.entry(n).or_default() += 1;
                        }
                        prop_assert!(log.sources.len() <= SOURCES_COUNTED);
                        prop_assert!(lines_by_source.values().all(|l| *l == 1));
                        prop_assert!(lines_by_source.len() <= LINES_PER_WINDOW);
                    }
                    Step::Close => {
                        let lines = lines_by_source.len() as u64;
                        let summary = log.close(t0 + Duration::from_secs(i as u64));
                        prop_assert_eq!(summary.is_some(), drops > lines);
                        if let Some(summary) = summary {
                            prop_assert_eq!(summary.total, drops);
                            prop_assert_eq!(summary.lines as u64, lines);
                        }
                        lines_by_source.clear();
                        seen.clear();
                        drops = 0;
                    }
                }
            }
        }
    }
}
