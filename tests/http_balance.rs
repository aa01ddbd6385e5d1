//! HTTP mode, several backends: round-robin alternates, least-conn avoids
//! the busy backend, p2c uses both; a refusing backend is marked down
//! (passive) and traffic fails over; a backend that dies is avoided; with
//! every backend down the answer is 503; active HTTP health checks take a
//! failing backend out and bring it back after `--health-rise` passes.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Which backend answered, from a `HttpBackend::named` body.
fn who(r: &Response) -> String {
    String::from_utf8_lossy(&r.body)
        .split(' ')
        .next()
        .unwrap_or("")
        .to_string()
}

/// `n` requests, each on a new client connection; the answering backends.
fn spread(proxy: &Proxy, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut c = HttpConn::connect(proxy.addr);
            let r = c.roundtrip(&get(&format!("/{i}")));
            assert_eq!(
                r.status(),
                200,
                "request {i}: {:?}",
                String::from_utf8_lossy(&r.bytes())
            );
            who(&r)
        })
        .collect()
}

fn count(v: &[String], name: &str) -> usize {
    v.iter().filter(|s| *s == name).count()
}

#[test]
fn round_robin_alternates_between_two_backends() {
    let a = HttpBackend::named("A");
    let b = HttpBackend::named("B");
    let proxy = Proxy::http(&[a.addr, b.addr], &["-w", "1", "--balance", "round-robin"]);
    let got = spread(&proxy, 20);
    let (na, nb) = (count(&got, "A"), count(&got, "B"));
    assert!(
        (8..=12).contains(&na) && (8..=12).contains(&nb),
        "round-robin over 20 requests gave A {na}, B {nb}: {got:?}"
    );
    // Also on one keep-alive client connection, request by request.
    let mut c = HttpConn::connect(proxy.addr);
    let mut seen = Vec::new();
    for i in 0..10 {
        seen.push(who(&c.roundtrip(&get(&format!("/ka/{i}")))));
    }
    assert!(
        count(&seen, "A") >= 3 && count(&seen, "B") >= 3,
        "round-robin per request on a keep-alive connection: {seen:?}"
    );
}

#[test]
fn least_conn_and_p2c_use_both_backends() {
    for balance in ["least-conn", "p2c"] {
        let a = HttpBackend::named("A");
        let b = HttpBackend::named("B");
        let proxy = Proxy::http(&[a.addr, b.addr], &["-w", "1", "--balance", balance]);
        // Concurrent clients so that both have in-flight requests.
        let addr = proxy.addr;
        let ts: Vec<_> = (0..6)
            .map(|k| {
                thread::spawn(move || {
                    let mut names = Vec::new();
                    for i in 0..10 {
                        let mut c = HttpConn::connect(addr);
                        let r = c.roundtrip(&get(&format!("/{k}/{i}")));
                        assert_eq!(r.status(), 200);
                        names.push(who(&r));
                    }
                    names
                })
            })
            .collect();
        let got: Vec<String> = ts.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert_eq!(got.len(), 60);
        assert!(
            count(&got, "A") > 0 && count(&got, "B") > 0,
            "--balance {balance}: both backends must be used: A {}, B {}",
            count(&got, "A"),
            count(&got, "B")
        );
    }
}

