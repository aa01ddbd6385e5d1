//! Forward mode under review, against the real binary: the network rules
//! for addresses spelled unusually (`0.0.0.0`, `::`, IPv4-mapped networks),
//! loops through names the resolver maps to the proxy, fragments in
//! absolute-form targets, odd `Proxy-Authorization` fields and auth files,
//! clients that leave or half-close while their names are looked up, and
//! `--pool-size 0` for origin connections.
//! Tests marked `#[ignore]` reproduce bugs whose fix lies outside
//! `src/forward/` (see their reasons); run them with `--ignored`.

mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

/// A forward proxy on 127.0.0.1:0 with one worker.
fn forward(extra: &[&str]) -> Proxy {
    let mut args = vec!["-m", "forward", "-l", "127.0.0.1", "-p", "0", "-w", "1"];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

fn connect_req(target: &str, extra: &str) -> Vec<u8> {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n").into_bytes()
}

fn get_abs(url: &str, extra: &str) -> Vec<u8> {
    format!("GET {url} HTTP/1.1\r\nHost: ignored.example\r\n{extra}\r\n").into_bytes()
}

/// Send `req` and expect ferry's closing answer `status` (a wrong status,
/// such as a tunnel's 200, fails at once rather than at the deadline).
fn refused(proxy: SocketAddr, req: &[u8], status: u16, what: &str) -> Response {
    let mut c = HttpConn::connect(proxy);
    c.send(req);
    let head = c.read_head();
    assert_eq!(head.status(), status, "{what}: got {:?}", head.text());
    c.buf.splice(0..0, head.raw);
    expect_answer_and_close(&mut c, status, what)
}

/// `0.0.0.0` and `::` are not addresses of their own: a connect to them
/// reaches this host's loopback, so a deny of loopback must refuse them.
#[test]
fn the_unspecified_address_cannot_get_around_a_loopback_deny() {
    let echo = Backend::echo();
    let origin = HttpBackend::named("o");
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--deny", "127.0.0.0/8"]);
    for target in [
        format!("0.0.0.0:{port}"),
        format!("[::ffff:0.0.0.0]:{port}"),
    ] {
        refused(
            proxy.addr,
            &connect_req(&target, ""),
            403,
            &format!("CONNECT {target} with 127.0.0.0/8 denied"),
        );
    }
    refused(
        proxy.addr,
        &get_abs(&format!("http://0.0.0.0:{}/", origin.addr.port()), ""),
        403,
        "GET http://0.0.0.0/ with 127.0.0.0/8 denied",
    );
    assert_eq!(echo.accepted(), 0, "a denied CONNECT reached loopback");
    assert_eq!(origin.accepted(), 0, "a denied GET reached loopback");
    if have_ipv6_loopback() {
        let echo6 = Backend::echo_on("[::1]:0");
        let port = echo6.addr.port().to_string();
        let proxy = forward(&["--connect-ports", &port, "--deny", "::1/128"]);
        refused(
            proxy.addr,
            &connect_req(&format!("[::]:{port}"), ""),
            403,
            "CONNECT [::] with ::1 denied",
        );
        assert_eq!(echo6.accepted(), 0, "a denied CONNECT reached ::1");
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:127.0.0.0/104`) names IPv4
/// addresses: a deny written that way refuses them.
#[test]
fn a_deny_written_as_an_ipv4_mapped_network_refuses_its_ipv4_addresses() {
    let echo = Backend::echo();
    let port = echo.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--deny", "::ffff:127.0.0.0/104"]);
    refused(
        proxy.addr,
        &connect_req(&echo.addr.to_string(), ""),
        403,
        "CONNECT 127.0.0.1 with ::ffff:127.0.0.0/104 denied",
    );
    refused(
        proxy.addr,
        &connect_req(&format!("[::ffff:127.0.0.1]:{port}"), ""),
        403,
        "CONNECT [::ffff:127.0.0.1] with ::ffff:127.0.0.0/104 denied",
    );
    assert_eq!(echo.accepted(), 0, "a denied CONNECT reached the origin");
}

/// A fragment is the client's own business (RFC 9110 §7.1: it is not part
/// of a request target): it never reaches the origin.
#[test]
fn a_fragment_in_an_absolute_target_is_not_sent_to_the_origin() {
    let origin = HttpBackend::named("o");
    let proxy = forward(&[]);
    let mut c = HttpConn::connect(proxy.addr);
    for (url, want) in [
        (format!("http://{}/p?q=1#frag", origin.addr), "o /p?q=1"),
        (format!("http://{}/p#a?b", origin.addr), "o /p"),
        (format!("http://{}#top", origin.addr), "o /"),
    ] {
        let r = c.roundtrip(&get_abs(&url, ""));
        assert_eq!(
            (r.status(), String::from_utf8_lossy(&r.body).as_ref()),
            (200, want),
            "GET {url}"
        );
    }
}

/// The backend connection a client kept from its last request (its origin's
/// pool was full) belongs to that origin: while the client's next request
/// waits for its name to resolve, nothing of it may go there.
#[test]
fn a_request_waiting_for_its_name_is_never_sent_on_the_connection_kept_from_the_last() {
    // Origin X answers each connection's first request only once two
    // connections are open, so that both are in flight together.
    let x = HttpBackend::start(|p| {
        let Some(r) = p.read_request() else { return };
        let end = Instant::now() + DEADLINE;
        while p.state.accepted.load(Ordering::SeqCst) < 2 && Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
        p.write(&ok(format!("x {}", r.head.target()).as_bytes()));
        serve_loop(p, &|r| {
            reply(ok(format!("x {}", r.head.target()).as_bytes()))
        });
    });
    // A pool of one: of the two connections to X, the one released second
    // stays with its client.
    let proxy = forward(&["--pool-size", "1", "--connect-timeout", "2"]);
    let mut clients = [HttpConn::connect(proxy.addr), HttpConn::connect(proxy.addr)];
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&get_abs(&format!("http://{}/{i}", x.addr), ""));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read_response(false).body, format!("x /{i}").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        // Lookups of other names queued first keep this one waiting a while
        // (they all fail: .invalid names never resolve).
        let mut others: Vec<HttpConn> = (0..64).map(|_| HttpConn::connect(proxy.addr)).collect();
        for (j, o) in others.iter_mut().enumerate() {
            o.send(&get_abs(&format!("http://other-{i}-{j}.invalid/"), ""));
        }
        let asked = 64 * (i as u64 + 1) + i as u64;
        proxy.wait_report("the other lookups queued", DEADLINE, |r| {
            r.u("forward_lookups") >= asked
        });
        // A chunked upload trickles in while its name is looked up.
        c.send(
            format!(
                "POST http://victim-{i}.invalid/v HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .as_bytes(),
        );
        for _ in 0..300 {
            thread::sleep(Duration::from_millis(1));
            if c.s.write_all(b"1\r\nz\r\n").is_err() {
                break; // answered already
            }
        }
        let _ = c.s.write_all(b"0\r\n\r\n");
        let r = c.read_response(false);
        assert!(
            matches!(r.status(), 502 | 504),
            "a name that cannot resolve: {:?}",
            r.head.text()
        );
    }
    let to_x: Vec<String> = x.requests().iter().map(|r| r.head.text()).collect();
    assert!(
        !contains(&x.tap(), b"victim"),
        "a request for another origin reached X on the connection kept from the last: {to_x:?}"
    );
}

/// A client that half-closes right after its CONNECT head, while the name
/// is still being looked up: the origin must get that FIN once connected.
#[test]
fn a_half_close_during_a_connects_lookup_reaches_the_origin() {
    let origin = HttpBackend::start(|p| p.wait_eof());
    let port = origin.addr.port().to_string();
    let proxy = forward(&["--connect-ports", &port, "--connect-timeout", "30"]);
    // Lookups of other names queued first keep this one waiting a while.
    let mut others: Vec<HttpConn> = (0..64).map(|_| HttpConn::connect(proxy.addr)).collect();
    for (j, o) in others.iter_mut().enumerate() {
        o.send(&get_abs(&format!("http://other-{j}.invalid/"), ""));
    }
    proxy.wait_report("the other lookups queued", DEADLINE, |r| {
        r.u("forward_lookups") >= 64
    });
    let mut c = HttpConn::connect(proxy.addr);
    c.send(&connect_req(&format!("localhost:{port}"), ""));
    thread::sleep(Duration::from_millis(5));
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    let head = c.read_head();
    assert_eq!(head.status(), 200, "{}", head.text());
    origin.wait_until("the origin saw the client's FIN", DEADLINE, |o| {
        o.eofs() == 1
    });
    let (rest, how) = c.read_until_closed();
    assert!(rest.is_empty() && how == Closed::Eof, "{rest:?} {how:?}");
    drop(others);
    proxy.wait_idle();
}

/// A password in a target's userinfo (refused with 400) is a credential
/// too: it must not be written to the access log.
#[test]
fn a_password_in_a_refused_targets_userinfo_is_not_logged() {
    let mut proxy = forward(&["--access-log", "-"]);
    refused(
        proxy.addr,
        &get_abs("http://bob:Hunter2-pw@127.0.0.1:9/x", ""),
        400,
        "GET with userinfo",
    );
    refused(
        proxy.addr,
        &connect_req("bob:Hunter2-pw@127.0.0.1:443", ""),
        400,
        "CONNECT with userinfo",
    );
    let end = Instant::now() + DEADLINE;
    while proxy.stderr().matches("\" 400 ").count() < 2 {
        assert!(
            Instant::now() < end,
            "no access-log lines:\n{}",
            proxy.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let (_status, err) = proxy.stop(libc::SIGTERM);
    assert!(
        !err.contains("Hunter2-pw"),
        "a password reached the log:\n{err}"
    );
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Malformed or doubtful credentials each get a 407 that keeps the
/// connection, and the good ones then pass on that same connection: the
/// scheme's case does not matter, and a credential of the longest length
/// accepted (1 KiB decoded) fits the decode buffer exactly.
#[test]
fn odd_proxy_authorization_fields_get_a_407_that_keeps_the_connection() {
    let long = format!("u:{}", "x".repeat(1022));
    let origin = HttpBackend::named("o");
    let proxy = forward(&["--auth", "alice:pw", "--auth", &long]);
    let url = format!("http://{}/a", origin.addr);
    let field = |v: &str| format!("Proxy-Authorization: {v}\r\n");
    let good = b64("alice:pw");
    let mut c = HttpConn::connect(proxy.addr);
    for (extra, what) in [
        (field("Basic !!!!"), "not base64"),
        (field(&format!("Basic {}", b64("alicepw"))), "no colon"),
        (field(&format!("Basic {}", b64("alice:"))), "empty password"),
        (field(&format!("Basic\t{good}")), "a tab after the scheme"),
        (field(&format!("Bearer {good}")), "another scheme"),
        (field("Basic"), "no token"),
        (field(""), "empty field"),
        (
            field(&format!("Basic {}", "QUFB".repeat(2000))),
            "8 KB token",
        ),
        (
            field(&format!("Basic {}", b64(&format!("{long}x")))),
            "one byte over the longest",
        ),
        (
            field(&format!("Basic {good}")) + &field(&format!("Basic {good}")),
            "two fields",
        ),
    ] {
        let r = c.roundtrip(&get_abs(&url, &extra));
        assert_eq!(r.status(), 407, "{what}: {:?}", r.head.text());
        assert!(
            !r.head.lists("connection", "close"),
            "{what}: {:?}",
            r.head.text()
        );
    }
    for (extra, what) in [
        (field(&format!("bAsIc {good}")), "scheme in mixed case"),
        (field(&format!("Basic   {good}  ")), "extra spaces"),
        (
            field(&format!("Basic {}", b64(&long))),
            "the longest credential",
        ),
    ] {
        let r = c.roundtrip(&get_abs(&url, &extra));
        assert_eq!(r.status(), 200, "{what}: {:?}", r.head.text());
    }
    assert_eq!(
        origin.requests().len(),
        3,
        "only the accepted requests reach the origin"
    );
}

/// Clients that leave while their names are being looked up (alone, or
/// joined to another's lookup) free everything, and the answers that come
/// back later land on no one: a client that takes a freed slot meanwhile
/// gets the answer for its own name.
#[test]
fn clients_that_leave_during_their_lookups_leave_nothing_behind() {
    let origin = HttpBackend::named("o");
    let proxy = forward(&[]);
    let baseline = proxy.fd_kinds();
    let local = format!("http://localhost:{}", origin.addr.port());
    for round in 0..3 {
        let mut gone: Vec<HttpConn> = (0..10).map(|_| HttpConn::connect(proxy.addr)).collect();
        for (i, c) in gone.iter_mut().enumerate() {
            let url = if i % 2 == 0 {
                format!("http://gone-{round}-{i}.invalid/")
            } else {
                format!("{local}/gone")
            };
            c.send(&get_abs(&url, ""));
        }
        drop(gone);
        // New clients reuse the freed slots while those answers are due.
        let mut c = HttpConn::connect(proxy.addr);
        let r = c.roundtrip(&get_abs(&format!("{local}/stay{round}"), ""));
        assert_eq!(r.status(), 200, "round {round}: {:?}", r.head.text());
        assert_eq!(r.body, format!("o /stay{round}").as_bytes());
        // A name that does not resolve: 502, or 504 if the system's
        // resolver is still trying when the connect timeout ends.
        let mut c = HttpConn::connect(proxy.addr);
        let r = c.roundtrip(&get_abs(&format!("http://stay-{round}.invalid/"), ""));
        assert!(matches!(r.status(), 502 | 504), "{:?}", r.head.text());
    }
    proxy.wait_idle();
    proxy.wait_fds_back_to(baseline, 0);
}

/// An auth file saved by an editor that writes a byte-order mark still
/// grants its first user (the mark is not part of the user name).
#[test]
fn an_auth_file_with_a_byte_order_mark_grants_its_first_user() {
    let dir = files::TempDir::new("fwd-bom");
    let file = dir.write("users", "\u{feff}alice:pw\r\nbob:pw2\r\n");
    let origin = HttpBackend::named("o");
    let proxy = forward(&["--auth-file", &file]);
    let url = format!("http://{}/f", origin.addr);
    for user_pass in ["alice:pw", "bob:pw2"] {
        let mut c = HttpConn::connect(proxy.addr);
        let field = format!("Proxy-Authorization: Basic {}\r\n", b64(user_pass));
        let r = c.roundtrip(&get_abs(&url, &field));
        assert_eq!(r.status(), 200, "{user_pass}: {:?}", r.head.text());
    }
}

/// `--pool-size 0` keeps no idle origin connection in forward mode either:
/// each absolute-form request of a keep-alive client gets a fresh origin
/// connection, and the last one is closed once its response is complete
/// (not kept with the client for its next request). By default the second
/// request reuses the first one's connection.
#[test]
fn pool_size_zero_keeps_no_idle_origin_connection() {
    for (extra, conns) in [(&["--pool-size", "0"][..], 2), (&[][..], 1)] {
        let origin = HttpBackend::named("o");
        let proxy = forward(extra);
        let mut c = HttpConn::connect(proxy.addr);
        for i in 0..2 {
            let url = format!("http://127.0.0.1:{}/r{i}", origin.addr.port());
            let r = c.roundtrip(&get_abs(&url, ""));
            assert_eq!(r.body, format!("o /r{i}").as_bytes(), "{extra:?}");
            if conns == 2 {
                // The client stays; its origin connection does not.
                proxy.wait_report("the origin connection closed", DEADLINE, |r| {
                    r.m("backend_connections") == 0.0
                });
                let end = Instant::now() + DEADLINE;
                while origin.closed_request_conns() != i + 1 {
                    assert!(Instant::now() < end, "origin connection {i} not closed");
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
        assert_eq!(
            origin.accepted(),
            conns,
            "origin connections with {extra:?}"
        );
        let report = proxy.report();
        assert_eq!(
            (
                report.u("backend_pool_hits"),
                report.u("backend_pool_misses")
            ),
            (2 - conns as u64, conns as u64),
            "{extra:?}"
        );
    }
}
