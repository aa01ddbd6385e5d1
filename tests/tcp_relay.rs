//! TCP relay: bytes go through the proxy unchanged in both directions, for
//! every size and every splice mode, and a proxy that has relayed returns its
//! slab, buffer pool, pipe pool and file descriptors to where they started.

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::thread;

const SIZES: &[usize] = &[0, 1, KIB, 64 * KIB, MIB, 64 * MIB];

fn sizes() -> Vec<usize> {
    SIZES
        .iter()
        .map(|&n| if n >= 64 * MIB { big(n) } else { n })
        .collect()
}

/// Wait until the proxy is back to no pairs, empty pools, exactly its start
/// sockets, and at most `pooled_pipes` pipes kept in its pipe pool.
fn assert_back_to_baseline(proxy: &Proxy, baseline: FdKinds, pooled_pipes: usize) {
    proxy.wait_idle();
    proxy.wait_fds_back_to(baseline, 2 * pooled_pipes);
}

#[test]
fn echo_round_trip_returns_the_same_bytes() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--max-conns", "64"]);
    let baseline = proxy.fd_kinds();
    let mut s = connect(proxy.addr);
    // A conversation: several request/answer turns on one connection.
    for (i, n) in [5usize, 100, 4096, 100_000].into_iter().enumerate() {
        let data = payload(n, 100 + i as u64);
        s.write_all(&data).unwrap();
        let back = read_exact_with_deadline(&mut s, n, DEADLINE);
        assert!(back == data, "turn {i}: echo of {n} bytes differs");
    }
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_end_with_deadline(&mut s, DEADLINE);
    assert!(
        rest.is_empty(),
        "{} unexpected bytes after the echo",
        rest.len()
    );
    drop(s);
    assert_back_to_baseline(&proxy, baseline, 2);
    assert_eq!(
        backend.accepted(),
        1,
        "one client connection must make one backend connection"
    );
}

/// Client -> backend: the backend hashes what it received and answers the digest.
fn upload_all_sizes(mode: &str) {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "64", "--splice", mode],
    );
    let baseline = proxy.fd_kinds();
    let mut total = 0u64;
    for (i, &n) in sizes().iter().enumerate() {
        let seed = 1000 + i as u64;
        let mut s = connect(proxy.addr);
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            w.write_all(&header(b'H', 0, 0)).unwrap();
            write_stream(&mut w, n, seed).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let reply = read_to_end_with_deadline(&mut s, DEADLINE * 2);
        writer.join().unwrap();
        assert_eq!(
            reply.len(),
            16,
            "--splice {mode}, {n} bytes up: reply must be a 16-byte digest"
        );
        assert_eq!(
            Digest::from_bytes(&reply),
            digest_of_stream(n, seed),
            "--splice {mode}: the backend did not receive the {n} bytes the client sent"
        );
        total += (HEADER_LEN + n) as u64;
    }
    assert_relayed(&proxy, baseline, mode, "client_to_backend", total);
}

/// Backend -> client: the backend streams n bytes, the client compares each byte.
fn download_all_sizes(mode: &str) {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "64", "--splice", mode],
    );
    let baseline = proxy.fd_kinds();
    let mut total = 0u64;
    for (i, &n) in sizes().iter().enumerate() {
        let seed = 2000 + i as u64;
        let mut s = connect(proxy.addr);
        s.write_all(&header(b'S', n as u64, seed)).unwrap();
        let got = read_stream_verify(&mut s, seed, DEADLINE * 2);
        assert_eq!(
            got, n,
            "--splice {mode}: client received {got} of {n} bytes"
        );
        total += n as u64;
    }
    assert_relayed(&proxy, baseline, mode, "backend_to_client", total);
}

/// Once idle, the report counts exactly `total` bytes in `direction`, splice
/// was used as `mode` says, and the proxy is back to its baseline.
fn assert_relayed(proxy: &Proxy, baseline: FdKinds, mode: &str, direction: &str, total: u64) {
    let r = proxy.wait_idle();
    assert_eq!(
        r.u(&format!("bytes_{direction}")),
        total,
        "--splice {mode}: bytes_{direction}"
    );
    let spliced = r.u(&format!("bytes_spliced_{direction}"));
    assert!(
        spliced <= total,
        "spliced bytes {spliced} exceed relayed bytes {total}"
    );
    match mode {
        "on" => assert!(
            spliced > 0,
            "--splice on relayed {total} bytes without splicing any"
        ),
        "off" => assert_eq!(spliced, 0, "--splice off must not splice"),
        _ => {}
    }
    assert_back_to_baseline(proxy, baseline, if mode == "off" { 0 } else { 2 });
}

#[test]
fn upload_of_every_size_arrives_whole_with_splice_on() {
    upload_all_sizes("on");
}

#[test]
fn upload_of_every_size_arrives_whole_with_splice_off() {
    upload_all_sizes("off");
}

#[test]
fn upload_of_every_size_arrives_whole_with_splice_auto() {
    upload_all_sizes("auto");
}