#[test]
fn least_conn_sends_new_requests_away_from_the_busy_backend() {
    let release = Arc::new(AtomicBool::new(false));
    let mk = |name: &'static str| {
        let rel = release.clone();
        HttpBackend::serve(move |r| {
            if r.head.target() == "/slow" {
                let end = Instant::now() + DEADLINE;
                while !rel.load(Ordering::SeqCst) && Instant::now() < end {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            reply(ok(format!("{name} {}", r.head.target()).as_bytes()))
        })
    };
    let a = mk("A");
    let b = mk("B");
    let proxy = Proxy::http(
        &[a.addr, b.addr],
        &["-w", "1", "--balance", "least-conn", "--pool-size", "0"],
    );
    let mut slow = HttpConn::connect(proxy.addr);
    slow.send(&get("/slow"));
    let end = Instant::now() + DEADLINE;
    let busy = loop {
        if a.requests().iter().any(|r| r.head.target() == "/slow") {
            break "A";
        }
        if b.requests().iter().any(|r| r.head.target() == "/slow") {
            break "B";
        }
        assert!(Instant::now() < end, "the slow request reached no backend");
        thread::sleep(Duration::from_millis(5));
    };
    let got = spread(&proxy, 6);
    release.store(true, Ordering::SeqCst);
    assert!(
        got.iter().all(|n| n != busy),
        "least-conn sent requests to the backend busy with /slow ({busy}): {got:?}"
    );
    assert_eq!(slow.read_response(false).status(), 200);
}

#[test]
fn a_refusing_backend_is_marked_down_and_traffic_fails_over() {
    let good = HttpBackend::named("B");
    let dead = refusing_addr();
    let proxy = Proxy::http(&[dead, good.addr], &["-w", "1"]);
    let got = spread(&proxy, 10);
    assert_eq!(
        count(&got, "B"),
        10,
        "every request must reach the live backend: {got:?}"
    );
    // Counters may be updated when the pair closes, just after the client's
    // close: poll.
    let r = proxy.wait_report("http_responses_2xx == 10", DEADLINE, |r| {
        r.m("http_responses_2xx") == 10.0
    });
    assert!(
        r.u("backend_connect_failures") <= 3,
        "the refusing backend was tried {} times in 10 requests: it must be marked down",
        r.u("backend_connect_failures")
    );
}

#[test]
fn a_backend_that_dies_is_avoided_and_requests_still_succeed() {
    let a = HttpBackend::named("A");
    let mut b = HttpBackend::named("B");
    let proxy = Proxy::http(&[a.addr, b.addr], &["-w", "1"]);
    let got = spread(&proxy, 6);
    assert!(count(&got, "B") > 0, "B used before it dies: {got:?}");
    // B dies: its listener closes and its pooled connections are shut.
    b.kill();
    let got = spread(&proxy, 10);
    assert_eq!(
        count(&got, "A"),
        10,
        "after B died every request goes to A: {got:?}"
    );
}

#[test]
fn every_backend_down_gives_503() {
    let proxy = Proxy::http(&[refusing_addr(), refusing_addr()], &["-w", "1"]);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let mut c = HttpConn::connect(proxy.addr);
        c.timeout = Duration::from_secs(15);
        c.send(&get("/"));
        let r = c.read_response(false);
        let st = r.status();
        assert!(
            st == 502 || st == 503,
            "request {i}: with every backend refusing, expected 502 or 503, got {st}"
        );
        assert_answer(&r, st, &format!("request {i}"));
        let (_, how) = c.read_until_closed();
        assert_eq!(
            how,
            Closed::Eof,
            "request {i}: the {st} answer is followed by a clean close"
        );
        statuses.push(st);
        if st == 503 {
            break;
        }
    }
    assert_eq!(
        statuses.first(),
        Some(&502),
        "the first request, when every backend refuses, gets 502: {statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&503),
        "once every backend is marked down the answer is 503: {statuses:?}"
    );
    // Counters may be updated when the pair closes, just after the client's
    // close: poll.
    let n = statuses.len() as f64;
    proxy.wait_report(
        "http_answers counts each answer ferry made",
        DEADLINE,
        |r| r.m("http_answers") == n && r.m("connections_active") == 0.0,
    );
}

/// A backend serving `/health` with 200 or 500 (per `healthy`), counting
/// health checks, and `named` answers otherwise.
fn health_backend(
    name: &'static str,
    healthy: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
) -> HttpBackend {
    HttpBackend::serve(move |r| {
        if r.head.target() == "/health" {
            checks.fetch_add(1, Ordering::SeqCst);
            if healthy.load(Ordering::SeqCst) {
                reply(ok(b"healthy"))
            } else {
                reply(status_response(500, "Internal Server Error", b"sick"))
            }
        } else {
            reply(ok(format!("{name} {}", r.head.target()).as_bytes()))
        }
    })
}

