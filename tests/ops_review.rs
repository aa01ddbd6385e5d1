//! The operational review: config files the way an operator gets them
//! wrong, reloads that must change nothing when they are refused, and the
//! admin listener. Each test spawns the real binary.
//!
//! * Values in range for each check alone that the workers cannot reserve
//!   memory for (a huge `pool_size`, `max_conns` times `buffer_size`) are
//!   refused with a message, at start and on a reload, instead of aborting
//!   the process.
//! * More listeners than a worker's tokens tell apart, an empty
//!   `listener = []`, an admin listener on a listener's address and an
//!   empty admin token are problems `--check` names.
//! * A reload sets the backlog of the listening sockets it keeps.
//! * A setting the listener's mode does not use is a problem; so is a
//!   health check interval under 0.1 s.
//! * Syntax errors name their key; a file that is not UTF-8 says where.
//! * The admin listener answers HEAD as GET without the body, and takes an
//!   absolute-form target.

mod common;

use common::files::{Reloaded, TempDir};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A one-worker HTTP listener on a free loopback port in front of `backend`,
/// with `extra` lines (global keys) before it and `more` in its table.
fn http_file(backend: SocketAddr, extra: &str, more: &str) -> String {
    format!(
        "workers = 1\n{extra}\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\
         mode = \"http\"\nbackends = [\"{backend}\"]\n{more}\n"
    )
}

/// `--check` on `text` written to `name`: the exit code and stderr.
fn check(dir: &TempDir, name: &str, text: &str) -> (Option<i32>, String, String) {
    let path = dir.write(name, text);
    let (status, stdout, stderr) = run_cli(&["-c", &path, "--check"]);
    (status.code(), stdout, stderr)
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

/// The backlog of the socket listening on `addr`, as `ss` shows it (Send-Q
/// of a listening socket); None without `ss`.
fn listen_backlog(addr: SocketAddr) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("src {addr}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("ss shows no {addr}"));
    let send_q = line
        .split_whitespace()
        .nth(2)
        .expect("State Recv-Q Send-Q ...");
    Some(send_q.parse().unwrap_or_else(|_| panic!("ss: {line}")))
}

#[test]
fn a_reload_sets_the_backlog_of_the_sockets_it_keeps() {
    let dir = TempDir::new("ops-backlog");
    let a = HttpBackend::named("a");
    let file = dir.write("ferry.toml", &http_file(a.addr, "backlog = 100", ""));
    let proxy = Proxy::start(&["-c", &file]);
    let Some(before) = listen_backlog(proxy.addr) else {
        eprintln!("skipped: no `ss` to read a listening socket's backlog");
        return;
    };
    assert_eq!(before, 100);
    // The socket is kept (same address), so its queue is; the backlog
    // used to stay 100 whatever the reloaded file said.
    dir.write("ferry.toml", &http_file(a.addr, "backlog = 7", ""));
    assert_eq!(proxy.reload_ok(), [proxy.addr]);
    assert_eq!(listen_backlog(proxy.addr), Some(7));
    // A reload that fails changes nothing, the backlog included.
    let bad = http_file(a.addr, "backlog = 50", "pool_size = -1");
    refused_reload(&dir, &proxy, proxy.addr, &bad, "pool_size");
    assert_eq!(listen_backlog(proxy.addr), Some(7));
}

#[test]
fn more_listeners_than_a_worker_tells_apart_are_refused() {
    let dir = TempDir::new("ops-many");
    // 4097 listeners on distinct loopback addresses: the 4097th used to be
    // served once and then never again (its token read as a pair's).
    let mut text = String::from("workers = 1\n");
    for i in 0..4097 {
        text.push_str(&format!(
            "[[listener]]\nlisten = \"127.0.{}.{}:0\"\n",
            i / 250 + 1,
            i % 250 + 1
        ));
    }
    let (code, stdout, stderr) = check(&dir, "many.toml", &text);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    // Listener 4097 starts on line 2 + 2 * 4096.
    assert!(
        stderr.contains("many.toml:8194:1: more than 4096 listeners"),
        "{stderr}"
    );
    // 4096 are fine.
    let cut = text.rfind("[[listener]]").unwrap();
    let (code, stdout, stderr) = check(&dir, "most.toml", &text[..cut]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ok (4096 listeners)"), "{stdout}");
}

#[test]
fn an_empty_listener_list_is_refused_at_check_and_on_reload() {
    let dir = TempDir::new("ops-empty");
    let (code, stdout, stderr) = check(&dir, "empty.toml", "workers = 1\nlistener = []\n");
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("empty.toml:2:12: listener: an empty list declares no listener"),
        "{stderr}"
    );

    let a = HttpBackend::named("a");
    let file = dir.write("ferry.toml", &http_file(a.addr, "", ""));
    let proxy = Proxy::start(&["-c", &file]);
    refused_reload(
        &dir,
        &proxy,
        proxy.addr,
        "workers = 1\nlistener = []\n",
        "no listener",
    );
}

#[test]
fn the_admin_listener_may_not_take_a_listeners_address() {
    let dir = TempDir::new("ops-admin-clash");
    // --check binds nothing, so any port will do.
    let text = "admin = \"127.0.0.1:19431\"\n[[listener]]\nname = \"web\"\n\
                listen = \"0.0.0.0:19431\"\n";
    let (code, stdout, stderr) = check(&dir, "clash.toml", text);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "clash.toml:1:9: admin: the admin listener 127.0.0.1:19431 clashes with \
             0.0.0.0:19431 of listener 'web'"
        ),
        "{stderr}"
    );
    // Port 0 picks a free port for each: no clash.
    let text = "admin = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n";
    assert_eq!(check(&dir, "zero.toml", text).0, Some(0));
}

