//! Write the head ferry forwards: the received head minus hop-by-hop fields,
//! plus the fields an intermediary adds (RFC 9110 §7.6).
//!
//! Removed from every forwarded message: `Connection` and every field it
//! names (never `Content-Length`, `Transfer-Encoding` or `Host`, so a client
//! cannot strip framing), `Keep-Alive`, `Proxy-Connection`, `TE` (kept as
//! `TE: trailers` when it asked for trailers), `Trailer`, `Upgrade` (unless
//! upgrading) and `Proxy-Authorization`. Added to requests:
//! `X-Forwarded-For` (appended to any received), `X-Forwarded-Proto` and
//! `Via: 1.1 ferry` (`1.0 ferry` for an HTTP/1.0 message); to responses:
//! `Via` and the connection directive the client needs (and, for a chunked
//! body ferry decodes for an HTTP/1.0 client, no `Transfer-Encoding`; for a
//! 1xx or 204, neither `Content-Length` nor `Transfer-Encoding`; `Date`
//! when a final response came without one). A Content-Length repeated with
//! one value (which the head allows) goes on once, as that value. The head
//! is re-parsed from the bytes (it was validated already) and written into
//! a caller's buffer without allocating.

use super::head::{list, uninit_slots};
use crate::forward::target::parse_absolute;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Which fields ferry adds to forwarded requests (each can be turned off).
#[derive(Clone, Copy, Debug)]
pub struct AddFields {
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub via: bool,
}

/// The received-by name ferry uses in Via, after the protocol version of
/// the message it received (RFC 9110 7.6.3): `1.0 ferry` for an HTTP/1.0
/// client's request or an HTTP/1.0 backend's response.
const VIA_BY: &str = "ferry";
/// Fields named in Connection that are never removed for it.
const PROTECTED: [&str; 3] = ["content-length", "transfer-encoding", "host"];
const MAX_NAMED: usize = 32;

/// A bounded writer over a byte slice; remembers overflow instead of failing.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end > self.buf.len() {
            self.overflow = true;
            return;
        }
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn field(&mut self, name: &str, value: &[u8]) {
        self.put(name.as_bytes());
        self.put(b": ");
        self.put(value);
        self.put(b"\r\n");
    }

    fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }
}

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

/// The tokens of every Connection field (the fields they name are hop-by-hop).
struct Named<'h> {
    names: [&'h [u8]; MAX_NAMED],
    count: usize,
}

impl<'h> Named<'h> {
    fn collect(headers: &[httparse::Header<'h>]) -> Named<'h> {
        let mut named = Named {
            names: [&[]; MAX_NAMED],
            count: 0,
        };
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        {
            for token in list(h.value) {
                if named.count < MAX_NAMED {
                    named.names[named.count] = token;
                    named.count += 1;
                }
            }
        }
        named
    }

    fn contains(&self, name: &str) -> bool {
        !PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p))
            && self.names[..self.count]
                .iter()
                .any(|n| name.as_bytes().eq_ignore_ascii_case(n))
    }
}

/// Is `name` hop-by-hop, given whether this message upgrades the connection?
fn hop_by_hop(name: &str, named: &Named, upgrading: bool) -> bool {
    const ALWAYS: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
    ];
    if name.eq_ignore_ascii_case("upgrade") {
        return !upgrading;
    }
    ALWAYS.iter().any(|h| name.eq_ignore_ascii_case(h)) || named.contains(name)
}

/// Facts about the request being forwarded.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub client: IpAddr,
    /// An HTTP/1.0 client: forward as HTTP/1.0 (so the backend never answers
    /// chunked), asking to keep the backend connection alive.
    pub http10: bool,
    pub upgrading: bool,
}

