//! Engine review: byte order and completeness at the edges of the relay
//! (bytes still held in a pipe or buffer when a peer ends or resets, splice
//! switching on mid-stream), edge-triggered progress, and the close paths.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const MODES: [&str; 3] = ["on", "auto", "off"];

/// A backend on 127.0.0.1:0 whose accepted sockets have a small receive
/// buffer (inherited from the listener), so the proxy's writes to it stall.
fn small_rcvbuf_backend<F>(rcvbuf: usize, handler: F) -> (SocketAddr, thread::JoinHandle<()>)
where
    F: FnOnce(TcpStream) + Send + 'static,
{
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(16).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let listener: std::net::TcpListener = sock.into();
    let t = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        handler(s)
    });
    (addr, t)
}

#[test]
fn slow_client_gets_every_byte_held_at_backend_eof_in_each_splice_mode() {
    let n = 3 * MIB + 123;
    for mode in MODES {
        let backend = Backend::scripted();
        let proxy = Proxy::tcp(
            backend.addr,
            &["-w", "1", "--max-conns", "16", "--splice", mode],
        );
        let baseline = proxy.fd_kinds();
        let mut s = connect_small_rcvbuf(proxy.addr, 4 * KIB);
        s.write_all(&header(b'S', n as u64, 31)).unwrap();
        // Let the backend send everything it can and end while the proxy
        // still holds bytes for this client.
        thread::sleep(Duration::from_millis(300));
        let mut prng = Prng::new(31);
        let mut got = 0;
        for _ in 0..20 {
            read_stream_exact(&mut s, &mut prng, 4 * KIB, DEADLINE);
            got += 4 * KIB;
            thread::sleep(Duration::from_millis(5));
        }
        let total = read_stream_verify_from(&mut s, &mut prng, got, DEADLINE);
        assert_eq!(total, n, "--splice {mode}: client got {total} of {n} bytes");
        drop(s);
        let r = proxy.wait_idle();
        assert_eq!(r.u("bytes_backend_to_client"), n as u64, "--splice {mode}");
        proxy.wait_fds_back_to(baseline, 2);
    }
}

#[test]
fn slow_backend_gets_every_byte_held_at_client_eof_in_each_splice_mode() {
    let n = 3 * MIB + 321;
    for mode in MODES {
        let (addr, backend) = small_rcvbuf_backend(4 * KIB, move |mut s| {
            // Read nothing for a while: the client's FIN reaches the proxy
            // while it still holds bytes for this backend.
            thread::sleep(Duration::from_millis(300));
            let mut h = Hasher::default();
            let mut buf = vec![0u8; 4 * KIB];
            let mut slow = 20;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => h.update(&buf[..k]),
                    Err(e) => panic!("backend read: {e}"),
                }
                if slow > 0 {
                    slow -= 1;
                    thread::sleep(Duration::from_millis(5));
                }
            }
            s.write_all(&h.digest().to_bytes()).unwrap();
        });
        let proxy = Proxy::tcp(addr, &["-w", "1", "--max-conns", "16", "--splice", mode]);
        let baseline = proxy.fd_kinds();
        let mut s = connect(proxy.addr);
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            write_stream(&mut w, n, 41).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let reply = read_to_end_with_deadline(&mut s, DEADLINE);
        writer.join().unwrap();
        backend.join().unwrap();
        assert_eq!(
            Digest::from_bytes(&reply),
            digest_of_stream(n, 41),
            "--splice {mode}: the backend did not receive the upload whole"
        );
        drop(s);
        let r = proxy.wait_idle();
        assert_eq!(r.u("bytes_client_to_backend"), n as u64, "--splice {mode}");
        proxy.wait_fds_back_to(baseline, 2);
    }
}

