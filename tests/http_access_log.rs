//! `--access-log`: one line per request in combined format plus the backend
//! and the request time, for answered, failed and refused requests alike.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let end = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < end,
            "only {} of {n} access-log lines after {DEADLINE:?}: {lines:?}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory of this test's own and the path of an access log in it that
/// does not exist yet.
fn fresh_log(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ferry-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    (dir, path)
}

#[test]
fn each_request_gets_a_combined_format_line_with_backend_and_time() {
    let backend = HttpBackend::fixed(&ok(b"hello"));
    let (dir, path) = fresh_log("access");
    let path_arg = path.to_str().unwrap().to_string();
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--access-log", &path_arg]);
    let mut c = HttpConn::connect(proxy.addr);
    let request = b"GET /page?q=1 HTTP/1.1\r\nHost: test\r\nReferer: http://from/\r\nUser-Agent: agent \"7\"\r\n\r\n";
    assert_eq!(c.roundtrip(request).status(), 200);
    // A request ferry refuses itself is logged too, with its answer's status.
    let mut bad = HttpConn::connect(proxy.addr);
    bad.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(bad.read_response(false).status(), 400);

    let lines = wait_lines(&path, 2);
    let first = &lines[0];
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(
        first.contains("] \"GET /page?q=1 HTTP/1.1\" 200 5 \"http://from/\" \"agent \\\"7\\\"\" "),
        "request line, status, body bytes, referer and escaped agent: {first}"
    );
    let backend_field = format!(" {} ", backend.addr);
    assert!(
        first.contains(&backend_field),
        "the backend address is logged: {first}"
    );
    let seconds: f64 = first
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("request time last");
    assert!((0.0..10.0).contains(&seconds), "{first}");
    assert!(
        lines[1].contains("\" 400 "),
        "the refused request is logged with 400: {}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(" - 0.000") || lines[1].contains(" - "),
        "no backend for it: {}",
        lines[1]
    );
    assert_eq!(proxy.report().u("access_log_dropped"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_access_log_refuses_to_start_naming_the_flag() {
    let (status, _out, err) = run_cli(&[
        "-m",
        "http",
        "-l",
        "127.0.0.1",
        "-p",
        "0",
        "--access-log",
        "/nonexistent-dir/x.log",
    ]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("--access-log") && err.contains("/nonexistent-dir/x.log"),
        "{err}"
    );
}

/// logrotate renames the log and expects a new one: after the rename, the
/// next requests' lines appear in a new file at the path (within about a
/// second), with no signal sent, and the rotated file keeps the old lines.
#[test]
fn a_rotated_access_log_is_followed_by_a_new_file() {
    let backend = HttpBackend::fixed(&ok(b"hello"));
    let (dir, path) = fresh_log("rotate");
    let rotated = dir.join("access.log.1");
    let path_arg = path.to_str().unwrap().to_string();
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--access-log", &path_arg]);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get("/before")).status(), 200);
    wait_lines(&path, 1);
    std::fs::rename(&path, &rotated).unwrap();
    // Requests until one lands in a new file at the path.
    let end = Instant::now() + DEADLINE;
    let mut sent = 0;
    while !path.exists() {
        assert!(
            Instant::now() < end,
            "no new access log at {} after rotation",
            path.display()
        );
        assert_eq!(c.roundtrip(&get(&format!("/after{sent}"))).status(), 200);
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let new = wait_lines(&path, 1);
    assert!(new[0].contains("GET /after"), "{new:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("GET /before"), "{old}");
    assert!(!old.contains(&new[0]), "a line went to both files: {old}");
    // Every request is in one file or the other, once.
    let new = wait_lines(&path, sent + 1 - old.lines().count());
    assert_eq!(old.lines().count() + new.len(), 1 + sent, "{old}{new:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
