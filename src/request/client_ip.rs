//! The real client address: the peer, or what trusted proxies say in `X-Forwarded-For`.

use ipnet::IpNet;
use std::net::IpAddr;

/// Peers whose `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The real client address: the peer itself, unless the peer is trusted, in which case the
    /// right-most address in `X-Forwarded-For` that is not itself a trusted proxy. `None` when
    /// a malformed entry comes before any such address.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer.map(canonical)?;
        if !self.contains(peer) {
            return Some(peer);
        }
        let Some(xff) = forwarded_for else {
            return Some(peer);
        };
        let mut leftmost = None;
        // `xff.rsplit(',')`, by bytes: the searcher behind `rsplit` costs more than the
        // usual one or two entries do.
        let mut rest = Some(xff);
        while let Some(left) = rest {
            let entry = match left.bytes().rposition(|b| b == b',') {
                Some(i) => {
                    rest = Some(&left[..i]);
                    &left[i + 1..]
                }
                None => {
                    rest = None;
                    left
                }
            };
            let Some(ip) = address(entry).map(canonical) else {
                // A malformed hop breaks the chain of trust before an untrusted address was
                // found: the client is unknown (policies on networks then fail closed), not
                // the proxy that forwarded the garbage.
                return None;
            };
            if !self.contains(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        Some(leftmost.unwrap_or(peer))
    }
}

/// An `X-Forwarded-For` entry as an address. A dotted quad, the usual entry, is read by hand
/// (the standard parser tries one form after another); anything else goes to the standard
/// parser. Both read every input alike (see the test).
fn address(entry: &str) -> Option<IpAddr> {
    match dotted_quad(entry.trim_ascii().as_bytes()) {
        Some(v4) => Some(IpAddr::V4(v4)),
        None => entry.trim().parse().ok(),
    }
}

/// `a.b.c.d`, each 0 to 255 in one to three digits without a leading zero (as the standard
/// parser reads them); `None` for anything else.
fn dotted_quad(bytes: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if bytes.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while i - start < 3 && i < bytes.len() && bytes[i].is_ascii_digit() {
            value = value * 10 + u32::from(bytes[i] - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || value > 255 || (digits > 1 && bytes[start] == b'0') {
            return None;
        }
        *octet = value as u8;
    }
    (i == bytes.len()).then(|| std::net::Ipv4Addr::from(octets))
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-read dotted quad against the standard parser, on every string of up to five
    /// pieces that matter to it.
    #[test]
    fn entries_read_as_the_standard_parser_reads_them() {
        let pieces = [
            "", "0", "1", "25", "255", "256", "01", "1234", ".", "1.", "0.", "255.", "00.", ":",
            "a", " ", "\u{a0}",
        ];
        let mut quads = 0;
        for entry in crate::test_inputs::concatenations(&pieces, 5)
            .into_iter()
            .chain([
                "1.2.3.4".into(),
                " 10.0.0.1\t".into(),
                "::ffff:1.2.3.4".into(),
            ])
        {
            assert_eq!(address(&entry), entry.trim().parse().ok(), "{entry:?}");
            quads += usize::from(dotted_quad(entry.trim_ascii().as_bytes()).is_some());
        }
        assert!(quads > 100, "{quads}");
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let trusted = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()]);
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        // An untrusted peer's X-Forwarded-For is ignored.
        assert_eq!(
            trusted.client_ip(Some(stranger), Some("1.2.3.4")),
            Some(stranger)
        );
        // A trusted peer: right-most untrusted hop wins, spoofed left entries are ignored.
        assert_eq!(
            trusted.client_ip(Some(peer), Some("6.6.6.6, 198.51.100.7, 10.2.2.2")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(trusted.client_ip(Some(peer), None), Some(peer));
        assert_eq!(trusted.client_ip(Some(peer), Some("garbage")), None);
        assert_eq!(
            trusted.client_ip(Some(peer), Some("garbage, 198.51.100.7")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            trusted.client_ip(Some(peer), Some("10.9.9.9, invalid, 10.2.2.2")),
            None
        );
        // Empty entries are malformed hops too, wherever they are.
        assert_eq!(trusted.client_ip(Some(peer), Some("")), None);
        assert_eq!(trusted.client_ip(Some(peer), Some("198.51.100.7,")), None);
        assert_eq!(
            trusted.client_ip(Some(peer), Some(",198.51.100.7")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            trusted.client_ip(Some(peer), Some("10.2.2.2,,10.3.3.3")),
            None
        );
        // Only trusted hops: the left-most of them.
        assert_eq!(
            trusted.client_ip(Some(peer), Some("10.4.4.4,10.2.2.2")),
            Some("10.4.4.4".parse().unwrap())
        );
        let mapped: IpAddr = "::ffff:10.1.1.1".parse().unwrap();
        assert!(trusted.contains(mapped));
    }
}
