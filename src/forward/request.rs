//! Judge a forward-proxy request before anything is resolved or connected:
//! its credentials, the form of its target, and for CONNECT the port.
//!
//! The head was validated by `http::head` already; this re-reads its request
//! line and `Proxy-Authorization` field with httparse (a forward request pays
//! one more parse of its head, a reverse-proxy request nothing).

use super::auth::Credentials;
use super::target::{parse_absolute, parse_authority, Authority};
use crate::config::ForwardConfig;
use crate::http::head::{uninit_slots, Method};

/// What to do with a forward request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Go to this origin: a tunnel if `connect`, else one request.
    Go {
        authority: Authority<'a>,
        connect: bool,
    },
    /// Ask for credentials (407).
    AuthRequired,
    /// Refuse with this status: 400 (malformed target), 403 (port not allowed).
    Refuse(u16),
}

/// Judge the request whose complete, validated head is `head`.
pub fn judge<'h>(head: &'h [u8], method: Method, cfg: &ForwardConfig) -> Verdict<'h> {
    let mut slots = uninit_slots();
    let mut req = httparse::Request::new(&mut []);
    if req.parse_with_uninit_headers(head, &mut slots).is_err() {
        return Verdict::Refuse(400);
    }
    if !authorized(&cfg.auth, req.headers) {
        return Verdict::AuthRequired;
    }
    let Some(target) = req.path else {
        return Verdict::Refuse(400);
    };
    let connect = method == Method::Connect;
    let authority = if connect {
        // RFC 9110 §9.3.6: authority-form, and the port is not optional.
        match parse_authority(target.as_bytes(), None) {
            Some(a) => a,
            None => return Verdict::Refuse(400),
        }
    } else {
        match parse_absolute(target.as_bytes()) {
            Some(abs) if !abs.https => match parse_authority(abs.authority, Some(80)) {
                Some(a) => a,
                None => return Verdict::Refuse(400),
            },
            // https:// in absolute form needs TLS to the origin (a client
            // uses CONNECT for that); origin form names no origin at all.
            _ => return Verdict::Refuse(400),
        }
    };
    if connect && !cfg.connect_ports.contains(&authority.port) {
        return Verdict::Refuse(403);
    }
    Verdict::Go { authority, connect }
}

fn authorized(creds: &Credentials, headers: &[httparse::Header]) -> bool {
    if creds.is_empty() {
        return true;
    }
    let mut ok = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("proxy-authorization") {
            // Only one field may carry credentials; several are refused.
            if ok {
                return false;
            }
            ok = creds.check(h.value);
            if !ok {
                return false;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::auth::Credentials;

    fn cfg(auth: &[&str]) -> ForwardConfig {
        ForwardConfig {
            auth: Credentials::new(auth.iter().map(|s| s.as_bytes().to_vec()).collect()),
            ..ForwardConfig::default()
        }
    }

    #[test]
    fn connect_needs_an_allowed_port() {
        let c = cfg(&[]);
        let v = judge(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            Method::Connect,
            &c,
        );
        assert!(matches!(v, Verdict::Go { connect: true, authority } if authority.port == 443));
        let v = judge(
            b"CONNECT example.com:22 HTTP/1.1\r\nHost: x\r\n\r\n",
            Method::Connect,
            &c,
        );
        assert_eq!(v, Verdict::Refuse(403));
        let v = judge(
            b"CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n",
            Method::Connect,
            &c,
        );
        assert_eq!(v, Verdict::Refuse(400));
    }

    #[test]
    fn requests_need_absolute_http_targets() {
        let c = cfg(&[]);
        let v = judge(
            b"GET http://h:8080/x HTTP/1.1\r\nHost: h\r\n\r\n",
            Method::Get,
            &c,
        );
        assert!(
            matches!(v, Verdict::Go { connect: false, authority } if authority.host == "h" && authority.port == 8080)
        );
        let v = judge(
            b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
            Method::Get,
            &c,
        );
        assert!(matches!(v, Verdict::Go { authority, .. } if authority.port == 80));
        for bad in [
            &b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET https://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(judge(bad, Method::Get, &c), Verdict::Refuse(400));
        }
    }

    #[test]
    fn credentials_are_checked_before_anything_else() {
        let c = cfg(&["u:p"]);
        let req = b"CONNECT h:22 HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(judge(req, Method::Connect, &c), Verdict::AuthRequired);
        let ok = b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic dTpw\r\n\r\n";
        assert!(matches!(judge(ok, Method::Connect, &c), Verdict::Go { .. }));
        let wrong = b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic dTpx\r\n\r\n";
        assert_eq!(judge(wrong, Method::Connect, &c), Verdict::AuthRequired);
        let two = b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic dTpw\r\nProxy-Authorization: Basic dTpw\r\n\r\n";
        assert_eq!(judge(two, Method::Connect, &c), Verdict::AuthRequired);
    }
}
