//! The admin listener (`--admin`): `/metrics` in Prometheus text whose
//! counters equal the traffic sent, `/stats` as JSON with the same figures,
//! `/health`; the bearer token; 404, 405, 431; the acceleration times of an
//! exchange with a slow client; two listeners of a config file with their
//! own labels and report lines, whose figures go on across reloads.

mod common;

use common::files::{Reloaded, TempDir};
use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// An admin answer: status, head (lowercase) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Send `request` as is; read the answer until the admin listener closes.
fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")?
                .trim()
                .parse()
                .ok()
        })
        .expect("Content-Length");
    assert_eq!(body.len(), length, "the body is whole");
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

fn admin_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}\r\n").as_bytes(),
    )
}

/// Prometheus samples by `name{labels}` exactly as printed; checks that every
/// sample follows the `# TYPE` of its family.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap().to_string();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("name value");
        let name = key.split('{').next().unwrap();
        assert_eq!(name, family, "sample outside its family: {line}");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(key.to_string(), value);
    }
    samples
}

fn metric(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from {:?}", sorted(samples)))
}

fn sorted(samples: &HashMap<String, f64>) -> Vec<(&String, &f64)> {
    let mut v: Vec<_> = samples.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Fetch /metrics until `pred` holds (workers publish once per loop pass).
fn wait_metrics(
    addr: SocketAddr,
    token: Option<&str>,
    what: &str,
    pred: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let end = Instant::now() + DEADLINE;
    loop {
        let answer = admin_get(addr, "/metrics", token);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let samples = parse_metrics(&answer.body);
        if pred(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < end,
            "/metrics never showed {what}: {:?}",
            sorted(&samples)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

const MAIN: &str = "{listener=\"main\"}";

#[test]
fn metrics_counters_equal_the_traffic_sent() {
    let backend = HttpBackend::fixed(&ok(b"hello from the backend"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "2", "--admin", "127.0.0.1:0"]);
    let admin = proxy.admin_addr();
    let answer = admin_get(admin, "/metrics", None);
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .head
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        answer.head
    );
    // 3 clients, 4 keep-alive requests each.
    let mut to_client = 0;
    for k in 0..3 {
        let mut c = HttpConn::connect(proxy.addr);
        for i in 0..4 {
            let r = c.roundtrip(&get(&format!("/c{k}/r{i}")));
            assert_eq!(r.status(), 200);
            to_client += r.bytes().len();
        }
    }
    let samples = wait_metrics(admin, None, "the clients gone", |s| {
        s.get(&format!("ferry_connections_active{MAIN}")) == Some(&0.0)
            && s.get(&format!("ferry_connections_accepted_total{MAIN}")) == Some(&3.0)
    });
    let to_backend = backend.tap().len();
    let m = |name: &str| metric(&samples, &format!("{name}{MAIN}"));
    assert_eq!(m("ferry_http_requests_total"), 12.0);
    assert_eq!(
        metric(
            &samples,
            "ferry_http_responses_total{listener=\"main\",class=\"2xx\"}"
        ),
        12.0
    );
    assert_eq!(
        metric(
            &samples,
            "ferry_http_responses_total{listener=\"main\",class=\"5xx\"}"
        ),
        0.0
    );
    assert_eq!(m("ferry_bytes_client_to_backend_total"), to_backend as f64);
    assert_eq!(m("ferry_bytes_backend_to_client_total"), to_client as f64);
    assert_eq!(m("ferry_http_exchanges_timed_total"), 12.0);
    assert_eq!(
        m("ferry_backend_pool_hits_total") + m("ferry_backend_pool_misses_total"),
        12.0
    );
    // The same pool figures per backend: every new connection is a miss.
    let of_backend = |name: &str| {
        let labels = format!("{{listener=\"main\",backend=\"{}\"}}", backend.addr);
        metric(&samples, &format!("{name}{labels}"))
    };
    assert_eq!(
        of_backend("ferry_upstream_pool_hits_total"),
        m("ferry_backend_pool_hits_total")
    );
    assert_eq!(
        of_backend("ferry_upstream_pool_misses_total"),
        backend.request_conns() as f64
    );
    assert_eq!(of_backend("ferry_upstream_pool_evictions_total"), 0.0);
    assert!(metric(&samples, "ferry_loop_iterations_total") > 0.0);
    assert_eq!(metric(&samples, "ferry_reloads_total{outcome=\"ok\"}"), 0.0);
    assert_eq!(
        metric(
            &samples,
            &format!(
                "ferry_upstream_up{{listener=\"main\",backend=\"{}\"}}",
                backend.addr
            )
        ),
        1.0
    );
    // The report says the same, per listener and in total.
    let report = proxy.report();
    assert_eq!(report.u("http_requests"), 12);
    let lines = proxy.stderr_lines();
    assert!(
        lines.iter().any(|l| l == "listener main http_requests 12"),
        "no per-listener line in\n{}",
        lines.join("\n")
    );
    assert!(lines
        .iter()
        .any(|l| l == &format!("backend main {} up 1", backend.addr)));
}

#[test]
fn stats_is_json_with_the_same_figures_and_health_says_ok() {
    let backend = HttpBackend::fixed(&ok(b"x"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--admin", "127.0.0.1:0"]);
    let admin = proxy.admin_addr();
    let mut c = HttpConn::connect(proxy.addr);
    for i in 0..5 {
        assert_eq!(c.roundtrip(&get(&format!("/{i}"))).status(), 200);
    }
    drop(c);
    wait_metrics(admin, None, "the client gone", |s| {
        s.get(&format!("ferry_connections_active{MAIN}")) == Some(&0.0)
    });
    let answer = admin_get(admin, "/stats", None);
    assert_eq!(answer.status, 200);
    assert!(answer.head.contains("content-type: application/json"));
    let stats: serde_json::Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {}", answer.body));
    assert_eq!(stats["totals"]["http_requests"], 5);
    assert_eq!(stats["listeners"]["main"]["http_requests"], 5);
    assert_eq!(stats["listeners"]["main"]["http_responses_2xx"], 5);
    assert_eq!(stats["listeners"]["main"]["connections_accepted"], 1);
    assert!(
        stats["listeners"]["main"]["acceleration_ratio"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    assert!(stats["uptime_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["reloads"]["failed"], 0);
    assert!(stats["workers"]["loop_iterations"].as_u64().unwrap() > 0);
    assert!(stats["listeners"]["main"].get("loop_iterations").is_none());
    let b = &stats["backends"][0];
    assert_eq!(b["address"], backend.addr.to_string());
    assert_eq!(b["listener"], "main");
    assert_eq!(b["up"], true);

    let health = admin_get(admin, "/health", None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
}

#[test]
fn the_token_is_required_on_every_path() {
    let backend = HttpBackend::fixed(&ok(b"x"));
    let proxy = Proxy::http(
        &[backend.addr],
        &[
            "-w",
            "1",
            "--admin",
            "127.0.0.1:0",
            "--admin-token",
            "s3cret-t0ken",
        ],
    );
    let admin = proxy.admin_addr();
    for path in ["/metrics", "/stats", "/health", "/nowhere"] {
        let none = admin_get(admin, path, None);
        assert_eq!(none.status, 401, "{path} without a token");
        assert!(
            none.head.contains("www-authenticate: bearer"),
            "{}",
            none.head
        );
        assert!(
            !none.body.contains("ferry_"),
            "nothing leaks: {}",
            none.body
        );
        assert_eq!(admin_get(admin, path, Some("s3cret-t0ke")).status, 401);
        assert_eq!(admin_get(admin, path, Some("s3cret-t0ken2")).status, 401);
        let basic = raw(
            admin,
            format!("GET {path} HTTP/1.1\r\nAuthorization: Basic s3cret-t0ken\r\n\r\n").as_bytes(),
        );
        assert_eq!(basic.status, 401);
    }
    assert_eq!(
        admin_get(admin, "/metrics", Some("s3cret-t0ken")).status,
        200
    );
    assert_eq!(admin_get(admin, "/stats", Some("s3cret-t0ken")).status, 200);
    assert_eq!(
        admin_get(admin, "/health", Some("s3cret-t0ken")).status,
        200
    );
    assert_eq!(
        admin_get(admin, "/nowhere", Some("s3cret-t0ken")).status,
        404
    );
}

#[test]
fn unknown_paths_get_404_other_methods_405_and_big_heads_431() {
    let backend = HttpBackend::fixed(&ok(b"x"));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--admin", "127.0.0.1:0"]);
    let admin = proxy.admin_addr();
    assert_eq!(admin_get(admin, "/", None).status, 404);
    assert_eq!(admin_get(admin, "/metrics/x", None).status, 404);
    assert_eq!(admin_get(admin, "/metrics?format=text", None).status, 200);
    for method in ["POST", "PUT", "DELETE"] {
        let a = raw(
            admin,
            format!("{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert_eq!(a.status, 405, "{method}");
        assert!(a.head.contains("allow: get"), "{}", a.head);
    }
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    assert_eq!(raw(admin, big.as_bytes()).status, 431);
    assert_eq!(raw(admin, b"NOT HTTP AT ALL\r\n\r\n").status, 400);
    // A client that sends half a head and waits does not stop the others.
    let mut slow = TcpStream::connect(admin).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    assert_eq!(admin_get(admin, "/health", None).status, 200);
    drop(slow);
}

#[test]
fn a_slow_client_adds_backend_and_client_time() {
    // A response much larger than the socket buffers, to a client that
    // reads it only after a pause: the client's time includes the pause.
    let body = payload(4 * MIB, 7);
    let backend = HttpBackend::fixed(&ok(&body));
    let proxy = Proxy::http(&[backend.addr], &["-w", "1", "--admin", "127.0.0.1:0"]);
    let admin = proxy.admin_addr();
    let mut c = HttpConn::new(connect_small_rcvbuf(proxy.addr, 4 * KIB));
    c.send(&get("/big"));
    thread::sleep(Duration::from_millis(600));
    let r = c.read_response(false);
    assert_eq!(r.status(), 200);
    assert_eq!(r.body.len(), body.len());
    let samples = wait_metrics(admin, None, "one timed exchange", |s| {
        s.get(&format!("ferry_http_exchanges_timed_total{MAIN}")) == Some(&1.0)
    });
    let backend_s = metric(&samples, &format!("ferry_http_backend_seconds_total{MAIN}"));
    let client_s = metric(&samples, &format!("ferry_http_client_seconds_total{MAIN}"));
    let ratio = metric(&samples, &format!("ferry_acceleration_ratio{MAIN}"));
    assert!(backend_s > 0.0, "backend time {backend_s}");
    assert!(client_s >= 0.5, "client time {client_s} includes the pause");
    assert!(
        client_s >= backend_s,
        "client {client_s} < backend {backend_s}"
    );
    assert!(
        (ratio - client_s / backend_s).abs() < 1e-6 * ratio,
        "{ratio}"
    );
    let report = proxy.report();
    assert!(report.m("http_client_seconds") >= 0.5);
    assert!(report.m("acceleration_ratio") >= 1.0);
}

#[test]
fn tcp_listener_counts_bytes_and_connections_under_its_label() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--admin", "127.0.0.1:0"]);
    let admin = proxy.admin_addr();
    let mut c = connect(proxy.addr);
    c.write_all(&[7u8; 1000]).unwrap();
    let back = read_exact_with_deadline(&mut c, 1000, DEADLINE);
    assert_eq!(back, vec![7u8; 1000]);
    drop(c);
    let samples = wait_metrics(admin, None, "the pair closed", |s| {
        s.get(&format!("ferry_connections_active{MAIN}")) == Some(&0.0)
            && s.get(&format!("ferry_bytes_backend_to_client_total{MAIN}")) == Some(&1000.0)
    });
    assert_eq!(
        metric(
            &samples,
            &format!("ferry_bytes_client_to_backend_total{MAIN}")
        ),
        1000.0
    );
    assert_eq!(
        metric(&samples, &format!("ferry_connections_accepted_total{MAIN}")),
        1.0
    );
    assert_eq!(
        metric(&samples, &format!("ferry_http_requests_total{MAIN}")),
        0.0
    );
    assert!(metric(&samples, &format!("ferry_acceleration_ratio{MAIN}")).is_nan());
}

/// Two listeners of a config file, the admin listener with a token.
fn two_listeners(web: SocketAddr, raw: SocketAddr) -> String {
    format!(
        "workers = 1\nadmin = \"127.0.0.1:0\"\nadmin_token = \"t0k\"\n\
         [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nmode = \"http\"\n\
         backends = [\"{web}\"]\nhealth_interval = 0.2\n\
         [[listener]]\nname = \"raw\"\nlisten = \"127.0.0.2:0\"\nmode = \"tcp\"\n\
         backends = [\"{raw}\"]\n"
    )
}

#[test]
fn listeners_keep_their_own_figures_across_reloads() {
    let dir = TempDir::new("admin");
    let (http, echo) = (HttpBackend::fixed(&ok(b"ok")), Backend::echo());
    let file = dir.write("ferry.toml", &two_listeners(http.addr, echo.addr));
    let proxy = Proxy::start(&["-c", &file]);
    let at = proxy.listening_since(0, 2);
    let (web, raw) = (at[0], at[1]);
    let admin = proxy.admin_addr();
    let token = Some("t0k");
    let label = |name: &str, listener: &str| format!("{name}{{listener=\"{listener}\"}}");

    let mut c = HttpConn::connect(web);
    for i in 0..3 {
        assert_eq!(c.roundtrip(&get(&format!("/{i}"))).status(), 200);
    }
    drop(c);
    let mut s = connect(raw);
    s.write_all(&[1u8; 500]).unwrap();
    assert_eq!(
        read_exact_with_deadline(&mut s, 500, DEADLINE),
        vec![1u8; 500]
    );
    drop(s);
    let m = wait_metrics(admin, token, "both clients gone", |m| {
        m.get(&label("ferry_connections_active", "web")) == Some(&0.0)
            && m.get(&label("ferry_connections_active", "raw")) == Some(&0.0)
            && m.get(&label("ferry_bytes_backend_to_client_total", "raw")) == Some(&500.0)
    });
    assert_eq!(metric(&m, &label("ferry_http_requests_total", "web")), 3.0);
    assert_eq!(metric(&m, &label("ferry_http_requests_total", "raw")), 0.0);
    assert_eq!(
        metric(&m, &label("ferry_connections_accepted_total", "web")),
        1.0
    );
    assert_eq!(
        metric(&m, &label("ferry_connections_accepted_total", "raw")),
        1.0
    );
    assert_eq!(
        metric(&m, &label("ferry_bytes_client_to_backend_total", "raw")),
        500.0
    );
    assert_eq!(
        metric(
            &m,
            "ferry_http_responses_total{listener=\"web\",class=\"2xx\"}"
        ),
        3.0
    );
    let upstream = |name: &str, listener: &str, backend: SocketAddr| {
        format!("{name}{{listener=\"{listener}\",backend=\"{backend}\"}}")
    };
    assert_eq!(
        metric(&m, &upstream("ferry_upstream_up", "web", http.addr)),
        1.0
    );
    // A TCP listener's backend has connect figures but no health checker.
    assert_eq!(
        metric(
            &m,
            &upstream("ferry_upstream_connect_failures_total", "raw", echo.addr)
        ),
        0.0
    );
    let checks = format!(
        "ferry_upstream_health_checks_total{{listener=\"raw\",backend=\"{}\",result=\"passed\"}}",
        echo.addr
    );
    assert_eq!(metric(&m, &checks), 0.0);

    // A reload starts a new generation of workers: the figures go on from
    // where they were, and the reload is counted.
    proxy.reload_ok();
    let m = wait_metrics(admin, token, "the reload", |m| {
        m.get("ferry_reloads_total{outcome=\"ok\"}") == Some(&1.0)
    });
    assert_eq!(metric(&m, &label("ferry_http_requests_total", "web")), 3.0);
    let mut c = HttpConn::connect(web);
    for i in 0..2 {
        assert_eq!(c.roundtrip(&get(&format!("/again/{i}"))).status(), 200);
    }
    drop(c);
    let m = wait_metrics(admin, token, "5 requests on web", |m| {
        m.get(&label("ferry_http_requests_total", "web")) == Some(&5.0)
            && m.get(&label("ferry_connections_active", "web")) == Some(&0.0)
    });
    assert_eq!(
        metric(&m, &label("ferry_connections_accepted_total", "web")),
        2.0
    );
    assert_eq!(
        metric(&m, &label("ferry_bytes_client_to_backend_total", "raw")),
        500.0
    );
    let checks = format!(
        "ferry_upstream_health_checks_total{{listener=\"web\",backend=\"{}\",result=\"passed\"}}",
        http.addr
    );
    assert!(metric(&m, &checks) > 0.0, "health checks are counted");

    // An invalid file is refused and counted; nothing else changes.
    dir.write("ferry.toml", "workers = \"many\"\n");
    assert!(matches!(proxy.reload(), Reloaded::Failed(_)));
    let m = wait_metrics(admin, token, "the failed reload", |m| {
        m.get("ferry_reloads_total{outcome=\"failed\"}") == Some(&1.0)
    });
    assert_eq!(metric(&m, &label("ferry_http_requests_total", "web")), 5.0);
    let stats = admin_get(admin, "/stats", token);
    let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(stats["reloads"]["ok"], 1);
    assert_eq!(stats["listeners"]["web"]["http_requests"], 5);
    assert_eq!(stats["listeners"]["raw"]["bytes_client_to_backend"], 500);

    // The report has the same figures per listener.
    proxy.report();
    let lines = proxy.stderr_lines();
    for line in [
        "listener web http_requests 5",
        "listener raw bytes_client_to_backend 500",
        "listener raw http_requests 0",
    ] {
        assert!(
            lines.iter().any(|l| l == line),
            "{line:?} missing from\n{}",
            lines.join("\n")
        );
    }
}
