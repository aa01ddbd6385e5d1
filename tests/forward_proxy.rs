//! Forward mode (`-m forward`), proved against the real binary: absolute-form
//! requests reach the origin they name in origin form (Host from the target,
//! proxy fields stripped, Via both ways) with keep-alive across origins;
//! CONNECT opens a byte tunnel (200, early bytes, half-close, 8 MiB with
//! splice on and off); Basic proxy auth (407 and a retry on the same
//! connection, wrong password, auth files); the refusals (403 for ports,
//! networks and loops, 400 for a malformed authority, 502 for a name that
//! does not resolve, 504 for a black hole); credentials never logged nor
//! left readable in the command line; the open-proxy refusal at start; `-m http` still serves absolute form from its
//! backends; the forward counters in the SIGUSR1 report; and the edges
//! (origin-first half-close, names through the resolver cache, a tunnel after
//! a request, pipelining, stale pooled origins, 40 concurrent tunnels,
//! clients leaving mid-connect, idle tunnels, IPv6 literals, HTTP/1.0).

mod common;

use base64::Engine;
use common::*;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

const CONNECT_OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
const USER: &str = "alice";
const PASS: &str = "Zq7-secret-Pw";

/// A forward proxy on 127.0.0.1:0 with one worker.
fn forward(extra: &[&str]) -> Proxy {
    let mut args = vec!["-m", "forward", "-l", "127.0.0.1", "-p", "0", "-w", "1"];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The `Proxy-Authorization` field line for `user:pass`.
fn creds(user_pass: &str) -> String {
    format!("Proxy-Authorization: Basic {}\r\n", b64(user_pass))
}

fn good_creds() -> String {
    creds(&format!("{USER}:{PASS}"))
}

fn auth_arg() -> String {
    format!("{USER}:{PASS}")
}

fn connect_req(target: &str, extra: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n").into_bytes()
}

fn get_abs(url: &str, extra: &str) -> Vec<u8> {
    format!("GET {url} HTTP/1.1\r\nHost: ignored.example\r\n{extra}\r\n").into_bytes()
}

/// Read the tunnel's exact `200 Connection established` head; bytes after it
/// stay in `c.buf`.
fn expect_established(c: &mut HttpConn, what: &str) {
    let head = match c.try_read_head() {
        Ok(Some(h)) => h,
        other => panic!(
            "{what}: no CONNECT answer ({other:?}); received {:?}",
            String::from_utf8_lossy(&c.buf)
        ),
    };
    assert_eq!(
        head.raw,
        CONNECT_OK,
        "{what}: the tunnel must open with exactly `HTTP/1.1 200 Connection established`, got {:?}",
        head.text()
    );
}

/// Open a tunnel to `target` through `proxy`.
fn open_tunnel(proxy: SocketAddr, target: &str, extra: &str) -> HttpConn {
    let mut c = HttpConn::connect(proxy);
    c.send(&connect_req(target, extra));
    expect_established(&mut c, &format!("CONNECT {target}"));
    c
}

/// Send `req` and expect ferry's closing answer `status`.
fn refused(proxy: SocketAddr, req: &[u8], status: u16, what: &str) -> Response {
    let mut c = HttpConn::connect(proxy);
    c.send(req);
    expect_answer_and_close(&mut c, status, what)
}

/// Assert a 407 that asks for Basic credentials in realm "ferry".
fn assert_407(r: &Response, what: &str) {
    assert_eq!(
        r.status(),
        407,
        "{what}: expected 407, got {:?}",
        String::from_utf8_lossy(&r.bytes())
    );
    assert_eq!(
        r.head.get("proxy-authenticate"),
        Some("Basic realm=\"ferry\""),
        "{what}: 407 must carry Proxy-Authenticate: Basic realm=\"ferry\"; head:\n{}",
        r.head.text()
    );
}

/// Echo `n` bytes of stream `seed` through an open tunnel: a thread writes
/// them and shuts the write side; the echo comes back byte-exact, then EOF.
fn echo_through(c: HttpConn, n: usize, seed: u64, what: &str) {
    assert!(c.buf.is_empty(), "{what}: bytes before any were sent");
    let mut s = c.s;
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        write_stream(&mut w, n, seed).expect("write through the tunnel");
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_stream_verify(&mut s, seed, DEADLINE);
    writer.join().unwrap();
    assert_eq!(got, n, "{what}: echoed {got} of {n} bytes");
}

/// Read the rest of a tunnel until EOF (bytes already buffered in `c`
/// first), comparing it with the stream `seed`; returns its length.
fn verify_rest(c: HttpConn, seed: u64) -> usize {
    let mut prng = Prng::new(seed);
    let mut want = vec![0u8; c.buf.len()];
    prng.fill(&mut want);
    assert!(
        c.buf == want,
        "the first {} bytes after the tunnel's head differ",
        want.len()
    );
    let mut s = c.s;
    read_stream_verify_from(&mut s, &mut prng, want.len(), DEADLINE)
}

/// Wait until the report shows each counter at its value (a worker
/// publishes its counters at the end of an event-loop pass, so a report
/// taken the moment an answer arrives may be one pass behind).
fn expect_counters(proxy: &Proxy, want: &[(&str, u64)]) -> Report {
    let what = format!("{want:?}");
    proxy.wait_report(&what, DEADLINE, |r| {
        want.iter().all(|&(name, v)| r.u(name) == v)
    })
}

// ---------------------------------------------------------------------------
// Absolute-form requests.
// ---------------------------------------------------------------------------

#[test]
fn absolute_form_get_reaches_the_origin_in_origin_form_with_host_from_the_target() {
    let origin =
        HttpBackend::fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Origin: yes\r\n\r\norigin");
    let auth = auth_arg();
    let proxy = forward(&["--auth", &auth]);
    let url = format!("http://{}/a/b?c=d", origin.addr);
    let mut c = HttpConn::connect(proxy.addr);
    let req = format!(
        "GET {url} HTTP/1.1\r\nHost: wrong.example\r\n{}Proxy-Connection: keep-alive\r\nUser-Agent: fwd-test\r\n\r\n",
        good_creds()
    );
    let r = c.roundtrip(req.as_bytes());
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(r.body, b"origin");
    assert_eq!(r.head.get("x-origin"), Some("yes"));
    assert!(
        r.head.all("via").iter().any(|v| v.contains("ferry")),
        "the response must carry Via with ferry; head:\n{}",
        r.head.text()
    );
    let got = origin.wait_requests(1, DEADLINE).remove(0).head;
    assert_eq!(
        got.start,
        "GET /a/b?c=d HTTP/1.1",
        "the origin must get origin form; head:\n{}",
        got.text()
    );
    assert_eq!(
        got.all("host"),
        vec![origin.addr.to_string().as_str()],
        "Host must be the target's authority, once; head:\n{}",
        got.text()
    );
    for gone in ["proxy-authorization", "proxy-connection"] {
        assert!(
            !got.has(gone),
            "{gone} must not reach the origin; head:\n{}",
            got.text()
        );
    }
    assert_eq!(got.get("user-agent"), Some("fwd-test"));
    assert!(
        got.all("via").iter().any(|v| v.contains("ferry")),
        "the request must carry Via with ferry; head:\n{}",
        got.text()
    );
    assert!(
        !contains(&origin.tap(), b64(&auth).as_bytes()),
        "the credentials reached the origin"
    );
}

#[test]
fn keep_alive_carries_requests_to_two_origins_on_one_client_connection() {
    let a = HttpBackend::named("a");
    let b = HttpBackend::named("b");
    let proxy = forward(&[]);
    let mut c = HttpConn::connect(proxy.addr);
    for (origin, name, path) in [(&a, "a", "/one"), (&b, "b", "/two"), (&a, "a", "/three")] {
        let r = c.roundtrip(&get_abs(&format!("http://{}{path}", origin.addr), ""));
        assert_eq!(r.status(), 200);
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("{name} {path}"),
            "request to {name}{path} went elsewhere"
        );
        assert!(
            !r.head.lists("connection", "close"),
            "the client connection must stay open across origins; head:\n{}",
            r.head.text()
        );
    }
    assert_eq!(a.requests().len(), 2);
    assert_eq!(b.requests().len(), 1);
    // Three requests, one client connection.
    expect_counters(&proxy, &[("connections_accepted", 1)]);
    assert_eq!(
        a.request_conns(),
        1,
        "the second request to origin a must reuse the pooled connection"
    );
}

