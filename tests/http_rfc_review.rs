//! HTTP mode reviewed against RFC 9110 and RFC 9112 as an intermediary,
//! against the real binary: the Host field and the request target's form,
//! request-line versions ferry does not speak, status codes outside
//! 100..599, Via's received-protocol, no framing fields on a 1xx or 204,
//! Date added when missing, interim responses to HTTP/1.1 and HTTP/1.0
//! clients, a 101 nobody asked for, HTTP/1.0 backends, hop-by-hop response
//! fields, Expect without a 100, Max-Forwards, lone LF line ends, and https
//! targets sent to the forward proxy. Behaviour already covered elsewhere
//! (framing and smuggling, HEAD/304 lengths, userinfo and fragments in
//! forward mode) is not repeated here.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Send `req` on a fresh connection and expect ferry's closing answer.
fn refused(proxy: SocketAddr, req: &[u8], status: u16, what: &str) {
    let mut c = HttpConn::connect(proxy);
    c.timeout = Duration::from_secs(10);
    c.send(req);
    expect_answer_and_close(&mut c, status, what);
}

/// Every request in `bad` gets `status` and none reaches the backend.
fn all_refused(proxy: &Proxy, backend: &HttpBackend, bad: &[(&str, &[u8])], status: u16) {
    for (what, req) in bad {
        refused(proxy.addr, req, status, what);
    }
    // Give a wrongly forwarded request a moment to show at the backend.
    std::thread::sleep(Duration::from_millis(50));
    let got: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.head.start.clone())
        .collect();
    assert!(
        got.is_empty(),
        "refused requests reached the backend: {got:?}"
    );
}