/// Echo through the proxy with writes of random sizes and random pauses, so
/// that reads are sometimes full (auto switches to splice) and sometimes
/// short, with the destination sometimes full.
fn jittery_echo(addr: SocketAddr, n: usize, seed: u64) {
    let mut s = connect_small_rcvbuf(addr, 8 * KIB);
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let data = payload(n, seed);
        let mut rng = Prng::new(seed ^ 0xabc);
        let mut at = 0;
        while at < n {
            let k = (rng.next_u64() as usize % (40 * KIB) + 1).min(n - at);
            w.write_all(&data[at..at + k]).unwrap();
            at += k;
            if rng.next_u64().is_multiple_of(4) {
                thread::sleep(Duration::from_millis(rng.next_u64() % 3));
            }
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let want = payload(n, seed);
    let mut got = Vec::with_capacity(n);
    let mut rng = Prng::new(seed ^ 0xdef);
    let mut buf = vec![0u8; 64 * KIB];
    let end = Instant::now() + DEADLINE;
    loop {
        let k = rng.next_u64() as usize % buf.len() + 1;
        match read_some(&mut s, &mut buf[..k], end) {
            Ok(Some(0)) => break,
            Ok(Some(m)) => got.extend_from_slice(&buf[..m]),
            Ok(None) => panic!("no EOF within the deadline ({} of {n} bytes)", got.len()),
            Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
        }
        if rng.next_u64().is_multiple_of(8) {
            thread::sleep(Duration::from_millis(rng.next_u64() % 4));
        }
    }
    writer.join().unwrap();
    assert_eq!(got.len(), n, "echo length");
    if got != want {
        let i = (0..n).find(|&i| got[i] != want[i]).unwrap();
        panic!("echo differs at byte {i} of {n}");
    }
}

#[test]
fn jittery_echo_keeps_every_byte_in_order_in_each_splice_mode() {
    for mode in MODES {
        let backend = Backend::echo();
        let proxy = Proxy::tcp(
            backend.addr,
            &[
                "-w",
                "1",
                "--max-conns",
                "16",
                "--splice",
                mode,
                "--buffer-size",
                "1024",
            ],
        );
        let baseline = proxy.fd_kinds();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let addr = proxy.addr;
                thread::spawn(move || jittery_echo(addr, 2 * MIB + i * 777, 900 + i as u64))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        proxy.wait_idle();
        proxy.wait_fds_back_to(baseline, 16);
    }
}

/// A descriptor limit under which process `pid` can open exactly `free`
/// more descriptors (the lowest numbers not in use go first).
fn limit_leaving(pid: u32, free: usize) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    (0..).filter(|n| !used.contains(n)).nth(free).unwrap()
}

/// Set the soft descriptor limit of process `pid`; returns the old limits.
fn set_fd_limit(pid: u32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads nothing when `new` is null and writes `old`.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit get");
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads `new`; lowering the soft limit needs no privilege.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit set");
    old
}

/// Out of descriptors after accepting a client (none left for its backend
/// socket), the proxy must not drop that client nor drain the backlog by
/// accepting and dropping the others: they all wait, without spinning, and
/// are served once descriptors free up.
#[test]
fn clients_wait_when_no_descriptor_is_left_for_the_backend_socket() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "64", "--splice", "off"],
    );
    let baseline = proxy.fd_kinds();
    let mut live = Vec::new();
    for i in 0..2 {
        let mut s = connect(proxy.addr);
        s.write_all(b"ping").unwrap();
        assert_eq!(
            read_exact_with_deadline(&mut s, 4, DEADLINE),
            b"ping",
            "client {i}"
        );
        live.push(s);
    }
    // One descriptor left: enough to accept a client, not to connect for it.
    let old = set_fd_limit(proxy.pid(), limit_leaving(proxy.pid(), 1));
    let mut waiting = Vec::new();
    for i in 0..4 {
        let mut s = connect(proxy.addr);
        s.write_all(format!("waiting-{i}").as_bytes()).unwrap();
        waiting.push(s);
    }
    let t0 = proxy.cpu_ticks();
    thread::sleep(Duration::from_secs(1));
    let used = proxy.cpu_ticks() - t0;
    for (i, s) in waiting.iter().enumerate() {
        if let Err(what) = nothing_readable(s) {
            panic!("client {i} was not kept waiting while descriptors ran out: {what}");
        }
    }
    let hz = clock_ticks_per_second();
    assert!(
        used < hz / 5,
        "proxy used {used} CPU ticks ({hz}/s) in 1 s while out of descriptors: it spins"
    );
    let r = proxy.report();
    assert_eq!(
        r.u("backend_connect_failures"),
        0,
        "running out of descriptors is not the backend's failure"
    );
    set_fd_limit(proxy.pid(), old.rlim_cur);
    drop(live);
    for (i, s) in waiting.iter_mut().enumerate() {
        let msg = format!("waiting-{i}");
        let back = read_exact_with_deadline(s, msg.len(), DEADLINE);
        assert_eq!(back, msg.as_bytes(), "waiting client {i} was not served");
    }
    drop(waiting);
    let r = proxy.wait_idle();
    assert_eq!(r.u("connections_accepted"), 6);
    assert_eq!(backend.accepted(), 6);
    proxy.wait_fds_back_to(baseline, 0);
}

