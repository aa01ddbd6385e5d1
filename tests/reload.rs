//! Reload on SIGHUP: a new listener starts serving, a removed one stops
//! accepting while its live connection finishes, a changed backend applies
//! to new connections while open ones keep theirs; an invalid file keeps the
//! running configuration; a quiet keep-alive client does not keep a retired
//! generation alive; and 20 reloads under load lose no request and reset no
//! connection on the listener they leave untouched.

mod common;

use common::files::{Reloaded, TempDir};
use common::*;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn listener(name: &str, listen: &str, mode: &str, backend: SocketAddr) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\nmode = \"{mode}\"\n\
         backends = [\"{backend}\"]\n"
    )
}

/// Wait until connecting to `addr` is refused (nothing listens there).
fn wait_refused(addr: SocketAddr) {
    let end = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            _ if Instant::now() >= end => panic!("{addr} still accepts connections"),
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn echo(s: &mut TcpStream, what: &[u8]) {
    s.write_all(what).unwrap();
    assert_eq!(read_exact_with_deadline(s, what.len(), DEADLINE), what);
}

#[test]
fn reload_adds_removes_and_changes_listeners() {
    let dir = TempDir::new("reload");
    let (a, b, e) = (
        HttpBackend::named("a"),
        HttpBackend::named("b"),
        Backend::echo(),
    );
    let v1 = format!(
        "workers = 2\n{}{}",
        listener("web", "127.0.0.1:0", "http", a.addr),
        listener("gone", "127.0.0.2:0", "tcp", e.addr),
    );
    let file = dir.write("ferry.toml", &v1);
    let proxy = Proxy::start(&["-c", &file]);
    let at = proxy.listening_since(0, 2);
    let (web, gone) = (at[0], at[1]);

    // Connections open across the reload: a keep-alive client on the kept
    // listener, a relay on the listener about to go.
    let mut keep = HttpConn::connect(web);
    assert_eq!(keep.roundtrip(&get("/1")).body, b"a /1");
    let mut relay = connect(gone);
    echo(&mut relay, b"before the reload");

    let v2 = format!(
        "workers = 2\n{}{}",
        listener("web", "127.0.0.1:0", "http", b.addr),
        listener("new", "127.0.0.3:0", "tcp", e.addr),
    );
    dir.write("ferry.toml", &v2);
    let now = proxy.reload_ok();
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(
        now[0], web,
        "a listener whose address stays keeps its socket"
    );

    // The changed backend applies to new connections ...
    let mut fresh = HttpConn::connect(web);
    assert_eq!(fresh.roundtrip(&get("/2")).body, b"b /2");
    // ... while the open one keeps its own, and is told to reconnect.
    let r = keep.roundtrip(&get("/3"));
    assert_eq!(r.body, b"a /3");
    assert!(r.head.lists("connection", "close"), "{}", r.head.text());
    let (rest, how) = keep.read_until_closed();
    assert!(rest.is_empty() && how == Closed::Eof);

    // The new listener serves.
    let mut s = connect(now[1]);
    echo(&mut s, b"through the new listener");

    // The removed listener stops accepting; its live relay goes on to its end.
    wait_refused(gone);
    echo(&mut relay, b"after the reload");
    relay.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end_with_deadline(&mut relay, DEADLINE), b"");

    let r = proxy.report();
    assert_eq!((r.u("reloads_ok"), r.u("reloads_failed")), (1, 0));
}

#[test]
fn an_invalid_file_keeps_the_running_configuration() {
    let dir = TempDir::new("invalid");
    let a = HttpBackend::named("a");
    let good = listener("web", "127.0.0.1:0", "http", a.addr);
    let file = dir.write("ferry.toml", &good);
    let proxy = Proxy::start(&["-c", &file]);
    let web = proxy.addr;
    let mut keep = HttpConn::connect(web);
    assert_eq!(keep.roundtrip(&get("/1")).body, b"a /1");

    dir.write(
        "ferry.toml",
        &format!("{good}timeout = 5\n[[listener]]\nlisten = \"127.0.0.2:99999\"\n"),
    );
    let Reloaded::Failed(lines) = proxy.reload() else {
        panic!("an invalid file was accepted");
    };
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("ferry: reload: {file}:6:1: unknown key 'timeout'")),
        "{text}"
    );
    assert!(text.contains(&format!("{file}:8:10: listen")), "{text}");
    assert!(text.contains("still serving the previous configuration"));

    // The old configuration serves on, open connections and new ones alike.
    let r = keep.roundtrip(&get("/2"));
    assert_eq!(r.body, b"a /2");
    assert!(!r.head.lists("connection", "close"), "{}", r.head.text());
    assert_eq!(HttpConn::connect(web).roundtrip(&get("/3")).body, b"a /3");
    let r = proxy.report();
    assert_eq!((r.u("reloads_ok"), r.u("reloads_failed")), (0, 1));

    // And a good file afterwards is taken.
    dir.write("ferry.toml", &good);
    assert_eq!(proxy.reload_ok(), [web]);
}