// ---------------------------------------------------------------------------
// CONNECT tunnels.
// ---------------------------------------------------------------------------

#[test]
fn connect_answers_established_and_tunnels_bytes_both_ways() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let c = open_tunnel(proxy.addr, &echo.addr.to_string(), "");
    echo_through(c, big(4 * MIB) + 7, 11, "tunnel echo");
    let r = proxy.wait_idle();
    assert_eq!(r.u("forward_tunnels"), 1);
}

#[test]
fn bytes_sent_with_the_connect_head_are_forwarded() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = HttpConn::connect(proxy.addr);
    let early = b"early bytes in the same write as the CONNECT head\n";
    let mut req = connect_req(&echo.addr.to_string(), "");
    req.extend_from_slice(early);
    c.send(&req);
    expect_established(&mut c, "CONNECT with early bytes");
    let got = c.read_exact(early.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(early),
        "the bytes after the CONNECT head must reach the origin once, in order"
    );
    c.s.shutdown(Shutdown::Write).unwrap();
    let (rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
    assert!(rest.is_empty(), "extra bytes: {rest:?}");
}

#[test]
fn early_bytes_and_a_whole_upload_in_one_write_with_the_connect_head() {
    let origin = Backend::scripted();
    let port = origin.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = HttpConn::connect(proxy.addr);
    let up = payload(100 * KIB, 21);
    let mut req = connect_req(&origin.addr.to_string(), "");
    req.extend_from_slice(&header(b'H', 1000, 22));
    req.extend_from_slice(&up);
    c.send(&req);
    c.s.shutdown(Shutdown::Write).unwrap();
    expect_established(&mut c, "CONNECT with an upload");
    let d = Digest::from_bytes(&c.read_exact(16));
    assert_eq!(d, digest_of(&up), "the origin saw a different upload");
    assert_eq!(c.read_exact(1000), payload(1000, 22));
}