/// Write the request head to forward. `head` is the validated head as
/// received; returns the length written, or `None` if it does not fit.
pub fn write_request(head: &[u8], target: Target, add: AddFields, out: &mut [u8]) -> Option<usize> {
    let Target {
        client,
        http10,
        upgrading,
    } = target;
    let mut slots = uninit_slots();
    let mut req = httparse::Request::new(&mut []);
    req.parse_with_uninit_headers(head, &mut slots).ok()?;
    let named = Named::collect(req.headers);
    let mut w = Out {
        buf: out,
        len: 0,
        overflow: false,
    };
    let version = if http10 { "1.0" } else { "1.1" };
    // An absolute-form target goes on in origin form, and its authority
    // replaces any Host the client sent (RFC 9112 §3.2.2).
    let absolute = parse_absolute(req.path?.as_bytes());
    w.put(req.method?.as_bytes());
    w.put(b" ");
    match absolute {
        Some(a) => {
            if a.path.first() != Some(&b'/') {
                w.put(b"/");
            }
            w.put(a.path);
        }
        None => w.put(req.path?.as_bytes()),
    }
    let _ = write!(w, " HTTP/{version}\r\n");
    if let Some(a) = absolute {
        w.field("Host", a.authority);
    }
    let mut te_trailers = false;
    let mut length_written = false;
    for h in req.headers.iter() {
        let name = h.name;
        if absolute.is_some() && name.eq_ignore_ascii_case("host") {
            continue;
        }
        if content_length(&mut w, name, h.value, &mut length_written) {
            continue;
        }
        if name.eq_ignore_ascii_case("te") {
            if !te_trailers && list(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                w.field("TE", b"trailers");
                te_trailers = true;
            }
            continue;
        }
        if hop_by_hop(name, &named, upgrading) {
            continue;
        }
        if (add.x_forwarded_for && name.eq_ignore_ascii_case("x-forwarded-for"))
            || (add.via && name.eq_ignore_ascii_case("via"))
        {
            // Appended to below, every received line in one list.
        } else if add.x_forwarded_proto && name.eq_ignore_ascii_case("x-forwarded-proto") {
            // Replaced by ours: the client does not get to say how it came in.
        } else {
            w.field(name, h.value);
        }
    }
    let forwarded = |h: &httparse::Header| !hop_by_hop(h.name, &named, upgrading);
    if add.x_forwarded_for {
        append_to_list(&mut w, "X-Forwarded-For", req.headers, forwarded);
        let _ = write!(w, "{client}\r\n");
    }
    if add.x_forwarded_proto {
        w.put(b"X-Forwarded-Proto: http\r\n");
    }
    if add.via {
        append_via(&mut w, req.headers, forwarded, http10);
    }
    // TE is hop-by-hop: whoever sends it must name it in Connection too
    // (RFC 9110 §10.1.4).
    let te = if te_trailers { ", TE" } else { "" };
    if upgrading {
        let _ = write!(w, "Connection: upgrade{te}\r\n");
    } else if http10 {
        let _ = write!(w, "Connection: keep-alive{te}\r\n");
    } else if te_trailers {
        w.put(b"Connection: TE\r\n");
    }
    w.put(b"\r\n");
    w.finish()
}

/// Write a `Content-Length` field once, as its single value: the head was
/// judged already, so a repeated length (`5, 5`, or one field per copy)
/// names one value. RFC 9110 §8.6 lets an intermediary replace such a list
/// by that value and forbids forwarding the list, which strict recipients
/// (Node's parser, for one) refuse. True if `name` is Content-Length (written
/// now, or dropped as a repeat).
fn content_length(w: &mut Out, name: &str, value: &[u8], written: &mut bool) -> bool {
    if !name.eq_ignore_ascii_case("content-length") {
        return false;
    }
    if !std::mem::replace(written, true) {
        w.field(name, list(value).next().unwrap_or(value));
    }
    true
}

/// Start field `name` with the values of every received line of it that
/// `forwarded` keeps, in order, each followed by `, ` for the value the
/// caller appends: several lines of a list field make one list (RFC 9110
/// 5.3), so none is lost.
fn append_to_list(
    w: &mut Out,
    name: &str,
    received: &[httparse::Header],
    forwarded: impl Fn(&httparse::Header) -> bool,
) {
    w.put(name.as_bytes());
    w.put(b": ");
    for h in received
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name) && forwarded(h))
        .filter(|h| !h.value.iter().all(u8::is_ascii_whitespace))
    {
        w.put(h.value);
        w.put(b", ");
    }
}

fn append_via(
    w: &mut Out,
    received: &[httparse::Header],
    forwarded: impl Fn(&httparse::Header) -> bool,
    http10: bool,
) {
    append_to_list(w, "Via", received, forwarded);
    w.put(if http10 { b"1.0 " } else { b"1.1 " });
    w.put(VIA_BY.as_bytes());
    w.put(b"\r\n");
}

/// What the client must be told about its connection after this response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientConnection {
    /// HTTP/1.1 keep-alive: say nothing.
    KeepAlive,
    /// An HTTP/1.0 client that asked for keep-alive: confirm it.
    KeepAlive10,
    Close,
    /// Close after a chunked body ferry decodes for an HTTP/1.0 client: the
    /// close delimits the body, and `Transfer-Encoding` goes.
    CloseDechunked,
    Upgrade,
}

