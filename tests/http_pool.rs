//! HTTP mode, the backend connection pool: connections reused across
//! requests and across clients, counted in the report; pooled connections
//! the backend closes are evicted; idle ones are closed after
//! `--pool-idle-timeout` (and a connection kept with its client is not used
//! past it);
//! `--pool-size 0` keeps none; `--pool-max-requests`
//! bounds the requests per connection; a stale pooled connection is retried
//! on a fresh one for a GET and never for a POST with a body.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

#[test]
fn backend_connections_are_reused_across_requests_and_clients() {
    let backend = HttpBackend::named("A");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    // 5 concurrent clients, 10 sequential keep-alive requests each.
    let addr = proxy.addr;
    let clients: Vec<_> = (0..5)
        .map(|k| {
            thread::spawn(move || {
                let mut c = HttpConn::connect(addr);
                for i in 0..10 {
                    let path = format!("/c{k}/r{i}");
                    let r = c.roundtrip(&get(&path));
                    assert_eq!(r.body, format!("A {path}").as_bytes());
                }
            })
        })
        .collect();
    for t in clients {
        t.join().unwrap();
    }
    let conns = backend.request_conns();
    assert!(
        conns <= 7,
        "50 keep-alive requests from 5 clients used {conns} backend connections (expected <= 7)"
    );
    // 20 clients one after another, one request each: the pool carries the
    // backend connection from client to client.
    let before = backend.request_conns();
    for i in 0..20 {
        let mut c = HttpConn::connect(proxy.addr);
        let r = c.roundtrip(&get(&format!("/seq/{i}")));
        assert_eq!(r.status(), 200);
        drop(c);
        proxy.wait_report("client gone", DEADLINE, |r| {
            r.m("connections_active") == 0.0
        });
    }
    let new_conns = backend.request_conns() - before;
    assert!(
        new_conns <= 2,
        "20 sequential clients opened {new_conns} new backend connections: the pool was not used"
    );
    let r = proxy.report();
    assert_eq!(r.u("http_requests"), 70, "http_requests");
    assert_eq!(r.u("http_responses_2xx"), 70, "http_responses_2xx");
    assert!(
        r.u("backend_pool_hits") >= 15,
        "backend_pool_hits {} after 20 sequential clients on a pooled connection",
        r.u("backend_pool_hits")
    );
    assert!(
        r.u("backend_pool_misses") <= backend.request_conns() as u64 + 1,
        "backend_pool_misses {} but only {} backend connections carried requests",
        r.u("backend_pool_misses"),
        backend.request_conns()
    );
    assert!(
        r.u("backend_connections") >= 1,
        "the idle pooled connection is counted in backend_connections"
    );
}

#[test]
fn a_pooled_connection_closed_by_the_backend_is_evicted() {
    // The backend answers with keep-alive, then closes the idle connection.
    let backend = HttpBackend::start(|p| {
        if let Some(_r) = p.read_request() {
            if p.write(&ok(b"once")) {
                thread::sleep(Duration::from_millis(100));
                let _ = p.conn.s.shutdown(std::net::Shutdown::Both);
            }
        }
    });
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/")).body, b"once");
    drop(c);
    let r = proxy.wait_report(
        "backend_pool_evictions >= 1 and backend_connections == 0",
        DEADLINE,
        |r| r.m("backend_pool_evictions") >= 1.0 && r.m("backend_connections") == 0.0,
    );
    assert_eq!(r.u("backend_retries"), 0, "an idle eviction is not a retry");
    // The next request works on a fresh connection.
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/")).body, b"once");
    assert_eq!(backend.request_conns(), 2);
}

#[test]
fn pool_idle_timeout_closes_idle_backend_connections() {
    let backend = HttpBackend::named("A");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--pool-idle-timeout", "0.5"]);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/")).body, b"A /");
    drop(c);
    // The default is 4 s: an EOF within 3 s comes from the 0.5 s setting.
    backend.wait_until(
        "EOF on the pooled connection within 3 s",
        Duration::from_secs(3),
        |b| b.closed_request_conns() >= 1,
    );
    proxy.wait_report("backend_connections == 0", DEADLINE, |r| {
        r.m("backend_connections") == 0.0
    });
}

