//! Lifecycle: graceful stop (in-flight pairs finish, new ones are refused,
//! exit 0 with a final report), a second signal or the grace period ends it,
//! the report counts exact bytes, workers do not allocate while relaying, and
//! the CLI rejects bad input with exit 2 naming the flag.

mod common;

use common::*;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

/// Connect until the proxy refuses (its listener is closed); panics after 10 s.
fn wait_until_refused(addr: std::net::SocketAddr) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            // A connect that races the listener's close is reset: try again.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect after SIGTERM failed with {e}, expected a refusal"),
            Ok(s) => drop(s),
        }
        if Instant::now() >= end {
            panic!("the proxy still accepts connections 10 s after SIGTERM");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_lets_the_inflight_transfer_finish_and_exits_zero() {
    let total = 32 * MIB;
    let backend = Backend::scripted();
    let mut proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--grace", "30"],
    );
    let mut s = connect_small_rcvbuf(proxy.addr, 64 * KIB);
    s.write_all(&header(b'S', total as u64, 31337)).unwrap();
    let mut prng = Prng::new(31337);
    read_stream_exact(&mut s, &mut prng, MIB, DEADLINE);
    let sent = backend.state.bytes_sent.load(Ordering::SeqCst);
    assert!(
        sent < total,
        "test precondition: the transfer must still be in flight (backend sent {sent})"
    );
    proxy.signal(libc::SIGTERM);
    wait_until_refused(proxy.addr);
    assert!(
        proxy.running(),
        "the proxy exited with a transfer in flight"
    );
    // Read the rest slowly at first, then fast.
    for _ in 0..10 {
        read_stream_exact(&mut s, &mut prng, 64 * KIB, DEADLINE);
        thread::sleep(Duration::from_millis(30));
    }
    let got = read_stream_verify_from(&mut s, &mut prng, MIB + 10 * 64 * KIB, DEADLINE);
    assert_eq!(
        got, total,
        "after SIGTERM the in-flight transfer got {got} of {total} bytes"
    );
    drop(s);
    let status = proxy
        .wait_exit(DEADLINE)
        .expect("proxy did not exit after its last pair finished");
    let lines = proxy.stderr_lines();
    assert_eq!(
        status.code(),
        Some(0),
        "graceful stop must exit 0; stderr:\n{}",
        lines.join("\n")
    );
    let r = parse_last_report(&lines).expect("no final report at exit");
    assert_eq!(
        r.u("bytes_backend_to_client"),
        total as u64,
        "final report bytes_backend_to_client"
    );
    assert_eq!(
        r.u("connections_active"),
        0,
        "final report connections_active"
    );
}

#[test]
fn second_signal_exits_at_once_during_the_grace_period() {
    let backend = Backend::scripted();
    let mut proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--grace", "120"],
    );
    let mut s = connect_small_rcvbuf(proxy.addr, 64 * KIB);
    s.write_all(&header(b'S', 64 * MIB as u64, 5)).unwrap();
    read_stream_exact(&mut s, &mut Prng::new(5), 64 * KIB, DEADLINE);
    // The client stops reading: the pair stays alive.
    proxy.signal(libc::SIGTERM);
    wait_until_refused(proxy.addr);
    thread::sleep(Duration::from_secs(1));
    assert!(
        proxy.running(),
        "the proxy did not wait for its live pair after the first SIGTERM"
    );
    let t0 = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "the proxy was still running {:?} after a second SIGTERM (grace 120 s)",
        t0.elapsed()
    );
    drop(s);
}

