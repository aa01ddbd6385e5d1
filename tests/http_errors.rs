//! HTTP mode, the answers ferry makes itself and the resources it releases:
//! 414 and 431 at the head limits, 408 for a slowloris (the header timeout
//! is not reset by trickling bytes), 502 when the backend refuses, 504 when
//! it never answers; each a complete response with Content-Length and
//! `Connection: close`, read in full by the client (no reset). A client that
//! aborts mid-response releases everything: slab, buffers, pipes and
//! descriptors return to their baseline.

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn a_request_line_longer_than_max_header_size_gets_414() {
    let backend = HttpBackend::fixed(&ok(b"no"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--max-header-size", "1024"]);
    let mut c = HttpConn::connect(proxy.addr);
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
    // The client may still be writing when ferry answers: write from a
    // thread and ignore a write error after the answer.
    let mut w = c.s.try_clone().unwrap();
    let t = thread::spawn(move || {
        let _ = w.write_all(long.as_bytes());
    });
    expect_answer_and_close(
        &mut c,
        414,
        "2000-byte request line, --max-header-size 1024",
    );
    t.join().unwrap();
    assert!(backend.requests().is_empty(), "nothing may be forwarded");
    // Just under the limit works.
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "b".repeat(900)).as_bytes());
    assert_eq!(r.status(), 200, "a 900-byte request line is within 1024");
}