fn wait_checks(checks: &AtomicUsize, at_least: usize, what: &str) {
    let end = Instant::now() + DEADLINE;
    while checks.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < end,
            "{what}: only {} health checks within {DEADLINE:?}",
            checks.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Backends A (its /health fails until `a_healthy` is set) and B (healthy)
/// behind one worker with http:/health checks every 0.2 s, plus `extra` flags.
/// Bind every backend field: a backend dropped stops serving.
struct HealthSetup {
    a: HttpBackend,
    _b: HttpBackend,
    a_healthy: Arc<AtomicBool>,
    a_checks: Arc<AtomicUsize>,
    b_checks: Arc<AtomicUsize>,
    proxy: Proxy,
}

fn failing_a_healthy_b(extra: &[&str]) -> HealthSetup {
    let a_healthy = Arc::new(AtomicBool::new(false));
    let a_checks = Arc::new(AtomicUsize::new(0));
    let b_checks = Arc::new(AtomicUsize::new(0));
    let a = health_backend("A", a_healthy.clone(), a_checks.clone());
    let b = health_backend("B", Arc::new(AtomicBool::new(true)), b_checks.clone());
    let mut args = vec![
        "-w",
        "1",
        "--health-check",
        "http:/health",
        "--health-interval",
        "0.2",
    ];
    args.extend_from_slice(extra);
    let proxy = Proxy::http(&[a.addr, b.addr], &args);
    HealthSetup {
        a,
        _b: b,
        a_healthy,
        a_checks,
        b_checks,
        proxy,
    }
}

#[test]
fn active_http_health_checks_take_a_failing_backend_out_and_bring_it_back() {
    let HealthSetup {
        a,
        _b,
        a_healthy,
        a_checks,
        b_checks,
        proxy,
    } = failing_a_healthy_b(&["--health-rise", "2", "--health-fall", "2"]);
    // Two failed checks take A down; wait for a third to be sure it counted.
    wait_checks(&a_checks, 3, "A failing");
    let got = spread(&proxy, 12);
    assert_eq!(
        count(&got, "B"),
        12,
        "a backend failing its health checks must get no traffic: {got:?}"
    );
    assert_eq!(
        a.count_requests_except("/health"),
        0,
        "A got traffic while down"
    );
    // A recovers: after `rise` passed checks it gets traffic again.
    let n = a_checks.load(Ordering::SeqCst);
    a_healthy.store(true, Ordering::SeqCst);
    wait_checks(&a_checks, n + 3, "A recovering");
    let end = Instant::now() + Duration::from_secs(15);
    let mut after = Vec::new();
    while count(&after, "A") == 0 {
        assert!(
            Instant::now() < end,
            "A never received traffic again after passing its health checks: {after:?}"
        );
        after.extend(spread(&proxy, 4));
    }
    assert!(b_checks.load(Ordering::SeqCst) >= 2, "B is checked too");
    let hc = a
        .requests()
        .into_iter()
        .find(|r| r.head.target() == "/health")
        .unwrap();
    assert_eq!(
        hc.head.method(),
        "GET",
        "health check request: {}",
        hc.head.text()
    );
}

#[test]
fn a_backend_that_starts_refusing_is_taken_out_by_tcp_health_checks() {
    // Active tcp checks (the default kind) at a short interval: after B
    // dies, requests keep succeeding on A.
    let a = HttpBackend::named("A");
    let mut b = HttpBackend::named("B");
    let proxy = Proxy::http(
        &[a.addr, b.addr],
        &[
            "-w",
            "1",
            "--health-interval",
            "0.2",
            "--health-fall",
            "1",
            "--pool-size",
            "0",
        ],
    );
    assert!(count(&spread(&proxy, 4), "B") > 0);
    b.kill();
    thread::sleep(Duration::from_millis(600));
    let before = proxy.report().u("backend_connect_failures");
    let got = spread(&proxy, 8);
    assert_eq!(count(&got, "A"), 8, "{got:?}");
    // Counters may be updated when a pair closes: wait for all to close.
    let after = proxy
        .wait_report("every pair closed", DEADLINE, |r| {
            r.m("connections_active") == 0.0
        })
        .u("backend_connect_failures");
    assert_eq!(
        after, before,
        "a backend the checks found down must not be tried by requests"
    );
}

#[test]
fn least_conn_counts_requests_in_flight_not_idle_pooled_connections() {
    let HealthSetup {
        a: _a,
        _b,
        a_healthy,
        a_checks,
        proxy,
        ..
    } = failing_a_healthy_b(&[
        "--balance",
        "least-conn",
        "--health-rise",
        "1",
        "--health-fall",
        "1",
    ]);
    wait_checks(&a_checks, 2, "A failing");
    // Five requests at once, all to B (A is down): B ends with five idle
    // pooled connections.
    let mut clients: Vec<HttpConn> = (0..5).map(|_| HttpConn::connect(proxy.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&get(&format!("/warm{i}")));
    }
    for c in clients.iter_mut() {
        assert_eq!(c.read_response(false).status(), 200);
    }
    drop(clients);
    let n = a_checks.load(Ordering::SeqCst);
    a_healthy.store(true, Ordering::SeqCst);
    wait_checks(&a_checks, n + 2, "A recovering");
    // Nothing is in flight now: idle pooled connections are no load, so the
    // two backends share the next requests instead of A taking them all.
    let got = spread(&proxy, 10);
    assert!(
        count(&got, "B") >= 3 && count(&got, "A") >= 3,
        "least-conn must not count B's idle pooled connections as load: {got:?}"
    );
}