/// Write the response head to forward to the client. `None` if it does not
/// fit, or if it is to be decoded and has a transfer coding besides chunked
/// (which the HTTP/1.0 client could not undo either).
pub fn write_response(
    head: &[u8],
    conn: ClientConnection,
    via: bool,
    out: &mut [u8],
) -> Option<usize> {
    let mut slots = uninit_slots();
    let mut res = httparse::Response::new(&mut []);
    httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, head, &mut slots)
        .ok()?;
    let named = Named::collect(res.headers);
    let upgrading = conn == ClientConnection::Upgrade;
    let dechunked = conn == ClientConnection::CloseDechunked;
    let mut w = Out {
        buf: out,
        len: 0,
        overflow: false,
    };
    let code = res.code?;
    let _ = write!(w, "HTTP/1.1 {} {}\r\n", code, res.reason.unwrap_or(""));
    // RFC 9112 6.1, 6.2: no Content-Length nor Transfer-Encoding in a 1xx
    // or 204, which have no body; a client that believed one would wait for
    // a body that never comes. HAProxy drops them too.
    let unframed = code < 200 || code == 204;
    let mut dated = false;
    let mut length_written = false;
    for h in res.headers.iter() {
        dated |= h.name.eq_ignore_ascii_case("date");
        if hop_by_hop(h.name, &named, upgrading) {
            continue;
        }
        if unframed
            && (h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        if content_length(&mut w, h.name, h.value, &mut length_written) {
            continue;
        }
        if dechunked && h.name.eq_ignore_ascii_case("transfer-encoding") {
            if list(h.value).any(|c| !c.eq_ignore_ascii_case(b"chunked")) {
                return None;
            }
            continue;
        }
        if !(via && h.name.eq_ignore_ascii_case("via")) {
            w.field(h.name, h.value);
        }
    }
    if via {
        let forwarded = |h: &httparse::Header| !hop_by_hop(h.name, &named, upgrading);
        append_via(&mut w, res.headers, forwarded, res.version == Some(0));
    }
    if !dated && code >= 200 {
        // RFC 9110 6.6.1: a recipient with a clock forwarding a response
        // without Date adds one, from when it received it (nginx sets its
        // own Date on every response; HAProxy adds none).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        w.field("Date", &http_date(now));
    }
    match conn {
        ClientConnection::KeepAlive => {}
        ClientConnection::KeepAlive10 => w.put(b"Connection: keep-alive\r\n"),
        ClientConnection::Close | ClientConnection::CloseDechunked => {
            w.put(b"Connection: close\r\n")
        }
        ClientConnection::Upgrade => w.put(b"Connection: upgrade\r\n"),
    }
    w.put(b"\r\n");
    w.finish()
}

