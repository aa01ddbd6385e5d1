//! IPv6: the proxy listens on and connects to ::1, and mixes families.

mod common;

use common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::thread;

fn echo_through(proxy_addr: SocketAddr, n: usize, seed: u64) {
    let mut s = connect(proxy_addr);
    let data = payload(n, seed);
    let mut w = s.try_clone().unwrap();
    let d2 = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&d2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let back = read_to_end_with_deadline(&mut s, DEADLINE);
    writer.join().unwrap();
    assert_eq!(back.len(), n, "echo length through {proxy_addr}");
    assert!(back == data, "echo through {proxy_addr} differs");
}

#[test]
fn ipv6_listener_relays_to_ipv6_backend() {
    if !have_ipv6_loopback() {
        eprintln!("SKIPPED: this machine cannot bind [::1]:0");
        return;
    }
    let backend = Backend::echo_on("[::1]:0");
    let port = backend.addr.port().to_string();
    let proxy = Proxy::start(&[
        "-l",
        "::1",
        "-p",
        "0",
        "-b",
        "::1",
        "-P",
        &port,
        "-w",
        "1",
        "--max-conns",
        "16",
    ]);
    assert!(
        proxy.addr.is_ipv6(),
        "listening address {} is not IPv6",
        proxy.addr
    );
    assert!(proxy.addr.ip().is_loopback());
    assert_ne!(proxy.addr.port(), 0);
    assert!(
        proxy
            .stderr()
            .contains(&format!("[::1]:{}", proxy.addr.port())),
        "listening line must print the IPv6 address in brackets"
    );
    echo_through(proxy.addr, MIB, 61);
    assert_eq!(backend.accepted(), 1);
    proxy.wait_idle();
}

#[test]
fn ipv4_listener_relays_to_ipv6_backend() {
    if !have_ipv6_loopback() {
        eprintln!("SKIPPED: this machine cannot bind [::1]:0");
        return;
    }
    let backend = Backend::echo_on("[::1]:0");
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--max-conns", "16"]);
    echo_through(proxy.addr, MIB, 62);
    assert_eq!(backend.accepted(), 1);
    proxy.wait_idle();
}

#[test]
fn ipv6_listener_relays_to_ipv4_backend() {
    if !have_ipv6_loopback() {
        eprintln!("SKIPPED: this machine cannot bind [::1]:0");
        return;
    }
    let backend = Backend::echo();
    let port = backend.addr.port().to_string();
    let proxy = Proxy::start(&[
        "-l",
        "::1",
        "-p",
        "0",
        "-b",
        "127.0.0.1",
        "-P",
        &port,
        "-w",
        "1",
        "--max-conns",
        "16",
    ]);
    echo_through(proxy.addr, MIB, 63);
    assert_eq!(backend.accepted(), 1);
    proxy.wait_idle();
}
