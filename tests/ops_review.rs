//! The operational review: config files the way an operator gets them
//! wrong, and reloads that must change nothing when they are refused. Each
//! test spawns the real binary.
//!
//! * Values in range for each check alone that the workers cannot reserve
//!   memory for (a huge `pool_size`, `max_conns` times `buffer_size`) are
//!   refused with a message, at start and on a reload, instead of aborting
//!   the process.

mod common;

use common::files::{Reloaded, TempDir};
use common::*;
use std::net::SocketAddr;

/// A one-worker HTTP listener on a free loopback port in front of `backend`,
/// with `extra` lines (global keys) before it and `more` in its table.
fn http_file(backend: SocketAddr, extra: &str, more: &str) -> String {
    format!(
        "workers = 1\n{extra}\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\
         mode = \"http\"\nbackends = [\"{backend}\"]\n{more}\n"
    )
}

/// Reload `text`, which must be refused with a line containing `want`; the
/// proxy then still serves the running configuration.
fn refused_reload(dir: &TempDir, proxy: &Proxy, addr: SocketAddr, text: &str, want: &str) {
    dir.write("ferry.toml", text);
    match proxy.reload() {
        Reloaded::Failed(lines) => assert!(
            lines.iter().any(|l| l.contains(want)),
            "no reload line says {want:?}: {lines:#?}"
        ),
        Reloaded::Ok(addrs) => panic!("the reload was accepted: {addrs:?}"),
    }
    let mut c = HttpConn::connect(addr);
    assert_eq!(c.roundtrip(&get("/after")).body, b"a /after");
}

#[test]
fn a_reload_the_workers_cannot_reserve_memory_for_is_refused_and_changes_nothing() {
    let dir = TempDir::new("ops-reserve");
    let a = HttpBackend::named("a");
    let file = dir.write("ferry.toml", &http_file(a.addr, "", ""));
    let proxy = Proxy::start(&["-c", &file]);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/before")).body, b"a /before");

    // Worker::new reserves a slot per pooled connection up front: this
    // used to abort the whole process on SIGHUP.
    let huge_pool = http_file(a.addr, "", "pool_size = 1000000000000");
    refused_reload(&dir, &proxy, proxy.addr, &huge_pool, "pool_size");
    // Each check passes alone (16 Mi connections, 16 MiB buffers), but
    // four buffers per connection are 2^50 bytes per worker.
    let huge_buffers = http_file(a.addr, "max_conns = 16777216\nbuffer_size = 16777216", "");
    refused_reload(
        &dir,
        &proxy,
        proxy.addr,
        &huge_buffers,
        "lower max_conns or buffer_size",
    );
    assert_eq!(c.roundtrip(&get("/kept")).body, b"a /kept");
    let r = proxy.report();
    assert_eq!((r.u("reloads_ok"), r.u("reloads_failed")), (0, 2));

    // At start the same file is refused with a message and status 1, not
    // an abort with a backtrace.
    let (status, _, stderr) = run_cli(&["-c", &dir.write("big.toml", &huge_buffers)]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("max_conns 16777216 with buffer_size 16777216")
            && !stderr.contains("memory allocation"),
        "{stderr}"
    );
}
