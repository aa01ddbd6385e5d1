//! HTTP mode, cases found in a review of the session and the relay: heads,
//! requests and chunked bodies split at every byte offset; chunks
//! straddling the buffer; a backend closing after every byte of its
//! response; a large interim response before a large final head;
//! pipelined requests followed by the client's half-close; keep-alive after
//! an HTTP/1.0 chunked response; 1xx and HTTP/1.0 clients; close-delimited
//! responses to clients that sent more; early answers (Connection: close,
//! and a backend that resets during the upload); a slow upload longer than
//! the backend timeout; a whole response followed by a reset; a client
//! flooding a lingering connection; a long pipeline of forward-mode 407s.
//! Edges: Upgrade in an HTTP/1.0 request; chunk sizes with leading zeros;
//! malformed trailers; a bodiless response followed by a reset; a chunked
//! response to an HTTP/1.0 client (decoded, reset if cut short).

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
fn a_response_head_split_at_every_byte_offset_is_relayed() {
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Long: abcdefghij\r\nContent-Length: 4\r\n\r\nbody";
    let backend = HttpBackend::start(move |p| {
        // The n-th request on the connection gets its response cut at byte n.
        let mut n = 1;
        while p.read_request().is_some() {
            let cut = n.min(resp.len() - 1);
            if !p.write(&resp[..cut]) {
                return;
            }
            thread::sleep(Duration::from_millis(3));
            if !p.write(&resp[cut..]) {
                return;
            }
            n += 1;
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(10);
    for n in 1..resp.len() {
        let r = c.roundtrip(&get(&format!("/{n}")));
        assert_eq!(r.status(), 200, "cut at {n}");
        assert_eq!(r.head.get("x-long"), Some("abcdefghij"), "cut at {n}");
        assert_eq!(r.body, b"body", "cut at {n}");
    }
    assert_eq!(
        backend.request_conns(),
        1,
        "one backend connection throughout"
    );
}

#[test]
fn a_request_split_at_every_byte_offset_reaches_the_backend_whole() {
    let backend = HttpBackend::serve(|r| {
        let text = format!(
            "{} {} [{}]",
            r.head.target(),
            r.head.get("x-a").unwrap_or("-"),
            String::from_utf8_lossy(&r.body)
        );
        reply(ok(text.as_bytes()))
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(10);
    let req: &[u8] = b"POST /split HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3;e=\"q\"\r\nabc\r\n0\r\nT: 1\r\n\r\n";
    for cut in 1..req.len() {
        c.send(&req[..cut]);
        thread::sleep(Duration::from_millis(3));
        c.send(&req[cut..]);
        let r = c.read_response(false);
        assert_eq!(r.status(), 200, "cut at {cut}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "/split 1 [3;e=\"q\"\r\nabc\r\n0\r\nT: 1\r\n\r\n]",
            "cut at {cut}"
        );
    }
}

#[test]
fn a_chunked_response_split_at_every_byte_offset_passes_byte_exact() {
    let body: &[u8] = b"4;ext=v\r\nwxyz\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n";
    let head: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let backend = HttpBackend::start(move |p| {
        let mut n = 1;
        while p.read_request().is_some() {
            let cut = n.min(body.len() - 1);
            let ok = p.write(head) && p.write(&body[..cut]);
            thread::sleep(Duration::from_millis(3));
            if !ok || !p.write(&body[cut..]) {
                return;
            }
            n += 1;
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(10);
    for n in 1..body.len() {
        let r = c.roundtrip(&get(&format!("/{n}")));
        assert_eq!(r.status(), 200, "cut at {n}");
        assert_eq!(r.body, body, "cut at {n}");
    }
    assert_eq!(
        backend.request_conns(),
        1,
        "one backend connection throughout"
    );
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

#[test]
fn a_close_delimited_response_is_not_cut_when_the_client_sent_more_meanwhile() {
    // The client pipelines a second request ferry has not read when the
    // response ends: closing at once would reset the connection (unread
    // data) and drop the response's tail still in the socket's send queue.
    let n = 2 * MIB;
    let body = payload(n, 5);
    let b2 = body.clone();
    let backend = HttpBackend::serve(move |_| {
        let mut v = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        v.extend_from_slice(&b2);
        reply_then(v, Then::Close)
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::new(connect_small_rcvbuf(proxy.addr, 4 * KIB));
    c.send(&get("/big"));
    thread::sleep(Duration::from_millis(100));
    c.send(&get("/next"));
    let head = c.read_head();
    assert_eq!(head.status(), 200);
    let (rest, how) = c.read_until_closed();
    assert_eq!(rest.len(), n, "the whole close-delimited body ({how:?})");
    assert!(rest == body, "close-delimited body differs");
    assert_eq!(how, Closed::Eof, "a clean close after the body");
    drop(c);
    proxy.wait_idle();
}

#[test]
fn an_early_response_reaches_the_client_when_the_backend_resets_during_the_upload() {
    // A backend refuses an upload at once and closes with the body unread
    // (which resets the connection): its answer must still reach the client.
    let backend = HttpBackend::start(|p| {
        if p.read_request_head().is_none() {
            return;
        }
        p.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large");
        p.set_reset_on_close();
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    for i in 0..5 {
        let mut c = HttpConn::connect(proxy.addr);
        c.timeout = Duration::from_secs(10);
        let n = 64 * MIB;
        c.send(format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n").as_bytes());
        let mut w = c.s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let _ = write_stream(&mut w, n, 1);
        });
        let r = c.try_read_response(false);
        let _ = c.s.shutdown(Shutdown::Both);
        writer.join().unwrap();
        let r = r.unwrap_or_else(|e| panic!("try {i}: no response to the client: {e}"));
        assert_eq!(r.status(), 413, "try {i}");
        assert_eq!(r.body, b"too large", "try {i}");
    }
    proxy.wait_idle();
}

#[test]
fn a_slow_upload_longer_than_the_backend_timeout_is_not_answered_504() {
    // The backend cannot answer before it has the body; its timeout runs
    // from the last byte it was sent, not from the request's start.
    let backend = HttpBackend::serve(|r| reply(ok(format!("got {}", r.body.len()).as_bytes())));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--backend-timeout", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n");
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(600));
        c.send(&[b'x'; 10]);
    }
    let r = c.read_response(false);
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(r.body, b"got 40");
}

#[test]
fn an_answer_before_the_request_body_is_complete_says_connection_close() {
    // ferry closes the client after such an answer (the rest of the body
    // cannot follow it): the answer must say so.
    let backend = HttpBackend::start(|p| {
        if p.read_request_head().is_none() {
            return;
        }
        if p.write(&status_response(413, "Payload Too Large", b"no")) {
            p.wait_eof();
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\npartial");
    let r = c.read_response(false);
    assert_eq!(r.status(), 413);
    assert!(
        r.head.lists("connection", "close"),
        "the early answer must announce the close: {}",
        r.head.text()
    );
    let (_, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
}

#[test]
fn a_client_flooding_a_lingering_connection_is_drained_not_closed_as_stalled() {
    // After ferry's answer the client's bytes are read and dropped until it
    // closes; reading fast is progress, not a stall (which would close at
    // once and reset the connection).
    let backend = HttpBackend::fixed(&ok(b"unused"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n");
    let mut w = c.s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let ok = write_stream(&mut w, 48 * MIB, 2).is_ok();
        let _ = w.shutdown(Shutdown::Write);
        ok
    });
    let r = c.read_response(false);
    assert_eq!(r.status(), 400);
    let (_, how) = c.read_until_closed();
    let wrote_all = writer.join().unwrap();
    assert!(
        wrote_all,
        "the client's bytes were refused (reset) while ferry lingered"
    );
    assert_eq!(how, Closed::Eof);
    let report = proxy.wait_idle();
    assert_eq!(
        report.u("pairs_stalled"),
        0,
        "a draining pair was closed as stalled"
    );
}

#[test]
fn many_pipelined_requests_answered_407_by_ferry_itself_are_all_answered() {
    // Forward mode answers a request without credentials itself and keeps
    // the connection: a long pipeline of them is work, not a stalled pair.
    let proxy = Proxy::start(&[
        "-m",
        "forward",
        "-l",
        "127.0.0.1",
        "-p",
        "0",
        "-w",
        "1",
        "--auth",
        "u:p",
    ]);
    let n = 100;
    let one = b"GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n";
    let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&all);
    for i in 0..n {
        let r = c.read_response(false);
        assert_eq!(r.status(), 407, "pipelined request {i}");
    }
    assert_eq!(proxy.report().u("pairs_stalled"), 0);
}

/// A chunked body whose chunk sizes straddle the 16 KiB buffer, so size
/// lines and chunk ends fall at many offsets around each read's end.
fn boundary_chunks(seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, size) in (16_370..16_400).step_by(3).enumerate() {
        out.extend_from_slice(format!("{size:x};i={i}\r\n").as_bytes());
        out.extend_from_slice(&payload(size, seed + i as u64));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-End: 1\r\n\r\n");
    out
}

#[test]
fn chunks_straddling_the_buffer_pass_byte_exact_both_ways_with_the_next_request_intact() {
    let down = boundary_chunks(100);
    let d2 = down.clone();
    let backend = HttpBackend::serve(move |r| {
        if r.head.target() == "/next" {
            return reply(ok(b"next"));
        }
        let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        v.extend_from_slice(&d2);
        reply(v)
    });
    let up = boundary_chunks(200);
    for splice in ["on", "off"] {
        let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--splice", splice]);
        let mut c = HttpConn::connect(proxy.addr);
        let mut req =
            b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(&up);
        req.extend_from_slice(&get("/next"));
        c.send(&req);
        let r = c.read_response(false);
        assert!(
            r.body == down,
            "--splice {splice}: chunked response changed"
        );
        let r = c.read_response(false);
        assert_eq!(r.body, b"next", "--splice {splice}: the pipelined request");
    }
    let got = backend.wait_requests(4, DEADLINE);
    for r in got.iter().filter(|r| r.head.target() == "/up") {
        assert!(r.body == up, "chunked request changed on its way");
    }
}

#[test]
fn a_backend_closing_after_every_byte_offset_of_its_response_never_hangs_the_client() {
    // Cut after k bytes: no head yet -> 502; a partial head -> 502; a
    // partial body -> the client sees the head, at most the bytes sent, and
    // a close; the whole message -> the whole response, and no hang anywhere.
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef";
    let head_len = resp.len() - 6;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = next.clone();
    let backend = HttpBackend::start(move |p| {
        if p.read_request().is_none() {
            return;
        }
        let k = n2.load(std::sync::atomic::Ordering::SeqCst);
        let _ = p.write(&resp[..k]);
        let _ = p.conn.s.shutdown(Shutdown::Both);
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--pool-size", "0"]);
    for k in 0..=resp.len() {
        next.store(k, std::sync::atomic::Ordering::SeqCst);
        let mut c = HttpConn::connect(proxy.addr);
        c.timeout = Duration::from_secs(10);
        c.send(&get(&format!("/{k}")));
        if k == resp.len() {
            // Whole: the client's connection goes on.
            assert_eq!(c.read_response(false).body, b"abcdef");
            continue;
        }
        let (got, _how) = c.read_until_closed();
        if k < head_len {
            assert!(
                got.starts_with(b"HTTP/1.1 502 "),
                "cut at {k}: {:?}",
                String::from_utf8_lossy(&got)
            );
        } else {
            let h = Head::parse(&got[..find(&got, b"\r\n\r\n").unwrap() + 4]);
            assert_eq!(h.status(), 200, "cut at {k}");
            let body = &got[h.raw.len()..];
            assert_eq!(body, &resp[head_len..k], "cut at {k}");
        }
    }
    proxy.wait_idle();
}

#[test]
fn a_whole_response_followed_by_a_reset_reaches_the_client() {
    // A backend that answers and closes with a reset (SO_LINGER 0, or
    // unread request bytes): the response and the reset often arrive in one
    // event; the reset must not turn the response read with it into a 502.
    let backend = HttpBackend::start(|p| {
        if p.read_request().is_some() && p.write(&ok(b"whole")) {
            p.set_reset_on_close();
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--pool-size", "0"]);
    for i in 0..40 {
        let mut c = HttpConn::connect(proxy.addr);
        c.timeout = Duration::from_secs(10);
        let r = c.roundtrip(&get(&format!("/{i}")));
        assert_eq!(
            r.status(),
            200,
            "try {i}: {:?}",
            String::from_utf8_lossy(&r.bytes())
        );
        assert_eq!(r.body, b"whole", "try {i}");
    }
    proxy.wait_idle();
}

#[test]
fn an_upgrade_in_an_http10_request_is_ignored() {
    // RFC 9110 7.8: a server must ignore Upgrade in an HTTP/1.0 request. It
    // goes on as an ordinary request without Upgrade, and a 101 to it is a
    // bad response (502), not the start of a tunnel.
    let backend = HttpBackend::serve(|r| {
        if r.head.has("upgrade") || r.head.lists("connection", "upgrade") {
            reply(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec())
        } else {
            reply(ok(b"plain"))
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(
        b"GET /ws HTTP/1.0\r\nConnection: Upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(r.body, b"plain");
    let got = backend.wait_requests(1, DEADLINE);
    assert_eq!(got[0].head.version(), "HTTP/1.0");
    assert!(!got[0].head.has("upgrade"), "{}", got[0].head.text());
    assert!(
        !got[0].head.lists("connection", "upgrade"),
        "{}",
        got[0].head.text()
    );
    // A backend that switches protocols anyway gets no tunnel.
    let rogue = HttpBackend::fixed(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    let proxy = Proxy::http(&[rogue.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    expect_answer_and_close(&mut c, 502, "a 101 to an HTTP/1.0 request");
    let report = proxy.wait_idle();
    assert_eq!(report.u("http_answers"), 1);
    // Counted once, as what the client got: the refused 101 is no response sent.
    assert_eq!(
        (
            report.u("http_responses_1xx"),
            report.u("http_responses_5xx")
        ),
        (0, 1)
    );
}

#[test]
fn chunk_sizes_with_many_leading_zeros_are_accepted_both_ways() {
    // RFC 9112 7.1: chunk-size is 1*HEXDIG; leading zeros do not make the
    // value large. A value that does not fit is still refused.
    let chunks: &[u8] =
        b"0000000000000000001a\r\nabcdefghijklmnopqrstuvwxyz\r\n00000000000000000000\r\n\r\n";
    let backend = HttpBackend::serve(move |r| {
        if r.head.target() == "/down" {
            let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            v.extend_from_slice(chunks);
            return reply(v);
        }
        reply(ok(&r.body))
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    let mut req = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(chunks);
    let r = c.roundtrip(&req);
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(
        r.body, chunks,
        "the chunked request reached the backend as sent"
    );
    let r = c.roundtrip(&get("/down"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, chunks);
    assert_eq!(decode_chunked(&r.body), b"abcdefghijklmnopqrstuvwxyz");
    // 16 significant hex digits overflow the size ferry accepts.
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00010000000000000000\r\n");
    expect_answer_and_close(&mut c, 400, "an overflowing chunk size");
}

#[test]
fn an_obs_folded_trailer_is_refused_in_requests_and_responses() {
    // RFC 9112 5.2 and 7.1.2: obs-fold is not allowed in a trailer section
    // any more than in a head: a request gets 400, a response 502.
    let backend = HttpBackend::serve(|r| {
        if r.head.target() == "/fold" {
            return reply(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: a\r\n b\r\n\r\n"
                    .to_vec(),
            );
        }
        reply(ok(&r.body))
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    for (trailer, what) in [
        ("X-T: a\r\n b\r\n", "an obs-fold (SP)"),
        ("X-T: a\r\n\tb\r\n", "an obs-fold (HTAB)"),
        ("X-T: a\rb\r\n", "a bare CR"),
        ("X-T: a\0b\r\n", "a NUL"),
        ("X-T : a\r\n", "whitespace before the colon"),
        ("no colon\r\n", "a line without a colon"),
    ] {
        let mut c = HttpConn::connect(proxy.addr);
        c.send(
            format!("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n{trailer}\r\n")
                .as_bytes(),
        );
        expect_answer_and_close(&mut c, 400, what);
    }
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/fold"));
    expect_answer_and_close(&mut c, 502, "a response trailer with obs-fold");
    // Good trailers still pass.
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: a \t b\r\nY:\r\n\r\n",
    );
    assert_eq!(r.body, b"2\r\nhi\r\n0\r\nX-T: a \t b\r\nY:\r\n\r\n");
}

#[test]
fn a_bodiless_response_followed_by_a_reset_reaches_the_client_which_goes_on() {
    // A backend that writes a complete bodiless head and resets at once:
    // the response is whole, so the client gets it and keeps its
    // connection; only the backend connection is dropped.
    let heads: [&[u8]; 3] = [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ];
    let backend = HttpBackend::start(move |p| {
        while let Some(r) = p.read_request() {
            if r.head.target() == "/next" {
                if !p.write(&ok(b"next")) {
                    return;
                }
                continue;
            }
            let i: usize = r.head.target()[1..].parse().unwrap();
            if p.write(heads[i % 3]) {
                p.set_reset_on_close();
            }
            return;
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    for i in 0..30 {
        let mut c = HttpConn::connect(proxy.addr);
        c.timeout = Duration::from_secs(10);
        c.send(&get(&format!("/{i}")));
        let r = c
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("try {i}: no response: {e}"));
        assert_eq!(r.status(), [204, 304, 200][i % 3], "try {i}");
        assert!(r.body.is_empty(), "try {i}");
        let r = c.roundtrip(&get("/next"));
        assert_eq!(
            r.body, b"next",
            "try {i}: the next request on the connection"
        );
    }
    proxy.wait_idle();
}

#[test]
fn a_backend_reset_right_after_a_head_with_a_body_to_come_gets_a_502() {
    // The head of a response with a body is read, and the backend resets
    // before any body byte: the head had not gone out yet (it waits one
    // read for its body), so the client gets a 502 rather than a bare
    // close. (If the reset comes after the head went out, the client sees
    // the head and then the close; it must never see nothing.)
    let heads: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ];
    let backend = HttpBackend::start(move |p| {
        if let Some(r) = p.read_request() {
            let i: usize = r.head.target()[1..].parse().unwrap();
            if p.write(heads[i % 3]) {
                p.set_reset_on_close();
            }
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut answered = 0;
    for i in 0..100 {
        let mut c = HttpConn::connect(proxy.addr);
        c.send(&get(&format!("/{i}")));
        let (got, _) = c.read_until_closed();
        if got.starts_with(b"HTTP/1.1 502 ") {
            answered += 1;
        } else {
            // The head went out before the reset came.
            assert!(
                got.starts_with(b"HTTP/1.1 200 "),
                "try {i}: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    // Which way each try goes is the kernel's timing (here about one in
    // eight finds the head unsent); the rule is that none gets nothing.
    let report = proxy.wait_idle();
    assert_eq!(report.u("http_answers"), answered);
}

#[test]
fn a_chunked_response_to_an_http10_client_is_decoded_and_closed() {
    // ferry forwards HTTP/1.0 requests as HTTP/1.0, so a backend must not
    // answer chunked; one that does anyway has its body decoded for the
    // client, which cannot, and delimited by the close.
    let body = payload(100_000, 9);
    let mut chunked = Vec::new();
    for (i, part) in body.chunks(7_001).enumerate() {
        chunked.extend_from_slice(format!("{:x};n={i}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\nX-Sum: 1\r\n\r\n");
    let backend = HttpBackend::serve(move |_| {
        let mut v =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n".to_vec();
        v.extend_from_slice(&chunked);
        reply(v)
    });
    for splice in ["off", "on"] {
        let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--splice", splice]);
        let mut c = HttpConn::connect(proxy.addr);
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let head = c.read_head();
        assert_eq!(head.status(), 200);
        assert!(!head.has("transfer-encoding"), "{}", head.text());
        assert!(!head.has("trailer"), "{}", head.text());
        assert!(head.lists("connection", "close"), "{}", head.text());
        let (rest, how) = c.read_until_closed();
        assert_eq!(how, Closed::Eof, "--splice {splice}");
        assert_eq!(rest.len(), body.len(), "--splice {splice}");
        assert!(rest == body, "--splice {splice}: the decoded body differs");
        // An HTTP/1.1 client still gets the chunks as sent.
        let mut c = HttpConn::connect(proxy.addr);
        let r = c.roundtrip(&get("/"));
        assert!(r.head.is_chunked());
        assert!(decode_chunked(&r.body) == body);
    }
}

#[test]
fn a_decoded_body_cut_short_resets_the_http10_client() {
    // The close delimits a body decoded for an HTTP/1.0 client: when the
    // backend ends before the last chunk, a FIN would pass the part off as
    // the whole, so the client is reset. A coding besides chunked cannot be
    // undone for the client: 502.
    let backend = HttpBackend::start(|p| {
        let Some(r) = p.read_request() else { return };
        if r.head.target() == "/gzip" {
            p.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            );
            return p.wait_eof();
        }
        if r.head.target() == "/extra" {
            // Bytes past the message's end stay behind, undelivered.
            p.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\nEXTRA");
            return p.wait_eof();
        }
        p.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n9\r\npart");
        thread::sleep(Duration::from_millis(50));
        let _ = p.conn.s.shutdown(Shutdown::Both);
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET /cut HTTP/1.0\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status(), 200);
    let (got, how) = c.read_until_closed();
    assert_eq!(
        how,
        Closed::Reset,
        "got {:?}",
        String::from_utf8_lossy(&got)
    );
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET /gzip HTTP/1.0\r\n\r\n");
    expect_answer_and_close(&mut c, 502, "gzip, chunked to an HTTP/1.0 client");
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET /extra HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_head().status(), 200);
    let (got, how) = c.read_until_closed();
    assert_eq!((got.as_slice(), how), (&b"hello!"[..], Closed::Eof));
}

#[test]
fn a_decoded_body_of_mostly_framing_is_not_closed_as_stalled() {
    // Decoding drops the framing: a backend sending a long chunk extension
    // makes ferry read much and deliver nothing for a while, which is work,
    // not a stall.
    let mut body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        body.extend_from_slice(format!("1;x={}\r\nz\r\n", "e".repeat(20 * MIB)).as_bytes());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let backend = HttpBackend::fixed(&body);
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_head().status(), 200);
    let (got, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
    assert_eq!(got, b"zz");
    assert_eq!(proxy.wait_idle().u("pairs_stalled"), 0);
}

#[test]
fn a_close_delimited_response_cut_by_a_backend_reset_reaches_the_client_as_a_reset() {
    // RFC 9112 section 8: a close-delimited body ended by a connection error
    // is incomplete. A FIN would pass the part delivered off as the whole
    // body; only a reset tells the client it was cut.
    let backend = HttpBackend::start(|p| {
        if p.read_request().is_some()
            && p.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            && p.write(&[b'x'; 1000])
        {
            thread::sleep(Duration::from_millis(300));
            p.set_reset_on_close();
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(10);
    c.send(&get("/cut"));
    let head = c.read_head();
    assert_eq!(head.status(), 200);
    let (rest, how) = c.read_until_closed();
    assert_eq!(
        how,
        Closed::Reset,
        "a cut close-delimited body ended with a clean close after {} bytes",
        rest.len()
    );
    assert!(rest.len() <= 1000, "{} body bytes", rest.len());
    proxy.wait_idle();
}