#[test]
fn pool_size_zero_keeps_no_idle_connection() {
    let backend = HttpBackend::named("A");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--pool-size", "0"]);
    for _ in 0..3 {
        let mut c = HttpConn::connect(proxy.addr);
        assert_eq!(c.roundtrip(&get("/")).body, b"A /");
        drop(c);
        proxy.wait_report("backend_connections == 0", DEADLINE, |r| {
            r.m("connections_active") == 0.0 && r.m("backend_connections") == 0.0
        });
    }
    assert_eq!(
        backend.request_conns(),
        3,
        "no backend connection reused with --pool-size 0"
    );
    // Nor kept with a keep-alive client between its requests.
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..3 {
        assert_eq!(
            c.roundtrip(&get(&format!("/k{i}"))).body,
            format!("A /k{i}").as_bytes()
        );
    }
    assert_eq!(
        backend.request_conns(),
        6,
        "a keep-alive client's requests each need a new backend connection with --pool-size 0"
    );
    assert_eq!(proxy.report().u("backend_pool_hits"), 0);
}

#[test]
fn pool_max_requests_bounds_the_requests_per_backend_connection() {
    let backend = HttpBackend::named("A");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--pool-max-requests", "3"]);
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..7 {
        let r = c.roundtrip(&get(&format!("/{i}")));
        assert_eq!(r.status(), 200, "request {i}");
    }
    let reqs = backend.requests();
    let max_seq = reqs.iter().map(|r| r.seq).max().unwrap();
    assert!(
        max_seq < 3,
        "a backend connection carried {} requests with --pool-max-requests 3",
        max_seq + 1
    );
    assert!(backend.request_conns() >= 3);
}

/// A backend whose first request-carrying connection answers one request
/// with keep-alive (so ferry pools it), then takes the next request on it
/// and drops the connection without answering (FIN, or RST if `reset`).
/// Every later connection serves normally.
fn stale_backend(reset: bool) -> HttpBackend {
    let first = Arc::new(AtomicBool::new(true));
    HttpBackend::start(move |p| {
        let fresh = |r: &Recv| {
            let body = format!(
                "fresh {} [{}]",
                r.head.target(),
                String::from_utf8_lossy(&r.body)
            );
            reply(ok(body.as_bytes()))
        };
        let Some(r) = p.read_request() else { return };
        if !first.swap(false, Ordering::SeqCst) {
            if p.write(&fresh(&r).bytes) {
                serve_loop(p, &fresh);
            }
            return;
        }
        if p.write(&ok(b"first")) && p.read_request().is_some() {
            if reset {
                p.set_reset_on_close();
            } else {
                let _ = p.conn.s.shutdown(std::net::Shutdown::Both);
            }
        }
    })
}

/// Make one request so that ferry pools the backend connection.
fn prime(proxy: &Proxy) {
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/prime")).body, b"first");
    drop(c);
    proxy.wait_report("one pooled backend connection", DEADLINE, |r| {
        r.m("connections_active") == 0.0 && r.m("backend_connections") == 1.0
    });
}

#[test]
fn a_get_on_a_stale_pooled_connection_is_retried_on_a_fresh_one() {
    for reset in [false, true] {
        let what = if reset {
            "backend resets"
        } else {
            "backend closes"
        };
        let backend = stale_backend(reset);
        let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
        prime(&proxy);
        let mut c = HttpConn::connect(proxy.addr);
        let r = c.roundtrip(&get("/retry-me"));
        assert_eq!(
            r.status(),
            200,
            "{what}: the GET must be retried: {:?}",
            String::from_utf8_lossy(&r.bytes())
        );
        assert_eq!(r.body, b"fresh /retry-me []", "{what}");
        drop(c);
        proxy.wait_report(&format!("{what}: backend_retries >= 1"), DEADLINE, |r| {
            r.m("backend_retries") >= 1.0
        });
        let seen: Vec<_> = backend
            .requests()
            .iter()
            .map(|r| (r.conn, r.head.target().to_string()))
            .collect();
        assert_eq!(seen.len(), 3, "{what}: requests seen {seen:?}");
        assert_ne!(
            seen[1].0, seen[2].0,
            "{what}: the retry used a fresh connection: {seen:?}"
        );
    }
}

