//! HTTP mode, cases found in a review of the session and the relay: heads
//! and chunked bodies split at every byte offset, interim responses that
//! leave little room for the final head, pipelined requests followed by the
//! client's half-close, keep-alive after an HTTP/1.0 chunked response, 1xx
//! and HTTP/1.0 clients, and close-delimited responses to slow clients.

mod common;

use common::*;
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

/// A head of about `n` bytes of `X-Pad-NNNN` fields (without the blank line).
fn padding_fields(prefix: &str, n: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("{prefix}-{i:04}: {}\r\n", "v".repeat(40)));
        i += 1;
    }
    s
}

#[test]
fn a_large_interim_response_leaves_room_for_a_large_final_head() {
    // 103 and the final head together exceed one buffer (16 KiB) while each
    // fits: once the 103 is relayed its bytes must not hold the buffer.
    let mut resp = format!(
        "HTTP/1.1 103 Early Hints\r\n{}\r\n",
        padding_fields("Link-Hint", 8000)
    )
    .into_bytes();
    resp.extend_from_slice(
        format!(
            "HTTP/1.1 200 OK\r\n{}Content-Length: 5\r\n\r\nfinal",
            padding_fields("X-Big", 9000)
        )
        .as_bytes(),
    );
    let backend = HttpBackend::fixed(&resp);
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--backend-timeout", "20"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(10);
    c.send(&get("/"));
    let r = c.read_response(false);
    assert_eq!(r.status(), 103);
    let r = c.read_response(false);
    assert_eq!(r.status(), 200);
    assert!(r.head.has("x-big-0000"), "{}", r.head.text());
    assert_eq!(r.body, b"final");
}

#[test]
fn pipelined_requests_then_a_half_close_are_all_answered() {
    let backend = HttpBackend::named("P");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let mut all = Vec::new();
    for p in ["/1", "/2", "/3", "/4"] {
        all.extend_from_slice(&get(p));
    }
    c.send(&all);
    c.s.shutdown(Shutdown::Write).unwrap();
    for p in ["/1", "/2", "/3", "/4"] {
        let r = c.read_response(false);
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.body, format!("P {p}").as_bytes());
    }
    let (rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    drop(c);
    proxy.wait_idle();
}

#[test]
fn a_chunked_http10_response_does_not_keep_its_backend_connection() {
    // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty
    // framing; the connection is closed after the message.
    let backend = HttpBackend::fixed(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..2 {
        let r = c.roundtrip(&get("/"));
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(decode_chunked(&r.body), b"hi");
    }
    let reqs = backend.wait_requests(2, DEADLINE);
    assert_ne!(
        reqs[0].conn, reqs[1].conn,
        "the connection after an HTTP/1.0 chunked response must not be reused"
    );
}

#[test]
fn an_http10_client_never_gets_an_interim_response() {
    // RFC 9110 15.2: HTTP/1.0 has no 1xx; a server must not send one to an
    // HTTP/1.0 client, so ferry drops what a backend sends anyway.
    let backend = HttpBackend::fixed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(r.body, b"ok");
    // And an HTTP/1.1 client still gets them.
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/"));
    assert_eq!(c.read_response(false).status(), 100);
    assert_eq!(c.read_response(false).status(), 103);
    assert_eq!(c.read_response(false).body, b"ok");
}
