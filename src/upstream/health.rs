//! Active health checks, on a thread of their own (never on a worker's loop).
//!
//! Every interval the checker probes each backend: a TCP connect, or for
//! `http:/PATH` a `GET PATH` whose status must be 2xx or 3xx. `fall`
//! failures in a row take an up backend down; `rise` passes in a row bring a
//! down backend back, whether the checker or a worker's failed connect took
//! it down.

use super::BackendState;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    /// `GET` this path; 2xx or 3xx passes.
    Http(String),
}

impl std::str::FromStr for Probe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "tcp" {
            return Ok(Probe::Tcp);
        }
        match s.strip_prefix("http:") {
            Some(path)
                if path.starts_with('/') && !path.bytes().any(|b| b <= b' ' || b == 0x7f) =>
            {
                Ok(Probe::Http(path.to_string()))
            }
            _ => Err(format!("'{s}' is not tcp or http:/PATH")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub probe: Probe,
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The checker could not even make a socket (the process is out of
    /// descriptors or memory): says nothing about the backend.
    NotRun,
}

/// Probe `backend` once, waiting at most `timeout` for each step.
pub fn check(backend: &BackendState, probe: &Probe, timeout: Duration) -> Verdict {
    let mut stream = match TcpStream::connect_timeout(&backend.addr, timeout) {
        Ok(s) => s,
        Err(e) if crate::net::sys::out_of_descriptors(&e) => return Verdict::NotRun,
        Err(_) => return Verdict::Fail,
    };
    let Probe::Http(path) = probe else {
        return Verdict::Pass;
    };
    if http_check(&mut stream, &backend.addr, path, timeout) {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

/// Send `GET path` and read the status: 2xx or 3xx passes.
fn http_check(
    stream: &mut TcpStream,
    addr: &std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> bool {
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: ferry-health\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    head.starts_with(b"HTTP/1.") && matches!(head[9], b'2' | b'3')
}

/// Run checks on the calling thread until no worker holds these backends
/// any more (their generation ended: a reload retired it, or the process stops).
pub fn run(backends: Vec<Arc<BackendState>>, config: HealthConfig) {
    use std::sync::atomic::Ordering::Relaxed;
    // Per backend: passes in a row, failures in a row, marks-down seen.
    let mut streaks: Vec<(u32, u32, u64)> = vec![(0, 0, 0); backends.len()];
    let timeout = config.interval.min(Duration::from_secs(2));
    loop {
        if backends.iter().all(|b| Arc::strong_count(b) == 1) {
            return;
        }
        for (backend, (passes, fails, seen)) in backends.iter().zip(streaks.iter_mut()) {
            let marks = backend.marked_down.load(Relaxed);
            if marks != *seen {
                // Taken down since the last check (perhaps by a worker): rise afresh.
                *seen = marks;
                *passes = 0;
            }
            let verdict = check(backend, &config.probe, timeout);
            if verdict == Verdict::NotRun {
                // The streaks stand as they were: the proxy's own shortage
                // is no failure of the backend (and no pass either).
                continue;
            }
            if verdict == Verdict::Pass {
                backend.checks_passed.fetch_add(1, Relaxed);
                *fails = 0;
                *passes += 1;
                if !backend.is_up() && *passes >= config.rise {
                    backend.mark_up();
                    eprintln!(
                        "ferry: backend {} is up ({} checks passed)",
                        backend.addr, passes
                    );
                }
            } else {
                backend.checks_failed.fetch_add(1, Relaxed);
                *passes = 0;
                *fails += 1;
                if backend.is_up() && *fails >= config.fall {
                    backend.mark_down();
                    *seen = backend.marked_down.load(Relaxed);
                    eprintln!(
                        "ferry: backend {} is down ({} checks failed)",
                        backend.addr, fails
                    );
                }
            }
        }
        std::thread::sleep(config.interval);
    }
}
