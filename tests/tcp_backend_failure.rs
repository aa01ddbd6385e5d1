//! A backend that refuses or never answers: the client is closed (not left
//! hanging), the failure is counted, and the pair's resources come back.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn refused_backend_closes_the_client_and_counts_a_connect_failure() {
    let refusing = refusing_addr();
    // A long connect timeout: the close must come from the refusal, not a timer.
    let proxy = Proxy::tcp(
        refusing,
        &["-w", "1", "--max-conns", "16", "--connect-timeout", "60"],
    );
    for i in 0..3 {
        let mut s = connect(proxy.addr);
        let _ = s.write_all(b"hello");
        let how = expect_closed(&mut s, Duration::from_secs(10));
        eprintln!("client {i} saw {how:?}");
    }
    let r = proxy.wait_report("backend_connect_failures == 3", DEADLINE, |r| {
        r.m("backend_connect_failures") >= 3.0 && r.m("connections_active") == 0.0
    });
    assert_eq!(r.u("backend_connect_failures"), 3, "one failure per client");
    assert_eq!(
        r.u("backend_connect_timeouts"),
        0,
        "a refusal is not a timeout"
    );
    assert_eq!(r.u("bytes_backend_to_client"), 0);
    proxy.wait_idle();
}

#[test]
fn connect_timeout_closes_the_client_and_counts_a_timeout() {
    let hole = black_hole();
    let proxy = Proxy::tcp(
        hole.addr,
        &["-w", "1", "--max-conns", "16", "--connect-timeout", "1"],
    );
    let mut s = connect(proxy.addr);
    let _ = s.write_all(b"hello");
    let t0 = Instant::now();
    let how = expect_closed(&mut s, Duration::from_secs(10));
    let waited = t0.elapsed();
    eprintln!("client saw {how:?} after {waited:?}");
    // The backend never answers, so nothing but the 1 s timer can close it.
    assert!(
        waited >= Duration::from_millis(500),
        "client closed after {waited:?}, before the 1 s connect timeout could fire"
    );
    let r = proxy.wait_report("backend_connect_timeouts == 1", DEADLINE, |r| {
        r.m("backend_connect_timeouts") >= 1.0 && r.m("connections_active") == 0.0
    });
    assert_eq!(r.u("backend_connect_timeouts"), 1);
    proxy.wait_idle();
}