#[test]
fn download_of_every_size_arrives_whole_with_splice_on() {
    download_all_sizes("on");
}

#[test]
fn download_of_every_size_arrives_whole_with_splice_off() {
    download_all_sizes("off");
}

#[test]
fn download_of_every_size_arrives_whole_with_splice_auto() {
    download_all_sizes("auto");
}

#[test]
fn two_hundred_concurrent_connections_each_get_their_own_bytes_back() {
    const CONNS: usize = 200;
    const EACH: usize = 64 * KIB;
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "2", "--max-conns", "400"]);
    let baseline = proxy.fd_kinds();
    // Open all connections first so that they are live at the same time.
    let clients: Vec<_> = (0..CONNS).map(|_| connect(proxy.addr)).collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONNS + 1));
    let mut handles = Vec::new();
    for (i, mut s) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        handles.push(
            thread::Builder::new()
                .stack_size(256 * KIB)
                .spawn(move || {
                    let data = payload(EACH, 50_000 + i as u64);
                    let mut w = s.try_clone().unwrap();
                    let d2 = data.clone();
                    let writer = thread::Builder::new()
                        .stack_size(128 * KIB)
                        .spawn(move || w.write_all(&d2).unwrap())
                        .unwrap();
                    let back = read_exact_with_deadline(&mut s, EACH, DEADLINE * 2);
                    writer.join().unwrap();
                    let ok = back == data;
                    // Stay open until every connection has its echo.
                    barrier.wait();
                    barrier.wait();
                    s.shutdown(Shutdown::Write).unwrap();
                    let rest = read_to_end_with_deadline(&mut s, DEADLINE);
                    (ok, rest.len())
                })
                .unwrap(),
        );
    }
    barrier.wait();
    // Every client has its full echo and none has closed: all pairs are live.
    let r = proxy.wait_report("connections_active == 200", DEADLINE, |r| {
        r.m("connections_active") == CONNS as f64
    });
    assert!(r.m("connections_max_concurrent") >= CONNS as f64);
    barrier.wait();
    for (i, h) in handles.into_iter().enumerate() {
        let (ok, rest) = h.join().unwrap();
        assert!(ok, "connection {i} got bytes that are not its own");
        assert_eq!(rest, 0, "connection {i} got extra bytes");
    }
    let r = proxy.wait_report("connections_accepted == 200", DEADLINE, |r| {
        r.m("connections_accepted") == CONNS as f64 && r.m("connections_active") == 0.0
    });
    assert_eq!(r.u("bytes_client_to_backend"), (CONNS * EACH) as u64);
    assert_eq!(r.u("bytes_backend_to_client"), (CONNS * EACH) as u64);
    assert_eq!(backend.accepted(), CONNS);
    assert_back_to_baseline(&proxy, baseline, 2 * CONNS);
}

/// Echo `n` bytes of stream `seed` through `addr`, writing and reading at once.
fn echo_stream(addr: std::net::SocketAddr, n: usize, seed: u64) {
    let mut s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        write_stream(&mut w, n, seed).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_stream_verify(&mut s, seed, DEADLINE * 2);
    writer.join().unwrap();
    assert_eq!(got, n, "echo returned {got} of {n} bytes");
}

#[test]
fn odd_and_large_buffer_sizes_relay_exactly() {
    for size in ["1031", "1048576"] {
        let backend = Backend::echo();
        let proxy = Proxy::tcp(
            backend.addr,
            &[
                "-w",
                "1",
                "--max-conns",
                "16",
                "--splice",
                "off",
                "--buffer-size",
                size,
            ],
        );
        let baseline = proxy.fd_kinds();
        echo_stream(proxy.addr, 8 * MIB + 7, 777);
        let r = proxy.wait_idle();
        assert_eq!(
            r.u("bytes_client_to_backend"),
            (8 * MIB + 7) as u64,
            "--buffer-size {size}"
        );
        assert_eq!(
            r.u("bytes_backend_to_client"),
            (8 * MIB + 7) as u64,
            "--buffer-size {size}"
        );
        assert_back_to_baseline(&proxy, baseline, 0);
    }
}

#[test]
fn many_short_connections_leave_nothing_behind() {
    const CONNS: usize = 500;
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "2", "--max-conns", "64"]);
    let baseline = proxy.fd_kinds();
    for i in 0..CONNS {
        let mut s = connect(proxy.addr);
        let msg = format!("short connection {i}");
        s.write_all(msg.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let back = read_to_end_with_deadline(&mut s, DEADLINE);
        assert_eq!(back, msg.as_bytes(), "connection {i}");
    }
    let r = proxy.wait_report("connections_accepted == 500, active == 0", DEADLINE, |r| {
        r.m("connections_accepted") == CONNS as f64 && r.m("connections_active") == 0.0
    });
    assert_eq!(r.u("errors"), 0);
    assert_eq!(backend.accepted(), CONNS);
    assert_back_to_baseline(&proxy, baseline, 4);
}
