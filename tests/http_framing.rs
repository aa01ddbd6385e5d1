//! HTTP mode, message framing (RFC 9112) both ways: ambiguous or malformed
//! requests get 400 and a close and never reach the backend (request
//! smuggling); a bad chunk arriving after the head was forwarded ends the
//! connection and nothing after it reaches the backend; bad response framing
//! gets 502 and the backend connection closed; bodyless responses (HEAD, 1xx,
//! 204, 304) whatever their headers say; close-delimited, over-long and
//! truncated responses.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests that must each get a 400 and a close, and never be forwarded.
const BAD_REQUESTS: &[(&str, &[u8])] = &[
    (
        "Content-Length with Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding with Content-Length (other order)",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ),
    (
        "final coding not chunked (chunked, gzip)",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "final coding not chunked (gzip)",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    ),
    (
        "final coding not chunked (two fields: chunked then identity)",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    ),
    (
        "unknown coding xchunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "two differing Content-Length fields",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    (
        "Content-Length list with differing values",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
    ),
    (
        "Content-Length not a number",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
    ),
    (
        "Content-Length negative",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ),
    (
        "Content-Length with a sign",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    ),
    (
        "Transfer-Encoding in HTTP/1.0",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "obs-fold",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    ),
    (
        "whitespace before the colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Field : v\r\n\r\n",
    ),
    (
        "whitespace before the colon of Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "bare CR in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Field: a\rb\r\n\r\n",
    ),
    (
        "NUL in a value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Field: a\0b\r\n\r\n",
    ),
    ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nX-Field: v\r\n\r\n"),
    (
        "HTTP/1.1 with two Host fields",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ),
    (
        "CONNECT in http mode",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ),
    (
        "invalid chunk size with the head",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "invalid chunk extension with the head",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;@@@\r\nhello\r\n0\r\n\r\n",
    ),
];