/// What the load's clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    reconnects: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// A client that sends requests until `stop`: on one keep-alive connection
/// (reconnecting when a response says `Connection: close`), or on a new
/// connection each time. Every response must be the backend's answer to
/// that very request.
fn client(id: usize, web: SocketAddr, keep_alive: bool, stop: &AtomicBool, tally: &Tally) {
    let mut conn: Option<HttpConn> = None;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let target = format!("/c{id}/{n}");
        let c = conn.get_or_insert_with(|| HttpConn::connect(web));
        let request = if keep_alive {
            get(&target)
        } else {
            format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()
        };
        let result =
            c.s.write_all(&request)
                .and_then(|_| c.try_read_response(false));
        match result {
            Ok(r) if r.status() == 200 && r.body == format!("a {target}").as_bytes() => {
                tally.ok.fetch_add(1, Ordering::SeqCst);
                if !keep_alive || r.head.lists("connection", "close") {
                    if keep_alive {
                        tally.reconnects.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut c = conn.take().unwrap();
                    let (rest, how) = c.read_until_closed();
                    if how != Closed::Eof || !rest.is_empty() {
                        tally.failures.lock().unwrap().push(format!(
                            "{target}: after Connection: close, {how:?} with {} bytes",
                            rest.len()
                        ));
                    }
                }
            }
            Ok(r) => {
                tally.failures.lock().unwrap().push(format!(
                    "{target}: {:?}",
                    String::from_utf8_lossy(&r.bytes())
                ));
                conn = None;
            }
            Err(e) => {
                tally
                    .failures
                    .lock()
                    .unwrap()
                    .push(format!("{target}: {e}"));
                conn = None;
            }
        }
    }
}

