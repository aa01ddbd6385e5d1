//! Per-listener figures with two listeners in one process, and figures that
//! survive reloads. The command line makes one listener only, so this runs
//! the server in this test process (`ferry::server::run` with a
//! configuration of two listeners) and signals itself for the reloads and
//! the stop: the only test in its binary, so no other test sees the signals.

use argh::FromArgs;
use ferry::config::{Config, Mode};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// A port that was free a moment ago (the server binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP/1.1 backend answering every request `200 ok` on keep-alive
/// connections, and an echo backend, each on its own thread.
fn backends() -> (SocketAddr, SocketAddr) {
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = (http.local_addr().unwrap(), echo.local_addr().unwrap());
    thread::spawn(move || {
        for s in http.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    thread::spawn(move || {
        for s in echo.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let mut chunk = [0u8; 4096];
                loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&chunk[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addrs
}

/// Two listeners: `web` (HTTP to the first backend) and `raw` (TCP to the
/// second), one worker, and the admin listener.
fn two_listeners(
    http: SocketAddr,
    echo: SocketAddr,
    admin: SocketAddr,
) -> (Config, [SocketAddr; 2]) {
    let (web_port, raw_port) = (free_port().to_string(), free_port().to_string());
    let args = [
        "-m",
        "http",
        "-l",
        "127.0.0.1",
        "-p",
        &web_port,
        "-b",
        &http.to_string(),
        "-w",
        "1",
        "--admin",
        &admin.to_string(),
        "--health-interval",
        "0.2",
    ];
    let mut config = ferry::cli::Args::from_args(&["proxy"], &args)
        .unwrap()
        .into_config()
        .unwrap();
    let mut raw = config.listeners[0].clone();
    config.listeners[0].name = "web".into();
    raw.name = "raw".into();
    raw.mode = Mode::Tcp;
    raw.listen.set_port(raw_port.parse().unwrap());
    raw.backends = vec![echo];
    config.listeners.push(raw);
    let listens = [config.listeners[0].listen, config.listeners[1].listen];
    (config, listens)
}

fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_string())
}

fn metrics(admin: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = admin_get(admin, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn wait_metrics(
    admin: SocketAddr,
    what: &str,
    pred: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let end = Instant::now() + DEADLINE;
    loop {
        let m = metrics(admin);
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < end, "/metrics never showed {what}: {m:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("{key} missing"))
}

/// `n` requests on one keep-alive connection to the HTTP listener.
fn http_requests(addr: SocketAddr, n: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    for i in 0..n {
        write!(s, "GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let k = s.read(&mut chunk).unwrap();
            assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..k]);
        }
    }
}

fn signal_self(sig: i32) {
    // SAFETY: kill(2) on our own pid; the server installed handlers for
    // SIGHUP and SIGTERM before its admin listener answered.
    assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
}

#[test]
fn listeners_have_their_own_figures_and_reloads_keep_them() {
    let (http, echo) = backends();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (config, [web, raw]) = two_listeners(http, echo, admin);
    // The first reload gives the same configuration, the second fails.
    let reloads = Arc::new(AtomicUsize::new(0));
    let (again, calls) = (config.clone(), reloads.clone());
    let reload: ferry::server::Reload =
        Box::new(move || match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(again.clone()),
            _ => Err(vec!["broken on purpose".to_string()]),
        });
    let server = thread::spawn(move || ferry::server::run(config, Some(reload)));
    let end = Instant::now() + DEADLINE;
    while TcpStream::connect(admin).is_err() {
        assert!(Instant::now() < end, "the admin listener never came up");
        thread::sleep(Duration::from_millis(20));
    }
    // The admin listener is up first; the listeners are bound once their
    // generation shows in the figures.
    wait_metrics(admin, "the listeners", |m| {
        m.contains_key("ferry_connections_active{listener=\"raw\"}")
    });

    http_requests(web, 3);
    let mut s = TcpStream::connect(raw).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&[1u8; 500]).unwrap();
    let mut back = [0u8; 500];
    s.read_exact(&mut back).unwrap();
    drop(s);
    let m = wait_metrics(admin, "both clients gone", |m| {
        m.get("ferry_connections_active{listener=\"web\"}") == Some(&0.0)
            && m.get("ferry_connections_active{listener=\"raw\"}") == Some(&0.0)
            && m.get("ferry_bytes_backend_to_client_total{listener=\"raw\"}") == Some(&500.0)
    });
    assert_eq!(get(&m, "ferry_http_requests_total{listener=\"web\"}"), 3.0);
    assert_eq!(get(&m, "ferry_http_requests_total{listener=\"raw\"}"), 0.0);
    assert_eq!(
        get(&m, "ferry_connections_accepted_total{listener=\"web\"}"),
        1.0
    );
    assert_eq!(
        get(&m, "ferry_connections_accepted_total{listener=\"raw\"}"),
        1.0
    );
    assert_eq!(
        get(&m, "ferry_bytes_client_to_backend_total{listener=\"raw\"}"),
        500.0
    );
    assert_eq!(
        get(
            &m,
            "ferry_http_responses_total{listener=\"web\",class=\"2xx\"}"
        ),
        3.0
    );
    assert_eq!(
        get(
            &m,
            &format!("ferry_upstream_up{{listener=\"web\",backend=\"{http}\"}}")
        ),
        1.0
    );
    // The TCP listener's backend has its figures too (connects), but no
    // health checker.
    assert_eq!(
        get(
            &m,
            &format!(
                "ferry_upstream_health_checks_total{{listener=\"raw\",backend=\"{echo}\",result=\"passed\"}}"
            )
        ),
        0.0
    );
    assert_eq!(
        get(
            &m,
            &format!(
                "ferry_upstream_connect_failures_total{{listener=\"raw\",backend=\"{echo}\"}}"
            )
        ),
        0.0
    );

    // A reload starts a new generation: the counts go on from where they were.
    signal_self(libc::SIGHUP);
    wait_metrics(admin, "the reload", |m| {
        m.get("ferry_reloads_total{outcome=\"ok\"}") == Some(&1.0)
    });
    http_requests(web, 2);
    let m = wait_metrics(admin, "5 requests on web", |m| {
        m.get("ferry_http_requests_total{listener=\"web\"}") == Some(&5.0)
    });
    assert_eq!(
        get(&m, "ferry_connections_accepted_total{listener=\"raw\"}"),
        1.0
    );
    assert_eq!(
        get(&m, "ferry_bytes_client_to_backend_total{listener=\"raw\"}"),
        500.0
    );
    let checks = format!(
        "ferry_upstream_health_checks_total{{listener=\"web\",backend=\"{http}\",result=\"passed\"}}"
    );
    wait_metrics(admin, "health checks passed", |m| {
        m.get(&checks) > Some(&0.0)
    });

    signal_self(libc::SIGHUP);
    let m = wait_metrics(admin, "the failed reload", |m| {
        m.get("ferry_reloads_total{outcome=\"failed\"}") == Some(&1.0)
    });
    assert_eq!(get(&m, "ferry_http_requests_total{listener=\"web\"}"), 5.0);
    let (_, stats) = admin_get(admin, "/stats");
    assert!(
        stats.contains("\"reloads\":{\"ok\":1,\"failed\":1}"),
        "{stats}"
    );

    signal_self(libc::SIGTERM);
    server.join().unwrap().expect("the server stops cleanly");
}
