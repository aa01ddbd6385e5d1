//! `--busy-poll USECS`: after an event a worker keeps polling with a zero
//! timeout for the window instead of sleeping, and with nothing happening
//! it sleeps. Observed through the worker's `loop_iterations` counter (one
//! per poll): a busy-polling worker makes thousands of polls while traffic
//! comes every few milliseconds, a sleeping one a handful per message.

mod common;

use common::*;
use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

/// Polls made while a client echoes 40 small messages 5 ms apart, and polls
/// made over the following 500 ms of idleness (the connection closed and
/// the window long over).
fn polls_busy_and_idle(extra: &[&str]) -> (f64, f64) {
    let backend = Backend::echo();
    let mut args = vec!["-w", "1"];
    args.extend_from_slice(extra);
    let proxy = Proxy::tcp(backend.addr, &args);
    let mut client = connect(proxy.addr);
    let before = proxy.report().m("loop_iterations");
    let mut back = [0u8; 8];
    for i in 0..40u64 {
        client.write_all(&i.to_be_bytes()).unwrap();
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, i.to_be_bytes(), "echo {i} came back changed");
        thread::sleep(Duration::from_millis(5));
    }
    let busy = proxy.report().m("loop_iterations") - before;
    drop(client);
    proxy.wait_idle();
    thread::sleep(Duration::from_millis(100));
    let rested = proxy.report().m("loop_iterations");
    thread::sleep(Duration::from_millis(500));
    let idle = proxy.report().m("loop_iterations") - rested;
    (busy, idle)
}

#[test]
fn busy_poll_polls_through_the_gaps_between_messages() {
    let (busy, idle) = polls_busy_and_idle(&["--busy-poll", "10000"]);
    // 200 ms and more of 10 ms windows that each next message renews: even
    // at 20 µs a poll that is 10,000 polls. Sleeping, it would be ~4 per
    // message (see the next test).
    assert!(
        busy >= 10_000.0,
        "only {busy} polls while busy-polling through 40 messages 5 ms apart"
    );
    assert!(
        idle <= 20.0,
        "{idle} polls in 500 ms of idleness: the worker spins after its window"
    );
}

#[test]
fn without_busy_poll_a_worker_sleeps_between_messages() {
    let (busy, idle) = polls_busy_and_idle(&[]);
    assert!(
        busy < 1000.0,
        "{busy} polls for 40 messages without --busy-poll: the worker spins"
    );
    assert!(idle <= 20.0, "{idle} polls in 500 ms of idleness");
}

#[test]
fn busy_poll_out_of_range_names_the_flag() {
    for bad in ["10001", "-1", "x"] {
        let (status, _, err) = run_cli(&["--busy-poll", bad, "-p", "0"]);
        assert_eq!(status.code(), Some(2), "--busy-poll {bad}: {err}");
        assert!(err.contains("--busy-poll"), "--busy-poll {bad}: {err}");
    }
}

#[test]
fn busy_poll_is_a_config_file_key() {
    let dir = files::TempDir::new("busy-poll");
    let check = |name: &str, usecs: u32| {
        let text = format!(
            "busy_poll = {usecs}\n[[listener]]\nlisten = \"127.0.0.1:0\"\nbackends = [\"127.0.0.1:9\"]\n"
        );
        run_cli(&["-c", &dir.write(name, &text), "--check"])
    };
    let (status, _, err) = check("good.toml", 50);
    assert_eq!(status.code(), Some(0), "{err}");
    let (status, _, err) = check("bad.toml", 20000);
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("bad.toml:1:") && err.contains("busy_poll: 20000 is not between 0 and 10000"),
        "{err}"
    );
}
