//! Self-checks of the test harness (no proxy involved): if these fail, the
//! proxy tests' verdicts cannot be trusted.

mod common;

use common::*;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

#[test]
fn prng_stream_does_not_depend_on_read_sizes() {
    let whole = payload(10_000, 9);
    let mut p = Prng::new(9);
    let mut pieces = Vec::new();
    for k in [1usize, 3, 7, 8, 13, 1000, 64, 5] {
        let mut b = vec![0u8; k];
        p.fill(&mut b);
        pieces.extend_from_slice(&b);
    }
    assert_eq!(&whole[..pieces.len()], &pieces[..]);
    assert_ne!(
        payload(64, 1),
        payload(64, 2),
        "seeds must give distinct data"
    );
    assert_eq!(digest_of(&whole), digest_of_stream(10_000, 9));
    assert_ne!(digest_of(&whole[..9999]), digest_of(&whole));
}

#[test]
fn scripted_backend_speaks_its_protocol_directly() {
    let b = Backend::scripted();
    // 'S'
    let mut s = connect(b.addr);
    s.write_all(&header(b'S', 300_000, 4)).unwrap();
    assert_eq!(read_stream_verify(&mut s, 4, DEADLINE), 300_000);
    // 'H'
    let mut s = connect(b.addr);
    s.write_all(&header(b'H', 1000, 5)).unwrap();
    write_stream(&mut s, 123_456, 6).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let d = read_exact_with_deadline(&mut s, 16, DEADLINE);
    assert_eq!(Digest::from_bytes(&d), digest_of_stream(123_456, 6));
    assert_eq!(read_stream_verify(&mut s, 5, DEADLINE), 1000);
    // 'E'
    let mut s = connect(b.addr);
    s.write_all(&header(b'E', 0, 0)).unwrap();
    s.write_all(b"xyz").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end_with_deadline(&mut s, DEADLINE), b"xyz");
    // 'R'
    let mut s = connect(b.addr);
    s.write_all(&header(b'R', 0, 0)).unwrap();
    assert_eq!(expect_closed(&mut s, DEADLINE), Closed::Reset);
}

#[test]
fn refusing_address_refuses() {
    let a = refusing_addr();
    let e = TcpStream::connect_timeout(&a, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn black_hole_never_completes_a_connect() {
    let h = black_hole();
    let e = TcpStream::connect_timeout(&h.addr, Duration::from_millis(1500)).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock),
        "connect to the black hole ended with {e} instead of hanging"
    );
}
