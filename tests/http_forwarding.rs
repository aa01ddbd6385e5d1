//! HTTP mode, what is forwarded: the fields ferry adds (X-Forwarded-For,
//! X-Forwarded-Proto, Via) and their `--no-*` switches, the hop-by-hop fields
//! it removes both ways, requests sent on as HTTP/1.1, the connection
//! directive the client gets, chunked bodies with extensions and trailers
//! byte-exact both ways, and 1 MiB bodies both ways with splice on and off.

mod common;

use common::*;
use std::thread;

fn assert_absent(h: &Head, names: &[&str], what: &str) {
    for n in names {
        assert!(
            !h.has(n),
            "{what}: field {n} must have been removed; head was:\n{}",
            h.text()
        );
    }
}

#[test]
fn forwarded_request_gets_added_fields_and_loses_hop_by_hop_fields() {
    let backend = HttpBackend::fixed(&ok(b"fine"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let req = b"GET /path?q=1 HTTP/1.1\r\n\
        Host: example.test\r\n\
        User-Agent: raw-test\r\n\
        Connection: keep-alive, X-Secret\r\n\
        X-Secret: must-go\r\n\
        Keep-Alive: timeout=5\r\n\
        Proxy-Connection: keep-alive\r\n\
        TE: trailers, deflate\r\n\
        Trailer: X-Checksum\r\n\
        Upgrade: h2c\r\n\
        Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
        X-Forwarded-For: 1.1.1.1\r\n\
        X-Forwarded-Proto: https\r\n\
        Via: 1.0 cache\r\n\
        X-Custom: Kept  Exactly\r\n\
        \r\n";
    let r = c.roundtrip(req);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, b"fine");
    let got = backend.wait_requests(1, DEADLINE).remove(0).head;
    assert_eq!(
        got.start, "GET /path?q=1 HTTP/1.1",
        "request line must be forwarded unchanged"
    );
    assert_eq!(got.all("host"), vec!["example.test"], "Host");
    assert_eq!(got.get("user-agent"), Some("raw-test"));
    assert_eq!(got.get("x-custom"), Some("Kept  Exactly"));
    assert_eq!(
        got.joined("x-forwarded-for").as_deref(),
        Some("1.1.1.1, 127.0.0.1"),
        "X-Forwarded-For must get the client address appended; head:\n{}",
        got.text()
    );
    assert_eq!(
        got.all("x-forwarded-proto"),
        vec!["http"],
        "X-Forwarded-Proto must be replaced by ferry's; head:\n{}",
        got.text()
    );
    assert_eq!(
        got.joined("via").as_deref(),
        Some("1.0 cache, 1.1 ferry"),
        "Via must get `1.1 ferry` appended; head:\n{}",
        got.text()
    );
    assert_eq!(
        got.all("te"),
        vec!["trailers"],
        "TE must be kept only as `TE: trailers`; head:\n{}",
        got.text()
    );
    assert_eq!(
        got.all("connection"),
        vec!["TE"],
        "TE kept must be named in Connection, and nothing else; head:\n{}",
        got.text()
    );
    assert_absent(
        &got,
        &[
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "trailer",
            "upgrade",
            "proxy-authorization",
        ],
        "forwarded request",
    );
}

#[test]
fn te_without_trailers_is_removed_entirely() {
    let backend = HttpBackend::fixed(&ok(b""));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\nTE: deflate, gzip\r\n\r\n");
    assert_eq!(r.status(), 200);
    let got = backend.wait_requests(1, DEADLINE).remove(0).head;
    assert_absent(&got, &["te"], "TE without trailers");
}

#[test]
fn connection_cannot_remove_content_length_transfer_encoding_or_host() {
    let backend = HttpBackend::fixed(&ok(b"ok"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(
        b"POST /cl HTTP/1.1\r\nHost: h1\r\nConnection: Content-Length, Host, X-Drop\r\n\
          X-Drop: 1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status(), 200);
    let chunked_body: &[u8] = b"5\r\nworld\r\n0\r\n\r\n";
    let mut req =
        b"POST /te HTTP/1.1\r\nHost: h2\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    req.extend_from_slice(chunked_body);
    let r = c.roundtrip(&req);
    assert_eq!(r.status(), 200);
    let got = backend.wait_requests(2, DEADLINE);
    let (a, b) = (&got[0], &got[1]);
    assert_eq!(
        a.head.get("content-length"),
        Some("5"),
        "head:\n{}",
        a.head.text()
    );
    assert_eq!(a.head.get("host"), Some("h1"), "head:\n{}", a.head.text());
    assert!(!a.head.has("x-drop"), "X-Drop named in Connection must go");
    assert_eq!(a.body, b"hello");
    assert!(
        b.head.is_chunked(),
        "Transfer-Encoding must stay; head:\n{}",
        b.head.text()
    );
    assert_eq!(b.head.get("host"), Some("h2"));
    assert_eq!(b.body, chunked_body, "chunked body byte-exact");
}

#[test]
fn added_fields_can_each_be_turned_off() {
    let backend = HttpBackend::fixed(&ok(b"ok"));
    let proxy = Proxy::http(
        &[backend.addr],
        &[
            "-w",
            "1",
            "--no-x-forwarded-for",
            "--no-x-forwarded-proto",
            "--no-via",
        ],
    );
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 200);
    assert!(
        !r.head.has("via"),
        "--no-via: the response must carry no Via; head:\n{}",
        r.head.text()
    );
    let r = c.roundtrip(b"GET /2 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n");
    assert_eq!(r.status(), 200);
    let got = backend.wait_requests(2, DEADLINE);
    assert_absent(
        &got[0].head,
        &["x-forwarded-for", "x-forwarded-proto", "via"],
        "with --no-x-forwarded-for --no-x-forwarded-proto --no-via",
    );
    assert_eq!(
        got[1].head.all("x-forwarded-for"),
        vec!["1.1.1.1"],
        "--no-x-forwarded-for: a received X-Forwarded-For passes unchanged"
    );
    // Each switch alone.
    for (flag, field) in [
        ("--no-x-forwarded-for", "x-forwarded-for"),
        ("--no-x-forwarded-proto", "x-forwarded-proto"),
        ("--no-via", "via"),
    ] {
        let backend = HttpBackend::fixed(&ok(b"ok"));
        let proxy = Proxy::http(&[backend.addr], &["-w", "1", flag]);
        let mut c = HttpConn::connect(proxy.addr);
        assert_eq!(c.roundtrip(&get("/")).status(), 200);
        let h = backend.wait_requests(1, DEADLINE).remove(0).head;
        assert!(!h.has(field), "{flag}: {field} still added:\n{}", h.text());
        for other in ["x-forwarded-for", "x-forwarded-proto", "via"] {
            if other != field {
                assert!(
                    h.has(other),
                    "{flag} must not remove {other}:\n{}",
                    h.text()
                );
            }
        }
    }
}

#[test]
fn http10_request_stays_http10_keeps_the_backend_alive_and_closes_the_client() {
    let backend = HttpBackend::fixed(&ok(b"for 1.0"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, b"for 1.0");
    assert!(
        !r.head.lists("connection", "keep-alive"),
        "an HTTP/1.0 client without keep-alive must not be told keep-alive:\n{}",
        r.head.text()
    );
    let (rest, how) = c.read_until_closed();
    assert_eq!(
        how,
        Closed::Eof,
        "HTTP/1.0 client: ferry must close after the response"
    );
    assert!(rest.is_empty());
    // Forwarded as HTTP/1.0, so the backend never answers chunked (which an
    // HTTP/1.0 client cannot read), asking to keep the backend connection.
    let got = backend.wait_requests(1, DEADLINE).remove(0).head;
    assert_eq!(got.start, "GET /old HTTP/1.0", "forwarded as HTTP/1.0");
    assert!(
        got.lists("connection", "keep-alive"),
        "the backend connection is asked to stay open:\n{}",
        got.text()
    );
}

#[test]
fn response_gets_via_and_loses_hop_by_hop_fields() {
    let backend = HttpBackend::fixed(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\
          Keep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\n\
          Via: 1.1 origin\r\nX-End: kept\r\nContent-Length: 4\r\n\r\nbody",
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..2 {
        let r = c.roundtrip(&get("/"));
        let what = format!("response {i}");
        assert_eq!(r.status(), 200, "{what}");
        assert_eq!(r.body, b"body", "{what}");
        assert_eq!(r.head.get("x-end"), Some("kept"), "{what}");
        assert_eq!(r.head.get("content-length"), Some("4"), "{what}");
        assert_eq!(
            r.head.joined("via").as_deref(),
            Some("1.1 origin, 1.1 ferry"),
            "{what}: Via must get `1.1 ferry` appended:\n{}",
            r.head.text()
        );
        assert_absent(&r.head, &["x-hop", "keep-alive", "proxy-connection"], &what);
        assert!(
            !r.head.lists("connection", "x-hop") && !r.head.lists("connection", "close"),
            "{what}: keep-alive HTTP/1.1 client, Connection must not name X-Hop or close:\n{}",
            r.head.text()
        );
    }
}

#[test]
fn http10_keep_alive_client_gets_connection_keep_alive_and_a_second_request() {
    let backend = HttpBackend::named("A");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    for path in ["/one", "/two"] {
        c.send(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let r = c.read_response(false);
        assert_eq!(r.status(), 200);
        assert_eq!(r.body, format!("A {path}").as_bytes());
        assert!(
            r.head.lists("connection", "keep-alive"),
            "an HTTP/1.0 keep-alive client must get Connection: keep-alive:\n{}",
            r.head.text()
        );
    }
    assert_eq!(
        nothing_readable(&c.s),
        Ok(()),
        "the HTTP/1.0 keep-alive connection must stay open"
    );
}

#[test]
fn connection_close_is_honoured_with_connection_close_and_eof() {
    let backend = HttpBackend::fixed(&ok(b"bye"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, b"bye");
    assert!(
        r.head.lists("connection", "close"),
        "a connection ferry closes must say Connection: close:\n{}",
        r.head.text()
    );
    let (rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
    assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_pass_byte_exact_both_ways() {
    let resp_body: &'static [u8] =
        b"7;ext=\"quoted val\"\r\nchunked\r\n1;a=b;c\r\n!\r\n10\r\n0123456789abcdef\r\n0;last=1\r\nX-Checksum: abc\r\nX-Other: 2\r\n\r\n";
    let backend = HttpBackend::serve(move |r| {
        if r.head.target() == "/after" {
            return reply(ok(b"after"));
        }
        let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            .to_vec();
        v.extend_from_slice(resp_body);
        reply(v)
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let req_body: &[u8] =
        b"5;name=value\r\nhello\r\n6;x\r\n world\r\n0\r\nX-Trailer: t1\r\nX-Trailer-2: t2\r\n\r\n";
    let mut req = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(req_body);
    let r = c.roundtrip(&req);
    assert_eq!(r.status(), 200);
    assert!(r.head.is_chunked(), "head:\n{}", r.head.text());
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(resp_body),
        "chunked response body (extensions, trailers) must be byte-exact"
    );
    // The same client connection goes on: the trailers ended the message.
    let r2 = c.roundtrip(&get("/after"));
    assert_eq!(r2.body, b"after");
    let got = backend.wait_requests(2, DEADLINE);
    assert!(got[0].head.is_chunked());
    assert_eq!(
        String::from_utf8_lossy(&got[0].body),
        String::from_utf8_lossy(req_body),
        "chunked request body (extensions, trailers) must be byte-exact"
    );
    assert_eq!(got[1].head.target(), "/after");
}

/// A backend that hashes a Content-Length upload and answers with `n` bytes
/// of stream `seed`, as Content-Length or as chunks of 64 KiB.
fn big_body_backend(down: usize, seed: u64, chunked: bool) -> HttpBackend {
    HttpBackend::start(move |p| {
        while let Some(head) = p.read_request_head() {
            let mut h = Hasher::default();
            if let Some(n) = head.content_length() {
                let body = p.conn.read_exact(n);
                h.update(&body);
            }
            let d = h.digest();
            let body = payload(down, seed);
            let mut out = if chunked {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n".to_vec()
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {down}\r\n").into_bytes()
            };
            out.extend_from_slice(
                format!(
                    "X-Upload-Len: {}\r\nX-Upload-Hash: {:x}\r\n\r\n",
                    d.len, d.hash
                )
                .as_bytes(),
            );
            if chunked {
                for c in body.chunks(64 * KIB) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(&body);
            }
            if !p.write(&out) {
                return;
            }
        }
    })
}

#[test]
fn megabyte_bodies_both_ways_are_byte_exact_with_splice_on_and_off() {
    let n = big(MIB);
    for splice in ["on", "off"] {
        for chunked_response in [false, true] {
            let what = format!("--splice {splice}, chunked response {chunked_response}");
            let backend = big_body_backend(n, 77, chunked_response);
            let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--splice", splice]);
            let mut c = HttpConn::connect(proxy.addr);
            let up = payload(n + 3, 99);
            // The upload and a pipelined GET in one stream: the body must be
            // bounded by its length so the GET stays a separate request.
            let mut req = post("/upload", &up);
            req.extend_from_slice(&get("/next"));
            let mut w = c.s.try_clone().unwrap();
            let writer = thread::spawn(move || {
                use std::io::Write;
                w.write_all(&req).unwrap();
            });
            let want = payload(n, 77);
            for i in 0..2 {
                let r = c.read_response(false);
                assert_eq!(r.status(), 200, "{what}: response {i}");
                assert_eq!(
                    r.head.get("x-upload-len"),
                    Some(
                        if i == 0 {
                            format!("{}", n + 3)
                        } else {
                            "0".to_string()
                        }
                        .as_str()
                    ),
                    "{what}: response {i}: the backend received a different upload length"
                );
                if i == 0 {
                    let d = digest_of(&up);
                    assert_eq!(
                        r.head.get("x-upload-hash"),
                        Some(format!("{:x}", d.hash).as_str()),
                        "{what}: upload differs"
                    );
                }
                let got = r.payload();
                assert_eq!(got.len(), n, "{what}: response {i} body length");
                assert!(got == want, "{what}: response {i} body differs");
            }
            writer.join().unwrap();
            let reqs = backend.wait_requests(2, DEADLINE);
            assert_eq!(reqs[0].head.target(), "/upload");
            assert_eq!(reqs[1].head.target(), "/next", "{what}");
            drop(c);
            proxy.wait_idle();
        }
    }
}

#[test]
fn large_chunked_upload_is_byte_exact() {
    let backend = HttpBackend::serve(|r| {
        let d = digest_of(&r.body);
        reply(ok(format!("{} {:x}", d.len, d.hash).as_bytes()))
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let data = payload(big(MIB), 5);
    let mut raw = Vec::new();
    for (i, ch) in data.chunks(100_000).enumerate() {
        raw.extend_from_slice(format!("{:x};i={i}\r\n", ch.len()).as_bytes());
        raw.extend_from_slice(ch);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-T: end\r\n\r\n");
    let mut req = b"PUT /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&raw);
    let mut w = c.s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        use std::io::Write;
        w.write_all(&req).unwrap();
    });
    let r = c.read_response(false);
    writer.join().unwrap();
    let d = digest_of(&raw);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("{} {:x}", d.len, d.hash),
        "the raw chunked upload reached the backend changed"
    );
}
