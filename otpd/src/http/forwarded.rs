//! The client address behind a reverse proxy (`[http].trusted_proxies`).
//! A request whose TCP peer is a trusted proxy is counted and audited by
//! the address that `X-Forwarded-For` names: walking from its right end
//! (the hop the trusted proxy appended) leftwards past further trusted
//! proxies, the first address that is not one. Any other request, and any
//! header that cannot be read (not text, an element that is no address,
//! more than [`MAX_BYTES`] or [`MAX_ELEMENTS`]), counts by its peer: a
//! client can add to the header, but never make otpd trust what it wrote.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use otpcore::config::Cidr;

/// The longest `X-Forwarded-For` read, all its lines together.
pub(super) const MAX_BYTES: usize = 4096;
/// Most addresses read from `X-Forwarded-For`.
pub(super) const MAX_ELEMENTS: usize = 64;

/// The address to count a request by: `peer`, or when `peer` lies in
/// `trusted`, the client that `forwarded_for` (the `X-Forwarded-For`
/// lines, in order) names.
pub(super) fn client<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a HeaderValue>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|block| block.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut lines = Vec::new();
    let mut bytes = 0usize;
    for line in forwarded_for {
        bytes = bytes.saturating_add(line.len());
        if bytes > MAX_BYTES {
            return peer;
        }
        let Ok(text) = line.to_str() else {
            return peer;
        };
        lines.push(text);
    }
    let mut hops = Vec::new();
    for element in lines.iter().flat_map(|line| line.split(',')) {
        if hops.len() == MAX_ELEMENTS {
            return peer;
        }
        let Some(ip) = address(element.trim()) else {
            return peer;
        };
        hops.push(ip);
    }
    match hops.iter().rev().find(|ip| !is_trusted(**ip)) {
        Some(client) => *client,
        // Every hop is a trusted proxy: the first one is the client.
        None => hops.first().copied().unwrap_or(peer),
    }
}

/// One element of `X-Forwarded-For`: an address, IPv6 bare or in brackets.
fn address(element: &str) -> Option<IpAddr> {
    let bare = element
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(element);
    bare.parse().ok()
}

/// Replaces the connection's peer address, which the handlers count and
/// audit requests by, with the client that a trusted proxy names.
pub(super) async fn from_trusted_proxy(
    State(trusted): State<std::sync::Arc<[Cidr]>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let peer = *peer;
        let forwarded = request.headers().get_all("x-forwarded-for").iter();
        let ip = client(super::client_ip(peer), forwarded, &trusted);
        if ip != super::client_ip(peer) {
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip, peer.port())));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidrs(blocks: &[&str]) -> Vec<Cidr> {
        blocks
            .iter()
            .map(|b| Cidr::parse(b).expect("cidr"))
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn of(peer: &str, lines: &[&str], trusted: &[&str]) -> IpAddr {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).expect("header"))
            .collect();
        client(ip(peer), values.iter(), &cidrs(trusted))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            of("198.51.100.7", &["203.0.113.5"], &["127.0.0.1/32"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            of("198.51.100.7", &["203.0.113.5"], &[]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_right_most_untrusted_hop() {
        let trusted = ["127.0.0.1/32", "10.0.0.0/8"];
        assert_eq!(
            of("127.0.0.1", &["203.0.113.5"], &trusted),
            ip("203.0.113.5")
        );
        // A client's own claim sits left of what the proxies appended.
        assert_eq!(
            of(
                "127.0.0.1",
                &["192.0.2.66, 203.0.113.5, 10.1.2.3"],
                &trusted
            ),
            ip("203.0.113.5")
        );
        // Several lines are one list.
        assert_eq!(
            of(
                "127.0.0.1",
                &["192.0.2.66", "203.0.113.5 , 10.1.2.3"],
                &trusted
            ),
            ip("203.0.113.5")
        );
        assert_eq!(
            of("127.0.0.1", &["[2001:db8::1]"], &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            of("127.0.0.1", &["2001:db8::1"], &trusted),
            ip("2001:db8::1")
        );
        // Only proxies: the first is the client.
        assert_eq!(
            of("127.0.0.1", &["10.0.0.9, 10.0.0.8"], &trusted),
            ip("10.0.0.9")
        );
        // No header: the proxy itself.
        assert_eq!(of("127.0.0.1", &[], &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn an_unreadable_header_counts_by_the_peer() {
        let trusted = ["127.0.0.1/32"];
        for lines in [
            &["203.0.113.5, unknown"][..],
            &["203.0.113.5:443"],
            &[""],
            &["203.0.113.5,,"],
            &["203.0.113.5/24"],
        ] {
            assert_eq!(
                of("127.0.0.1", lines, &trusted),
                ip("127.0.0.1"),
                "{lines:?}"
            );
        }
        let long = vec!["203.0.113.5"; MAX_ELEMENTS + 1].join(",");
        assert_eq!(of("127.0.0.1", &[&long], &trusted), ip("127.0.0.1"));
        let huge = format!("{}203.0.113.5", " ".repeat(MAX_BYTES));
        assert_eq!(of("127.0.0.1", &[&huge], &trusted), ip("127.0.0.1"));
        let binary = HeaderValue::from_bytes(b"203.0.113.5\xff").expect("header");
        assert_eq!(
            client(ip("127.0.0.1"), [binary].iter(), &cidrs(&trusted)),
            ip("127.0.0.1")
        );
    }

    proptest! {
        /// Any header bytes: no panic, and the answer is the peer or an
        /// address that the header holds.
        #[test]
        fn any_header_gives_the_peer_or_an_address_it_holds(
            raw in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
            trusted_peer in any::<bool>(),
        ) {
            let peer = if trusted_peer { ip("127.0.0.1") } else { ip("192.0.2.1") };
            let values: Vec<HeaderValue> = raw
                .iter()
                .filter_map(|bytes| HeaderValue::from_bytes(bytes).ok())
                .collect();
            let got = client(peer, values.iter(), &cidrs(&["127.0.0.1/32"]));
            let joined = values
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            prop_assert!(got == peer || joined.split(',').any(|e| address(e.trim()) == Some(got)));
            if !trusted_peer {
                prop_assert_eq!(got, peer);
            }
        }

        /// Well-formed lists: the right-most untrusted address.
        #[test]
        fn lists_of_addresses_name_the_right_most_untrusted(
            hops in proptest::collection::vec(any::<[u8; 4]>(), 1..20),
        ) {
            let text = hops
                .iter()
                .map(|h| std::net::Ipv4Addr::from(*h).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let trusted = cidrs(&["127.0.0.0/8"]);
            let value = HeaderValue::from_str(&text).expect("header");
            let got = client(ip("127.0.0.1"), [value].iter(), &trusted);
            let expected = hops
                .iter()
                .rev()
                .map(|h| IpAddr::from(*h))
                .find(|a| !trusted[0].contains(*a))
                .unwrap_or(IpAddr::from(hops[0]));
            prop_assert_eq!(got, expected);
        }
    }
}
