//! Who the client is: the socket's peer, or, behind trusted proxies, the right-most address
//! of `Forwarded` / `X-Forwarded-For` that is not one of them (entries left of it are the
//! client's to write, so they are never believed). And IP policy: allow and deny lists, as
//! API Gateway's resource policies on `aws:SourceIp`.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// At most this many forwarded hops are read (a header with more is someone's invention).
const MAX_HOPS: usize = 32;

/// The client's address for a request that came from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !contains(trusted, peer) {
        return peer;
    }
    let hops = if headers.contains_key(http::header::FORWARDED) {
        forwarded_hops(headers)
    } else {
        x_forwarded_hops(headers)
    };
    // From the right: each trusted hop vouches for the one left of it.
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        let Some(ip) = hop else {
            // An entry that is not an address (`unknown`, an obfuscated name): the chain
            // of trust ends at the last address read.
            return client;
        };
        client = canonical(*ip);
        if !contains(trusted, client) {
            return client;
        }
    }
    client
}

/// Whether `ip` lies in one of `nets`.
pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4
/// clients) as the IPv4 address, so IPv4 ranges match them.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn x_forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|s| parse_node(s.trim()))
        .collect()
}

fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            // An element without `for=` says nothing of the client: skipped.
            if let Some(node) = node {
                hops.push(parse_node(node.trim_matches('"')));
            }
        }
    }
    hops
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Allow and deny lists: a denied address, or one outside a non-empty allow list, is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpPolicy {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl IpPolicy {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        !contains(&self.deny, ip) && (self.allow.is_empty() || contains(&self.allow, ip))
    }
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| parse_net(s).unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &[]), ip("10.0.0.5"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_even_with_a_forwarded_header() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client_and_spoofed_left_entries_are_ignored() {
        let trusted = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        // The client wrote "6.6.6.6" itself; the balancer appended the address it saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("198.51.100.7"));
        // Two header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("198.51.100.7"));
        // Every hop trusted: the left-most.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("10.9.9.9"));
        // Garbage ends the chain at the last address read.
        let h = headers(&[("x-forwarded-for", "198.51.100.7, nonsense, 10.8.8.8")]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("10.8.8.8"));
        // No header: the trusted peer itself.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &HeaderMap::new(), &trusted),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn forwarded_is_read_with_ports_quotes_and_ipv6() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.9:80",
        )]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=unknown, for=10.0.0.9")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.9"));
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_ranges() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn policy_denies_before_it_allows() {
        let p = IpPolicy {
            allow: nets(&["198.51.100.0/24", "2001:db8::/32"]),
            deny: nets(&["198.51.100.66"]),
        };
        assert!(p.admits(ip("198.51.100.7")));
        assert!(p.admits(ip("2001:db8::1")));
        assert!(!p.admits(ip("198.51.100.66")));
        assert!(!p.admits(ip("203.0.113.1")));
        let deny_only = IpPolicy {
            allow: vec![],
            deny: nets(&["203.0.113.0/24"]),
        };
        assert!(deny_only.admits(ip("198.51.100.7")));
        assert!(!deny_only.admits(ip("::ffff:203.0.113.5")));
    }

    #[test]
    fn nets_parse_as_cidrs_or_addresses() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("example.com").is_none());
    }
}
