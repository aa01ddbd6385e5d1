//! Limits: memory stays bounded whatever the peers' speeds (backpressure),
//! the connection cap makes excess clients wait without spinning a core, and
//! idle pairs are closed by the idle timer.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Samples the proxy's RSS every 100 ms until dropped; remembers the maximum.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s2, m2) = (stop.clone(), max.clone());
        let thread = thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = st
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        m2.fetch_max(kib, Ordering::SeqCst);
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.max.load(Ordering::SeqCst)
    }
}

#[test]
fn slow_reading_client_keeps_proxy_memory_bounded() {
    let total = big(512 * MIB);
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--splice", "off"],
    );
    let sampler = RssSampler::start(proxy.pid());
    let mut s = connect(proxy.addr);
    s.write_all(&header(b'S', total as u64, 4242)).unwrap();
    let mut prng = Prng::new(4242);
    // Slow phase: 16 KiB every 20 ms for 2.5 s while the backend pushes as fast as it can.
    let slow_end = Instant::now() + Duration::from_millis(2500);
    let mut got = 0usize;
    while Instant::now() < slow_end {
        read_stream_exact(&mut s, &mut prng, 16 * KIB, DEADLINE);
        got += 16 * KIB;
        thread::sleep(Duration::from_millis(20));
    }
    let sent = backend.state.bytes_sent.load(Ordering::SeqCst);
    let in_flight = sent - got;
    eprintln!("slow phase: client read {got} bytes, backend had sent {sent}");
    // Kernel socket buffers on loopback may hold tens of MiB (tcp_rmem max
    // 32 MiB here), but a proxy that keeps reading without writing would let
    // the backend push far more than this.
    assert!(
        in_flight < 96 * MIB,
        "{in_flight} bytes in flight behind a slow client: the proxy does not apply backpressure"
    );
    // Fast phase: read the rest, byte-exact.
    let end = read_stream_verify_from(&mut s, &mut prng, got, DEADLINE * 2);
    let max_rss = sampler.finish();
    assert_eq!(end, total, "client got {end} of {total} bytes");
    eprintln!("max proxy RSS {max_rss} KiB");
    assert!(
        max_rss < RSS_LIMIT_KIB,
        "proxy RSS reached {max_rss} KiB relaying to a slow client (limit {RSS_LIMIT_KIB} KiB)"
    );
    drop(s);
    proxy.wait_idle();
}

#[test]
fn slow_reading_backend_keeps_proxy_memory_bounded() {
    let total = big(256 * MIB);
    // The backend reads 16 KiB every 20 ms for 2.5 s, then drains fast.
    let backend = Backend::start(|mut s: TcpStream, st: &BackendState| {
        let mut h = Hasher::default();
        let mut buf = vec![0u8; 256 * KIB];
        let slow_end = Instant::now() + Duration::from_millis(2500);
        loop {
            let slow = Instant::now() < slow_end;
            let want = if slow { 16 * KIB } else { buf.len() };
            match s.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => break,
            }
            if slow {
                thread::sleep(Duration::from_millis(20));
            }
        }
        st.record_digest(h.digest());
    });
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--splice", "off"],
    );
    let sampler = RssSampler::start(proxy.pid());
    let mut s = connect(proxy.addr);
    let written = Arc::new(AtomicU64::new(0));
    let w2 = written.clone();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut p = Prng::new(555);
        let mut buf = vec![0u8; 64 * KIB];
        let mut left = total;
        while left > 0 {
            let k = left.min(buf.len());
            p.fill(&mut buf[..k]);
            w.write_all(&buf[..k]).unwrap();
            w2.fetch_add(k as u64, Ordering::SeqCst);
            left -= k;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    thread::sleep(Duration::from_millis(2000));
    let pushed = written.load(Ordering::SeqCst) as usize;
    eprintln!("client pushed {pushed} bytes during the backend's slow phase");
    assert!(
        pushed < 96 * MIB,
        "the client could push {pushed} bytes at a slow backend: the proxy does not apply backpressure"
    );
    writer.join().unwrap();
    let d = backend.state.wait_digests(1, DEADLINE * 2);
    let max_rss = sampler.finish();
    assert_eq!(
        d[0],
        digest_of_stream(total, 555),
        "upload to a slow backend did not arrive whole"
    );
    eprintln!("max proxy RSS {max_rss} KiB");
    assert!(
        max_rss < RSS_LIMIT_KIB,
        "proxy RSS reached {max_rss} KiB relaying to a slow backend (limit {RSS_LIMIT_KIB} KiB)"
    );
    expect_closed(&mut s, DEADLINE);
    proxy.wait_idle();
}

