//! The request target of a forward proxy: the authority of a CONNECT
//! (`host:port`) and the parts of an absolute-form URI
//! (`http://host[:port]/path?query`), checked strictly (RFC 9112 §3.2).
//!
//! Everything is borrowed from the request head; nothing is allocated.

use std::net::IpAddr;

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authority<'a> {
    /// A name or an address literal (IPv6 without its brackets).
    pub host: &'a str,
    pub port: u16,
}

impl Authority<'_> {
    /// The host as an address if it is a literal (no lookup needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// An absolute-form request target split in its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Absolute<'a> {
    /// `https` was asked (a forward proxy cannot speak TLS for its client).
    pub https: bool,
    /// The authority as received (for the Host field).
    pub authority: &'a [u8],
    /// The path and query, without any fragment; empty when the URI had no
    /// path (the origin form is then `/`).
    pub path: &'a [u8],
}

/// Longest host name accepted (DNS names are at most 253 characters).
const MAX_HOST: usize = 253;

fn host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// Split `host[:port]`; the port is required when `default_port` is None.
pub fn parse_authority(raw: &[u8], default_port: Option<u16>) -> Option<Authority<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u16>().ok().filter(|&p| p != 0)?
        }
        None => default_port?,
    };
    let bracketed = text.starts_with('[');
    if host.is_empty() || host.len() > MAX_HOST || (!bracketed && !host.bytes().all(host_char)) {
        return None;
    }
    Some(Authority { host, port })
}

/// Split an absolute-form target; `None` if it is not one (or is malformed).
pub fn parse_absolute(target: &[u8]) -> Option<Absolute<'_>> {
    let (https, rest) = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        (false, &target[7..])
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        (true, &target[8..])
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains(&b'@') {
        // No host, or userinfo (deprecated and a phishing tool).
        return None;
    }
    // A fragment is the client's own (RFC 9110 §7.1): it is never sent on.
    let path = path.split(|&b| b == b'#').next().unwrap_or_default();
    Some(Absolute {
        https,
        authority,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_and_check() {
        let a = parse_authority(b"example.com:443", None).unwrap();
        assert_eq!((a.host, a.port), ("example.com", 443));
        let a = parse_authority(b"[::1]:8443", None).unwrap();
        assert_eq!((a.host, a.port), ("::1", 8443));
        assert_eq!(a.ip(), Some("::1".parse().unwrap()));
        let a = parse_authority(b"10.0.0.1", Some(80)).unwrap();
        assert_eq!((a.host, a.port), ("10.0.0.1", 80));
        for bad in [
            &b"example.com"[..],
            b"example.com:",
            b"example.com:0",
            b"example.com:65536",
            b"example.com:+80",
            b":443",
            b"exa mple.com:443",
            b"user@host:443",
            b"[::1:443",
            b"[nothex]:443",
            b"[::1]443",
            b"\xff:443",
        ] {
            assert!(parse_authority(bad, None).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn absolute_targets_split_into_authority_and_path() {
        let a = parse_absolute(b"http://example.com:8080/a/b?c=d").unwrap();
        assert_eq!(a.authority, b"example.com:8080");
        assert_eq!(a.path, b"/a/b?c=d");
        assert!(!a.https);
        let a = parse_absolute(b"HTTP://example.com").unwrap();
        assert_eq!((a.authority, a.path), (&b"example.com"[..], &b""[..]));
        let a = parse_absolute(b"http://h?q").unwrap();
        assert_eq!(a.path, b"?q");
        assert!(parse_absolute(b"https://h/").unwrap().https);
        assert_eq!(parse_absolute(b"http://h/p?q#f").unwrap().path, b"/p?q");
        assert_eq!(parse_absolute(b"http://h#f").unwrap().path, b"");
        assert!(parse_absolute(b"/origin/form").is_none());
        assert!(parse_absolute(b"http://").is_none());
        assert!(parse_absolute(b"http:///x").is_none());
        assert!(parse_absolute(b"http://u:p@h/").is_none());
        assert!(parse_absolute(b"ftp://h/").is_none());
    }

    use crate::test_rng::next as rng;

    /// Whatever bytes a client puts in a target, an accepted authority is
    /// a usable one: a host of allowed characters (or an IPv6 literal), at
    /// most 253 bytes, and a port that is not 0.
    #[test]
    fn fuzzed_targets_never_panic_and_accepted_ones_are_sound() {
        const PARTS: &[&str] = &[
            "example.com",
            "[::1]",
            "[",
            "]",
            ":",
            "443",
            "0",
            "65535",
            "65536",
            "99999",
            "@",
            "u:p@",
            "%2e",
            "%",
            "/",
            "?",
            "#",
            "http://",
            "https://",
            "",
            " ",
            "\u{e9}",
            "127.0.0.1",
            "-",
            "[fe80::1%eth0]",
            "[::ffff:1.2.3.4]",
            "a..b",
            "_",
        ];
        let mut state = 0x1234_5678_9abc_def1_u64;
        let long = "a".repeat(300);
        for _ in 0..20000 {
            let mut t = String::new();
            for _ in 0..1 + rng(&mut state) % 6 {
                if rng(&mut state).is_multiple_of(50) {
                    t.push_str(&long);
                } else {
                    t.push_str(PARTS[(rng(&mut state) as usize) % PARTS.len()]);
                }
            }
            for default in [None, Some(80)] {
                if let Some(a) = parse_authority(t.as_bytes(), default) {
                    assert!(a.port != 0, "{t:?}");
                    assert!(!a.host.is_empty() && a.host.len() <= MAX_HOST, "{t:?}");
                    assert!(
                        a.host.bytes().all(host_char)
                            || a.host.parse::<std::net::Ipv6Addr>().is_ok(),
                        "{t:?} gave host {:?}",
                        a.host
                    );
                }
            }
            if let Some(abs) = parse_absolute(t.as_bytes()) {
                assert!(!abs.authority.is_empty(), "{t:?}");
                assert!(!abs.authority.iter().any(|b| b"@/?#".contains(b)), "{t:?}");
                assert!(!abs.path.contains(&b'#'), "{t:?}");
            }
        }
    }
}