#[test]
fn half_close_through_a_tunnel_reaches_the_origin_and_its_reply_still_arrives() {
    let origin = Backend::scripted();
    let port = origin.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = open_tunnel(proxy.addr, &origin.addr.to_string(), "");
    // 'H': the origin reads until EOF, then answers the upload's digest and
    // 64 KiB; it can only answer if the client's FIN went through.
    c.send(&header(b'H', 64 * KIB as u64, 5));
    write_stream(&mut c.s, 300 * KIB, 6).unwrap();
    c.s.shutdown(Shutdown::Write).unwrap();
    let d = Digest::from_bytes(&c.read_exact(16));
    assert_eq!(d, digest_of_stream(300 * KIB, 6));
    let n = verify_rest(c, 5);
    assert_eq!(n, 64 * KIB, "the reply after the half-close was cut");
    assert_eq!(origin.state.wait_digests(1, DEADLINE).len(), 1);
    proxy.wait_idle();
}

fn tunnel_8_mib(splice: &str) {
    let origin = Backend::scripted();
    let port = origin.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--splice", splice]);
    let mut c = open_tunnel(proxy.addr, &origin.addr.to_string(), "");
    let n = big(8 * MIB);
    c.send(&header(b'H', n as u64, 81));
    write_stream(&mut c.s, n, 82).unwrap();
    c.s.shutdown(Shutdown::Write).unwrap();
    let d = Digest::from_bytes(&c.read_exact(16));
    assert_eq!(
        d,
        digest_of_stream(n, 82),
        "--splice {splice}: upload differs"
    );
    let got = verify_rest(c, 81);
    assert_eq!(got, n, "--splice {splice}: download length");
    let r = proxy.wait_idle();
    let spliced = r.u("bytes_spliced_client_to_backend") + r.u("bytes_spliced_backend_to_client");
    match splice {
        "on" => assert!(
            spliced > 0,
            "--splice on moved a tunnel's {n} bytes without splicing"
        ),
        _ => assert_eq!(spliced, 0, "--splice off must not splice"),
    }
    assert!(r.u("bytes_client_to_backend") >= n as u64);
    assert!(r.u("bytes_backend_to_client") >= n as u64);
}

#[test]
fn eight_mib_through_a_tunnel_byte_exact_with_splice_on() {
    tunnel_8_mib("on");
}

#[test]
fn eight_mib_through_a_tunnel_byte_exact_with_splice_off() {
    tunnel_8_mib("off");
}

// ---------------------------------------------------------------------------
// Proxy authentication.
// ---------------------------------------------------------------------------

#[test]
fn missing_credentials_get_407_and_a_retry_on_the_same_connection_succeeds() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let auth = auth_arg();
    let proxy = forward(&["--auth", &auth, "--connect-ports", &port]);
    let target = echo.addr.to_string();
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&connect_req(&target, ""));
    let r = c.read_response(false);
    assert_407(&r, "CONNECT without credentials");
    assert_eq!(echo.accepted(), 0, "no origin connect before auth");
    c.send(&connect_req(&target, &good_creds()));
    expect_established(&mut c, "CONNECT retried with credentials");
    echo_through(c, 10 * KIB, 3, "tunnel after 407");

    // The same for an absolute-form GET, twice on one connection.
    let origin = HttpBackend::named("o");
    let mut c = HttpConn::connect(proxy.addr);
    let url = format!("http://{}/x", origin.addr);
    let r = c.roundtrip(&get_abs(&url, ""));
    assert_407(&r, "GET without credentials");
    let r = c.roundtrip(&get_abs(&url, &good_creds()));
    assert_eq!(
        r.status(),
        200,
        "GET retried with credentials on the same connection"
    );
    assert_eq!(r.body, b"o /x");
    expect_counters(&proxy, &[("connections_accepted", 2)]);
}

#[test]
fn every_request_on_a_connection_needs_credentials() {
    let origin = HttpBackend::named("o");
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let auth = auth_arg();
    let proxy = forward(&["--auth", &auth, "--connect-ports", &port]);
    let url = format!("http://{}/x", origin.addr);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get_abs(&url, &good_creds())).status(), 200);
    assert_407(
        &c.roundtrip(&get_abs(&url, "")),
        "a second request without credentials after one with them",
    );
    c.send(&connect_req(&echo.addr.to_string(), ""));
    assert_407(
        &c.read_response(false),
        "a CONNECT without credentials after a request with them",
    );
    assert_eq!(origin.requests().len(), 1);
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn wrong_credentials_get_407() {
    let origin = HttpBackend::named("o");
    let auth = auth_arg();
    let proxy = forward(&["--auth", &auth]);
    let url = format!("http://{}/x", origin.addr);
    for bad in [
        creds(&format!("{USER}:wrong")),
        creds(&format!("{USER}:{PASS}x")),
        creds(&format!("mallory:{PASS}")),
        "Proxy-Authorization: Bearer abc\r\n".to_string(),
        "Proxy-Authorization: Basic !!!\r\n".to_string(),
    ] {
        let mut c = HttpConn::connect(proxy.addr);
        let r = c.roundtrip(&get_abs(&url, &bad));
        assert_407(&r, &format!("GET with {bad:?}"));
    }
    assert_eq!(
        origin.accepted(),
        0,
        "no request with wrong credentials may reach the origin"
    );
    proxy.wait_report("forward_auth_failures == 5", DEADLINE, |r| {
        r.u("forward_auth_failures") == 5
    });
}