#[test]
fn connection_cap_makes_excess_clients_wait_without_spinning() {
    connection_cap_with_workers("1");
}

/// --max-conns is for the whole process: with two workers (two SO_REUSEPORT
/// listeners) the cap still holds, and both resume accepting when slots free.
#[test]
fn connection_cap_holds_across_workers_and_both_resume() {
    connection_cap_with_workers("2");
}

fn connection_cap_with_workers(workers: &str) {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", workers, "--max-conns", "4"]);
    let mut served = Vec::new();
    for i in 0..4 {
        let mut s = connect(proxy.addr);
        let msg = format!("served-{i}");
        s.write_all(msg.as_bytes()).unwrap();
        let back = read_exact_with_deadline(&mut s, msg.len(), DEADLINE);
        assert_eq!(
            back,
            msg.as_bytes(),
            "client {i} under the cap was not served"
        );
        served.push(s);
    }
    proxy.wait_report("connections_active == 4", DEADLINE, |r| {
        r.m("connections_active") == 4.0
    });
    // Four more: the kernel completes their handshakes, but the proxy is at its cap.
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
            panic!("excess client {i} was not kept waiting while 4 of 4 slots were taken: {what}");
        }
    }
    assert_eq!(
        backend.accepted(),
        4,
        "the proxy opened backend connections beyond --max-conns 4"
    );
    let hz = clock_ticks_per_second();
    assert!(
        used < hz / 5,
        "proxy used {used} CPU ticks ({hz}/s) in 1 s while clients waited at the cap: it spins"
    );
    let r = proxy.report();
    assert!(
        r.m("connections_max_concurrent") <= 4.0,
        "max_concurrent above the cap: {r:?}"
    );
    assert_eq!(r.u("connections_active"), 4);
    // Free the slots: the waiting clients get served.
    drop(served);
    for (i, s) in waiting.iter_mut().enumerate() {
        let msg = format!("waiting-{i}");
        let back = read_exact_with_deadline(s, msg.len(), DEADLINE);
        assert_eq!(
            back,
            msg.as_bytes(),
            "waiting client {i} was not served after slots freed"
        );
    }
    drop(waiting);
    let r = proxy.wait_report("connections_accepted == 8, active == 0", DEADLINE, |r| {
        r.m("connections_accepted") == 8.0 && r.m("connections_active") == 0.0
    });
    assert!(
        r.m("connections_max_concurrent") <= 4.0,
        "max_concurrent {} above --max-conns 4",
        r.m("connections_max_concurrent")
    );
    assert_eq!(backend.accepted(), 8);
    proxy.wait_idle();
}

#[test]
fn idle_pair_is_closed_by_the_idle_timeout() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--idle-timeout", "1"],
    );
    let mut s = connect(proxy.addr);
    s.write_all(b"ping").unwrap();
    assert_eq!(read_exact_with_deadline(&mut s, 4, DEADLINE), b"ping");
    let t0 = Instant::now();
    let how = expect_closed(&mut s, Duration::from_secs(15));
    let waited = t0.elapsed();
    eprintln!("idle client saw {how:?} after {waited:?}");
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}, before a 1 s idle timeout"
    );
    let r = proxy.wait_report("idle_timeouts == 1", DEADLINE, |r| {
        r.m("idle_timeouts") >= 1.0 && r.m("connections_active") == 0.0
    });
    assert_eq!(r.u("idle_timeouts"), 1);
    proxy.wait_idle();
}

#[test]
fn active_pair_survives_the_idle_timeout() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--idle-timeout", "2"],
    );
    let mut s = connect(proxy.addr);
    // Traffic every 200 ms for 5 s: longer than the timeout, never idle for it.
    let end = Instant::now() + Duration::from_secs(5);
    let mut turns = 0u32;
    while Instant::now() < end {
        let msg = format!("turn-{turns:06}");
        s.write_all(msg.as_bytes()).unwrap();
        let back = read_exact_with_deadline(&mut s, msg.len(), DEADLINE);
        assert_eq!(back, msg.as_bytes(), "active pair broke at turn {turns}");
        turns += 1;
        thread::sleep(Duration::from_millis(200));
    }
    let r = proxy.report();
    assert_eq!(
        r.u("idle_timeouts"),
        0,
        "an active pair was counted as idle"
    );
    assert_eq!(r.u("connections_active"), 1);
    drop(s);
    proxy.wait_idle();
}