#[test]
fn a_post_with_a_body_on_a_stale_pooled_connection_is_not_retried() {
    let backend = stale_backend(false);
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    prime(&proxy);
    let before = proxy.report().u("backend_retries");
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&post("/once", b"payload"));
    expect_answer_and_close(&mut c, 502, "POST on a stale pooled connection");
    drop(c);
    // Counters may be updated when the pair closes: wait for it.
    let rep = proxy.wait_report("every pair closed", DEADLINE, |r| {
        r.m("connections_active") == 0.0
    });
    assert_eq!(
        rep.u("backend_retries"),
        before,
        "a POST must not be retried"
    );
    let posts = backend
        .requests()
        .iter()
        .filter(|r| r.head.method() == "POST")
        .count();
    assert_eq!(posts, 1, "the backend must see the POST exactly once");
}

/// TIME_WAIT sockets on this host whose remote port is `port` (/proc/net/tcp).
fn time_wait_towards(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "06"
                && cols[2]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

#[test]
fn connections_retired_at_pool_max_requests_leave_no_time_wait() {
    let backend = HttpBackend::named("A");
    let port = backend.addr.port();
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--pool-max-requests", "1"]);
    let before = time_wait_towards(port);
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..20 {
        assert_eq!(
            c.roundtrip(&get(&format!("/{i}"))).body,
            format!("A /{i}").as_bytes()
        );
    }
    assert!(
        backend.request_conns() >= 20,
        "each request used its own backend connection"
    );
    // Every connection was retired idle after its one request: closed with a
    // reset, so none of them holds a local port in TIME_WAIT. (The health
    // checker's probes close normally; allow the one or two it may make.)
    let after = time_wait_towards(port);
    assert!(
        after <= before + 2,
        "retired backend connections must not linger in TIME_WAIT: {before} before, {after} after 20"
    );
}

/// A connection kept with its client because the pool was full ages like a
/// pooled one: after `--pool-idle-timeout` the client's next request goes on
/// a fresh connection, never into one the backend may be closing (Apache
/// closes idle keep-alive connections after 5 s, and a POST sent into that
/// close cannot be retried).
#[test]
fn a_connection_kept_with_its_client_is_not_used_after_the_pool_idle_timeout() {
    let backend = HttpBackend::serve(|r| {
        if r.head.target() == "/slow" {
            thread::sleep(Duration::from_millis(300));
        }
        reply(ok(format!("A {}", r.head.target()).as_bytes()))
    });
    let proxy = Proxy::http(
        &[backend.addr],
        &["-w", "1", "--pool-size", "1", "--pool-idle-timeout", "0.5"],
    );
    // c2's slow request holds connection 1 while c1's fast one opens
    // connection 2, which goes to the pool; when connection 1 is released
    // the pool is full, so it stays with c2.
    let mut c2 = HttpConn::connect(proxy.addr);
    c2.send(&get("/slow"));
    backend.wait_requests(1, DEADLINE);
    let mut c1 = HttpConn::connect(proxy.addr);
    assert_eq!(c1.roundtrip(&get("/fast")).body, b"A /fast");
    assert_eq!(c2.read_response(false).body, b"A /slow");
    assert_eq!(backend.request_conns(), 2);
    // Soon after, c2's kept connection serves its next request.
    assert_eq!(c2.roundtrip(&get("/soon")).body, b"A /soon");
    assert_eq!(
        backend.request_conns(),
        2,
        "the kept connection was not used"
    );
    // Past the pool idle timeout it is not used: a fresh connection is.
    thread::sleep(Duration::from_millis(900));
    assert_eq!(c2.roundtrip(&get("/late")).body, b"A /late");
    let late = backend.requests().last().map(|r| r.conn);
    let slow = backend
        .requests()
        .iter()
        .find(|r| r.head.target() == "/slow")
        .map(|r| r.conn);
    assert_ne!(
        late, slow,
        "a request went on a connection kept past the pool idle timeout"
    );
    assert_eq!(backend.request_conns(), 3);
    drop((c1, c2));
    proxy.wait_idle();
}
