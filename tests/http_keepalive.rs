//! HTTP mode, connection management on the client side: keep-alive across
//! many requests, pipelined requests answered in order, the idle keep-alive
//! timeout, `Expect: 100-continue` relayed without deadlock, and a 101
//! answer to an Upgrade turning the pair into a byte tunnel (WebSocket echo).

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn many_requests_on_one_keep_alive_connection() {
    let backend = HttpBackend::named("A");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..20 {
        let path = format!("/req/{i}");
        let r = c.roundtrip(&get(&path));
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.body, format!("A {path}").as_bytes(), "request {i}");
        assert!(
            !r.head.lists("connection", "close"),
            "request {i}: {}",
            r.head.text()
        );
    }
    assert_eq!(
        proxy.report().u("connections_accepted"),
        1,
        "all 20 requests on one client connection"
    );
    assert_eq!(backend.request_conns(), 1, "and on one backend connection");
}

#[test]
fn pipelined_requests_sent_in_one_write_are_answered_in_order() {
    // The first request is the slowest to answer: order must still hold.
    let backend = HttpBackend::serve(|r| {
        if r.head.target() == "/1" {
            thread::sleep(Duration::from_millis(200));
        }
        let body = format!(
            "{} {} [{}]",
            r.head.method(),
            r.head.target(),
            String::from_utf8_lossy(&r.body)
        );
        reply(ok(body.as_bytes()))
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let mut all = Vec::new();
    all.extend_from_slice(&get("/1"));
    all.extend_from_slice(&post("/2", b"body-of-two"));
    all.extend_from_slice(
        b"PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    all.extend_from_slice(&get("/4"));
    c.send(&all);
    let want = [
        "GET /1 []".to_string(),
        "POST /2 [body-of-two]".to_string(),
        "PUT /3 [3\r\nabc\r\n0\r\n\r\n]".to_string(),
        "GET /4 []".to_string(),
    ];
    for (i, w) in want.iter().enumerate() {
        let r = c.read_response(false);
        assert_eq!(r.status(), 200, "pipelined response {i}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            *w,
            "pipelined response {i} out of order or wrong"
        );
    }
    assert_eq!(nothing_readable(&c.s), Ok(()), "exactly four responses");
}

#[test]
fn three_pipelined_gets_then_close_get_three_responses_then_eof() {
    let backend = HttpBackend::named("B");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let mut all = get("/a");
    all.extend_from_slice(&get("/b"));
    all.extend_from_slice(b"GET /c HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    c.send(&all);
    for p in ["/a", "/b", "/c"] {
        let r = c.read_response(false);
        assert_eq!(r.body, format!("B {p}").as_bytes());
    }
    let (rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
    assert!(
        rest.is_empty(),
        "nothing after the Connection: close response: {rest:?}"
    );
}

#[test]
fn idle_client_is_closed_after_the_keepalive_timeout() {
    let backend = HttpBackend::fixed(&ok(b"x"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--keepalive-timeout", "0.5"]);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/")).body, b"x");
    let t0 = Instant::now();
    c.timeout = Duration::from_secs(20);
    let (rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof, "idle keep-alive close must be clean");
    assert!(
        rest.is_empty(),
        "an idle close sends nothing: {:?}",
        String::from_utf8_lossy(&rest)
    );
    // Default is 60 s: closing within 20 s proves the option works.
    assert!(t0.elapsed() < Duration::from_secs(20));
    proxy.wait_idle();
}

#[test]
fn expect_100_continue_is_forwarded_and_the_100_relayed_before_the_final_response() {
    let backend = HttpBackend::start(|p| {
        while let Some(head) = p.read_request_head() {
            let expects = head.lists("expect", "100-continue");
            if expects && !p.write(b"HTTP/1.1 100 Continue\r\n\r\n") {
                return;
            }
            let n = head.content_length().unwrap_or(0);
            let body = match p.conn.try_read_exact(n) {
                Ok(b) => b,
                Err(_) => return,
            };
            let text = format!("expect={expects} body={}", String::from_utf8_lossy(&body));
            if !p.write(&ok(text.as_bytes())) {
                return;
            }
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(15);
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    );
    // The client waits for the 100 before sending its body: no deadlock.
    let r = c.read_response(false);
    assert_eq!(
        r.status(),
        100,
        "the backend's 100 Continue must be relayed: {:?}",
        String::from_utf8_lossy(&r.bytes())
    );
    c.send(b"hello world");
    let r = c.read_response(false);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.body, b"expect=true body=hello world",
        "Expect must reach the backend"
    );
    // And the connection goes on.
    let r = c.roundtrip(&post("/again", b"x"));
    assert_eq!(r.body, b"expect=false body=x");
}

#[test]
fn a_101_answer_to_an_upgrade_turns_the_pair_into_a_byte_tunnel() {
    // A tiny WebSocket-like echo: 101, then every byte echoed until EOF.
    let backend = HttpBackend::start(|p| {
        let Some(head) = p.read_request_head() else {
            return;
        };
        let upgrade = head.get("upgrade").unwrap_or("").to_string();
        let conn_upgrade = head.lists("connection", "upgrade");
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Saw: {upgrade};{conn_upgrade}\r\n\r\n"
        );
        if !p.write(resp.as_bytes()) {
            return;
        }
        // Bytes already buffered after the head belong to the tunnel.
        let early = std::mem::take(&mut p.conn.buf);
        if !p.write(&early) {
            return;
        }
        echo_handler(p.conn.s.try_clone().unwrap());
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let r = c.read_response(false);
    assert_eq!(r.status(), 101, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(
        r.head.get("x-saw"),
        Some("websocket;true"),
        "the backend must see Upgrade: websocket and Connection: upgrade"
    );
    assert!(
        r.head.lists("upgrade", "websocket"),
        "101 keeps Upgrade: {}",
        r.head.text()
    );
    assert!(
        r.head.lists("connection", "upgrade"),
        "101 keeps Connection: upgrade: {}",
        r.head.text()
    );
    // A frame that looks like HTTP must pass untouched, then bulk data.
    let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(frame);
    assert_eq!(c.read_exact(frame.len()), frame, "tunnel echo");
    let n = 256 * KIB;
    let data = payload(n, 8);
    let mut w = c.s.try_clone().unwrap();
    let d2 = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = c.read_exact(n);
    writer.join().unwrap();
    assert!(got == data, "tunnelled bytes differ");
    let (rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof, "half-close travels through the tunnel");
    assert!(rest.is_empty());
    drop(c);
    proxy.wait_idle();
}

#[test]
fn upgrade_refused_by_the_backend_stays_http() {
    // A backend that ignores the Upgrade and answers 200: the connection
    // remains HTTP and the next request is parsed as one.
    let backend = HttpBackend::named("plain");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, b"plain /ws");
    let r = c.roundtrip(&get("/next"));
    assert_eq!(r.body, b"plain /next");
}
