//! `max_conns_per_client` (`--max-conns-per-client`): one client address
//! may hold that many connections at once through a listener, counted
//! across all workers; one more is reset (TCP) or answered 429 (HTTP), is
//! counted, and the room comes back as connections close.

mod common;

use common::files::TempDir;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn echo(s: &mut TcpStream, what: &[u8]) {
    s.write_all(what).unwrap();
    assert_eq!(read_exact_with_deadline(s, what.len(), DEADLINE), what);
}

/// Wait until the proxy reports `n` open client connections.
fn wait_active(proxy: &Proxy, n: u64) {
    let end = Instant::now() + DEADLINE;
    while proxy.report().u("connections_active") != n {
        assert!(Instant::now() < end, "connections_active never reached {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tcp_a_client_over_its_limit_is_reset_across_all_workers() {
    let backend = Backend::echo();
    // Two workers: the kernel spreads one client's connections over both,
    // and the limit holds for the process, not per worker.
    let proxy = Proxy::tcp(backend.addr, &["-w", "2", "--max-conns-per-client", "3"]);
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(proxy.addr)).collect();
    for (i, s) in open.iter_mut().enumerate() {
        echo(s, format!("conn {i}").as_bytes());
    }
    for i in 0..6 {
        // The handshake completes in the kernel before ferry accepts and
        // resets. Only read: a write that met the reset would consume its
        // error, and the read after it would see a plain end of stream.
        let mut extra = TcpStream::connect(proxy.addr).unwrap();
        assert_eq!(
            expect_closed(&mut extra, DEADLINE),
            Closed::Reset,
            "extra connection {i}"
        );
    }
    assert_eq!(
        backend.accepted(),
        3,
        "a refused client reached the backend"
    );
    // The three still work; one closing makes room for one more.
    for (i, s) in open.iter_mut().enumerate() {
        echo(s, format!("still {i}").as_bytes());
    }
    drop(open.pop());
    wait_active(&proxy, 2);
    let mut again = connect(proxy.addr);
    echo(&mut again, b"room again");
    let report = proxy.report();
    assert_eq!(report.u("connections_refused_client_limit"), 6);
    drop(open);
    drop(again);
    // Refused connections are counted as such, not as accepted ones.
    let report = proxy.wait_idle();
    assert_eq!(report.u("connections_accepted"), 4);
}

#[test]
fn http_a_client_over_its_limit_is_answered_429_and_the_others_go_on() {
    let backend = HttpBackend::named("a");
    let proxy = Proxy::http(&[backend.addr], &["-w", "2", "--max-conns-per-client", "2"]);
    let mut kept: Vec<HttpConn> = (0..2).map(|_| HttpConn::connect(proxy.addr)).collect();
    for (i, c) in kept.iter_mut().enumerate() {
        assert_eq!(c.roundtrip(&get(&format!("/{i}"))).status(), 200);
    }
    let mut over = HttpConn::connect(proxy.addr);
    over.send(&get("/over"));
    let head = over.read_head();
    assert_eq!(head.status(), 429, "{}", head.text());
    assert!(head.lists("connection", "close"), "{}", head.text());
    let (rest, how) = over.read_until_closed();
    assert_eq!(how, Closed::Eof, "the 429 must be read, not reset");
    assert_eq!(rest, b"429 Too Many Requests\n");
    // Keep-alive goes on for the two within the limit.
    for (i, c) in kept.iter_mut().enumerate() {
        assert_eq!(
            c.roundtrip(&get(&format!("/again{i}"))).body,
            format!("a /again{i}").as_bytes()
        );
    }
    drop(kept.pop());
    wait_active(&proxy, 1);
    let mut next = HttpConn::connect(proxy.addr);
    assert_eq!(next.roundtrip(&get("/next")).status(), 200);
    drop(kept);
    drop(next);
    // Every close gives its room back: one after another, twenty clients
    // each find room for two connections.
    for i in 0..20 {
        wait_active(&proxy, 0);
        let mut a = HttpConn::connect(proxy.addr);
        let mut b = HttpConn::connect(proxy.addr);
        assert_eq!(
            a.roundtrip(&get(&format!("/a{i}"))).status(),
            200,
            "round {i}"
        );
        assert_eq!(
            b.roundtrip(&get(&format!("/b{i}"))).status(),
            200,
            "round {i}"
        );
    }
    let report = proxy.wait_idle();
    assert_eq!(report.u("connections_refused_client_limit"), 1);
    assert_eq!(report.u("http_responses_4xx"), 1);
    assert_eq!(report.u("http_answers"), 1);
}

#[test]
fn a_limit_of_zero_is_refused_naming_the_key_and_the_flag() {
    let (status, _, err) = run_cli(&["--max-conns-per-client", "0", "-p", "0"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--max-conns-per-client: 0 is not between 1 and"),
        "{err}"
    );
    let dir = TempDir::new("client-limit");
    let file = dir.write(
        "zero.toml",
        "[[listener]]\nlisten = \"127.0.0.1:0\"\nmax_conns_per_client = 0\n",
    );
    let (status, _, err) = run_cli(&["-c", &file, "--check"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{file}:3:24: max_conns_per_client: 0 is not between 1 and"
        )),
        "{err}"
    );
}