#[test]
fn grace_period_expiry_ends_the_stop_with_exit_zero_and_a_report() {
    let backend = Backend::scripted();
    let mut proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--grace", "1"],
    );
    let mut s = connect_small_rcvbuf(proxy.addr, 64 * KIB);
    s.write_all(&header(b'S', 64 * MIB as u64, 6)).unwrap();
    read_stream_exact(&mut s, &mut Prng::new(6), 64 * KIB, DEADLINE);
    let t0 = Instant::now();
    proxy.signal(libc::SIGTERM);
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("the proxy did not exit within 20 s of SIGTERM with --grace 1");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "exited after {waited:?}, without waiting for the grace period"
    );
    let lines = proxy.stderr_lines();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", lines.join("\n"));
    assert!(
        parse_last_report(&lines).is_some(),
        "no final report at exit"
    );
    drop(s);
}

#[test]
fn sigusr1_right_after_start_reports_and_keeps_running() {
    for _ in 0..5 {
        let backend = Backend::echo();
        let mut proxy = Proxy::tcp(backend.addr, &["-w", "2", "--max-conns", "16"]);
        // The listening line promises the signal handlers are in place.
        let r = proxy.report();
        assert_eq!(r.u("connections_accepted"), 0);
        assert!(
            proxy.running(),
            "SIGUSR1 right after the listening line killed the proxy"
        );
        let mut s = connect(proxy.addr);
        s.write_all(b"ok").unwrap();
        assert_eq!(read_exact_with_deadline(&mut s, 2, DEADLINE), b"ok");
    }
}