#[test]
fn an_empty_admin_token_is_refused() {
    let dir = TempDir::new("ops-token");
    // With an empty token no request could ever be let in.
    let text = "admin = \"127.0.0.1:0\"\nadmin_token = \"\"\n[[listener]]\n";
    let (code, stdout, stderr) = check(&dir, "token.toml", text);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("token.toml:2:15: admin_token: the token is empty"),
        "{stderr}"
    );
}

#[test]
fn a_setting_the_listeners_mode_does_not_use_is_a_problem() {
    let dir = TempDir::new("ops-mode-keys");
    // An access log on a TCP listener used to be accepted and write
    // nothing; so were balancing in forward mode and credentials in HTTP mode.
    let text = "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"tcp\"\n\
                access_log = \"/tmp/never.log\"\n\
                [[listener]]\nlisten = \"127.0.0.2:0\"\nmode = \"forward\"\n\
                health_interval = 5\n\
                [[listener]]\nlisten = \"127.0.0.3:0\"\nmode = \"http\"\n\
                auth = [\"u:p\"]\n";
    let (code, stdout, stderr) = check(&dir, "modes.toml", text);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for want in [
        "modes.toml:4:14: access_log: tcp mode relays bytes and does not use this HTTP \
         setting; remove it, or use mode = \"http\"",
        "modes.toml:8:19: health_interval: forward mode has no backends",
        "modes.toml:12:8: auth: only forward mode uses this; remove it, or use mode = \"forward\"",
    ] {
        assert!(stderr.contains(want), "{want:?} missing from\n{stderr}");
    }
    // The same on the command line, named by the flag.
    let (status, _, stderr) = run_cli(&[
        "-l",
        "127.0.0.1",
        "-p",
        "0",
        "-m",
        "tcp",
        "--access-log",
        "/tmp/never.log",
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--access-log: tcp mode relays bytes") && stderr.contains("-m http"),
        "{stderr}"
    );
}

#[test]
fn a_health_interval_under_a_tenth_of_a_second_is_refused() {
    let dir = TempDir::new("ops-health");
    // A health check every microsecond used to spin a thread on connects
    // (26,000 checks in 3 s) and give each probe a microsecond to answer.
    let text = "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"http\"\n\
                health_interval = 0.000001\n";
    let (code, _, stderr) = check(&dir, "often.toml", text);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("often.toml:4:19: health_interval: 0.000001 s is below 0.1 s"),
        "{stderr}"
    );
}

#[test]
fn syntax_errors_name_their_key_and_a_file_not_utf8_says_where() {
    let dir = TempDir::new("ops-syntax");
    let (code, _, stderr) = check(
        &dir,
        "dup.toml",
        "[[listener]]\nmode = \"http\"\nmode = \"tcp\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("dup.toml:3:1: mode: duplicate key"),
        "{stderr}"
    );
    let (code, _, stderr) = check(&dir, "value.toml", "workers = two\n[[listener]]\n");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("value.toml:1:11: workers: "), "{stderr}");

    let path = dir.path.join("latin1.toml");
    std::fs::write(&path, b"[[listener]]\nname = \"caf\xe9\"\n").unwrap();
    let (status, _, stderr) = run_cli(&["-c", path.to_str().unwrap(), "--check"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("latin1.toml:2:12: the file is not UTF-8"),
        "{stderr}"
    );
}

/// Everything the admin listener sends for `request`, until it closes.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn the_admin_listener_answers_head_and_absolute_targets() {
    let backend = HttpBackend::fixed(&ok(b"x"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--admin", "127.0.0.1:0"]);
    let admin = proxy.admin_addr();
    for path in ["/health", "/metrics", "/stats?pretty"] {
        let get = exchange(admin, &format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
        let head = exchange(admin, &format!("HEAD {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
        let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
        assert!(get_head.starts_with("HTTP/1.1 200 "), "{get}");
        assert!(head.starts_with("HTTP/1.1 200 "), "HEAD {path}: {head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "HEAD {path} has a body: {head:?}"
        );
        let length = |h: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(str::to_string)
        };
        assert!(length(&head).is_some_and(|n| n != "0"), "{head}");
        if path == "/health" {
            // The figures of the others move between two requests.
            assert_eq!(length(&head), length(get_head));
            assert_eq!(get_body, "ok\n");
        }
    }
    // An absolute-form target (RFC 9112 3.2.2: a server must accept it)
    // used to get 404.
    let absolute = exchange(
        admin,
        &format!("GET http://{admin}/health HTTP/1.1\r\n\r\n"),
    );
    assert!(
        absolute.starts_with("HTTP/1.1 200 ") && absolute.ends_with("\r\n\r\nok\n"),
        "{absolute}"
    );
    let put = exchange(admin, "PUT /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        put.starts_with("HTTP/1.1 405 ") && put.contains("Allow: GET, HEAD\r\n"),
        "{put}"
    );
}
