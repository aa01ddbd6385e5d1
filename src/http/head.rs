//! Parse and judge HTTP/1.1 message heads (httparse, straight from the
//! buffer, no copy) and decide each message's framing (RFC 9112 §6).
//!
//! Requests are judged strictly, since an intermediary that forwards an
//! ambiguous request is how smuggling happens: Content-Length with
//! Transfer-Encoding, differing or invalid Content-Length, a final coding
//! other than chunked, a Transfer-Encoding field naming no coding,
//! Transfer-Encoding in HTTP/1.0, a missing or repeated
//! Host in HTTP/1.1, obs-fold, whitespace before a colon, bare CR or NUL are
//! all refused with 400 (httparse refuses the last four). Responses get the
//! same framing checks with 502 as the answer. Nothing here allocates.
//! Requests are also refused for an invalid Host value, a target form that
//! does not fit the method (400) or an HTTP version other than 1.0 and 1.1
//! (505); responses for a status outside 100..599 (502).

use crate::forward::target::{parse_absolute, parse_authority};

/// A refusal: the status ferry answers with and a short reason for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

const fn reject(status: u16, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// The result of looking at the bytes gathered so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    Complete(T),
    /// More bytes are needed.
    Partial,
    Invalid(Reject),
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Post,
    Put,
    Delete,
    Connect,
    Other,
}

impl Method {
    fn from_bytes(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Safe to send again on a fresh connection if the first try failed unseen.
    pub fn is_idempotent(self) -> bool {
        matches!(self, Method::Get | Method::Head | Method::Options)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub head_len: usize,
    pub body: BodyKind,
    /// The client allows the connection to go on after this exchange.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` field, in HTTP/1.1.
    pub upgrade: bool,
    pub expect_continue: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor: u8,
    pub head_len: usize,
    pub body: BodyKind,
    /// The backend allows the connection to be reused.
    pub keep_alive: bool,
}

/// Header count limit used for the httparse array; --max-headers may be lower.
pub const HEADER_SLOTS: usize = 256;

/// Room for httparse's header slices, left uninitialised: filling 256 slots
/// with empty headers on every parse would cost more than the parse.
pub fn uninit_slots<'b>() -> [std::mem::MaybeUninit<httparse::Header<'b>>; HEADER_SLOTS] {
    [const { std::mem::MaybeUninit::uninit() }; HEADER_SLOTS]
}

/// What the Connection field and its friends said.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    chunked: bool,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade_field: bool,
    hosts: u32,
    bad_host: bool,
    expect_continue: bool,
}

impl Fields {
    /// Whether the sender lets the connection go on (RFC 9112 §9.3):
    /// HTTP/1.1 unless it said close, HTTP/1.0 only if it said keep-alive.
    fn persistent(&self, minor: u8) -> bool {
        !self.close && (minor >= 1 || self.keep_alive)
    }
}

/// Split a list-valued field on commas, trimmed, skipping empty elements.
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Collect the framing and connection facts of a header list.
fn read_fields(headers: &[httparse::Header], bad_status: u16) -> Result<Fields, Reject> {
    let mut f = Fields::default();
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            for item in value_items(h.value) {
                let n = parse_length(item).ok_or(reject(bad_status, "invalid Content-Length"))?;
                if f.content_length.is_some_and(|m| m != n) {
                    return Err(reject(bad_status, "differing Content-Length values"));
                }
                f.content_length = Some(n);
            }
            if value_items(h.value).next().is_none() {
                return Err(reject(bad_status, "empty Content-Length"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            f.transfer_encoding = true;
            if list(h.value).next().is_none() {
                // A field naming no coding, beside one saying chunked, is
                // read by some recipients as the only one (no body): refused
                // like an empty Content-Length.
                return Err(reject(bad_status, "empty Transfer-Encoding"));
            }
            for coding in list(h.value) {
                if f.chunked {
                    // chunked must be the final coding and appear once.
                    return Err(reject(
                        bad_status,
                        "chunked is not the final transfer coding",
                    ));
                }
                f.chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    f.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    f.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    f.upgrade_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            f.upgrade_field = true;
        } else if name.eq_ignore_ascii_case("host") {
            f.hosts += 1;
            f.bad_host |= !valid_host(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            f.expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    Ok(f)
}

/// RFC 9112 3.2: a server answers 400 to a Host with an invalid value.
/// Valid: `uri-host [":" port]` (RFC 3986), or empty (a target without an
/// authority). A comma is refused although reg-name allows it: no name has
/// one, and it is what two Host fields look like once combined.
fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            // IP-literal: the address itself is left to whoever uses it.
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => return false,
        },
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &b""[..]),
        },
    };
    let literal = value.first() == Some(&b'[');
    let host_ok = host.iter().all(|&b| {
        b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=".contains(&b) || (literal && b == b':')
    });
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok && !(literal && host.is_empty())
}