#[test]
fn ambiguous_or_malformed_requests_get_400_and_are_never_forwarded() {
    let backend = HttpBackend::fixed(&ok(b"should not happen"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut failures = Vec::new();
    for (what, req) in BAD_REQUESTS {
        let before = backend.tap().len();
        let mut c = HttpConn::connect(proxy.addr);
        c.timeout = Duration::from_secs(10);
        c.send(req);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            expect_answer_and_close(&mut c, 400, what);
        }));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("[{what}] {msg}"));
        }
        // Give a wrongly forwarded request a moment to show at the backend.
        std::thread::sleep(Duration::from_millis(20));
        let tap = backend.tap();
        if tap.len() != before {
            failures.push(format!(
                "[{what}] the backend received {:?}",
                String::from_utf8_lossy(&tap[before..])
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad requests mishandled:\n{}",
        failures.len(),
        BAD_REQUESTS.len(),
        failures.join("\n")
    );
    let n = BAD_REQUESTS.len() as f64;
    proxy.wait_report("http_answers counts every 400", DEADLINE, |r| {
        r.m("http_answers") >= n
    });
}

#[test]
fn a_good_request_after_the_bad_ones_still_works() {
    // The same proxy serves a valid request normally: the 400s did not
    // poison the worker, and valid framing variants are accepted.
    let backend = HttpBackend::serve(|r| reply(ok(&r.body)));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    for (what, req) in BAD_REQUESTS.iter().take(3) {
        let mut c = HttpConn::connect(proxy.addr);
        c.send(req);
        expect_answer_and_close(&mut c, 400, what);
    }
    let mut c = HttpConn::connect(proxy.addr);
    // Identical repeated Content-Length values are one length (RFC 9112 6.3).
    let r = c.roundtrip(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(r.body, b"abc");
    let r = c.roundtrip(&post("/p", b"hello"));
    assert_eq!(r.body, b"hello");
}

#[test]
fn a_bad_chunk_after_the_head_was_forwarded_ends_the_connection_and_nothing_after_it_is_forwarded()
{
    let backend = HttpBackend::start(|p| {
        if p.read_request_head().is_some() {
            // Take the body as it comes, until ferry closes.
            p.wait_eof();
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    backend.wait_until("the first chunk arrived", DEADLINE, |b| {
        contains(&b.tap(), b"hello")
    });
    c.send(b"zz\r\nSMUGGLED\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    let (got, _how) = c.read_until_closed();
    // A 400 is allowed only if no response started; nothing else is.
    if !got.is_empty() {
        assert!(
            got.starts_with(b"HTTP/1.1 400 "),
            "after a bad chunk the client may get at most a 400, got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    backend.wait_until("ferry closed the backend connection", DEADLINE, |b| {
        b.closed_request_conns() >= 1
    });
    let tap = backend.tap();
    assert!(
        !contains(&tap, b"SMUGGLED") && !contains(&tap, b"/smuggled") && !contains(&tap, b"zz"),
        "bytes after the bad chunk reached the backend: {:?}",
        String::from_utf8_lossy(&tap)
    );
    assert_eq!(
        backend.requests().len(),
        1,
        "only the first request head may arrive"
    );
}

#[test]
fn bad_response_framing_gets_502_and_the_backend_connection_closed() {
    let cases: &[(&str, &[u8])] = &[
        (
            "invalid Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc",
        ),
        (
            "differing Content-Length fields",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "Content-Length list with differing values",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd",
        ),
        (
            "unknown Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        ),
        (
            "Content-Length with Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        ("not HTTP at all", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    ];
    let mut failures = Vec::new();
    for (what, resp) in cases {
        let backend = HttpBackend::fixed(resp);
        let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
        let mut c = HttpConn::connect(proxy.addr);
        c.timeout = Duration::from_secs(10);
        c.send(&get("/"));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            expect_answer_and_close(&mut c, 502, what);
            backend.wait_until(
                "ferry closed the backend connection",
                Duration::from_secs(10),
                |b| b.closed_request_conns() >= 1,
            );
        }));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("[{what}] {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad responses mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn head_204_and_304_responses_carry_no_body_whatever_their_headers_say() {
    let backend = HttpBackend::serve(|r| {
        let bytes: &[u8] = match (r.head.method(), r.head.target()) {
            ("HEAD", _) => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            (_, "/nocontent") => b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
            (_, "/notmodified") => {
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\nETag: \"x\"\r\n\r\n"
            }
            (_, "/chunkedhead") => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nlast body",
        };
        reply(bytes.to_vec())
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(10);
    let r = c.roundtrip(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.head.get("content-length"),
        Some("10"),
        "HEAD keeps the length it announces"
    );
    let r = c.roundtrip(b"HEAD /chunkedhead HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status(), 200);
    let r = c.roundtrip(&get("/nocontent"));
    assert_eq!(r.status(), 204);
    let r = c.roundtrip(&get("/notmodified"));
    assert_eq!(r.status(), 304);
    let r = c.roundtrip(&get("/last"));
    assert_eq!(r.status(), 200, "a request after the bodyless responses");
    assert_eq!(r.body, b"last body");
    assert_eq!(
        nothing_readable(&c.s),
        Ok(()),
        "nothing may follow the last response"
    );
    assert_eq!(
        backend.request_conns(),
        1,
        "the backend connection carries on after bodyless responses"
    );
}

#[test]
fn informational_1xx_responses_are_relayed_before_the_final_one() {
    let backend = HttpBackend::fixed(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/"));
    let r = c.read_response(false);
    assert_eq!(r.status(), 103);
    assert_eq!(r.head.get("link"), Some("</style.css>; rel=preload"));
    let r = c.read_response(false);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, b"final");
    c.send(&get("/again"));
    let r = c.read_response(false);
    assert_eq!(r.status(), 103, "each request gets the 103 again");
    let r = c.read_response(false);
    assert_eq!(r.body, b"final");
}

#[test]
fn a_close_delimited_response_reaches_the_client_and_then_closes_it() {
    let body = payload(200 * KIB, 3);
    let b2 = body.clone();
    let backend = HttpBackend::serve(move |_| {
        let mut v = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        v.extend_from_slice(&b2);
        reply_then(v, Then::Close)
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/"));
    let head = c.read_head();
    assert_eq!(head.status(), 200);
    assert!(
        head.lists("connection", "close"),
        "ferry will close this client connection: the response must say Connection: close:\n{}",
        head.text()
    );
    let (rest, how) = c.read_until_closed();
    assert_eq!(
        how,
        Closed::Eof,
        "close-delimited response must end with a clean close"
    );
    assert_eq!(rest.len(), body.len(), "close-delimited body length");
    assert!(rest == body, "close-delimited body differs");
}

#[test]
fn bytes_beyond_content_length_are_dropped_and_that_connection_is_not_reused() {
    let first = AtomicBool::new(true);
    let backend = HttpBackend::serve(move |_| {
        if first.swap(false, Ordering::SeqCst) {
            reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA-GARBAGE HTTP/1.1 200 OK\r\n\r\n".to_vec())
        } else {
            reply(ok(b"clean"))
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&get("/first"));
    assert_eq!(r.body, b"hello");
    let r = c.roundtrip(&get("/second"));
    assert_eq!(
        r.body,
        b"clean",
        "second response: {:?}",
        String::from_utf8_lossy(&r.bytes())
    );
    assert!(
        !contains(&c.buf, b"EXTRA"),
        "stray backend bytes reached the client"
    );
    assert_eq!(
        nothing_readable(&c.s),
        Ok(()),
        "stray backend bytes reached the client"
    );
    let reqs = backend.wait_requests(2, DEADLINE);
    assert_ne!(
        reqs[1].conn, reqs[0].conn,
        "the connection that sent extra bytes must not carry another request"
    );
    backend.wait_until("the over-long connection closed by ferry", DEADLINE, |b| {
        b.closed_request_conns() >= 1
    });
}

/// A backend that sends `partial` after a request head, then waits until
/// the test says `die`, then closes (with an RST if `reset`).
fn dying_backend(partial: &'static [u8], reset: bool, die: Arc<AtomicBool>) -> HttpBackend {
    HttpBackend::start(move |p| {
        if p.read_request().is_none() || !p.write(partial) {
            return;
        }
        let end = Instant::now() + DEADLINE;
        while !die.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        if reset {
            p.set_reset_on_close();
        } else {
            let _ = p.conn.s.shutdown(std::net::Shutdown::Both);
        }
    })
}

#[test]
fn a_backend_dying_mid_body_closes_the_client_without_a_complete_message() {
    // Content-Length body cut short (the backend resets).
    let die = Arc::new(AtomicBool::new(false));
    let backend = dying_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        true,
        die.clone(),
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/"));
    let head = c.read_head();
    assert_eq!(head.status(), 200);
    assert_eq!(c.read_exact(50), vec![b'x'; 50]);
    die.store(true, Ordering::SeqCst);
    let (rest, _how) = c.read_until_closed();
    assert!(
        rest.is_empty(),
        "nothing may follow the 50 body bytes the backend sent before dying: {:?}",
        String::from_utf8_lossy(&rest)
    );
    drop(c);
    proxy.wait_idle();

    // Chunked body cut short (the backend closes): no final zero chunk may
    // be invented.
    let die = Arc::new(AtomicBool::new(false));
    let backend = dying_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        false,
        die.clone(),
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/"));
    let head = c.read_head();
    assert!(head.is_chunked());
    assert_eq!(c.read_exact(10), b"5\r\nhello\r\n");
    die.store(true, Ordering::SeqCst);
    let (rest, _how) = c.read_until_closed();
    assert!(
        rest.is_empty(),
        "a truncated chunked body must not be completed: got {:?} after the first chunk",
        String::from_utf8_lossy(&rest)
    );
    drop(c);
    proxy.wait_idle();
}