/// HTTP: a request that finds no descriptor left for its backend connection
/// gets an answer, and the backend, which did nothing wrong, stays in
/// rotation: the next request, once descriptors are back, is served.
#[test]
fn running_out_of_descriptors_does_not_mark_the_backend_down() {
    let backend = HttpBackend::named("A");
    // No pool (each request connects) and no health check soon enough to
    // put a backend marked down back within the test.
    let proxy = Proxy::http(
        &[backend.addr],
        &["-w", "1", "--pool-size", "0", "--health-interval", "600"],
    );
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/before")).status(), 200);
    // The health checker's first probe (at start) holds a descriptor for a
    // moment; let it finish before counting the free ones.
    thread::sleep(Duration::from_millis(500));
    let old = set_fd_limit(proxy.pid(), limit_leaving(proxy.pid(), 0));
    let r = c.roundtrip(&get("/starved"));
    set_fd_limit(proxy.pid(), old.rlim_cur);
    assert_eq!(r.status(), 503, "no descriptor for a backend connection");
    let mut c2 = HttpConn::connect(proxy.addr);
    let r = c2.roundtrip(&get("/after"));
    assert_eq!(
        r.status(),
        200,
        "the backend was taken out of rotation for the proxy's own lack of descriptors; stderr:\n{}",
        proxy.stderr()
    );
}

/// The health checker that cannot make a socket (the process is out of
/// descriptors) has learnt nothing about the backend: it must not count a
/// failed check, let alone take the backend down.
#[test]
fn the_health_checker_out_of_descriptors_does_not_fail_the_backend() {
    let backend = HttpBackend::named("A");
    // Checks every 0.1 s, one failure takes the backend down, and ten
    // passes are needed to bring it back: a wrong verdict shows for a second.
    let proxy = Proxy::http(
        &[backend.addr],
        &[
            "-w",
            "1",
            "--pool-size",
            "0",
            "--health-interval",
            "0.1",
            "--health-fall",
            "1",
            "--health-rise",
            "10",
        ],
    );
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/before")).status(), 200);
    thread::sleep(Duration::from_millis(300));
    let old = set_fd_limit(proxy.pid(), limit_leaving(proxy.pid(), 0));
    // Several checks come due while no descriptor is free.
    thread::sleep(Duration::from_millis(600));
    set_fd_limit(proxy.pid(), old.rlim_cur);
    let r = c.roundtrip(&get("/after"));
    assert_eq!(
        r.status(),
        200,
        "the checker's own lack of descriptors took the backend down; stderr:\n{}",
        proxy.stderr()
    );
    assert!(
        !proxy.stderr().contains("is down"),
        "stderr:\n{}",
        proxy.stderr()
    );
}