#[test]
fn an_auth_file_grants_its_users() {
    let dir = std::env::temp_dir().join(format!("ferry-fwd-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users");
    std::fs::write(
        &file,
        format!("# users\n\nbob:builder\n  {USER}:{PASS}  \n"),
    )
    .unwrap();
    let origin = HttpBackend::named("o");
    let proxy = forward(&["--auth-file", file.to_str().unwrap()]);
    let url = format!("http://{}/f", origin.addr);
    for (cred, status) in [
        (good_creds(), 200),
        (creds("bob:builder"), 200),
        (creds("bob:wrong"), 407),
        (String::new(), 407),
    ] {
        let mut c = HttpConn::connect(proxy.addr);
        let r = c.roundtrip(&get_abs(&url, &cred));
        assert_eq!(r.status(), status, "with {cred:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_auth_file_with_a_bad_line_stops_the_start_naming_the_line() {
    let dir = std::env::temp_dir().join(format!("ferry-fwd-badauth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users");
    std::fs::write(&file, "# users\nalice:one\nno-colon-here\nbob:two\n").unwrap();
    let path = file.to_str().unwrap();
    let (status, _out, err) = run_cli(&[
        "-m",
        "forward",
        "-l",
        "127.0.0.1",
        "-p",
        "0",
        "--auth-file",
        path,
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("line 3"), "the error must name line 3: {err}");
    assert!(
        err.contains("--auth-file"),
        "the error must name the flag: {err}"
    );
    assert!(
        !err.contains("alice:one"),
        "a credential leaked into the error: {err}"
    );
}

// ---------------------------------------------------------------------------
// Refusals.
// ---------------------------------------------------------------------------

#[test]
fn connect_to_a_port_not_allowed_gets_403() {
    let echo = Backend::echo();
    // Default allow-list: 443 only.
    let proxy = forward(&[]);
    refused(
        proxy.addr,
        &connect_req(&echo.addr.to_string(), ""),
        403,
        "CONNECT to a port not in the default list",
    );
    let proxy = forward(&["--connect-ports", "443,8443"]);
    refused(
        proxy.addr,
        &connect_req(&echo.addr.to_string(), ""),
        403,
        "CONNECT to a port not in --connect-ports",
    );
    assert_eq!(
        echo.accepted(),
        0,
        "a refused CONNECT must not reach the origin"
    );
    expect_counters(&proxy, &[("forward_denied", 1)]);
}

#[test]
fn a_denied_network_gets_403() {
    let echo = Backend::echo();
    let origin = HttpBackend::named("o");
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--deny", "127.0.0.0/8"]);
    refused(
        proxy.addr,
        &connect_req(&echo.addr.to_string(), ""),
        403,
        "CONNECT to a denied address",
    );
    refused(
        proxy.addr,
        &connect_req(&format!("localhost:{port}"), ""),
        403,
        "CONNECT to a name resolving into a denied network",
    );
    refused(
        proxy.addr,
        &get_abs(&format!("http://{}/", origin.addr), ""),
        403,
        "GET to a denied address",
    );
    assert_eq!(echo.accepted(), 0);
    assert_eq!(origin.accepted(), 0);
    expect_counters(&proxy, &[("forward_denied", 3)]);

    // A non-empty allow list admits only what it names.
    let proxy = forward(&["--connect-ports", &port, "--allow", "10.0.0.0/8"]);
    refused(
        proxy.addr,
        &connect_req(&echo.addr.to_string(), ""),
        403,
        "CONNECT outside --allow",
    );
    let proxy = forward(&["--connect-ports", &port, "--allow", "127.0.0.1/32"]);
    let c = open_tunnel(proxy.addr, &echo.addr.to_string(), "");
    echo_through(c, 1000, 9, "tunnel inside --allow");
}

#[test]
fn an_unknown_host_gets_502() {
    let proxy = forward(&["--connect-ports", "443"]);
    refused(
        proxy.addr,
        &connect_req("nonexistent.invalid:443", ""),
        502,
        "CONNECT to an unknown host",
    );
    refused(
        proxy.addr,
        &get_abs("http://nonexistent.invalid/x", ""),
        502,
        "GET to an unknown host",
    );
    expect_counters(
        &proxy,
        &[("forward_resolve_failures", 2), ("forward_tunnels", 0)],
    );
}

#[test]
fn a_refusing_origin_gets_502() {
    let dead = refusing_addr();
    let port = dead.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    refused(
        proxy.addr,
        &connect_req(&dead.to_string(), ""),
        502,
        "CONNECT to a refusing origin",
    );
    refused(
        proxy.addr,
        &get_abs(&format!("http://{dead}/"), ""),
        502,
        "GET to a refusing origin",
    );
}

#[test]
fn a_black_hole_target_gets_504() {
    // 10.255.255.1 is not a black hole on every network (a sandbox may
    // intercept every connect), so the hole is made on loopback: a listener
    // whose full accept queue drops SYNs.
    let hole = black_hole();
    let port = hole.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--connect-timeout", "1"]);
    let start = Instant::now();
    refused(
        proxy.addr,
        &connect_req(&hole.addr.to_string(), ""),
        504,
        "CONNECT to a black hole",
    );
    refused(
        proxy.addr,
        &get_abs(&format!("http://{}/", hole.addr), ""),
        504,
        "GET to a black hole",
    );
    assert!(start.elapsed() < DEADLINE);
    let r = proxy.wait_idle();
    assert_eq!(r.u("forward_tunnels"), 0);
}

#[test]
fn a_malformed_authority_gets_400() {
    let proxy = forward(&[]);
    for (req, what) in [
        (
            &b"CONNECT nohostport HTTP/1.1\r\nHost: nohostport\r\n\r\n"[..],
            "no port",
        ),
        (b"CONNECT :443 HTTP/1.1\r\nHost: x\r\n\r\n", "no host"),
        (
            b"CONNECT host:99999 HTTP/1.1\r\nHost: x\r\n\r\n",
            "port out of range",
        ),
        (
            b"CONNECT [::1:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "open bracket",
        ),
        (
            b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n",
            "absolute form without a host",
        ),
        (
            b"GET /origin/form HTTP/1.1\r\nHost: x\r\n\r\n",
            "origin form names no origin",
        ),
    ] {
        refused(proxy.addr, req, 400, what);
    }
}

/// A free port on 127.0.0.1, for a proxy that must know its own port at start.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A forward proxy on a port known before it starts, which CONNECT may
/// reach: requests aimed at the proxy itself pass the port rule and must be
/// refused as loops.
fn forward_allowing_its_own_port() -> (Proxy, String) {
    let port = free_port().to_string();
    let args = ["-m", "forward", "-l", "127.0.0.1", "-p", &port, "-w", "1"];
    let proxy = Proxy::start(&[&args[..], &["--connect-ports", &port]].concat());
    (proxy, port)
}

#[test]
fn a_request_to_the_proxy_itself_gets_403() {
    let (proxy, port) = forward_allowing_its_own_port();
    let own = proxy.addr.to_string();
    refused(
        proxy.addr,
        &connect_req(&own, ""),
        403,
        "CONNECT to the proxy's own address",
    );
    refused(
        proxy.addr,
        &get_abs(&format!("http://{own}/"), ""),
        403,
        "GET to the proxy's own address",
    );
    refused(
        proxy.addr,
        &get_abs(&format!("http://localhost:{port}/"), ""),
        403,
        "GET to a name of the proxy's own address",
    );
    let r = proxy.wait_idle();
    assert_eq!(
        r.u("connections_accepted"),
        3,
        "the proxy must not have connected to itself"
    );
    assert_eq!(r.u("forward_denied"), 3);
}

#[test]
fn a_request_to_the_proxy_itself_on_the_wildcard_address_gets_403() {
    let proxy = Proxy::start(&[
        "-m", "forward", "-l", "0.0.0.0", "-p", "0", "-w", "1", "--open",
    ]);
    let local = SocketAddr::from(([127, 0, 0, 1], proxy.addr.port()));
    refused(
        local,
        &get_abs(&format!("http://{local}/"), ""),
        403,
        "GET to 127.0.0.1 of a 0.0.0.0 listener",
    );
    let r = proxy.wait_idle();
    assert_eq!(
        r.u("connections_accepted"),
        1,
        "the proxy must not have connected to itself"
    );
}

#[test]
fn a_request_to_the_proxy_itself_by_another_spelling_gets_403() {
    let (proxy, port) = forward_allowing_its_own_port();
    // Literals, and names or numbers only the resolver maps to 127.0.0.1.
    for target in [
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("0.0.0.0:{port}"),
        format!("127.1:{port}"),
        format!("2130706433:{port}"),
        format!("0x7f000001:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        refused(
            proxy.addr,
            &connect_req(&target, ""),
            403,
            &format!("CONNECT {target}"),
        );
        refused(
            proxy.addr,
            &get_abs(&format!("http://{target}/"), ""),
            403,
            &format!("GET http://{target}/"),
        );
    }
    let r = proxy.wait_idle();
    assert_eq!(
        r.u("connections_accepted"),
        12,
        "the proxy must not have connected to itself"
    );
}

/// An address of this host that is not loopback (the source address of its
/// default route), if it has one.
fn non_loopback_local_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // A UDP connect only picks a route and a source address: nothing is sent.
    s.connect("203.0.113.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_request_to_an_address_of_this_host_on_a_wildcard_listener_gets_403() {
    let Some(ip) = non_loopback_local_ip() else {
        eprintln!("skipped: this host has no non-loopback address");
        return;
    };
    let port = free_port().to_string();
    let proxy = Proxy::start(&[
        "-m",
        "forward",
        "-l",
        "0.0.0.0",
        "-p",
        &port,
        "-w",
        "1",
        "--open",
        "--connect-ports",
        &port,
    ]);
    let local = SocketAddr::from(([127, 0, 0, 1], proxy.addr.port()));
    let own = SocketAddr::new(ip, proxy.addr.port()).to_string();
    refused(
        local,
        &connect_req(&own, ""),
        403,
        &format!("CONNECT {own} (this host's address)"),
    );
    refused(
        local,
        &get_abs(&format!("http://{own}/"), ""),
        403,
        &format!("GET http://{own}/ (this host's address)"),
    );
    let r = proxy.wait_idle();
    assert_eq!(
        r.u("connections_accepted"),
        2,
        "the proxy must not have connected to itself"
    );
}

// ---------------------------------------------------------------------------
// Logs, start-up checks, reverse mode, counters.
// ---------------------------------------------------------------------------

#[test]
fn credentials_never_appear_in_stderr() {
    let origin = HttpBackend::named("o");
    let echo = Backend::echo();
    let dead = refusing_addr();
    let ports = format!("443,{},{}", echo.addr.port(), dead.port());
    let auth = auth_arg();
    let mut proxy = forward(&[
        "--auth",
        &auth,
        "--connect-ports",
        &ports,
        "-v",
        "--access-log",
        "-",
    ]);
    // Nor in the command line that `ps` shows other users.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", proxy.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("--auth") && !cmdline.contains(PASS),
        "the password is readable in /proc/PID/cmdline: {cmdline}"
    );
    let wrong = format!("{USER}:{PASS}-wrong");
    let url = format!("http://{}/p", origin.addr);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get_abs(&url, &good_creds())).status(), 200);
    assert_eq!(c.roundtrip(&get_abs(&url, &creds(&wrong))).status(), 407);
    assert_eq!(c.roundtrip(&get_abs(&url, "")).status(), 407);
    drop(c);
    let c = open_tunnel(proxy.addr, &echo.addr.to_string(), &good_creds());
    echo_through(c, 100, 1, "tunnel");
    refused(
        proxy.addr,
        &connect_req(&dead.to_string(), &good_creds()),
        502,
        "refusing origin",
    );
    refused(
        proxy.addr,
        &connect_req("nonexistent.invalid:443", &good_creds()),
        502,
        "unknown host",
    );
    refused(proxy.addr, &connect_req("h:22", &good_creds()), 403, "port");
    refused(
        proxy.addr,
        &connect_req("nohostport", &good_creds()),
        400,
        "malformed",
    );
    let body = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 2\r\n\r\nhi",
        creds(&wrong)
    );
    refused(
        proxy.addr,
        body.as_bytes(),
        407,
        "POST with wrong credentials",
    );
    // The access log is written by its own thread: wait for the line of the
    // last request before stopping.
    let end = Instant::now() + DEADLINE;
    while !proxy.stderr().contains("\"POST ") {
        assert!(
            Instant::now() < end,
            "no access-log line for the POST:\n{}",
            proxy.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let _ = proxy.report();
    let (_status, err) = proxy.stop(libc::SIGTERM);
    assert!(
        err.contains("\"GET http://"),
        "the access log must be on stderr:\n{err}"
    );
    for secret in [
        PASS.to_string(),
        b64(&auth),
        b64(&wrong),
        "Zq7".to_string(),
        "Proxy-Authorization".to_string(),
    ] {
        assert!(
            !err.to_ascii_lowercase()
                .contains(&secret.to_ascii_lowercase()),
            "{secret:?} appeared in stderr:\n{err}"
        );
    }
}

#[test]
fn an_open_forward_proxy_is_refused_at_start_unless_asked_for() {
    let (status, _out, err) = run_cli(&["-m", "forward", "-l", "0.0.0.0", "-p", "0"]);
    assert!(
        !status.success(),
        "a forward proxy on 0.0.0.0 without auth must not start"
    );
    assert!(
        err.contains("--auth"),
        "the refusal must name --auth: {err}"
    );
    assert!(
        err.contains("--open"),
        "the refusal must name --open: {err}"
    );
    // Credentials or --open make it start.
    let auth = auth_arg();
    let p = Proxy::start(&[
        "-m", "forward", "-l", "0.0.0.0", "-p", "0", "-w", "1", "--auth", &auth,
    ]);
    assert!(p.addr.ip().is_unspecified());
    let mut p = Proxy::start(&[
        "-m", "forward", "-l", "0.0.0.0", "-p", "0", "-w", "1", "--open",
    ]);
    assert!(p.running());
    // Loopback needs neither.
    let _p = forward(&[]);
}

#[test]
fn reverse_mode_maps_absolute_form_to_its_backend() {
    let backend = HttpBackend::named("backend");
    let proxy = Proxy::http(&[backend.addr], &["-w", "1"]);
    let other = refusing_addr();
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&get_abs(&format!("http://{other}/abs?q"), ""));
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(
        r.body, b"backend /abs?q",
        "the backend must get the request in origin form"
    );
    let got = backend.wait_requests(1, DEADLINE).remove(0).head;
    assert_eq!(got.get("host"), Some(other.to_string().as_str()));
    // CONNECT is forward mode's: a reverse proxy refuses it.
    refused(
        proxy.addr,
        &connect_req(&backend.addr.to_string(), ""),
        400,
        "CONNECT in http mode",
    );
    assert_eq!(backend.request_conns(), 1);
}

#[test]
fn the_report_counts_tunnels_auth_failures_and_refusals() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let auth = auth_arg();
    let proxy = forward(&[
        "--auth",
        &auth,
        "--connect-ports",
        &port,
        "--deny",
        "10.0.0.0/8",
    ]);
    let target = echo.addr.to_string();
    for i in 0..3 {
        let c = open_tunnel(proxy.addr, &target, &good_creds());
        echo_through(c, 1000, i, "tunnel");
    }
    let mut c = HttpConn::connect(proxy.addr);
    assert_407(&c.roundtrip(&connect_req(&target, "")), "missing");
    assert_407(
        &c.roundtrip(&connect_req(&target, &creds("alice:nope"))),
        "wrong",
    );
    drop(c);
    refused(
        proxy.addr,
        &connect_req(&format!("127.0.0.1:{}", 1), &good_creds()),
        403,
        "port 1",
    );
    refused(
        proxy.addr,
        &connect_req(&format!("10.1.2.3:{port}"), &good_creds()),
        403,
        "denied network",
    );
    let r = proxy.wait_idle();
    assert_eq!(r.u("forward_tunnels"), 3, "forward_tunnels");
    assert_eq!(r.u("forward_auth_failures"), 2, "forward_auth_failures");
    assert_eq!(r.u("forward_denied"), 2, "forward_denied");
}

// ---------------------------------------------------------------------------
// Edges: tunnels and requests in less common shapes, and their cleanup.
// ---------------------------------------------------------------------------

#[test]
fn origin_half_close_first_keeps_the_client_direction_open() {
    let origin = Backend::scripted();
    let port = origin.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = open_tunnel(proxy.addr, &origin.addr.to_string(), "");
    // 'F': the origin sends 200 KiB and shuts its write side first, then
    // reads the upload until EOF.
    c.send(&header(b'F', 200 * KIB as u64, 31));
    let got = c.read_exact(200 * KIB);
    assert_eq!(got, payload(200 * KIB, 31));
    let mut s = c.s;
    let mut b = [0u8; 16];
    assert_eq!(
        read_some(&mut s, &mut b, Instant::now() + DEADLINE).unwrap(),
        Some(0),
        "the origin's FIN must reach the client"
    );
    write_stream(&mut s, 300 * KIB, 32).expect("the client may still send after the origin's FIN");
    s.shutdown(Shutdown::Write).unwrap();
    let d = origin.state.wait_digests(1, DEADLINE);
    assert_eq!(d[0], digest_of_stream(300 * KIB, 32));
    proxy.wait_idle();
}

#[test]
fn names_are_resolved_for_requests_and_tunnels() {
    let origin = HttpBackend::named("o");
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = HttpConn::connect(proxy.addr);
    let host = format!("localhost:{}", origin.addr.port());
    let r = c.roundtrip(&get_abs(&format!("http://{host}/n"), ""));
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(r.body, b"o /n");
    let got = origin.wait_requests(1, DEADLINE).remove(0).head;
    assert_eq!(got.get("host"), Some(host.as_str()));
    // Again: answered from the cache.
    let r = c.roundtrip(&get_abs(&format!("http://{host}/m"), ""));
    assert_eq!(r.body, b"o /m");
    let t = open_tunnel(proxy.addr, &format!("localhost:{port}"), "");
    echo_through(t, 5000, 4, "tunnel by name");
    // The second and third lookups of localhost come from the cache.
    expect_counters(&proxy, &[("forward_lookups", 1)]);
}

#[test]
fn a_tunnel_after_a_request_on_the_same_connection() {
    let origin = HttpBackend::named("o");
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&get_abs(&format!("http://{}/first", origin.addr), ""));
    assert_eq!(r.body, b"o /first");
    c.send(&connect_req(&echo.addr.to_string(), ""));
    expect_established(&mut c, "CONNECT after a GET");
    echo_through(c, 100 * KIB, 8, "tunnel after a GET");
    proxy.wait_idle();
}

