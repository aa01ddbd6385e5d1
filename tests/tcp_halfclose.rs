//! Half-close: a FIN in one direction ends only that direction; the other
//! keeps flowing to its end. A reset from the backend closes the client
//! (with a reset when it still lacked bytes or the end of the stream).

mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

#[test]
fn client_half_close_still_receives_the_whole_reply() {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--max-conns", "16"]);
    let request = payload(100 * KIB, 7);
    let reply_len = 8 * MIB;
    let mut s = connect(proxy.addr);
    s.write_all(&header(b'H', reply_len as u64, 77)).unwrap();
    s.write_all(&request).unwrap();
    // The client is done sending; the backend only answers after this FIN.
    s.shutdown(Shutdown::Write).unwrap();
    let digest = read_exact_with_deadline(&mut s, 16, DEADLINE);
    assert_eq!(
        Digest::from_bytes(&digest),
        digest_of(&request),
        "the backend did not receive the request whole before the client's FIN"
    );
    let mut prng = Prng::new(77);
    let got = read_stream_verify_from(&mut s, &mut prng, 0, DEADLINE);
    assert_eq!(
        got, reply_len,
        "after its half-close the client got {got} of {reply_len} reply bytes"
    );
    drop(s);
    proxy.wait_idle();
}

#[test]
fn backend_half_close_still_receives_the_whole_upload() {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--max-conns", "16"]);
    let reply_len = 4 * MIB;
    let upload_len = 16 * MIB;
    let mut s = connect(proxy.addr);
    // The backend sends its whole reply and shuts down writing first.
    s.write_all(&header(b'F', reply_len as u64, 88)).unwrap();
    let got = read_stream_verify(&mut s, 88, DEADLINE);
    assert_eq!(
        got, reply_len,
        "client got {got} of {reply_len} reply bytes before EOF"
    );
    // Only after that EOF does the client upload; the backend must still get it all.
    write_stream(&mut s, upload_len, 99)
        .expect("the proxy must keep the client->backend direction open after the backend's FIN");
    s.shutdown(Shutdown::Write).unwrap();
    let digests = backend.state.wait_digests(1, DEADLINE);
    assert_eq!(
        digests[0],
        digest_of_stream(upload_len, 99),
        "the upload sent after the backend's half-close did not arrive whole"
    );
    // Both directions are finished: the client sees the connection end.
    expect_closed(&mut s, DEADLINE);
    drop(s);
    let r = proxy.wait_idle();
    assert_eq!(
        r.u("bytes_client_to_backend"),
        (HEADER_LEN + upload_len) as u64
    );
    assert_eq!(r.u("bytes_backend_to_client"), reply_len as u64);
}

#[test]
fn backend_reset_closes_the_client() {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--idle-timeout", "300"],
    );
    let mut s = connect(proxy.addr);
    s.write_all(&header(b'R', 0, 0)).unwrap();
    // The client keeps its side open; only the backend's RST can end this.
    let how = expect_closed(&mut s, Duration::from_secs(10));
    eprintln!("client saw {how:?} after the backend reset");
    drop(s);
    proxy.wait_idle();
    assert_eq!(backend.accepted(), 1);
}

#[test]
fn client_reset_closes_the_backend() {
    let backend = Backend::scripted();
    let proxy = Proxy::tcp(
        backend.addr,
        &["-w", "1", "--max-conns", "16", "--idle-timeout", "300"],
    );
    let mut s = connect(proxy.addr);
    s.write_all(&header(b'E', 0, 0)).unwrap();
    s.write_all(b"before the reset").unwrap();
    assert_eq!(
        read_exact_with_deadline(&mut s, 16, DEADLINE),
        b"before the reset"
    );
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s); // RST
             // The echo handler returns only when its connection ends.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while backend
        .state
        .finished
        .load(std::sync::atomic::Ordering::SeqCst)
        < 1
    {
        assert!(
            std::time::Instant::now() < end,
            "the backend connection is still open 10 s after the client reset"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.wait_idle();
}