/// The IMF-fixdate (RFC 9110 5.6.7) for `secs` after the Unix epoch, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`; no allocation.
fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86400;
    let time = secs % 86400;
    // Civil date from a day count (H. Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u64;
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8], at: usize, n: u64| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut out, 5, day);
    out[8..11].copy_from_slice(MONTHS[month - 1]);
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year % 100);
    two(&mut out, 17, time / 3600);
    two(&mut out, 20, time / 60 % 60);
    two(&mut out, 23, time % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: AddFields = AddFields {
        x_forwarded_for: false,
        x_forwarded_proto: false,
        via: false,
    };

    const ALL: AddFields = AddFields {
        x_forwarded_for: true,
        x_forwarded_proto: true,
        via: true,
    };

    fn request(head: &str, upgrading: bool, add: AddFields) -> String {
        let mut out = [0u8; 4096];
        let target = Target {
            client: "10.1.2.3".parse().unwrap(),
            http10: head.contains("HTTP/1.0"),
            upgrading,
        };
        let n = write_request(head.as_bytes(), target, add, &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn every_received_line_of_a_list_field_ferry_appends_to_is_kept() {
        let out = request(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nVia: 1.1 a\r\n\
             X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\nX-Forwarded-For:  \r\nVia: 1.0 b\r\n\r\n",
            false,
            ALL,
        );
        assert!(
            out.contains("\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nVia: 1.1 a, 1.0 b, 1.1 ferry\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("X-Forwarded-For").count(), 1, "{out}");
        assert_eq!(out.matches("Via").count(), 1, "{out}");
        let mut buf = [0u8; 1024];
        let head =
            b"HTTP/1.1 200 OK\r\nVia: 1.1 x\r\nDate: d\r\nVia: 1.1 y\r\nContent-Length: 0\r\n\r\n";
        let n = write_response(head, ClientConnection::KeepAlive, true, &mut buf).unwrap();
        let out = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            out.contains("\r\nVia: 1.1 x, 1.1 y, 1.1 ferry\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("Via").count(), 1, "{out}");
    }

    #[test]
    fn hop_by_hop_fields_go_and_forwarding_fields_come() {
        let out = request(
            "GET /p?q HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret, Content-Length, Host\r\n\
             X-Secret: s\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers, deflate\r\nTrailer: T\r\n\
             Upgrade: h2c\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-For: 1.1.1.1\r\n\
             X-Forwarded-Proto: https\r\nVia: 1.0 a\r\nContent-Length: 0\r\nAccept: */*\r\n\r\n",
            false,
            ALL,
        );
        assert_eq!(
            out,
            "GET /p?q HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nContent-Length: 0\r\nAccept: */*\r\n\
             X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\nX-Forwarded-Proto: http\r\nVia: 1.0 a, 1.1 ferry\r\nConnection: TE\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_goes_on_in_origin_form_with_its_host() {
        let none = AddFields {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            via: false,
        };
        let out = request(
            "GET http://origin.example:8080/a?b HTTP/1.1\r\nHost: other\r\nAccept: */*\r\n\r\n",
            false,
            none,
        );
        assert_eq!(
            out,
            "GET /a?b HTTP/1.1\r\nHost: origin.example:8080\r\nAccept: */*\r\n\r\n"
        );
        let out = request("GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n", false, none);
        assert_eq!(out, "GET /?q HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn added_fields_can_be_turned_off_and_upgrades_keep_upgrade() {
        let none = AddFields {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            via: false,
        };
        let out = request(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            true,
            none,
        );
        assert_eq!(
            out,
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn http10_requests_stay_http10_and_ask_for_keep_alive() {
        let out = request(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            false,
            ALL,
        );
        assert!(out.starts_with("GET / HTTP/1.0\r\n"), "{out}");
        assert!(out.ends_with("Connection: keep-alive\r\n\r\n"), "{out}");
    }

    #[test]
    fn response_gets_via_and_the_client_connection_directive() {
        let mut out = [0u8; 1024];
        let head = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\nDate: d\r\n\r\n";
        let n = write_response(head, ClientConnection::Close, true, &mut out).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[..n]).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nDate: d\r\nVia: 1.1 ferry\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_decoded_response_loses_its_transfer_encoding() {
        let mut out = [0u8; 1024];
        let head =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nX-A: 1\r\nDate: d\r\n\r\n";
        let n = write_response(head, ClientConnection::CloseDechunked, false, &mut out).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[..n]).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nDate: d\r\nConnection: close\r\n\r\n"
        );
        let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            write_response(gzip, ClientConnection::CloseDechunked, false, &mut out),
            None,
            "a coding besides chunked cannot be undone for the client"
        );
    }

    #[test]
    fn a_kept_te_is_named_in_connection_with_the_other_options() {
        let te = "TE: trailers\r\nTE: trailers\r\n";
        let h11 = request(&format!("GET / HTTP/1.1\r\n{te}\r\n"), false, NONE);
        assert_eq!(
            h11,
            "GET / HTTP/1.1\r\nTE: trailers\r\nConnection: TE\r\n\r\n"
        );
        let h10 = request(&format!("GET / HTTP/1.0\r\n{te}\r\n"), false, NONE);
        assert!(h10.ends_with("Connection: keep-alive, TE\r\n\r\n"), "{h10}");
        let up = request(
            &format!("GET / HTTP/1.1\r\n{te}Upgrade: ws\r\n\r\n"),
            true,
            NONE,
        );
        assert!(up.ends_with("Connection: upgrade, TE\r\n\r\n"), "{up}");
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(4_102_444_799), b"Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn overflow_is_reported_not_truncated() {
        let mut out = [0u8; 20];
        let target = Target {
            client: [127, 0, 0, 1].into(),
            http10: false,
            upgrading: false,
        };
        assert_eq!(
            write_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", target, ALL, &mut out),
            None
        );
    }

    #[test]
    fn a_repeated_content_length_goes_on_once_as_its_value() {
        let out = request(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nX: 1\r\ncontent-length: 5\r\n\r\n",
            false,
            NONE,
        );
        assert_eq!(
            out,
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX: 1\r\n\r\n"
        );
        let mut buf = [0u8; 1024];
        let head =
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3 , 3\r\nDate: x\r\n\r\n";
        let n = write_response(head, ClientConnection::KeepAlive, false, &mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nDate: x\r\n\r\n"
        );
    }
}