/// A client that resets while the proxy holds bytes for it (in a pipe with
/// splice, in a buffer without): the pair closes, and the pipe holding bytes
/// is closed rather than pooled, so descriptors and counters come back and
/// the next transfer gets none of the aborted bytes.
#[test]
fn client_reset_with_bytes_held_for_it_returns_pipes_buffers_and_descriptors() {
    for mode in MODES {
        let backend = Backend::scripted();
        let proxy = Proxy::tcp(
            backend.addr,
            &["-w", "1", "--max-conns", "16", "--splice", mode],
        );
        let baseline = proxy.fd_kinds();
        for round in 0..3 {
            let mut s = connect_small_rcvbuf(proxy.addr, 4 * KIB);
            s.write_all(&header(b'S', 64 * MIB as u64, round)).unwrap();
            // The proxy's carriers fill up behind a client that reads nothing.
            proxy.wait_report("bytes held for the client", DEADLINE, |r| {
                r.m("buffers_in_use") + r.m("pipes_in_use") > 0.0
            });
            thread::sleep(Duration::from_millis(200));
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        }
        let r = proxy.wait_idle();
        assert_eq!(r.u("client_aborts"), 3, "--splice {mode}");
        // A pipe returned with the aborted bytes in it would hand them to
        // the next transfer.
        let mut s = connect(proxy.addr);
        s.write_all(&header(b'S', MIB as u64, 99)).unwrap();
        let got = read_stream_verify(&mut s, 99, DEADLINE);
        assert_eq!(got, MIB, "--splice {mode}: transfer after the resets");
        drop(s);
        proxy.wait_idle();
        proxy.wait_fds_back_to(baseline, 2);
    }
}

/// Send `byte` as urgent (out-of-band) data.
fn send_urgent(s: &TcpStream, byte: u8) {
    use std::os::fd::AsRawFd;
    // SAFETY: one readable byte for the call.
    let rc = unsafe { libc::send(s.as_raw_fd(), (&byte as *const u8).cast(), 1, libc::MSG_OOB) };
    assert_eq!(rc, 1, "send MSG_OOB");
}

/// A peer's urgent byte (telnet sends one for an interrupt) is not relayed
/// (it is out of band), but the bytes after it must be: a read stops short
/// at the urgent mark, and a splice cannot pass it at all.
#[test]
fn bytes_after_an_urgent_byte_are_relayed_in_each_splice_mode() {
    for mode in MODES {
        let backend = Backend::echo();
        let proxy = Proxy::tcp(
            backend.addr,
            &["-w", "1", "--max-conns", "16", "--splice", mode],
        );
        let mut s = connect(proxy.addr);
        s.set_nodelay(true).unwrap();
        s.write_all(b"before").unwrap();
        assert_eq!(read_exact_with_deadline(&mut s, 6, DEADLINE), b"before");
        s.write_all(b"hello").unwrap();
        send_urgent(&s, b'!');
        s.write_all(b"world").unwrap();
        let got = read_exact_with_deadline(&mut s, 10, Duration::from_secs(5));
        assert_eq!(got, b"helloworld", "--splice {mode}");
        // Then the same with the end of stream right after the urgent byte:
        // a splice answers 0 at the mark then, which is not the end.
        s.write_all(b"again").unwrap();
        send_urgent(&s, b'!');
        s.write_all(b"last").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let rest = read_to_end_with_deadline(&mut s, Duration::from_secs(5));
        assert_eq!(rest, b"againlast", "--splice {mode}");
        drop(s);
        proxy.wait_idle();
    }
}

/// How a stream read to its end finished.
fn read_until_end(s: &mut TcpStream) -> (usize, Closed) {
    let end = Instant::now() + DEADLINE;
    let mut buf = vec![0u8; 64 * KIB];
    let mut total = 0;
    loop {
        match read_some(s, &mut buf, end) {
            Ok(Some(0)) => return (total, Closed::Eof),
            Ok(Some(n)) => total += n,
            Ok(None) => panic!("no end within {DEADLINE:?} after {total} bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (total, Closed::Reset)
            }
            Err(e) => panic!("read failed after {total} bytes: {e}"),
        }
    }
}

/// A client that aborts an upload (a reset, not a FIN) must not look to the
/// backend like one that finished it: a clean end of stream would make the
/// truncated upload pass for whole. The reset is passed on.
#[test]
fn client_abort_reaches_the_backend_as_a_reset_not_an_end_of_stream() {
    for mode in MODES {
        let (tx, rx) = std::sync::mpsc::channel();
        let backend = Backend::start(move |mut s, _| {
            let _ = tx.send(read_until_end(&mut s));
        });
        let proxy = Proxy::tcp(
            backend.addr,
            &["-w", "1", "--max-conns", "16", "--splice", mode],
        );
        let mut s = connect(proxy.addr);
        write_stream(&mut s, 256 * KIB, 5).unwrap();
        thread::sleep(Duration::from_millis(200));
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let (got, how) = rx.recv_timeout(DEADLINE).unwrap();
        assert_eq!(
            how,
            Closed::Reset,
            "--splice {mode}: the backend saw {got} bytes then a clean end of stream from an aborted client"
        );
        let r = proxy.wait_idle();
        assert_eq!(r.u("client_aborts"), 1, "--splice {mode}");
    }
}