#[test]
fn a_head_larger_than_max_header_size_gets_431() {
    let backend = HttpBackend::fixed(&ok(b"no"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--max-header-size", "1024"]);
    let mut c = HttpConn::connect(proxy.addr);
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..30 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(60)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let mut w = c.s.try_clone().unwrap();
    let t = thread::spawn(move || {
        let _ = w.write_all(&req);
    });
    expect_answer_and_close(&mut c, 431, "a 2.4 KB head with --max-header-size 1024");
    t.join().unwrap();
    assert!(backend.requests().is_empty(), "nothing may be forwarded");
}

#[test]
fn more_fields_than_max_headers_gets_431() {
    let backend = HttpBackend::fixed(&ok(b"fine"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--max-headers", "10"]);
    let req = |fields: usize| {
        let mut v = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..fields {
            v.extend_from_slice(format!("X-F{i}: {i}\r\n").as_bytes());
        }
        v.extend_from_slice(b"\r\n");
        v
    };
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&req(10));
    assert_eq!(
        r.status(),
        200,
        "10 fields with --max-headers 10 are allowed"
    );
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&req(11));
    expect_answer_and_close(&mut c, 431, "11 fields with --max-headers 10");
    assert_eq!(
        backend.requests().len(),
        1,
        "the 11-field request must not be forwarded"
    );
}

#[test]
fn a_slowloris_client_gets_408_after_the_header_timeout() {
    let backend = HttpBackend::fixed(&ok(b"no"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--header-timeout", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(10);
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = c.s.try_clone().unwrap();
    let st = stop.clone();
    let t0 = Instant::now();
    let trickle = thread::spawn(move || {
        let bytes = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in bytes.iter() {
            if st.load(Ordering::SeqCst) || w.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let r = c.read_response(false);
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    assert_answer(&r, 408, "slowloris");
    assert!(
        took >= Duration::from_millis(900),
        "408 after {took:?}, before the 1 s header timeout"
    );
    assert!(
        took <= Duration::from_secs(3),
        "408 only after {took:?}: the header timeout (1 s) must not be reset by trickling bytes"
    );
    let (_rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof, "the 408 is followed by a clean close");
    trickle.join().unwrap();
    assert!(backend.requests().is_empty(), "nothing may be forwarded");
}

#[test]
fn a_refusing_backend_gets_502() {
    let proxy = Proxy::http(&[refusing_addr()], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&get("/"));
    expect_answer_and_close(&mut c, 502, "the only backend refuses");
}

#[test]
fn a_backend_that_never_answers_gets_504_after_the_backend_timeout() {
    let backend = HttpBackend::serve(|_| reply_then(Vec::new(), Then::Hang));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--backend-timeout", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(15);
    let t0 = Instant::now();
    c.send(&get("/"));
    expect_answer_and_close(&mut c, 504, "--backend-timeout 1, backend silent");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "504 after {:?}, before the 1 s backend timeout",
        t0.elapsed()
    );
    backend.wait_until(
        "ferry closed the silent backend connection",
        DEADLINE,
        |b| b.closed_request_conns() >= 1,
    );
    proxy.wait_idle();
}

#[test]
fn a_backend_silent_after_a_100_continue_gets_504_after_the_backend_timeout() {
    // The interim response is not the answer: the backend timeout still
    // runs until the final head, rather than the (here 300 s) idle timeout.
    let backend =
        HttpBackend::serve(|_| reply_then(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(), Then::Hang));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--backend-timeout", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    c.timeout = Duration::from_secs(15);
    let t0 = Instant::now();
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi");
    let interim = c.read_head();
    assert_eq!(interim.status(), 100, "{}", interim.text());
    expect_answer_and_close(&mut c, 504, "--backend-timeout 1, backend silent after 100");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "504 after {:?}, before the 1 s backend timeout",
        t0.elapsed()
    );
    let report = proxy.wait_idle();
    assert_eq!(
        (
            report.u("http_responses_1xx"),
            report.u("http_responses_5xx")
        ),
        (1, 1)
    );
}

#[test]
fn a_client_that_aborts_mid_response_releases_the_backend_connection() {
    for splice in ["on", "off"] {
        let total = 16 * MIB;
        let backend = HttpBackend::start(move |p| {
            if p.read_request().is_none() {
                return;
            }
            let mut head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").into_bytes();
            head.extend_from_slice(&payload(64 * KIB, 1));
            if !p.write(&head) {
                return;
            }
            let chunk = payload(256 * KIB, 2);
            let mut sent = 64 * KIB;
            while sent < total {
                if !p.write(&chunk) {
                    break;
                }
                sent += chunk.len();
            }
            p.wait_eof();
        });
        let proxy = Proxy::http(
            &[backend.addr],
            &[
                "-w",
                "1",
                "--pool-size",
                "0",
                "--splice",
                splice,
                "--health-interval",
                "60",
            ],
        );
        let baseline = settled_fd_kinds(&proxy);
        let mut c = HttpConn::new(connect_small_rcvbuf(proxy.addr, 64 * KIB));
        c.send(&get("/big"));
        let head = c.read_head();
        assert_eq!(head.status(), 200);
        let _ = c.read_exact(32 * KIB);
        // Abort: close with unread data (the kernel sends an RST).
        let _ = c.s.shutdown(Shutdown::Both);
        drop(c);
        let what = format!("--splice {splice}");
        proxy.wait_idle();
        backend.wait_until(
            &format!("{what}: the backend connection closed"),
            DEADLINE,
            |b| b.closed_request_conns() >= 1,
        );
        proxy.wait_report(
            &format!("{what}: backend_connections == 0"),
            DEADLINE,
            |r| r.m("backend_connections") == 0.0,
        );
        proxy.wait_fds_back_to(baseline, 2 * 64);
        let r = proxy.report();
        assert_eq!(r.u("connections_active"), 0, "{what}");
    }
}

/// The proxy's descriptors once they hold still: the health check ferry
/// makes at start opens a short-lived socket that must not be counted in a
/// baseline (the tests run with a long --health-interval, so no other).
fn settled_fd_kinds(proxy: &Proxy) -> FdKinds {
    let end = Instant::now() + DEADLINE;
    let mut last = proxy.fd_kinds();
    let mut same = 0;
    while same < 5 {
        thread::sleep(Duration::from_millis(40));
        let now = proxy.fd_kinds();
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
        assert!(
            Instant::now() < end,
            "the proxy's descriptors never settled"
        );
    }
    last
}

/// Wait until the proxy's descriptors equal `baseline` (taken with
/// `base_backend` backend connections open, all pooled and idle) adjusted by
/// the backend connections the report shows now: sockets match exactly,
/// other descriptors too, pipes at most 64 pooled pairs more.
fn wait_fds_back_to_pooled(proxy: &Proxy, baseline: FdKinds, base_backend: usize) {
    let end = Instant::now() + DEADLINE;
    loop {
        let backend_now = proxy.report().u("backend_connections") as usize;
        let now = proxy.fd_kinds();
        let want_sockets = baseline.sockets - base_backend + backend_now;
        if now.sockets == want_sockets
            && now.other == baseline.other
            && now.pipes <= baseline.pipes + 128
        {
            return;
        }
        assert!(
            Instant::now() < end,
            "descriptors did not return to baseline: now {now:?}, baseline {baseline:?} \
             with {base_backend} backend connections, {backend_now} now (want {want_sockets} sockets)"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_aborts_with_pooling_on_leaves_at_most_pooled_connections() {
    // With pooling on, the aborted exchange's backend connection cannot be
    // reused (its response was not complete): it is closed, and the
    // descriptors return to baseline plus the pooled idle connections.
    let total = 8 * MIB;
    let backend = HttpBackend::start(move |p| {
        while let Some(r) = p.read_request() {
            let body = if r.head.target() == "/big" {
                payload(total, 4)
            } else {
                b"small".to_vec()
            };
            let mut out =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            out.extend_from_slice(&body);
            if !p.write(&out) {
                p.wait_eof();
                return;
            }
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--health-interval", "60"]);
    // One small exchange first so a pooled connection exists in the baseline.
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/small")).body, b"small");
    drop(c);
    let base_report = proxy.wait_report("one pooled connection", DEADLINE, |r| {
        r.m("connections_active") == 0.0 && r.m("backend_connections") == 1.0
    });
    let baseline = settled_fd_kinds(&proxy);
    let mut c = HttpConn::new(connect_small_rcvbuf(proxy.addr, 64 * KIB));
    c.send(&get("/big"));
    assert_eq!(c.read_head().status(), 200);
    let _ = c.read_exact(16 * KIB);
    let _ = c.s.shutdown(Shutdown::Both);
    drop(c);
    proxy.wait_idle();
    let r = proxy.wait_report(
        "backend_connections back to the pooled one",
        DEADLINE,
        |r| r.m("backend_connections") <= base_report.m("backend_connections"),
    );
    assert_eq!(r.u("buffers_in_use"), 0);
    wait_fds_back_to_pooled(
        &proxy,
        baseline,
        base_report.u("backend_connections") as usize,
    );
    // The pooled connection still serves.
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/small")).body, b"small");
}