#[test]
fn twenty_reloads_under_load_lose_no_request() {
    let dir = TempDir::new("load");
    let a = HttpBackend::named("a");
    let extra = Backend::echo();
    let web = listener("web", "127.0.0.1:0", "http", a.addr);
    let with_extra = |mode: &str| {
        let backend = if mode == "tcp" { extra.addr } else { a.addr };
        format!("{web}{}", listener("extra", "127.0.0.2:0", mode, backend))
    };
    let file = dir.write("ferry.toml", &format!("workers = 2\n{web}"));
    let proxy = Proxy::start(&["-c", &file]);
    let addr = proxy.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (stop, tally) = (stop.clone(), tally.clone());
            thread::spawn(move || client(id, addr, id % 2 == 0, &stop, &tally))
        })
        .collect();

    let wait_for_traffic = |past: usize| {
        let end = Instant::now() + DEADLINE;
        while tally.ok.load(Ordering::SeqCst) < past + 200 {
            assert!(Instant::now() < end, "the load stalled");
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for_traffic(0);
    for i in 0..20 {
        // Add the extra listener (tcp or http), then take it away again.
        let text = match i % 4 {
            0 => with_extra("tcp"),
            2 => with_extra("http"),
            _ => web.clone(),
        };
        dir.write("ferry.toml", &format!("workers = 2\n{text}"));
        let now = proxy.reload_ok();
        assert_eq!(now[0], addr, "reload {i}: the web listener moved");
        if i % 2 == 0 {
            assert_eq!(now.len(), 2, "reload {i}: {now:?}");
            let mut s = connect(now[1]);
            if i % 4 == 0 {
                echo(&mut s, b"extra");
            } else {
                let mut c = HttpConn::new(s);
                assert_eq!(c.roundtrip(&get("/extra")).body, b"a /extra");
            }
        }
        wait_for_traffic(tally.ok.load(Ordering::SeqCst));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed (of {} ok): {:#?}",
        failures.len(),
        tally.ok.load(Ordering::SeqCst),
        &failures[..failures.len().min(20)]
    );
    assert!(
        tally.reconnects.load(Ordering::SeqCst) > 0,
        "keep-alive clients never saw a retiring generation's Connection: close"
    );
    let r = proxy.report();
    assert_eq!((r.u("reloads_ok"), r.u("reloads_failed")), (20, 0));
    proxy.wait_idle();
}

#[test]
fn a_changed_limit_applies_to_new_connections_only() {
    let dir = TempDir::new("limit");
    let a = HttpBackend::named("a");
    let web = listener("web", "127.0.0.1:0", "http", a.addr);
    let file = dir.write("ferry.toml", &web);
    let proxy = Proxy::start(&["-c", &file]);
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(1000)
    );
    let mut old = HttpConn::connect(proxy.addr);
    assert_eq!(old.roundtrip(big.as_bytes()).status(), 200);

    dir.write("ferry.toml", &format!("{web}max_header_size = 512\n"));
    proxy.reload_ok();
    // The open connection keeps the limits it started with ...
    let r = old.roundtrip(big.as_bytes());
    assert_eq!(r.status(), 200, "{}", r.head.text());
    // ... a new one gets the new limit.
    let mut new = HttpConn::connect(proxy.addr);
    new.send(big.as_bytes());
    expect_answer_and_close(&mut new, 431, "a head over the reloaded max_header_size");
}

#[test]
fn flags_given_at_start_stay_applied_across_reloads() {
    let dir = TempDir::new("flags");
    let (a, b) = (HttpBackend::named("a"), HttpBackend::named("b"));
    let web = listener("web", "127.0.0.1:0", "http", a.addr);
    let file = dir.write("ferry.toml", &web);
    let backend = b.addr.to_string();
    let proxy = Proxy::start(&["-c", &file, "-b", &backend]);
    let get_body = |addr| HttpConn::connect(addr).roundtrip(&get("/x")).body;
    assert_eq!(get_body(proxy.addr), b"b /x");
    let second = listener("second", "127.0.0.2:0", "http", a.addr);
    dir.write("ferry.toml", &format!("{web}{second}"));
    let now = proxy.reload_ok();
    assert_eq!(now[0], proxy.addr);
    assert_eq!(
        get_body(now[0]),
        b"b /x",
        "-b still overrides the first listener"
    );
    assert_eq!(get_body(now[1]), b"a /x", "and only the first");
}

/// The threads the proxy runs now (workers, resolvers, health checkers, ...).
/// A keep-alive client that stays quiet after a reload does not keep the
/// retired generation alive for its whole --keepalive-timeout (here 300 s):
/// it is closed cleanly after a short quiet time, and the old workers end.
#[test]
fn a_quiet_keep_alive_client_does_not_hold_a_retired_generation() {
    let dir = TempDir::new("quiet");
    let a = HttpBackend::named("a");
    let text = format!(
        "workers = 1\n{}keepalive_timeout = 300\n",
        listener("web", "127.0.0.1:0", "http", a.addr)
    );
    let file = dir.write("ferry.toml", &text);
    let proxy = Proxy::start(&["-c", &file]);
    let web = proxy.listening_since(0, 1)[0];
    let threads = thread_count(&proxy);
    let mut quiet = HttpConn::connect(web);
    assert_eq!(quiet.roundtrip(&get("/1")).body, b"a /1");
    proxy.reload_ok();
    // Closed well within the 30 s the read waits, ten times less than the
    // keep-alive timeout: nothing was pending, so a plain end of stream.
    let (rest, how) = quiet.read_until_closed();
    assert!(rest.is_empty() && how == Closed::Eof, "{rest:?} {how:?}");
    wait_threads(
        &proxy,
        threads,
        "the retired generation's threads are still there",
    );
    // The new generation serves as usual.
    assert_eq!(HttpConn::connect(web).roundtrip(&get("/2")).body, b"a /2");
}

fn thread_count(proxy: &Proxy) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .expect("read /proc/PID/task")
        .count()
}