/// The mirror: a backend that aborts mid-stream reaches the client as a reset.
#[test]
fn backend_abort_reaches_the_client_as_a_reset_not_an_end_of_stream() {
    for mode in MODES {
        let backend = Backend::start(|mut s, _| {
            let mut first = [0u8; 1];
            s.read_exact(&mut first).unwrap();
            write_stream(&mut s, 256 * KIB, 6).unwrap();
            thread::sleep(Duration::from_millis(200));
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        });
        let proxy = Proxy::tcp(
            backend.addr,
            &["-w", "1", "--max-conns", "16", "--splice", mode],
        );
        let mut s = connect(proxy.addr);
        s.write_all(b"go").unwrap();
        let (got, how) = read_until_end(&mut s);
        assert_eq!(
            how,
            Closed::Reset,
            "--splice {mode}: the client saw {got} bytes then a clean end of stream from an aborted backend"
        );
        drop(s);
        proxy.wait_idle();
    }
}

/// A backend that sends its whole reply and its FIN, then resets (it closed
/// with the client's bytes unread): the client, slow to read, still gets the
/// whole reply and a clean end; the reset came after everything.
#[test]
fn backend_reset_after_its_whole_reply_still_delivers_it_to_a_slow_client() {
    let n = 8 * KIB;
    for mode in MODES {
        let backend = Backend::start(move |mut s, _| {
            let mut first = [0u8; 1];
            s.read_exact(&mut first).unwrap();
            write_stream(&mut s, n, 7).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            thread::sleep(Duration::from_millis(300));
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        });
        let proxy = Proxy::tcp(
            backend.addr,
            &["-w", "1", "--max-conns", "16", "--splice", mode],
        );
        let mut s = connect_small_rcvbuf(proxy.addr, 4 * KIB);
        s.write_all(b"go").unwrap();
        // The reset reaches the proxy while the reply still waits for us.
        proxy.wait_report("the backend's reset", DEADLINE, |r| {
            r.m("connections_active") == 0.0
        });
        let got = read_stream_verify(&mut s, 7, DEADLINE);
        assert_eq!(got, n, "--splice {mode}: the client got {got} of {n} bytes");
        drop(s);
        proxy.wait_idle();
    }
}

/// Forward mode: the same shortage for an origin connection is the proxy's
/// (503), not the origin's failure (502, counted as a connect failure).
#[test]
fn forward_request_without_a_descriptor_for_its_origin_gets_503() {
    let origin = HttpBackend::named("O");
    let proxy = Proxy::start(&[
        "-m",
        "forward",
        "-l",
        "127.0.0.1",
        "-p",
        "0",
        "-w",
        "1",
        "--pool-size",
        "0",
    ]);
    let request = |path: &str| {
        format!(
            "GET http://{}{path} HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.addr
        )
        .into_bytes()
    };
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&request("/before")).status(), 200);
    drop(c);
    proxy.wait_report("the first client gone", DEADLINE, |r| {
        r.m("connections_active") == 0.0 && r.m("backend_connections") == 0.0
    });
    // One descriptor left: the client is accepted, its origin cannot be reached.
    let old = set_fd_limit(proxy.pid(), limit_leaving(proxy.pid(), 1));
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&request("/starved"));
    set_fd_limit(proxy.pid(), old.rlim_cur);
    assert_eq!(r.status(), 503, "no descriptor for an origin connection");
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&request("/after")).status(), 200);
    let r = proxy.report();
    assert_eq!(
        r.u("backend_connect_failures"),
        0,
        "the proxy's shortage counted as the origin's failure"
    );
}
