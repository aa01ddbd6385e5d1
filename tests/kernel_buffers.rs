//! The kernel buffers ferry sizes: the receive buffer (SO_RCVBUF,
//! `--backend-rcvbuf`) of its backend sockets and the size of its splice
//! pipes. The tests borrow the proxy's own descriptors with pidfd_getfd(2)
//! and ask the kernel what they hold.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn read_proc_numbers(path: &str) -> Vec<usize> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// What getsockopt(SO_RCVBUF) answers after setsockopt(SO_RCVBUF, asked):
/// the kernel doubles the value and caps it at net.core.rmem_max first.
fn granted(asked: usize) -> usize {
    2 * asked.min(read_proc_numbers("/proc/sys/net/core/rmem_max")[0])
}

/// Every descriptor of process `pid` whose /proc link starts with `kind`
/// ("socket:", "pipe:"), duplicated into this process with pidfd_getfd(2).
fn borrow_fds(pid: u32, kind: &str) -> Vec<OwnedFd> {
    // SAFETY: plain syscalls; every descriptor they return is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !link.to_string_lossy().starts_with(kind) {
            continue;
        }
        let n: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
        assert!(
            fd >= 0,
            "pidfd_getfd({pid}, {n}): {}",
            std::io::Error::last_os_error()
        );
        fds.push(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    fds
}

/// SO_RCVBUF of the socket that process `pid` has connected to `peer`.
fn rcvbuf_towards(pid: u32, peer: SocketAddr) -> usize {
    let found: Vec<usize> = borrow_fds(pid, "socket:")
        .into_iter()
        .map(socket2::Socket::from)
        .filter(|s| {
            s.peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|a| a == peer)
        })
        .map(|s| s.recv_buffer_size().unwrap())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one socket of the proxy connected to {peer}, found {found:?}"
    );
    found[0]
}

/// Relay a few bytes so the backend connection is surely open.
fn round_trip(proxy: &Proxy) -> TcpStream {
    let mut c = connect(proxy.addr);
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    c
}

#[test]
fn the_backend_socket_gets_the_receive_buffer_asked_for() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--backend-rcvbuf", "200000"]);
    let _c = round_trip(&proxy);
    assert_eq!(rcvbuf_towards(proxy.pid(), backend.addr), granted(200_000));
}

#[test]
fn by_default_the_backend_socket_has_one_mebibyte_of_receive_buffer() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1"]);
    let _c = round_trip(&proxy);
    assert_eq!(rcvbuf_towards(proxy.pid(), backend.addr), granted(1 << 20));
}

#[test]
fn zero_leaves_the_backend_socket_to_the_kernels_autotuning() {
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--backend-rcvbuf", "0"]);
    let _c = round_trip(&proxy);
    // Four bytes do not grow an autotuned buffer past its start (tcp_rmem's default).
    let initial = read_proc_numbers("/proc/sys/net/ipv4/tcp_rmem")[1];
    assert_eq!(rcvbuf_towards(proxy.pid(), backend.addr), initial);
}

#[test]
fn http_backend_connections_get_it_too() {
    let backend = HttpBackend::fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let b = backend.addr.to_string();
    let proxy = Proxy::start(&[
        "-l",
        "127.0.0.1",
        "-p",
        "0",
        "-m",
        "http",
        "-w",
        "1",
        "--backend",
        &b,
        "--backend-rcvbuf",
        "300000",
    ]);
    let mut c = HttpConn::connect(proxy.addr);
    let r = c.roundtrip(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status(), r.body.as_slice()), (200, &b"ok"[..]));
    // The connection now idles in the worker's pool.
    assert_eq!(rcvbuf_towards(proxy.pid(), backend.addr), granted(300_000));
}

#[test]
fn a_receive_buffer_out_of_range_is_refused_naming_the_flag_and_the_file_key() {
    let (status, _, err) = run_cli(&["--backend-rcvbuf", "100"]);
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains("--backend-rcvbuf") && err.contains("4096"),
        "stderr: {err}"
    );
    let dir = files::TempDir::new("rcvbuf");
    let path = dir.write(
        "ferry.toml",
        "backend_rcvbuf = 2\n[[listener]]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (status, _, err) = run_cli(&["-c", &path, "--check"]);
    assert_ne!(status.code(), Some(0), "stderr: {err}");
    assert!(err.contains("backend_rcvbuf"), "stderr: {err}");
}

#[test]
fn splice_pipes_are_sized_to_256_kib() {
    // fs.pipe-max-size caps what F_SETPIPE_SZ grants (1 MiB by default;
    // root is not held to it).
    let cap = read_proc_numbers("/proc/sys/fs/pipe-max-size")[0];
    let backend = Backend::echo();
    let proxy = Proxy::tcp(backend.addr, &["-w", "1", "--splice", "on"]);
    // With splice on, the relay takes a pipe from the pool for the first
    // bytes of each direction; it goes back to the pool, open, once empty.
    let _c = round_trip(&proxy);
    let sizes: Vec<i32> = borrow_fds(proxy.pid(), "pipe:")
        .iter()
        .map(|fd| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) })
        .collect();
    let want = if unsafe { libc::geteuid() } == 0 {
        256 << 10
    } else {
        (256usize << 10).min(cap) as i32
    };
    // Both ends of the pool's pipe (the process's other pipes, stderr to
    // this test among them, keep the kernel's default).
    assert!(
        sizes.iter().filter(|&&s| s == want).count() >= 2,
        "pipe sizes {sizes:?}: no splice pipe of {want} bytes"
    );
}