/// RFC 9112 3.2: the form of the request target goes with the method:
/// origin-form (`/path`) or absolute-form (`http://host/path`) for most,
/// asterisk-form only for OPTIONS, authority-form only for CONNECT (judged
/// by the forward proxy; a reverse proxy refuses CONNECT). Anything else,
/// including an absolute URI of another scheme or with userinfo, or a '#'
/// in origin-form, is 400 (nginx and HAProxy refuse these too).
fn target_fits(method: Method, target: &[u8]) -> bool {
    match target.first() {
        _ if method == Method::Connect => true,
        // A fragment is never sent (RFC 9110 7.1; '#' is no origin-form
        // character): a backend that took it for part of the path would
        // see another resource than a cache or rule in front (HAProxy
        // refuses it since CVE-2023-45539). An absolute-form target loses
        // its fragment instead, as the forward proxy always did.
        Some(b'/') => !target.contains(&b'#'),
        Some(b'*') => target == b"*" && method == Method::Options,
        _ => {
            parse_absolute(target).is_some_and(|a| parse_authority(a.authority, Some(80)).is_some())
        }
    }
}

/// Whether a request line whose version httparse refused names an HTTP
/// version at all (`HTTP/2.0`, `HTTP/1.2`, `HTTP/3`, the HTTP/2 preface):
/// that is a version ferry does not speak (505), not a malformed line (400).
fn names_other_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.trim_ascii_end().split(|&b| b == b' ');
    // Exactly `method SP target SP version`: a space inside the target is
    // a malformed line whatever follows it.
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(v), None) => {
            v.len() > 5 && v.starts_with(b"HTTP/") && v[5].is_ascii_digit()
        }
        _ => false,
    }
}

fn value_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

fn map_error(e: httparse::Error, status: u16) -> Reject {
    match e {
        httparse::Error::TooManyHeaders => reject(
            if status == 400 { 431 } else { 502 },
            "too many header fields",
        ),
        httparse::Error::Version => reject(status, "unsupported HTTP version"),
        _ => reject(status, "malformed message head"),
    }
}

