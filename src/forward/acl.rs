//! Who a forward proxy may reach: the CONNECT port allow-list, the
//! allow/deny networks (CIDR) checked against an origin's resolved address,
//! and never the proxy's own listening addresses (a loop).
//!
//! A deny match always wins; a non-empty allow list admits only what it
//! matches; an empty one admits every address no deny names. An address is
//! judged by where a connect to it goes: the unspecified address (`0.0.0.0`,
//! `::`) reaches this host's loopback, and is refused wherever that is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// An IPv4 or IPv6 network such as `10.0.0.0/8` or `fd00::/8` (a bare
/// address is a /32 or /128). IPv4-mapped IPv6 addresses match IPv4 networks,
/// and an IPv4-mapped network (`::ffff:10.0.0.0/104`) is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not a network such as 10.0.0.0/8 or fd00::/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?,
        };
        // An IPv4-mapped network names IPv4 addresses, which are matched as
        // IPv4 (`contains` canonicalises them): keep it as the IPv4 network.
        if let IpAddr::V6(v6) = net {
            if let (Some(v4), 96..) = (v6.to_ipv4_mapped(), bits) {
                return Ok(Cidr {
                    net: IpAddr::V4(v4),
                    bits: bits - 96,
                });
            }
        }
        Ok(Cidr { net, bits })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The networks a listener may reach.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

/// The address a connect to `ip` reaches: a connect to the unspecified
/// address (`0.0.0.0`, `::`) goes to this host's loopback.
fn reached(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v6) if v6.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        other => other,
    }
}

impl Acl {
    /// May `ip` be reached? It is judged by the address a connect to it
    /// reaches, so `0.0.0.0` is refused wherever `127.0.0.1` is, and a deny
    /// naming it as written refuses it too.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let to = reached(ip);
        if self.deny.iter().any(|c| c.contains(ip) || c.contains(to)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(to))
    }
}

/// Would a connection to `addr` reach one of the `listening` addresses, that
/// is the proxy itself? IPv4-mapped IPv6 addresses count as IPv4; an
/// unspecified target (`0.0.0.0`, `::`) reaches this host's loopback; and a
/// wildcard listener is reached through every address of this host, not
/// only loopback, so a target on its port is asked about (only then, as it
/// costs a few syscalls): is it an address of this host?
pub fn is_own_address(listening: &[SocketAddr], addr: SocketAddr) -> bool {
    let ip = canonical(addr.ip());
    let mut local: Option<bool> = None;
    for l in listening.iter().filter(|l| l.port() == addr.port()) {
        let lip = canonical(l.ip());
        if lip == ip || (ip.is_unspecified() && (lip.is_loopback() || lip.is_unspecified())) {
            return true;
        }
        if lip.is_unspecified()
            && *local.get_or_insert_with(|| ip.is_loopback() || is_this_host(ip))
        {
            return true;
        }
    }
    false
}

/// Is `ip` one of this host's addresses? The kernel's route to a local
/// address is the host itself, with that address as the source it picks; a
/// UDP connect asks for the route without sending anything.
fn is_this_host(ip: IpAddr) -> bool {
    let any: SocketAddr = match ip {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let Ok(probe) = UdpSocket::bind(any) else {
        return false;
    };
    probe.connect((ip, 9)).is_ok() && probe.local_addr().is_ok_and(|a| canonical(a.ip()) == ip)
}

/// A comma-separated list of ports, such as `443,8443`.
pub fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("'{p}' is not a port (1-65535)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_match_by_prefix() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("::1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let mapped: Cidr = "::ffff:10.1.0.0/112".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.1.0.0/16");
        assert!(mapped.contains(ip("10.1.2.3")) && mapped.contains(ip("::ffff:10.1.2.3")));
        assert!(!mapped.contains(ip("10.2.0.1")));
    }

    #[test]
    fn bad_networks_are_explained() {
        assert!("10.0.0.0/33"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("0 to 32"));
        assert!("ten/8".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let mut acl = Acl::default();
        assert!(acl.permits(ip("8.8.8.8")));
        acl.deny.push("10.0.0.0/8".parse().unwrap());
        assert!(!acl.permits(ip("10.9.9.9")) && acl.permits(ip("8.8.8.8")));
        acl.allow.push("8.8.0.0/16".parse().unwrap());
        assert!(acl.permits(ip("8.8.4.4")) && !acl.permits(ip("1.1.1.1")));
        acl.deny.push("8.8.4.0/24".parse().unwrap());
        assert!(!acl.permits(ip("8.8.4.4")));
    }

    #[test]
    fn the_unspecified_address_is_judged_as_the_loopback_it_reaches() {
        let deny = |c: &str| Acl {
            allow: Vec::new(),
            deny: vec![c.parse().unwrap()],
        };
        assert!(!deny("127.0.0.0/8").permits(ip("0.0.0.0")));
        assert!(!deny("127.0.0.0/8").permits(ip("::ffff:0.0.0.0")));
        assert!(!deny("::1").permits(ip("::")));
        assert!(!deny("0.0.0.0/32").permits(ip("0.0.0.0")));
        assert!(deny("10.0.0.0/8").permits(ip("0.0.0.0")));
        let allow = Acl {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            deny: Vec::new(),
        };
        assert!(!allow.permits(ip("0.0.0.0")));
        let lo = Acl {
            allow: vec!["127.0.0.1".parse().unwrap()],
            deny: Vec::new(),
        };
        assert!(lo.permits(ip("0.0.0.0")));
    }

    #[test]
    fn the_proxys_own_addresses_are_recognised() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let lo = [sa("127.0.0.1:3128")];
        assert!(is_own_address(&lo, sa("127.0.0.1:3128")));
        assert!(is_own_address(&lo, sa("[::ffff:127.0.0.1]:3128")));
        assert!(is_own_address(&lo, sa("0.0.0.0:3128")));
        assert!(!is_own_address(&lo, sa("127.0.0.1:3129")));
        assert!(!is_own_address(&lo, sa("10.0.0.1:3128")));
        let any = [sa("0.0.0.0:3128")];
        assert!(is_own_address(&any, sa("127.0.0.2:3128")));
        assert!(is_own_address(&any, sa("0.0.0.0:3128")));
        // TEST-NET-2 is nobody's address (it may still be routable).
        assert!(!is_own_address(&any, sa("198.51.100.7:3128")));
        let v6 = [sa("[::]:3128")];
        assert!(is_own_address(&v6, sa("[::1]:3128")));
        assert!(is_own_address(&v6, sa("127.0.0.1:3128")));
    }

    #[test]
    fn port_lists_parse() {
        assert_eq!(parse_ports("443, 8443").unwrap(), [443, 8443]);
        assert!(parse_ports("443,0").is_err());
        assert!(parse_ports("https").is_err());
    }
}