#[test]
fn sigint_without_pairs_exits_zero_with_a_report() {
    let backend = Backend::echo();
    let mut proxy = Proxy::tcp(backend.addr, &["-w", "2", "--max-conns", "16"]);
    let mut s = connect(proxy.addr);
    s.write_all(b"abc").unwrap();
    assert_eq!(read_exact_with_deadline(&mut s, 3, DEADLINE), b"abc");
    drop(s);
    proxy.wait_idle();
    let (status, err) = proxy.stop(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    let lines: Vec<String> = err.lines().map(String::from).collect();
    let r = parse_last_report(&lines).expect("no final report at exit");
    assert_eq!(r.u("connections_accepted"), 1);
    assert_eq!(r.u("bytes_client_to_backend"), 3);
    assert_eq!(r.u("bytes_backend_to_client"), 3);
}

#[test]
fn report_counts_the_exact_bytes_each_way() {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(backend.addr, &["-w", "2", "--max-conns", "16"]);
    let mut c2b = 0u64;
    let mut b2c = 0u64;
    for (up, down, seed) in [
        (3_000_001usize, 1_234_567usize, 1u64),
        (5, 10, 2),
        (0, 0, 3),
    ] {
        let mut s = connect(proxy.addr);
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            w.write_all(&header(b'H', down as u64, seed)).unwrap();
            write_stream(&mut w, up, seed + 100).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let digest = read_exact_with_deadline(&mut s, 16, DEADLINE);
        assert_eq!(
            Digest::from_bytes(&digest),
            digest_of_stream(up, seed + 100)
        );
        let got = read_stream_verify(&mut s, seed, DEADLINE);
        assert_eq!(got, down);
        writer.join().unwrap();
        c2b += (HEADER_LEN + up) as u64;
        b2c += (16 + down) as u64;
    }
    let r = proxy.wait_report("connections_accepted == 3, active == 0", DEADLINE, |r| {
        r.m("connections_accepted") == 3.0 && r.m("connections_active") == 0.0
    });
    assert_eq!(
        r.u("bytes_client_to_backend"),
        c2b,
        "bytes_client_to_backend must equal what the clients sent"
    );
    assert_eq!(
        r.u("bytes_backend_to_client"),
        b2c,
        "bytes_backend_to_client must equal what the backend sent"
    );
    assert_eq!(r.u("backend_connect_failures"), 0);
    assert_eq!(r.u("errors"), 0);
    // The process goes on after SIGUSR1.
    let mut s = connect(proxy.addr);
    s.write_all(&header(b'E', 0, 0)).unwrap();
    s.write_all(b"still here").unwrap();
    assert_eq!(
        read_exact_with_deadline(&mut s, 10, DEADLINE),
        b"still here"
    );
}

#[test]
fn worker_heap_allocations_do_not_grow_while_relaying() {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--max-conns", "16"]);
    let echo = |n: usize, seed: u64| {
        let mut s = connect(proxy.addr);
        let data = payload(n, seed);
        let mut w = s.try_clone().unwrap();
        let d2 = data.clone();
        let writer = thread::spawn(move || {
            w.write_all(&header(b'E', 0, 0)).unwrap();
            w.write_all(&d2).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let back = read_to_end_with_deadline(&mut s, DEADLINE);
        writer.join().unwrap();
        assert!(back == data, "echo of {n} bytes differs");
    };
    let download = |n: usize, seed: u64| {
        let mut s = connect(proxy.addr);
        s.write_all(&header(b'S', n as u64, seed)).unwrap();
        assert_eq!(read_stream_verify(&mut s, seed, DEADLINE * 2), n);
    };
    // Warm-up: every path once.
    echo(256 * KIB, 1);
    download(MIB, 2);
    proxy.wait_report("warm-up done", DEADLINE, |r| {
        r.m("connections_accepted") == 2.0 && r.m("connections_active") == 0.0
    });
    let before = proxy.report().u("worker_heap_allocations");
    eprintln!("worker_heap_allocations after warm-up: {before}");
    download(32 * MIB, 3);
    for i in 0..5 {
        echo(64 * KIB, 10 + i);
    }
    let r = proxy.wait_report("relay done", DEADLINE, |r| {
        r.m("connections_accepted") == 8.0 && r.m("connections_active") == 0.0
    });
    let after = r.u("worker_heap_allocations");
    assert_eq!(
        after, before,
        "worker_heap_allocations grew from {before} to {after} across a 32 MiB relay and 5 new connections"
    );
}

// ----------------------------------------------------------------------------
// CLI
// ----------------------------------------------------------------------------

fn assert_rejected(args: &[&str], flag: &str) {
    let refused = refusing_addr().port().to_string();
    let mut full: Vec<&str> = Vec::new();
    if !args.contains(&"--port") {
        full.extend(["-l", "127.0.0.1", "-p", "0"]);
    }
    full.extend(["-b", "127.0.0.1", "-P", &refused]);
    full.extend_from_slice(args);
    let (status, out, err) = run_cli(&full);
    assert_eq!(
        status.code(),
        Some(2),
        "{args:?} must exit 2; stdout: {out:?} stderr: {err:?}"
    );
    assert!(
        err.contains(flag),
        "{args:?}: stderr must name {flag}; got {err:?}"
    );
    assert!(
        !err.contains("listening on"),
        "{args:?}: the proxy started anyway"
    );
}

#[test]
fn bad_splice_value_exits_2_naming_the_flag() {
    assert_rejected(&["--splice", "maybe"], "--splice");
}

#[test]
fn out_of_range_port_exits_2_naming_the_flag() {
    assert_rejected(&["-l", "127.0.0.1", "--port", "99999"], "--port");
}

#[test]
fn zero_workers_exits_2_naming_the_flag() {
    assert_rejected(&["--workers", "0"], "--workers");
}

#[test]
fn tiny_buffer_size_exits_2_naming_the_flag() {
    assert_rejected(&["--buffer-size", "10"], "--buffer-size");
}

#[test]
fn unknown_flag_exits_2_naming_the_flag() {
    assert_rejected(&["--no-such-flag"], "--no-such-flag");
}

#[test]
fn address_in_use_exits_1_naming_the_address() {
    // std's listener does not set SO_REUSEPORT, so the proxy cannot share it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let refused = refusing_addr().port().to_string();
    let (status, out, err) = run_cli(&[
        "-l",
        "127.0.0.1",
        "-p",
        &port,
        "-b",
        "127.0.0.1",
        "-P",
        &refused,
        "-w",
        "1",
    ]);
    assert_eq!(status.code(), Some(1), "stdout: {out:?} stderr: {err:?}");
    let addr = format!("127.0.0.1:{port}");
    assert!(err.contains(&addr), "stderr must name {addr}; got {err:?}");
    drop(taken);
}

#[test]
fn a_second_proxy_on_a_busy_port_exits_1_instead_of_sharing_it() {
    // ferry's listening sockets set SO_REUSEPORT, which would let a second
    // ferry (same user) bind the same port and silently take a share of the
    // first one's connections.
    let backend = Backend::echo();
    let first = Proxy::tcp(backend.addr, &["-w", "2"]);
    let port = first.addr.port().to_string();
    let backend_port = backend.addr.port().to_string();
    for listen in ["127.0.0.1", "0.0.0.0"] {
        let (status, out, err) =
            run_cli(&["-l", listen, "-p", &port, "-P", &backend_port, "-w", "1"]);
        assert_eq!(
            status.code(),
            Some(1),
            "-l {listen}: stdout: {out:?} stderr: {err:?}"
        );
        let addr = format!("{listen}:{port}: address already in use");
        assert!(err.contains(&addr), "stderr must say {addr:?}; got {err:?}");
    }
    // The first one serves on.
    let mut c = connect(first.addr);
    c.write_all(b"still here").unwrap();
    assert_eq!(
        read_exact_with_deadline(&mut c, 10, DEADLINE),
        b"still here"
    );
    drop(c);
    first.wait_idle();
}

#[test]
fn version_flag_prints_the_version_and_exits_0() {
    let (status, out, err) = run_cli(&["--version"]);
    assert_eq!(status.code(), Some(0), "stdout: {out:?} stderr: {err:?}");
    let both = format!("{out}{err}");
    assert!(
        both.contains(env!("CARGO_PKG_VERSION")),
        "--version output lacks the version: {both:?}"
    );
}

#[test]
fn help_flag_lists_the_options_and_exits_0() {
    let (status, out, err) = run_cli(&["--help"]);
    assert_eq!(status.code(), Some(0), "stdout: {out:?} stderr: {err:?}");
    let both = format!("{out}{err}");
    for flag in [
        "--listen",
        "--backend",
        "--splice",
        "--max-conns",
        "--idle-timeout",
        "--connect-timeout",
    ] {
        assert!(
            both.contains(flag),
            "--help does not mention {flag}: {both}"
        );
    }
}

/// Start the proxy with descriptor limits `limit` (soft and hard), wait for
/// it to listen, stop it; its stderr.
fn start_with_fd_limit(limit: u64, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"));
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn proxy");
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0 {
        text.push_str(&line);
        if line.contains("listening on") {
            break;
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn a_connection_limit_the_descriptor_limit_cannot_hold_is_warned_about() {
    // 2040 pairs take 4080 descriptors; the listening sockets, the pools'
    // idle backend connections, each worker's poll and waker and the
    // process's own need more than the 16 left under a limit of 4096.
    let refused = refusing_addr().port().to_string();
    let base = ["-l", "127.0.0.1", "-p", "0", "-P", &refused, "-w", "2"];
    let tight: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--max-conns", "2040"])
        .collect();
    let err = start_with_fd_limit(4096, &tight);
    assert!(
        err.contains("ferry: warning: --max-conns 2040 may need")
            && err.contains("the limit is 4096"),
        "{err}"
    );
    // HTTP mode: 32 idle connections per backend and worker count too.
    let http: Vec<&str> = base
        .iter()
        .copied()
        .chain(["-m", "http", "--max-conns", "2000"])
        .collect();
    let err = start_with_fd_limit(4096, &http);
    assert!(err.contains("--max-conns 2000 may need"), "{err}");
    // Room to spare: no warning.
    let roomy: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--max-conns", "1000"])
        .collect();
    let err = start_with_fd_limit(4096, &roomy);
    assert!(!err.contains("warning"), "{err}");
    assert!(err.contains("listening on"), "{err}");
}