/// Look for a complete request head at the start of `buf`.
///
/// `max_head` bounds the head (beyond it: 414 while the request line is not
/// complete, 431 after), `max_headers` the number of fields (431).
pub fn parse_request(buf: &[u8], max_head: usize, max_headers: usize) -> Parsed<RequestHead> {
    let mut slots = uninit_slots();
    let mut req = httparse::Request::new(&mut []);
    let head_len =
        match req.parse_with_uninit_headers(buf, &mut slots[..max_headers.min(HEADER_SLOTS)]) {
            Ok(httparse::Status::Complete(n)) if n <= max_head => n,
            Ok(httparse::Status::Complete(_)) | Ok(httparse::Status::Partial) => {
                if buf.len() < max_head {
                    return Parsed::Partial;
                }
                let line_done = buf[..max_head].contains(&b'\n');
                return Parsed::Invalid(if line_done {
                    reject(431, "request head too large")
                } else {
                    reject(414, "request line too long")
                });
            }
            // RFC 9110 15.6.6: 505 for a major version ferry does not
            // speak, as nginx answers. A higher 1.x minor should be taken as
            // 1.1 (RFC 9110 2.5), but httparse refuses it: 505 says so
            // plainly rather than a 400 that blames the request.
            Err(httparse::Error::Version) if names_other_version(buf) => {
                return Parsed::Invalid(reject(505, "unsupported HTTP version"))
            }
            Err(e) => return Parsed::Invalid(map_error(e, 400)),
        };
    let minor = req.version.unwrap_or(1);
    let method = Method::from_bytes(req.method.unwrap_or(""));
    if !target_fits(method, req.path.unwrap_or("").as_bytes()) {
        return Parsed::Invalid(reject(400, "request target does not fit its method"));
    }
    let f = match read_fields(req.headers, 400) {
        Ok(f) => f,
        Err(r) => return Parsed::Invalid(r),
    };
    if f.transfer_encoding && f.content_length.is_some() {
        return Parsed::Invalid(reject(400, "both Content-Length and Transfer-Encoding"));
    }
    if f.transfer_encoding && minor == 0 {
        return Parsed::Invalid(reject(400, "Transfer-Encoding in an HTTP/1.0 request"));
    }
    if f.transfer_encoding && !f.chunked {
        return Parsed::Invalid(reject(400, "the final transfer coding is not chunked"));
    }
    if minor == 1 && f.hosts != 1 {
        return Parsed::Invalid(reject(400, "HTTP/1.1 request without exactly one Host"));
    }
    if f.bad_host || f.hosts > 1 {
        return Parsed::Invalid(reject(400, "invalid or repeated Host"));
    }
    let body = if f.chunked {
        BodyKind::Chunked
    } else {
        match f.content_length {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    let keep_alive = f.persistent(minor);
    Parsed::Complete(RequestHead {
        method,
        minor,
        head_len,
        body,
        keep_alive,
        // RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored (the
        // field is hop-by-hop, so it is not forwarded either).
        upgrade: minor == 1 && f.upgrade_token && f.upgrade_field,
        expect_continue: f.expect_continue && minor == 1,
    })
}

/// Look for a complete response head at the start of `buf`, answering a
/// request made with `method`.
pub fn parse_response(buf: &[u8], method: Method, max_head: usize) -> Parsed<ResponseHead> {
    let mut slots = uninit_slots();
    let mut res = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Complete(_)) | Ok(httparse::Status::Partial) => {
            if buf.len() < max_head {
                return Parsed::Partial;
            }
            return Parsed::Invalid(reject(502, "response head too large"));
        }
        Err(e) => return Parsed::Invalid(map_error(e, 502)),
    };
    let status = res.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        // RFC 9110 15: three digits outside 100..599 are no HTTP status (a
        // client would take one for a 5xx); httparse takes any three.
        return Parsed::Invalid(reject(502, "status code outside 100-599"));
    }
    let minor = res.version.unwrap_or(1);
    let f = match read_fields(res.headers, 502) {
        Ok(f) => f,
        Err(r) => return Parsed::Invalid(r),
    };
    if f.transfer_encoding && f.content_length.is_some() {
        return Parsed::Invalid(reject(
            502,
            "response with both Content-Length and Transfer-Encoding",
        ));
    }
    if f.transfer_encoding && !f.chunked {
        return Parsed::Invalid(reject(502, "response with an unknown Transfer-Encoding"));
    }
    let bodiless =
        method == Method::Head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if bodiless {
        BodyKind::None
    } else if f.chunked {
        BodyKind::Chunked
    } else {
        match f.content_length {
            Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    };
    // Transfer-Encoding in HTTP/1.0 is faulty framing: the sender may have
    // kept part of the message back, so the connection ends after it
    // (RFC 9112 6.1).
    let allows = f.persistent(minor) && !(f.transfer_encoding && minor == 0);
    Parsed::Complete(ResponseHead {
        status,
        minor,
        head_len,
        body,
        keep_alive: allows && body != BodyKind::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Parsed<RequestHead> {
        parse_request(s.as_bytes(), 16384, 100)
    }

    fn status_of(s: &str) -> u16 {
        match req(s) {
            Parsed::Invalid(r) => r.status,
            other => panic!("expected a refusal for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_complete_and_keeps_alive() {
        let Parsed::Complete(h) = req("GET / HTTP/1.1\r\nHost: a\r\n\r\nrest") else {
            panic!()
        };
        assert_eq!(h.head_len, "GET / HTTP/1.1\r\nHost: a\r\n\r\n".len());
        assert_eq!(
            (h.method, h.minor, h.body, h.keep_alive),
            (Method::Get, 1, BodyKind::None, true)
        );
        assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Partial);
    }

    #[test]
    fn request_framing_is_judged_strictly() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\0\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: ,\r\n\r\n",
        ];
        for c in cases {
            assert_eq!(status_of(c), 400, "{c:?}");
        }
        let Parsed::Complete(h) = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(
            h.body,
            BodyKind::Length(5),
            "identical values are one length"
        );
        let Parsed::Complete(h) =
            req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(h.body, BodyKind::Chunked);
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(200));
        assert_eq!(
            parse_request(long_line.as_bytes(), 100, 100),
            Parsed::Invalid(reject(414, "request line too long"))
        );
        let big_head = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "b".repeat(200));
        assert_eq!(
            parse_request(big_head.as_bytes(), 100, 100).status(),
            Some(431)
        );
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: y\r\n".repeat(10));
        assert_eq!(parse_request(many.as_bytes(), 16384, 5).status(), Some(431));
    }

    #[test]
    fn http10_and_connection_close_are_honoured() {
        let Parsed::Complete(h) = req("GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!h.keep_alive);
        let Parsed::Complete(h) = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") else {
            panic!()
        };
        assert!(h.keep_alive);
        let Parsed::Complete(h) = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        else {
            panic!()
        };
        assert!(!h.keep_alive);
        let Parsed::Complete(h) =
            req("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        else {
            panic!()
        };
        assert!(h.upgrade);
        let Parsed::Complete(h) =
            req("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        else {
            panic!()
        };
        assert!(!h.upgrade, "Upgrade in HTTP/1.0 is ignored");
    }

    fn res(s: &str, m: Method) -> Parsed<ResponseHead> {
        parse_response(s.as_bytes(), m, 16384)
    }

    #[test]
    fn response_framing() {
        let Parsed::Complete(h) = res(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            Method::Head,
        ) else {
            panic!()
        };
        assert_eq!(h.body, BodyKind::None, "HEAD answers carry no body");
        for s in [
            "HTTP/1.1 204 No\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 304 NM\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let Parsed::Complete(h) = res(s, Method::Get) else {
                panic!()
            };
            assert_eq!(h.body, BodyKind::None);
        }
        let Parsed::Complete(h) = res("HTTP/1.1 200 OK\r\n\r\n", Method::Get) else {
            panic!()
        };
        assert_eq!((h.body, h.keep_alive), (BodyKind::UntilClose, false));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(res(bad, Method::Get).status(), Some(502), "{bad:?}");
        }
    }

    impl<T> Parsed<T> {
        fn status(&self) -> Option<u16> {
            match self {
                Parsed::Invalid(r) => Some(r.status),
                _ => None,
            }
        }
    }

    use crate::test_rng::{mutate, next as rng};

    /// A valid head with one to three random byte changes.
    fn fuzzed(state: &mut u64, seed: &[u8]) -> Vec<u8> {
        const BYTES: &[u8] = b"\r\n\0 :\t,;\"-09aZ\x7f\x80\xff";
        let mut v = seed.to_vec();
        let times = 1 + rng(state) % 3;
        mutate(state, &mut v, BYTES, times);
        v
    }

    /// Every prefix of `bytes` parses as Partial, or as the head the whole
    /// of `bytes` gives; a prefix of a good head is never refused.
    fn prefixes_agree_with_the_whole<T: PartialEq + std::fmt::Debug>(
        bytes: &[u8],
        parse: impl Fn(&[u8]) -> Parsed<T>,
    ) {
        let whole = parse(bytes);
        for cut in 0..bytes.len() {
            match (parse(&bytes[..cut]), &whole) {
                (Parsed::Complete(p), Parsed::Complete(w)) => {
                    assert_eq!(&p, w, "{bytes:?} at {cut}")
                }
                (Parsed::Complete(p), w) => {
                    panic!("{bytes:?}: complete at {cut} ({p:?}), whole {w:?}")
                }
                (Parsed::Invalid(r), Parsed::Complete(_)) => {
                    panic!("{bytes:?}: a good head refused at {cut}: {r:?}")
                }
                _ => {}
            }
        }
    }

    /// The session parses a head again as each read adds bytes: a prefix
    /// of a good head must be Partial (never refused), and a head complete
    /// in a prefix must be the head the whole buffer gives.
    #[test]
    fn fuzzed_heads_never_panic_and_every_prefix_agrees_with_the_whole() {
        let requests: [&[u8]; 3] = [
            b"POST /a?b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
            b"GET /ws HTTP/1.0\r\nConnection: Upgrade, keep-alive\r\nUpgrade: x\r\n\r\n",
        ];
        let responses: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello",
            b"HTTP/1.0 101 Switching\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for case in 0..4000 {
            let req = fuzzed(&mut state, requests[case % 3]);
            let res = fuzzed(&mut state, responses[case % 2]);
            prefixes_agree_with_the_whole(&req, |b| parse_request(b, 1 << 20, 100));
            prefixes_agree_with_the_whole(&res, |b| parse_response(b, Method::Get, 1 << 20));
        }
    }
}
