//! Config files: every example in config/ passes `--check` and serves (its
//! addresses rewritten to free loopback ports and test backends); `--check`
//! names FILE:LINE:COLUMN and the key of each kind of mistake; flags given
//! beside `-c` override the file's first listener and globals.

mod common;

use base64::Engine;
use common::files::TempDir;
use common::*;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr};

fn examples() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.to_string_lossy().into_owned(), text)
        })
        .collect();
    out.sort();
    for want in ["tcp", "http", "forward", "apache-accelerator", "multi"] {
        assert!(
            out.iter()
                .any(|(p, _)| p.ends_with(&format!("/{want}.toml"))),
            "config/{want}.toml is missing"
        );
    }
    out
}

#[test]
fn every_example_passes_check() {
    for (path, text) in examples() {
        let (status, stdout, stderr) = run_cli(&["-c", &path, "--check"]);
        let n = text.matches("[[listener]]").count();
        let want = format!("{path}: ok ({n} listener{})", if n == 1 { "" } else { "s" });
        assert_eq!(status.code(), Some(0), "{path}: {stderr}");
        assert_eq!(stdout.trim_end(), want, "{path}");
    }
}

/// One listener of an example as the test sees it.
struct Example {
    mode: String,
    backends: usize,
    auth: Option<String>,
}

/// The listeners of a config file, from its text (the examples keep each
/// key on one line).
fn listeners_of(text: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line == "[[listener]]" {
            out.push(Example {
                mode: "tcp".into(),
                backends: 1,
                auth: None,
            });
        }
        let Some(l) = out.last_mut() else { continue };
        let value = line.split_once('=').map(|(_, v)| v.trim());
        let quoted: Vec<&str> = value.unwrap_or("").split('"').skip(1).step_by(2).collect();
        if line.starts_with("mode ") {
            l.mode = quoted[0].to_string();
        } else if line.starts_with("backends ") {
            l.backends = quoted.len();
        } else if line.starts_with("auth ") {
            l.auth = Some(quoted[0].to_string());
        }
    }
    for l in &mut out {
        if l.mode == "forward" {
            l.backends = 0;
        }
    }
    out
}

/// The file with listener N on 127.0.0.(N+1):0 and its backends replaced.
fn rewrite(text: &str, backends: &[Vec<SocketAddr>]) -> String {
    let mut n = 0;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t == "[[listener]]" {
            n += 1;
        }
        if t.starts_with("listen ") {
            out += &format!("listen = \"127.0.0.{n}:0\"\n");
        } else if t.starts_with("backends ") {
            let list: Vec<String> = backends[n - 1].iter().map(|a| format!("\"{a}\"")).collect();
            out += &format!("backends = [{}]\n", list.join(", "));
        } else {
            out += line;
            out.push('\n');
        }
    }
    out
}

fn echo_once(addr: SocketAddr, what: &str) {
    let mut s = connect(addr);
    s.write_all(what.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_to_end_with_deadline(&mut s, DEADLINE);
    assert_eq!(got, what.as_bytes(), "{what}: the echo through {addr}");
}

#[test]
fn every_example_serves() {
    let dir = TempDir::new("examples");
    for (path, text) in examples() {
        let listeners = listeners_of(&text);
        let mut echo = Vec::new();
        let mut http = Vec::new();
        let mut addrs = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let mut mine = Vec::new();
            for b in 0..l.backends.max(1) {
                if l.mode == "tcp" {
                    echo.push(Backend::echo());
                    mine.push(echo.last().unwrap().addr);
                } else {
                    let name: &'static str = Box::leak(format!("l{i}b{b}").into_boxed_str());
                    http.push(HttpBackend::named(name));
                    mine.push(http.last().unwrap().addr);
                }
            }
            addrs.push(mine);
        }
        let name = path.rsplit('/').next().unwrap();
        let file = dir.write(name, &rewrite(&text, &addrs));
        let (status, stdout, stderr) = run_cli(&["-c", &file, "--check"]);
        assert_eq!(status.code(), Some(0), "{name} rewritten: {stdout}{stderr}");
        let proxy = Proxy::start(&["-c", &file]);
        let at = proxy.listening_since(0, listeners.len());
        for (i, l) in listeners.iter().enumerate() {
            let what = format!("{name} listener {i} ({})", l.mode);
            match l.mode.as_str() {
                "tcp" => echo_once(at[i], &what),
                "http" => {
                    let mut c = HttpConn::connect(at[i]);
                    for _ in 0..2 * l.backends {
                        let r = c.roundtrip(&get("/x"));
                        assert_eq!(r.status(), 200, "{what}");
                        let body = String::from_utf8_lossy(&r.body).into_owned();
                        assert!(body.starts_with(&format!("l{i}b")), "{what}: {body}");
                    }
                }
                "forward" => {
                    let origin = addrs[i][0];
                    let request = |auth: &str| {
                        format!("GET http://{origin}/f HTTP/1.1\r\nHost: {origin}\r\n{auth}\r\n")
                    };
                    let mut c = HttpConn::connect(at[i]);
                    let r = c.roundtrip(request("").as_bytes());
                    assert_eq!(r.status(), 407, "{what}: without credentials");
                    let cred = l.auth.as_deref().expect("the example has credentials");
                    let token = base64::engine::general_purpose::STANDARD.encode(cred);
                    let auth = format!("Proxy-Authorization: Basic {token}\r\n");
                    let mut c = HttpConn::connect(at[i]);
                    let r = c.roundtrip(request(&auth).as_bytes());
                    assert_eq!(r.status(), 200, "{what}");
                    assert_eq!(r.body, format!("l{i}b0 /f").as_bytes(), "{what}");
                }
                other => panic!("{name}: unknown mode {other}"),
            }
        }
    }
}