#[test]
fn pipelined_requests_to_two_origins() {
    let a = HttpBackend::named("a");
    let b = HttpBackend::named("b");
    let proxy = forward(&[]);
    let mut c = HttpConn::connect(proxy.addr);
    let mut req = get_abs(&format!("http://{}/1", a.addr), "");
    req.extend(get_abs(&format!("http://{}/2", b.addr), ""));
    req.extend(get_abs(&format!("http://{}/3", a.addr), ""));
    c.send(&req);
    for want in ["a /1", "b /2", "a /3"] {
        let r = c.read_response(false);
        assert_eq!(String::from_utf8_lossy(&r.body), want);
    }
}

#[test]
fn post_and_head_and_http10_through_the_forward_proxy() {
    let origin = HttpBackend::serve(|r| {
        if r.head.method() == "HEAD" {
            reply(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n".to_vec())
        } else {
            reply(ok(&r.body))
        }
    });
    let proxy = forward(&[]);
    let mut c = HttpConn::connect(proxy.addr);
    let url = format!("http://{}/post", origin.addr);
    let body = payload(300 * KIB, 77);
    let mut req = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = c.roundtrip(&req);
    assert_eq!(r.status(), 200);
    assert!(r.body == body, "POST body echoed differs");
    let r = c.roundtrip(format!("HEAD {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.content_length(), Some(99));
    let mut c = HttpConn::connect(proxy.addr);
    c.send(format!("GET {url} HTTP/1.0\r\n\r\n").as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status(), 200);
    let (_rest, how) = c.read_until_closed();
    assert_eq!(how, Closed::Eof);
}

#[test]
fn a_keep_alive_407_is_in_the_access_log() {
    let auth = auth_arg();
    let mut proxy = forward(&["--auth", &auth, "--access-log", "-"]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(&get_abs("http://127.0.0.1:9/x", ""));
    assert_407(&r, "missing");
    drop(c);
    proxy.wait_idle();
    let (_s, err) = proxy.stop(libc::SIGTERM);
    assert!(
        err.contains("\"GET http://127.0.0.1:9/x HTTP/1.1\" 407"),
        "{err}"
    );
}

#[test]
fn many_concurrent_tunnels_each_byte_exact() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--splice", "on"]);
    let baseline = proxy.fd_kinds();
    let target = echo.addr.to_string();
    let addr = proxy.addr;
    let threads: Vec<_> = (0..40u64)
        .map(|i| {
            let target = target.clone();
            thread::spawn(move || {
                let c = open_tunnel(addr, &target, "");
                echo_through(
                    c,
                    64 * KIB + i as usize * 1013,
                    100 + i,
                    "concurrent tunnel",
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = proxy.wait_idle();
    assert_eq!(r.u("forward_tunnels"), 40);
    proxy.wait_fds_back_to(baseline, 256);
}

#[test]
fn a_client_that_leaves_during_the_connect_releases_everything() {
    let hole = black_hole();
    let port = hole.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--connect-timeout", "5"]);
    let baseline = proxy.fd_kinds();
    for _ in 0..5 {
        let mut c = HttpConn::connect(proxy.addr);
        c.send(&connect_req(&hole.addr.to_string(), ""));
        c.send(&get_abs(&format!("http://{}/", hole.addr), ""));
        drop(c);
    }
    for _ in 0..5 {
        let mut c = HttpConn::connect(proxy.addr);
        c.send(&get_abs(&format!("http://{}/", hole.addr), ""));
        drop(c);
    }
    proxy.wait_idle();
    proxy.wait_fds_back_to(baseline, 0);
}

#[test]
fn an_idle_tunnel_is_closed_by_the_idle_timeout() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--idle-timeout", "1"]);
    let mut c = open_tunnel(proxy.addr, &echo.addr.to_string(), "");
    c.send(b"ping");
    assert_eq!(c.read_exact(4), b"ping");
    let mut s = c.s;
    expect_closed(&mut s, DEADLINE);
    let r = proxy.wait_idle();
    assert_eq!(r.u("idle_timeouts"), 1);
}

#[test]
fn a_stale_pooled_origin_connection_is_replaced() {
    // The origin answers keep-alive, then closes the connection anyway.
    let origin = HttpBackend::serve(|r| reply_then(ok(r.head.target().as_bytes()), Then::Close));
    let proxy = forward(&[]);
    let url = |p: &str| format!("http://{}{p}", origin.addr);
    let mut c = HttpConn::connect(proxy.addr);
    assert_eq!(c.roundtrip(&get_abs(&url("/1"), "")).body, b"/1");
    origin.wait_until("the first connection closed", DEADLINE, |b| b.eofs() >= 1);
    let r = c.roundtrip(&get_abs(&url("/2"), ""));
    assert_eq!(r.status(), 200, "{:?}", String::from_utf8_lossy(&r.bytes()));
    assert_eq!(r.body, b"/2");
}

#[test]
fn pipelined_connects_after_a_407() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let auth = auth_arg();
    let proxy = forward(&["--auth", &auth, "--connect-ports", &port]);
    let target = echo.addr.to_string();
    let mut c = HttpConn::connect(proxy.addr);
    let mut req = connect_req(&target, "");
    req.extend(connect_req(&target, &good_creds()));
    c.send(&req);
    let r = c.read_response(false);
    assert_407(&r, "first of two pipelined CONNECTs");
    expect_established(&mut c, "second pipelined CONNECT");
    echo_through(c, 3000, 3, "tunnel after a pipelined 407");
}

#[test]
fn an_origin_that_closes_at_once_ends_the_tunnel() {
    let origin = Backend::start(|s, _| drop(s));
    let port = origin.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = open_tunnel(proxy.addr, &origin.addr.to_string(), "");
    let (rest, how) = c.read_until_closed();
    assert!(rest.is_empty());
    assert_eq!(
        how,
        Closed::Eof,
        "the origin's FIN must reach the client as a FIN"
    );
    // The client's direction stays open (a half-closed tunnel) until it closes.
    drop(c);
    proxy.wait_idle();
}

#[test]
fn ipv6_literal_origins() {
    if !have_ipv6_loopback() {
        eprintln!("skipped: no ::1");
        return;
    }
    let echo = Backend::echo_on("[::1]:0");
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let c = open_tunnel(proxy.addr, &format!("[::1]:{port}"), "");
    echo_through(c, 10 * KIB, 6, "tunnel to [::1]");
}

#[test]
fn connect_in_http_1_0() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port]);
    let mut c = HttpConn::connect(proxy.addr);
    c.send(format!("CONNECT {} HTTP/1.0\r\n\r\n", echo.addr).as_bytes());
    let head = c.read_head();
    assert_eq!(head.status(), 200, "{}", head.text());
    echo_through(c, 1000, 2, "1.0 tunnel");
}

#[test]
fn simultaneous_requests_for_one_name_share_one_lookup() {
    let origin = HttpBackend::named("o");
    let proxy = forward(&[]);
    let host = format!("localhost:{}", origin.addr.port());
    // Connected first, then all the requests written at once: the worker
    // reads them before the resolver can answer the first.
    let mut clients: Vec<HttpConn> = (0..30).map(|_| HttpConn::connect(proxy.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&get_abs(&format!("http://{host}/s{i}"), ""));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response(false);
        assert_eq!(r.status(), 200, "client {i}");
        assert_eq!(r.body, format!("o /s{i}").as_bytes());
    }
    // One lookup: the other requests joined it, or found its answer cached.
    expect_counters(&proxy, &[("forward_lookups", 1), ("http_requests", 30)]);
    drop(clients);
    proxy.wait_idle();
}