/// RFC 9112 3.2: 400 for a Host field with an invalid value (and for more
/// than one, in HTTP/1.0 too); valid spellings, the empty value included,
/// go through.
#[test]
fn an_invalid_or_repeated_host_gets_400() {
    let backend = HttpBackend::serve(|r| reply(ok(r.head.get("host").unwrap_or("-").as_bytes())));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    all_refused(
        &proxy,
        &backend,
        &[
            ("space in Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            ("slash in Host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            ("userinfo in Host", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
            ("two ports", b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n"),
            (
                "port not a number",
                b"GET / HTTP/1.1\r\nHost: a:http\r\n\r\n",
            ),
            (
                "unclosed IPv6 literal",
                b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
            ),
            (
                "combined Host list",
                b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n",
            ),
            (
                "two Hosts in HTTP/1.0",
                b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            ),
            (
                "bad Host in HTTP/1.0",
                b"GET / HTTP/1.0\r\nHost: a\"b\r\n\r\n",
            ),
        ],
        400,
    );
    let mut c = HttpConn::connect(proxy.addr);
    for host in [
        "example.com:8080",
        "[::1]:80",
        "127.0.0.1",
        "a-b_c.example",
        "",
    ] {
        let r = c.roundtrip(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status(), 200, "Host {host:?}: {:?}", r.head.text());
        assert_eq!(r.body, host.as_bytes());
    }
}

/// RFC 9112 3.2: asterisk-form only with OPTIONS, authority-form only with
/// CONNECT (which a reverse proxy refuses), origin-form starts with '/',
/// absolute-form is an http(s) URI with a valid authority and no userinfo.
/// In reverse mode the absolute target's authority replaces Host (3.2.2).
#[test]
fn a_request_target_that_does_not_fit_its_method_gets_400() {
    let backend = HttpBackend::serve(|r| {
        let body = format!(
            "{} {} {}",
            r.head.target(),
            r.head.get("host").unwrap_or("-"),
            r.head.all("host").len()
        );
        reply(ok(body.as_bytes()))
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    all_refused(
        &proxy,
        &backend,
        &[
            ("asterisk with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                "asterisk with a path",
                b"OPTIONS */x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "authority-form with GET",
                b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "relative path",
                b"GET index.html HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "fragment in origin-form",
                b"GET /public#/../admin HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "userinfo in an absolute target",
                b"GET http://u:p@a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "another scheme",
                b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "absolute target with a bad authority",
                b"GET http://a b/x HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                "CONNECT in http mode",
                b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            ),
        ],
        400,
    );
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body, b"* a 1", "OPTIONS * goes on as it came");
    let r = c.roundtrip(b"GET http://origin.example:81/p?q#frag HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(
        r.body, b"/p?q origin.example:81 1",
        "an absolute target goes on in origin form without its fragment, its authority as the only Host"
    );
}

/// RFC 9110 15.6.6: a request line naming an HTTP version other than 1.0
/// and 1.1 (HTTP/2.0, the HTTP/2 prior-knowledge preface, HTTP/3, HTTP/1.2)
/// gets 505, as nginx answers; a line that names no version stays a 400.
#[test]
fn a_request_in_another_http_version_gets_505() {
    let backend = HttpBackend::named("b");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    all_refused(
        &proxy,
        &backend,
        &[
            ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            ("HTTP/3", b"GET / HTTP/3\r\nHost: a\r\n\r\n"),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        ],
        505,
    );
    all_refused(
        &proxy,
        &backend,
        &[
            ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
            ("no version", b"GET / FOO\r\nHost: a\r\n\r\n"),
        ],
        400,
    );
}

/// RFC 9112 2.2 lets a recipient take a lone LF for a line end (httparse
/// does); ferry forwards the head with CRLF. Methods are case-sensitive:
/// `get` is not GET and goes on as received.
#[test]
fn lone_lf_heads_are_forwarded_with_crlf_and_methods_keep_their_case() {
    let backend = HttpBackend::serve(|r| reply(ok(r.head.method().as_bytes())));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(b"GET /lf HTTP/1.1\nHost: a\nX-A: 1\n\n");
    assert_eq!((r.status(), r.body.as_slice()), (200, &b"GET"[..]));
    let raw = &backend.wait_requests(1, DEADLINE)[0].head.raw;
    assert!(
        raw.starts_with(b"GET /lf HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n"),
        "the head goes on with CRLF: {:?}",
        String::from_utf8_lossy(raw)
    );
    let r = c.roundtrip(b"get /lower HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body, b"get", "a method's case is kept");
}

/// RFC 9110 15: a status outside 100..599 is no HTTP status, and a status
/// that is not three digits no status line: 502. A missing reason phrase
/// is fine (RFC 9112 4).
#[test]
fn a_status_outside_100_to_599_gets_502() {
    let backend = HttpBackend::serve(|r| {
        let bytes: &[u8] = match r.head.target() {
            "/600" => b"HTTP/1.1 600 Beyond\r\nContent-Length: 0\r\n\r\n",
            "/099" => b"HTTP/1.1 099 Below\r\nContent-Length: 0\r\n\r\n",
            "/000" => b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
            "/two" => b"HTTP/1.1 20 Short\r\nContent-Length: 0\r\n\r\n",
            "/four" => b"HTTP/1.1 2000 Long\r\nContent-Length: 0\r\n\r\n",
            _ => b"HTTP/1.1 299\r\nContent-Length: 2\r\n\r\nok",
        };
        reply(bytes.to_vec())
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    for path in ["/600", "/099", "/000", "/two", "/four"] {
        refused(proxy.addr, &get(path), 502, path);
    }
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&get("/noreason"));
    assert_eq!(
        (r.status(), r.body.as_slice()),
        (299, &b"ok"[..]),
        "no reason phrase"
    );
}

/// RFC 9110 7.6.3: Via is appended to (never replaces) the one received,
/// and names the protocol version of the message ferry received: `1.0`
/// for an HTTP/1.0 client's request and for an HTTP/1.0 backend's response.
#[test]
fn via_is_appended_with_the_version_ferry_received() {
    let backend = HttpBackend::serve(|r| {
        let via = r.head.joined("via").unwrap_or_default();
        let v = if r.head.target() == "/old" {
            "1.0"
        } else {
            "1.1"
        };
        let bytes = format!(
            "HTTP/{v} 200 OK\r\nVia: 1.1 origin\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{via}",
            via.len()
        );
        reply(bytes.into_bytes())
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(b"GET /new HTTP/1.1\r\nHost: a\r\nVia: 1.1 edge\r\n\r\n");
    assert_eq!(r.body, b"1.1 edge, 1.1 ferry", "HTTP/1.1 request");
    assert_eq!(
        r.head.joined("via").as_deref(),
        Some("1.1 origin, 1.1 ferry")
    );
    c.send(b"GET /new HTTP/1.0\r\nVia: 1.0 edge\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.body, b"1.0 edge, 1.0 ferry", "HTTP/1.0 request");
    let r = c.roundtrip(b"GET /old HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        r.head.joined("via").as_deref(),
        Some("1.1 origin, 1.0 ferry"),
        "HTTP/1.0 response:\n{}",
        r.head.text()
    );
}

/// RFC 9112 6.1 and 6.2: a 204 (like a 1xx) carries neither
/// Content-Length nor Transfer-Encoding; ferry drops those a backend sent
/// (as HAProxy does), so no client waits for a body that never comes. The
/// bytes such a backend sent after the head are not taken for the next
/// response.
#[test]
fn a_204_reaches_the_client_without_framing_fields() {
    let backend = HttpBackend::serve(|r| {
        let bytes: &[u8] = match r.head.target() {
            "/te" => b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
            "/cl" => b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 2\r\n\r\nhello",
            "/early" => b"HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
        };
        reply(bytes.to_vec())
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    for (path, x) in [("/te", "1"), ("/cl", "2")] {
        let r = c.roundtrip(&get(path));
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(r.head.get("x-a"), Some(x), "{path}");
        assert!(
            !r.head.has("content-length") && !r.head.has("transfer-encoding"),
            "{path}: a 204 must carry no framing field:\n{}",
            r.head.text()
        );
        let r = c.roundtrip(&get("/next"));
        assert_eq!(r.body, b"next", "after {path}");
    }
    c.send(&get("/early"));
    let r = c.read_response(false);
    assert_eq!(r.status(), 103);
    assert!(
        !r.head.has("content-length"),
        "a 1xx carries no Content-Length:\n{}",
        r.head.text()
    );
    assert_eq!(c.read_response(false).status(), 204);
}

/// RFC 9110 15.2: several interim responses (103, then 100) all reach an
/// HTTP/1.1 client before the final one; an HTTP/1.0 client gets none.
#[test]
fn every_interim_response_reaches_an_http11_client_and_none_an_http10_one() {
    let backend = HttpBackend::fixed(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
          HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/"));
    let statuses: Vec<u16> = (0..3).map(|_| c.read_response(false).status()).collect();
    assert_eq!(statuses, [103, 100, 200]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let (all, _) = c.read_until_closed();
    assert!(
        all.starts_with(b"HTTP/1.1 200 ")
            && find(&all, b" 103 ").is_none()
            && find(&all, b" 100 ").is_none(),
        "an HTTP/1.0 client gets the final response only: {:?}",
        String::from_utf8_lossy(&all)
    );
}

/// RFC 9112 9.3: an HTTP/1.0 response without `Connection: keep-alive`
/// ends its connection: ferry reads a close-delimited body to the end and
/// never reuses that backend connection, while the client's HTTP/1.1
/// connection goes on.
#[test]
fn an_http10_response_without_keep_alive_is_never_reused() {
    let backend = HttpBackend::serve(|r| match r.head.target() {
        "/eof" => reply_then(
            b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec(),
            Then::Close,
        ),
        // Stays open although it did not offer keep-alive.
        _ => reply(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..2 {
        let r = c.roundtrip(&get("/len"));
        assert_eq!(r.body, b"ok", "request {i}");
        assert!(
            !r.head.lists("connection", "close"),
            "the client keeps its connection"
        );
    }
    assert_eq!(
        backend.request_conns(),
        2,
        "each HTTP/1.0 answer ends its backend connection"
    );
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/eof"));
    let (all, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
    assert!(
        all.ends_with(b"\r\n\r\nuntil the end") && find(&all, b"Connection: close").is_some(),
        "a close-delimited body is read to its end: {:?}",
        String::from_utf8_lossy(&all)
    );
}

/// RFC 9110 7.6.1: the backend's `Connection: close` (and Keep-Alive,
/// Proxy-Connection, an Upgrade outside a 101) is about its own connection:
/// it is not forwarded, and the client's connection stays open.
#[test]
fn a_backend_connection_close_does_not_close_the_client() {
    let backend = HttpBackend::serve(|_| {
        reply_then(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=1\r\n\
              Proxy-Connection: close\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            Then::Close,
        )
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..2 {
        let r = c.roundtrip(&get("/"));
        assert_eq!(r.body, b"ok", "request {i}");
        for name in ["connection", "keep-alive", "proxy-connection", "upgrade"] {
            assert!(
                !r.head.has(name),
                "request {i}: {name} forwarded:\n{}",
                r.head.text()
            );
        }
    }
    assert_eq!(backend.request_conns(), 2);
}

/// A forward proxy cannot speak TLS for its client: an `https://` target
/// outside CONNECT gets a clear 400 and reaches no origin.
#[test]
fn an_https_target_without_connect_gets_400_from_the_forward_proxy() {
    let origin = HttpBackend::named("o");
    let proxy = Proxy::start(&["-m", "forward", "-l", "127.0.0.1", "-p", "0", "-w", "1"]);
    let req = format!(
        "GET https://{}/x HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.addr, origin.addr
    );
    refused(proxy.addr, req.as_bytes(), 400, "https absolute-form GET");
    assert_eq!(origin.accepted(), 0);
}

/// RFC 9110 6.6.1: a recipient with a clock that forwards a response
/// without Date adds one (an IMF-fixdate); a Date the origin sent is kept
/// as it is, and an interim response gets none.
#[test]
fn a_response_without_date_gets_one_and_a_date_sent_is_kept() {
    let backend = HttpBackend::serve(|r| {
        let bytes: &[u8] = match r.head.target() {
            "/dated" => b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n",
            _ => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        };
        reply(bytes.to_vec())
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&get("/dated"));
    assert_eq!(r.head.all("date"), ["Sun, 06 Nov 1994 08:49:37 GMT"]);
    c.send(&get("/undated"));
    let interim = c.read_response(false);
    assert_eq!(interim.status(), 100);
    assert!(!interim.head.has("date"), "{}", interim.head.text());
    let r = c.read_response(false);
    let dates = r.head.all("date");
    assert_eq!(dates.len(), 1, "{}", r.head.text());
    let d = dates[0].as_bytes();
    assert!(
        d.len() == 29 && d.ends_with(b" GMT") && d[3] == b',' && d[7] == b' ' && d[16] == b' ',
        "an IMF-fixdate: {:?}",
        dates[0]
    );
}

/// RFC 9110 15.2.2: a 101 answers only a request that asked to upgrade;
/// to an HTTP/1.1 request without Upgrade it is a broken response (502),
/// and no tunnel opens.
#[test]
fn a_101_to_a_request_without_upgrade_gets_502() {
    let backend = HttpBackend::fixed(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    refused(proxy.addr, &get("/"), 502, "a 101 nobody asked for");
}

/// RFC 9110 10.1.1: a backend may answer `Expect: 100-continue` with its
/// final response and no 100. The client gets that answer; as the body it
/// held back can no longer follow on the connection, ferry says
/// `Connection: close` and closes (nginx and HAProxy close too unless they
/// can drain the body).
#[test]
fn a_final_answer_to_expect_100_continue_without_100_ends_the_connection() {
    let backend = HttpBackend::start(|p| {
        if p.read_request_head().is_some() {
            p.write(&status_response(401, "Unauthorized", b"who?"));
            p.wait_eof();
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!((r.status(), r.body.as_slice()), (401, &b"who?"[..]));
    assert!(r.head.lists("connection", "close"), "{}", r.head.text());
    let (rest, how) = c.read_until_closed();
    assert_eq!((rest.len(), how), (0, Closed::Eof));
    let got = backend.wait_requests(1, DEADLINE);
    assert_eq!(
        got[0].head.get("expect"),
        Some("100-continue"),
        "Expect goes on to the backend"
    );
}

/// RFC 9110 7.6.2 lets a gateway leave Max-Forwards alone; ferry does, as
/// nginx and HAProxy: it reaches the backend as sent, even at 0.
#[test]
fn max_forwards_reaches_the_backend_untouched() {
    let backend = HttpBackend::serve(|r| {
        let mf = format!(
            "{} {}",
            r.head.method(),
            r.head.get("max-forwards").unwrap_or("-")
        );
        reply(ok(mf.as_bytes()))
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
    assert_eq!(r.body, b"OPTIONS 0");
    let r = c.roundtrip(b"TRACE / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\n\r\n");
    assert_eq!(r.body, b"TRACE 3");
}