/// `--check` on `text`: exit 1 and every line of stderr.
fn check_problems(dir: &TempDir, text: &str) -> (String, Vec<String>) {
    let file = dir.write("bad.toml", text);
    let (status, stdout, stderr) = run_cli(&["-c", &file, "--check"]);
    assert_eq!(
        status.code(),
        Some(1),
        "{text}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (file, stderr.lines().map(String::from).collect())
}

#[test]
fn check_names_the_file_line_column_and_key_of_each_mistake() {
    let dir = TempDir::new("check");
    for (text, place, what) in [
        (
            "workers = 2\nworkrs = 2\n[[listener]]\n",
            "2:1",
            "unknown key 'workrs' (did you mean 'workers'?)",
        ),
        (
            "[[listener]]\nlisten = \"127.0.0.1:0\"\nbackend_timeout = \"slow\"\n",
            "3:19",
            "backend_timeout: expected a number of seconds, found the string \"slow\"",
        ),
        (
            "[[listener]]\nlisten = \"127.0.0.1:8o80\"\n",
            "2:10",
            "listen: '127.0.0.1:8o80' is not an ADDRESS:PORT",
        ),
        (
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\n[[listener]]\n  listen = \"0.0.0.0:8080\"\n",
            "5:12",
            "listen: 0.0.0.0:8080 clashes with 127.0.0.1:8080 of listener 'listener1'",
        ),
        (
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\n[[listener]]\nlisten = \"[::ffff:127.0.0.1]:8080\"\n",
            "5:10",
            "listen: [::ffff:127.0.0.1]:8080 clashes with 127.0.0.1:8080 of listener 'listener1'",
        ),
        (
            "[[listener]]\nmode = \"http\"\nbackends = []\n",
            "3:12",
            "backends: the backend list is empty; http mode needs at least one backend",
        ),
    ] {
        let (file, lines) = check_problems(&dir, text);
        let want = format!("{file}:{place}: {what}");
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "want a line starting {want:?}, got {lines:#?}"
        );
        assert_eq!(lines.last().unwrap(), &format!("proxy: {file}: 1 problem"));
    }
}

#[test]
fn check_reports_every_problem_at_once() {
    let dir = TempDir::new("every");
    let (file, lines) = check_problems(
        &dir,
        "max_conns = -1\n[[listener]]\nlisten = \"x\"\nbogus = true\n\
         [[listener]]\nmode = \"http\"\nbackends = []\nhealth_rise = 0\n",
    );
    let places: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{file}:")))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        places,
        ["1:13:", "3:10:", "4:1:", "7:12:", "8:15:"],
        "{lines:#?}"
    );
}

#[test]
fn a_file_with_problems_does_not_start() {
    let dir = TempDir::new("nostart");
    let file = dir.write(
        "bad.toml",
        "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = 3\n",
    );
    let (status, _, stderr) = run_cli(&["-c", &file]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:3:8: mode: expected a string")),
        "{stderr}"
    );
    let (status, _, stderr) = run_cli(&["-c", &dir.path.join("none.toml").to_string_lossy()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("none.toml: No such file"), "{stderr}");
}

#[test]
fn flags_override_the_files_first_listener_and_globals() {
    let dir = TempDir::new("flags");
    let (a, b, unused) = (Backend::echo(), Backend::echo(), refusing_addr());
    let file = dir.write(
        "f.toml",
        &format!(
            "workers = 1\n[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"{unused}\"]\n\
             [[listener]]\nlisten = \"127.0.0.2:0\"\nbackends = [\"{}\"]\n",
            b.addr
        ),
    );
    // The file alone cannot start: port 1 is taken by nothing but privileged
    // and its backend refuses; the flags move the first listener and its backend.
    let backend = a.addr.to_string();
    let proxy = Proxy::start(&["-c", &file, "-p", "0", "-b", &backend, "-w", "2"]);
    let at = proxy.listening_since(0, 2);
    assert_eq!(at[0].ip().to_string(), "127.0.0.1");
    assert_ne!(at[0].port(), 1);
    echo_once(at[0], "first listener, backend from -b");
    echo_once(at[1], "second listener, as the file says");
    assert_eq!(a.accepted(), 1);
    assert_eq!(b.accepted(), 1);
    // A global flag overrides the file's global (workers = 1).
    assert!(
        proxy.stderr().contains("(tcp, 2 workers)"),
        "{}",
        proxy.stderr()
    );
    // A flag's bad value is named by the flag, with the file's problems.
    let (status, _, stderr) = run_cli(&["-c", &file, "--check", "--workers", "0"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("--workers: 0 is not between 1 and 1024"),
        "{stderr}"
    );
    // Without -c, --check has nothing to check.
    let (status, _, stderr) = run_cli(&["--check"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    // A connection to where the file said goes nowhere (nothing listens).
    match std::net::TcpStream::connect("127.0.0.1:1") {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        Ok(_) => panic!("something listens on 127.0.0.1:1"),
    }
}