/// Wait until the proxy runs `threads` threads again.
fn wait_threads(proxy: &Proxy, threads: usize, what: &str) {
    let end = Instant::now() + DEADLINE;
    while thread_count(proxy) != threads {
        assert!(
            Instant::now() < end,
            "{what}: {} threads now, {threads} before",
            thread_count(proxy)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reloads_give_back_every_descriptor_and_thread_of_the_old_generations() {
    let dir = TempDir::new("leaks");
    let a = HttpBackend::named("a");
    let extra = Backend::echo();
    // An HTTP listener with health checks (a checker thread per generation)
    // and a forward listener (resolver threads per generation).
    let base = format!(
        "workers = 2\n{}health_interval = 0.2\n\
         [[listener]]\nname = \"fwd\"\nlisten = \"127.0.0.3:0\"\nmode = \"forward\"\n",
        listener("web", "127.0.0.1:0", "http", a.addr),
    );
    let with_extra = format!(
        "{base}{}",
        listener("extra", "127.0.0.2:0", "tcp", extra.addr)
    );
    let file = dir.write("ferry.toml", &base);
    let proxy = Proxy::start(&["-c", &file]);
    let at = proxy.listening_since(0, 2);
    let (web, fwd) = (at[0], at[1]);
    // Traffic through both listeners: a backend connection pooled, a name
    // resolved and cached, an origin connection pooled.
    let serve = |round: usize| {
        let path = format!("/r{round}");
        assert_eq!(
            HttpConn::connect(web).roundtrip(&get(&path)).body,
            format!("a {path}").as_bytes()
        );
        let url = format!("http://localhost:{}{path}", a.addr.port());
        let response = HttpConn::connect(fwd).roundtrip(&get(&url));
        assert_eq!(response.body, format!("a {path}").as_bytes());
    };
    serve(0);
    proxy.wait_idle();
    let (fds, threads) = (proxy.fd_kinds(), thread_count(&proxy));

    for round in 1..=10 {
        let text = if round % 2 == 1 { &with_extra } else { &base };
        std::fs::write(&file, text).unwrap();
        proxy.reload_ok();
        serve(round);
    }
    // The file is back to `base`: once the old generations have finished,
    // the process holds what it held before the first reload.
    proxy.wait_fds_back_to(fds, 0);
    wait_threads(&proxy, threads, "threads after 10 reloads");
    let report = proxy.wait_idle();
    assert_eq!((report.u("reloads_ok"), report.u("slab_in_use")), (10, 0));
    // Each generation starts with an empty name cache: the resolver threads
    // of every generation were used.
    assert_eq!(report.u("forward_lookups"), 11, "{report:?}");
}

#[test]
fn reload_grace_closes_what_the_replaced_configuration_still_serves() {
    let dir = TempDir::new("reload-grace");
    let backend = Backend::echo();
    let plain = format!(
        "workers = 1\n{}",
        listener("tcp", "127.0.0.1:0", "tcp", backend.addr)
    );
    let file = dir.write("ferry.toml", &plain);
    let proxy = Proxy::start(&["-c", &file]);
    let addr = proxy.listening_since(0, 1)[0];
    let threads = thread_count(&proxy);
    // Without reload_grace an open connection of the old configuration
    // lasts as long as it needs.
    let mut first = connect(addr);
    echo(&mut first, b"one");
    proxy.reload_ok();
    thread::sleep(Duration::from_millis(1500));
    echo(&mut first, b"still one");
    // The next configuration sets reload_grace: what the one it replaces
    // still serves is closed that long after the reload.
    let mut second = connect(addr);
    echo(&mut second, b"two");
    dir.write("ferry.toml", &format!("reload_grace = 0.5\n{plain}"));
    let reloaded = Instant::now();
    proxy.reload_ok();
    expect_closed(&mut second, DEADLINE);
    assert!(
        reloaded.elapsed() >= Duration::from_millis(400),
        "closed {:?} after the reload, before its reload_grace",
        reloaded.elapsed()
    );
    // The grace applies to the configuration the reload replaced only: the
    // first connection (two configurations back) is still served.
    echo(&mut first, b"one more");
    drop(first);
    wait_threads(&proxy, threads, "the retired generations' threads");
    let mut third = connect(addr);
    echo(&mut third, b"three");
}
