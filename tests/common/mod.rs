//! Test harness for the `proxy` binary: spawn the real process on an
//! ephemeral port, read its stderr (listening line, reports), sample its
//! resources from /proc, and run small test backends in threads.
//!
//! Invariants the harness keeps: every socket is on loopback, every port is
//! chosen by the kernel (port 0), every wait has a deadline, and a `Proxy` is
//! killed (SIGKILL + wait) when dropped, so no orphan process outlives a test.
#![allow(dead_code)]

pub mod files;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// The generous deadline for anything that waits on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Very large transfers are scaled down in debug builds (the test code hashes
/// and generates every byte, which is slow without optimisation).
pub fn big(n: usize) -> usize {
    if cfg!(debug_assertions) {
        n / 4
    } else {
        n
    }
}

// ---------------------------------------------------------------------------
// Deterministic data: xorshift64* byte stream and an FNV-1a digest.
// ---------------------------------------------------------------------------

/// A deterministic byte stream; the bytes do not depend on how the caller
/// slices its reads (`fill` keeps the unused part of the last word).
#[derive(Clone)]
pub struct Prng {
    state: u64,
    word: [u8; 8],
    left: usize,
}

impl Prng {
    pub fn new(seed: u64) -> Prng {
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        if state == 0 {
            state = 1;
        }
        Prng {
            state,
            word: [0; 8],
            left: 0,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while self.left > 0 && i < out.len() {
            out[i] = self.word[8 - self.left];
            self.left -= 1;
            i += 1;
        }
        let rest = &mut out[i..];
        let mut chunks = rest.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.word = self.next_u64().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&self.word[..n]);
            self.left = 8 - n;
        }
    }
}

/// `n` deterministic bytes for `seed`.
pub fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Prng::new(seed).fill(&mut v);
    v
}

/// Length and FNV-1a 64 hash of a byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    pub len: u64,
    pub hash: u64,
}

#[derive(Clone)]
pub struct Hasher {
    len: u64,
    hash: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            len: 0,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.hash;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.hash = h;
        self.len += data.len() as u64;
    }
    pub fn digest(&self) -> Digest {
        Digest {
            len: self.len,
            hash: self.hash,
        }
    }
}

pub fn digest_of(data: &[u8]) -> Digest {
    let mut h = Hasher::default();
    h.update(data);
    h.digest()
}

/// Digest of `n` bytes of the stream `seed`, computed without holding them.
pub fn digest_of_stream(n: usize, seed: u64) -> Digest {
    let mut p = Prng::new(seed);
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 64 * KIB];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len());
        p.fill(&mut buf[..k]);
        h.update(&buf[..k]);
        left -= k;
    }
    h.digest()
}

impl Digest {
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..].copy_from_slice(&self.hash.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8]) -> Digest {
        assert!(b.len() >= 16, "digest needs 16 bytes, got {}", b.len());
        Digest {
            len: u64::from_le_bytes(b[..8].try_into().unwrap()),
            hash: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        }
    }
}

// ---------------------------------------------------------------------------
// Client-side socket helpers.
// ---------------------------------------------------------------------------

/// Connect with a deadline; the stream gets generous read/write timeouts so a
/// stuck proxy fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// One read bounded by `deadline`. `Ok(None)` means the deadline passed.
pub fn read_some(
    s: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<Option<usize>> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        s.set_read_timeout(Some(wait))?;
        match s.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Read until EOF; panics if the deadline passes first or on an error.
pub fn read_to_end_with_deadline(s: &mut TcpStream, deadline: Duration) -> Vec<u8> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        match read_some(s, &mut buf, end) {
            Ok(Some(0)) => return out,
            Ok(Some(n)) => out.extend_from_slice(&buf[..n]),
            Ok(None) => panic!("no EOF within {deadline:?} (got {} bytes)", out.len()),
            Err(e) => panic!("read failed after {} bytes: {e}", out.len()),
        }
    }
}

/// Read exactly `n` bytes with a deadline.
pub fn read_exact_with_deadline(s: &mut TcpStream, n: usize, deadline: Duration) -> Vec<u8> {
    let end = Instant::now() + deadline;
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match read_some(s, &mut out[got..], end) {
            Ok(Some(0)) => panic!("EOF after {got} of {n} bytes"),
            Ok(Some(k)) => got += k,
            Ok(None) => panic!("only {got} of {n} bytes within {deadline:?}"),
            Err(e) => panic!("read failed after {got} of {n} bytes: {e}"),
        }
    }
    out
}

/// Read until EOF, comparing every byte with the stream `seed`; returns the
/// number of bytes read. Panics at the first differing offset.
pub fn read_stream_verify(s: &mut TcpStream, seed: u64, deadline: Duration) -> usize {
    read_stream_verify_from(s, &mut Prng::new(seed), 0, deadline)
}

/// As `read_stream_verify`, continuing a stream already `offset` bytes in.
pub fn read_stream_verify_from(
    s: &mut TcpStream,
    prng: &mut Prng,
    offset: usize,
    deadline: Duration,
) -> usize {
    let end = Instant::now() + deadline;
    let mut buf = vec![0u8; 256 * KIB];
    let mut want = vec![0u8; 256 * KIB];
    let mut total = offset;
    loop {
        match read_some(s, &mut buf, end) {
            Ok(Some(0)) => return total,
            Ok(Some(n)) => {
                prng.fill(&mut want[..n]);
                if buf[..n] != want[..n] {
                    let i = (0..n).find(|&i| buf[i] != want[i]).unwrap();
                    panic!("stream differs at byte offset {}", total + i);
                }
                total += n;
            }
            Ok(None) => panic!("no EOF within {deadline:?} (got {total} bytes)"),
            Err(e) => panic!("read failed after {total} bytes: {e}"),
        }
    }
}

/// Read and compare exactly `n` bytes of the stream (no EOF expected).
pub fn read_stream_exact(s: &mut TcpStream, prng: &mut Prng, n: usize, deadline: Duration) {
    let got = read_exact_with_deadline(s, n, deadline);
    let mut want = vec![0u8; n];
    prng.fill(&mut want);
    if got != want {
        let i = (0..n).find(|&i| got[i] != want[i]).unwrap();
        panic!("stream differs at byte offset {i} of this {n}-byte read");
    }
}

/// Write `n` bytes of the stream `seed` in chunks.
pub fn write_stream(s: &mut TcpStream, n: usize, seed: u64) -> io::Result<()> {
    let mut p = Prng::new(seed);
    let mut buf = vec![0u8; 256 * KIB];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len());
        p.fill(&mut buf[..k]);
        s.write_all(&buf[..k])?;
        left -= k;
    }
    Ok(())
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Eof,
    Reset,
}

/// Wait (discarding data) until the peer closes; panics after the deadline.
pub fn expect_closed(s: &mut TcpStream, deadline: Duration) -> Closed {
    let end = Instant::now() + deadline;
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        match read_some(s, &mut buf, end) {
            Ok(Some(0)) => return Closed::Eof,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("connection still open after {deadline:?}"),
            Err(e) if is_reset(&e) => return Closed::Reset,
            Err(e) => panic!("unexpected error while waiting for close: {e}"),
        }
    }
}

/// True if nothing is readable right now and the connection is still open.
pub fn nothing_readable(s: &TcpStream) -> Result<(), String> {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let r = match (&*s).read(&mut b) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Ok(0) => Err("connection closed (EOF)".to_string()),
        Ok(n) => Err(format!("{n} bytes arrived")),
        Err(e) => Err(format!("error {e}")),
    };
    s.set_nonblocking(false).unwrap();
    r
}

// ---------------------------------------------------------------------------
// Scripted protocol spoken by `Backend::scripted()`:
// a 17-byte header (command, n: u64 LE, seed: u64 LE), then per command:
//   'E'  echo everything until EOF, then shutdown(Write)
//   'S'  send n bytes of stream `seed`, shutdown(Write), drain until EOF
//   'H'  read until EOF hashing, reply the 16-byte digest followed by n bytes
//        of stream `seed`, then close
//   'F'  send n bytes of stream `seed`, shutdown(Write) first, then read the
//        upload until EOF and record its digest in `Backend::digests`
//   'R'  reset: close at once with SO_LINGER 0 (RST)
// ---------------------------------------------------------------------------

pub const HEADER_LEN: usize = 17;

pub fn header(cmd: u8, n: u64, seed: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = cmd;
    h[1..9].copy_from_slice(&n.to_le_bytes());
    h[9..17].copy_from_slice(&seed.to_le_bytes());
    h
}

/// Shared state between a backend's threads and the test.
#[derive(Default)]
pub struct BackendState {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Handler threads that returned.
    pub finished: AtomicUsize,
    /// Bytes written by 'S'/'H'/'F' senders so far.
    pub bytes_sent: AtomicUsize,
    digests: Mutex<Vec<Digest>>,
    cv: Condvar,
}

impl BackendState {
    pub fn record_digest(&self, d: Digest) {
        self.digests.lock().unwrap().push(d);
        self.cv.notify_all();
    }

    /// Wait until at least `count` upload digests were recorded.
    pub fn wait_digests(&self, count: usize, deadline: Duration) -> Vec<Digest> {
        let end = Instant::now() + deadline;
        let mut g = self.digests.lock().unwrap();
        while g.len() < count {
            let now = Instant::now();
            if now >= end {
                panic!(
                    "backend recorded {} of {count} upload digests within {deadline:?}",
                    g.len()
                );
            }
            g = self.cv.wait_timeout(g, end - now).unwrap().0;
        }
        g.clone()
    }
}

pub struct Backend {
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// A backend on 127.0.0.1:0 running `handler` in a thread per connection.
    pub fn start<F>(handler: F) -> Backend
    where
        F: Fn(TcpStream, &BackendState) + Send + Sync + 'static,
    {
        Backend::start_on("127.0.0.1:0", handler)
    }

    pub fn start_on<F>(bind: &str, handler: F) -> Backend
    where
        F: Fn(TcpStream, &BackendState) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (st, sp) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(120)));
                let (h, st2) = (handler.clone(), st.clone());
                thread::spawn(move || {
                    h(conn, &st2);
                    st2.finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Backend {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn echo() -> Backend {
        Backend::start(|s, _| echo_handler(s))
    }

    pub fn echo_on(bind: &str) -> Backend {
        Backend::start_on(bind, |s, _| echo_handler(s))
    }

    pub fn scripted() -> Backend {
        Backend::start(scripted_handler)
    }

    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn echo_handler(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

fn drain(s: &mut TcpStream) -> Hasher {
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 256 * KIB];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return h,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return h,
        }
    }
}

fn send_counted(s: &mut TcpStream, n: usize, seed: u64, st: &BackendState) -> io::Result<()> {
    let mut p = Prng::new(seed);
    let mut buf = vec![0u8; 128 * KIB];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len());
        p.fill(&mut buf[..k]);
        s.write_all(&buf[..k])?;
        st.bytes_sent.fetch_add(k, Ordering::SeqCst);
        left -= k;
    }
    Ok(())
}

pub fn scripted_handler(mut s: TcpStream, st: &BackendState) {
    let mut h = [0u8; HEADER_LEN];
    if s.read_exact(&mut h).is_err() {
        return;
    }
    let cmd = h[0];
    let n = u64::from_le_bytes(h[1..9].try_into().unwrap()) as usize;
    let seed = u64::from_le_bytes(h[9..17].try_into().unwrap());
    match cmd {
        b'E' => echo_handler(s),
        b'S' => {
            if send_counted(&mut s, n, seed, st).is_ok() {
                let _ = s.shutdown(Shutdown::Write);
                drain(&mut s);
            }
        }
        b'H' => {
            let d = drain(&mut s).digest();
            st.record_digest(d);
            if s.write_all(&d.to_bytes()).is_ok() && send_counted(&mut s, n, seed, st).is_ok() {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
        b'F' => {
            if send_counted(&mut s, n, seed, st).is_ok() {
                let _ = s.shutdown(Shutdown::Write);
                let d = drain(&mut s).digest();
                st.record_digest(d);
            }
        }
        b'R' => {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
        other => panic!("scripted backend: unknown command {other:?}"),
    }
}

/// An address where nothing listens: connecting is refused.
pub fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// A loopback address that never answers a SYN: a listener with backlog 0
/// that is never accepted, whose accept queue is filled, so Linux drops
/// further SYNs and a connect hangs until the connector gives up.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

pub fn black_hole() -> BlackHole {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(1000)) {
            Ok(s) => fillers.push(s),
            // A connect that hangs once the queue holds a connection proves
            // the hole; one that hangs on an empty queue proves nothing.
            Err(e) if is_timeout(&e) && !fillers.is_empty() => {
                return BlackHole {
                    addr,
                    _listener: sock,
                    _fillers: fillers,
                };
            }
            Err(e) if is_timeout(&e) => continue,
            Err(e) => panic!("black hole probe: {e}"),
        }
    }
    panic!("could not fill the accept queue of a backlog-0 listener");
}

// ---------------------------------------------------------------------------
// The proxy process.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Log {
    inner: Mutex<(Vec<String>, bool)>,
    cv: Condvar,
}

impl Log {
    fn push(&self, line: String) {
        self.inner.lock().unwrap().0.push(line);
        self.cv.notify_all();
    }
    fn close(&self) {
        self.inner.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
    fn len(&self) -> usize {
        self.inner.lock().unwrap().0.len()
    }
    fn text(&self) -> String {
        self.inner.lock().unwrap().0.join("\n")
    }
    /// Wait until `f` finds something in the lines from index `from`.
    fn wait_for<T>(
        &self,
        from: usize,
        deadline: Duration,
        mut f: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + deadline;
        let mut g = self.inner.lock().unwrap();
        loop {
            let start = from.min(g.0.len());
            if let Some(t) = f(&g.0[start..]) {
                return Some(t);
            }
            let now = Instant::now();
            if g.1 || now >= end {
                return None;
            }
            g = self.cv.wait_timeout(g, end - now).unwrap().0;
        }
    }
}

pub type Report = HashMap<String, f64>;

/// Open descriptors of a process by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdKinds {
    pub sockets: usize,
    pub pipes: usize,
    pub other: usize,
}

/// Typed access to report values that panics with the whole report when a
/// metric is missing.
pub trait Metrics {
    fn m(&self, name: &str) -> f64;
    fn u(&self, name: &str) -> u64 {
        self.m(name) as u64
    }
}

impl Metrics for Report {
    fn m(&self, name: &str) -> f64 {
        match self.get(name) {
            Some(v) => *v,
            None => panic!("metric {name} missing from report {self:?}"),
        }
    }
}

/// Parse the first complete report block in `lines`.
pub fn parse_report(lines: &[String]) -> Option<Report> {
    let begin = lines
        .iter()
        .position(|l| l.contains("ferry: report begin"))?;
    let end = begin
        + lines[begin..]
            .iter()
            .position(|l| l.contains("ferry: report end"))?;
    let mut r = Report::new();
    for l in &lines[begin + 1..end] {
        let mut it = l.split_whitespace();
        if let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) {
            if let Ok(v) = v.parse::<f64>() {
                r.insert(k.to_string(), v);
            }
        }
    }
    Some(r)
}

/// Parse the last complete report block in `lines`.
pub fn parse_last_report(lines: &[String]) -> Option<Report> {
    let begin = lines
        .iter()
        .rposition(|l| l.contains("ferry: report begin"))?;
    parse_report(&lines[begin..])
}

pub struct Proxy {
    child: Child,
    /// The first listening address.
    pub addr: SocketAddr,
    /// All listening addresses, in the order printed.
    pub addrs: Vec<SocketAddr>,
    log: Arc<Log>,
    reader: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

impl Proxy {
    /// Spawn the proxy and wait (10 s) for its `listening on` line.
    pub fn start(args: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proxy");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Log::default());
        let l2 = log.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => l2.push(l),
                    Err(_) => break,
                }
            }
            l2.close();
        });
        let mut p = Proxy {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            addrs: Vec::new(),
            log,
            reader: Some(reader),
            exited: None,
        };
        let first = p.log.wait_for(0, Duration::from_secs(10), |lines| {
            lines.iter().find_map(|l| parse_listening(l))
        });
        match first {
            Some(a) => p.addr = a,
            None => panic!(
                "proxy {args:?} printed no `listening on` line within 10 s; stderr:\n{}",
                p.log.text()
            ),
        }
        // Give the other listener lines (if any) a moment to arrive.
        let lines = p.log.inner.lock().unwrap().0.clone();
        p.addrs = lines.iter().filter_map(|l| parse_listening(l)).collect();
        p
    }

    /// A TCP-mode proxy on 127.0.0.1:0 in front of `backend`.
    pub fn tcp(backend: SocketAddr, extra: &[&str]) -> Proxy {
        let (ip, port) = (backend.ip().to_string(), backend.port().to_string());
        let mut args = vec!["-l", "127.0.0.1", "-p", "0", "-b", &ip, "-P", &port];
        args.extend_from_slice(extra);
        Proxy::start(&args)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of the admin listener, from the `ferry: admin on ADDR` banner.
    pub fn admin_addr(&self) -> SocketAddr {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(addr) = self
                .stderr_lines()
                .iter()
                .find_map(|l| l.strip_prefix("ferry: admin on ")?.trim().parse().ok())
            {
                return addr;
            }
            assert!(
                Instant::now() < end,
                "no `ferry: admin on` line; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped
        // (reaping happens only in wait_exit/Drop, which take &mut self).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// All stderr so far.
    pub fn stderr(&self) -> String {
        self.log.text()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.log.inner.lock().unwrap().0.clone()
    }

    /// SIGUSR1, then parse the next report block (10 s deadline).
    pub fn report(&self) -> Report {
        let from = self.log.len();
        self.signal(libc::SIGUSR1);
        match self
            .log
            .wait_for(from, Duration::from_secs(10), parse_report)
        {
            Some(r) => r,
            None => panic!(
                "no report within 10 s of SIGUSR1; stderr:\n{}",
                self.log.text()
            ),
        }
    }

    /// Poll reports until `pred` holds; panics with the last report on timeout.
    pub fn wait_report(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Report) -> bool,
    ) -> Report {
        let end = Instant::now() + deadline;
        loop {
            let r = self.report();
            if pred(&r) {
                return r;
            }
            if Instant::now() >= end {
                let mut v: Vec<_> = r.iter().collect();
                v.sort_by(|a, b| a.0.cmp(b.0));
                panic!("report never showed `{what}` within {deadline:?}; last report: {v:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every pair is gone and the slab and pools are empty.
    pub fn wait_idle(&self) -> Report {
        self.wait_report(
            "connections_active == 0, slab/buffers/pipes in use == 0",
            DEADLINE,
            |r| {
                r.m("connections_active") == 0.0
                    && r.m("slab_in_use") == 0.0
                    && r.m("buffers_in_use") == 0.0
                    && r.m("pipes_in_use") == 0.0
            },
        )
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid()))
            .unwrap_or_else(|e| panic!("read /proc/{}/{name}: {e}", self.pid()))
    }

    pub fn rss_kib(&self) -> u64 {
        let s = self.proc_file("status");
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid()))
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// The proxy's open descriptors by kind.
    pub fn fd_kinds(&self) -> FdKinds {
        let mut k = FdKinds::default();
        let dir = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("read /proc/PID/fd");
        for e in dir.flatten() {
            // An fd closed while we looked has no link any more: skip it.
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy();
                if t.starts_with("socket:") {
                    k.sockets += 1
                } else if t.starts_with("pipe:") {
                    k.pipes += 1
                } else {
                    k.other += 1
                }
            }
        }
        k
    }

    /// Wait until the proxy holds exactly its baseline sockets and other
    /// descriptors, and at most `max_extra_pipe_fds` more pipe ends than at
    /// baseline (the pipe pool keeps emptied pipes for reuse, up to a cap).
    pub fn wait_fds_back_to(&self, baseline: FdKinds, max_extra_pipe_fds: usize) {
        let end = Instant::now() + DEADLINE;
        loop {
            let now = self.fd_kinds();
            if now.sockets == baseline.sockets
                && now.other == baseline.other
                && now.pipes <= baseline.pipes + max_extra_pipe_fds
            {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "proxy descriptors did not return to baseline after all connections closed: \
                     now {now:?}, baseline {baseline:?}, pooled pipe ends allowed {max_extra_pipe_fds}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// utime + stime in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let s = self.proc_file("stat");
        let after = &s[s.rfind(')').expect("stat format") + 1..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // after ')' : state(3) ppid(4) ... utime(14) stime(15) => indexes 11, 12
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Wait for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        let end = Instant::now() + deadline;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(s);
                if let Some(t) = self.reader.take() {
                    let _ = t.join();
                }
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// Send `sig`, wait (30 s) for the exit; returns the status and all stderr.
    pub fn stop(&mut self, sig: i32) -> (ExitStatus, String) {
        self.signal(sig);
        match self.wait_exit(DEADLINE) {
            Some(s) => (s, self.log.text()),
            None => panic!(
                "proxy did not exit within {DEADLINE:?} of signal {sig}; stderr:\n{}",
                self.log.text()
            ),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

/// Run the proxy to completion (for CLI tests) with a 10 s deadline.
/// Returns (status, stdout, stderr). Stdin is closed.
pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxy");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let te = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("proxy {args:?} still running after 10 s (expected it to exit)");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, to.join().unwrap(), te.join().unwrap())
}

/// Clock ticks per second (for cpu_ticks).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Whether this machine can bind a socket on ::1.
pub fn have_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Connect with a small receive buffer (set before the handshake, so the
/// window stays small): the client then holds little data in the kernel and
/// a transfer it does not read stays in flight inside the proxy's pipeline.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    sock.connect_timeout(&addr.into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

// ---------------------------------------------------------------------------
// HTTP: a buffered connection usable by clients and scripted backends, a
// parsed message head, raw request builders, and a scripted raw HTTP backend
// that counts connections and records every request it receives.
// Everything here is additive: the TCP helpers above are unchanged.
// ---------------------------------------------------------------------------

/// A message head as received: the raw bytes (through the blank line), the
/// start line, and the fields in order (values trimmed of spaces and tabs).
#[derive(Clone, Debug)]
pub struct Head {
    pub raw: Vec<u8>,
    pub start: String,
    pub fields: Vec<(String, String)>,
}

impl Head {
    pub fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw).into_owned();
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or("").to_string();
        let mut fields = Vec::new();
        for l in lines {
            if l.is_empty() {
                continue;
            }
            match l.split_once(':') {
                Some((n, v)) => {
                    fields.push((n.to_string(), v.trim_matches([' ', '\t']).to_string()))
                }
                None => fields.push((l.to_string(), String::new())),
            }
        }
        Head {
            raw: raw.to_vec(),
            start,
            fields,
        }
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    /// All values of `name` joined with ", " (one list, however it was split
    /// over field lines); `None` if absent.
    pub fn joined(&self, name: &str) -> Option<String> {
        let v = self.all(name);
        (!v.is_empty()).then(|| v.join(", "))
    }

    /// Does a `name` field list `token` (comma-separated, case-insensitive)?
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn start_word(&self, i: usize) -> &str {
        self.start.split(' ').nth(i).unwrap_or("")
    }
    pub fn method(&self) -> &str {
        self.start_word(0)
    }
    pub fn target(&self) -> &str {
        self.start_word(1)
    }
    /// The request's version ("HTTP/1.1").
    pub fn version(&self) -> &str {
        self.start_word(2)
    }
    /// The response's status code; panics on a malformed status line.
    pub fn status(&self) -> u16 {
        self.start_word(1)
            .parse()
            .unwrap_or_else(|_| panic!("bad status line {:?}", self.start))
    }

    pub fn content_length(&self) -> Option<usize> {
        self.get("content-length").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("test peer: bad Content-Length {v:?}"))
        })
    }

    pub fn is_chunked(&self) -> bool {
        self.lists("transfer-encoding", "chunked")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// A response as read by a client: its head and its body as on the wire
/// (the raw chunked encoding, trailers included, when chunked).
#[derive(Clone, Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status()
    }
    /// The body with any chunked encoding removed.
    pub fn payload(&self) -> Vec<u8> {
        if self.head.is_chunked() {
            decode_chunked(&self.body)
        } else {
            self.body.clone()
        }
    }
    /// Head and body as received.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = self.head.raw.clone();
        v.extend_from_slice(&self.body);
        v
    }
}

/// Decode a complete raw chunked body (extensions and trailers dropped).
pub fn decode_chunked(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let eol = find(&raw[i..], b"\r\n").expect("chunk size line") + i;
        let line = std::str::from_utf8(&raw[i..eol]).expect("chunk size line is text");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        i = eol + 2;
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[i..i + size]);
        i += size + 2;
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// `GET path HTTP/1.1` with `Host: test`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// A request with a Content-Length body.
pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// `200 OK` with a Content-Length body.
pub fn ok(body: &[u8]) -> Vec<u8> {
    status_response(200, "OK", body)
}

pub fn status_response(code: u16, reason: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// Bytes received by an `HttpConn`, shared with the test (a backend's tap).
pub type Tap = Arc<Mutex<Vec<u8>>>;

/// A TCP stream with a read buffer, so that pipelined messages and bytes
/// beyond a message are kept for the next read. Every read has a deadline
/// (`timeout` from the start of each operation).
pub struct HttpConn {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    pub timeout: Duration,
    tap: Option<Tap>,
}

impl HttpConn {
    pub fn new(s: TcpStream) -> HttpConn {
        HttpConn {
            s,
            buf: Vec::new(),
            timeout: DEADLINE,
            tap: None,
        }
    }

    pub fn connect(addr: SocketAddr) -> HttpConn {
        HttpConn::new(connect(addr))
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes failed: {e}", bytes.len()));
    }

    /// Read more into the buffer: Ok(0) on EOF, TimedOut past `end`.
    fn fill(&mut self, end: Instant) -> io::Result<usize> {
        let mut tmp = vec![0u8; 64 * KIB];
        match read_some(&mut self.s, &mut tmp, end)? {
            None => Err(io::Error::new(ErrorKind::TimedOut, "deadline passed")),
            Some(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                if let Some(t) = &self.tap {
                    t.lock().unwrap().extend_from_slice(&tmp[..n]);
                }
                Ok(n)
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// The next head; `Ok(None)` on EOF before any byte of it.
    pub fn try_read_head(&mut self) -> io::Result<Option<Head>> {
        let end = Instant::now() + self.timeout;
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let raw = self.take(i + 4);
                return Ok(Some(Head::parse(&raw)));
            }
            if self.buf.len() > 4 * MIB {
                return Err(io::Error::new(ErrorKind::InvalidData, "head over 4 MiB"));
            }
            if self.fill(end)? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "EOF inside a head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    pub fn read_head(&mut self) -> Head {
        match self.try_read_head() {
            Ok(Some(h)) => h,
            Ok(None) => panic!("connection closed where a message head was expected"),
            Err(e) => panic!(
                "reading a message head: {e} (buffered: {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    pub fn try_read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let end = Instant::now() + self.timeout;
        while self.buf.len() < n {
            if self.fill(end)? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {n} bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.take(n))
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        self.try_read_exact(n)
            .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"))
    }

    fn read_line_raw(&mut self, end: Instant) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(self.take(i + 2));
            }
            if self.fill(end)? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "EOF inside a chunked body",
                ));
            }
        }
    }

    /// A whole chunked body as on the wire, through the end of its trailers.
    pub fn try_read_chunked_raw(&mut self) -> io::Result<Vec<u8>> {
        let end = Instant::now() + self.timeout;
        let mut out = Vec::new();
        loop {
            let line = self.read_line_raw(end)?;
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = usize::from_str_radix(text.split(';').next().unwrap().trim(), 16).map_err(
                |_| io::Error::new(ErrorKind::InvalidData, format!("chunk size {text:?}")),
            )?;
            out.extend_from_slice(&line);
            if size == 0 {
                loop {
                    let t = self.read_line_raw(end)?;
                    out.extend_from_slice(&t);
                    if t == b"\r\n" {
                        return Ok(out);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill(end)? == 0 {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "EOF inside a chunk",
                    ));
                }
            }
            out.extend(self.take(size + 2));
        }
    }

    /// Everything until EOF (buffered bytes first).
    pub fn try_read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        let end = Instant::now() + self.timeout;
        while self.fill(end)? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Everything until the peer closes, and how it closed; panics if it
    /// stays open past the deadline.
    pub fn read_until_closed(&mut self) -> (Vec<u8>, Closed) {
        let end = Instant::now() + self.timeout;
        loop {
            match self.fill(end) {
                Ok(0) => return (std::mem::take(&mut self.buf), Closed::Eof),
                Ok(_) => continue,
                Err(e) if is_reset(&e) => return (std::mem::take(&mut self.buf), Closed::Reset),
                Err(e) => panic!(
                    "connection not closed within {:?} ({e}); unread: {:?}",
                    self.timeout,
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// One response; `head_request` says whether it answers a HEAD.
    /// 1xx responses are returned on their own (call again for the final one).
    pub fn try_read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let head = self
            .try_read_head()?
            .ok_or_else(|| io::Error::new(ErrorKind::UnexpectedEof, "closed before a response"))?;
        let st = head.status();
        let body = if head_request || (100..200).contains(&st) || st == 204 || st == 304 {
            Vec::new()
        } else if head.is_chunked() {
            self.try_read_chunked_raw()?
        } else if let Some(n) = head.content_length() {
            self.try_read_exact(n)?
        } else {
            self.try_read_to_eof()?
        };
        Ok(Response { head, body })
    }

    pub fn read_response(&mut self, head_request: bool) -> Response {
        self.try_read_response(head_request).unwrap_or_else(|e| {
            panic!(
                "reading a response: {e}; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    /// Send a request and read its (final) response.
    pub fn roundtrip(&mut self, request: &[u8]) -> Response {
        self.send(request);
        let head = request.starts_with(b"HEAD ");
        loop {
            let r = self.read_response(head);
            if !(100..200).contains(&r.status()) {
                return r;
            }
        }
    }

    /// A request with its body as on the wire (raw chunked when chunked).
    pub fn try_read_request(&mut self) -> io::Result<Option<(Head, Vec<u8>)>> {
        let Some(head) = self.try_read_head()? else {
            return Ok(None);
        };
        let body = if head.is_chunked() {
            self.try_read_chunked_raw()?
        } else if let Some(n) = head.content_length() {
            self.try_read_exact(n)?
        } else {
            Vec::new()
        };
        Ok(Some((head, body)))
    }
}

/// Assert that `r` is one of ferry's own answers: the status, a body of
/// exactly its Content-Length, and `Connection: close`.
pub fn assert_answer(r: &Response, status: u16, what: &str) {
    assert_eq!(
        r.status(),
        status,
        "{what}: expected ferry's {status} answer, got {:?}",
        String::from_utf8_lossy(&r.bytes())
    );
    let cl = r.head.content_length();
    assert_eq!(
        cl,
        Some(r.body.len()),
        "{what}: the {status} answer must carry a Content-Length matching its body: {:?}",
        String::from_utf8_lossy(&r.bytes())
    );
    assert!(
        r.head.lists("connection", "close"),
        "{what}: the {status} answer must say Connection: close: {:?}",
        r.head.text()
    );
}

/// Read ferry's answer `status`, then the end of the connection: a clean EOF
/// with nothing after the answer.
pub fn expect_answer_and_close(c: &mut HttpConn, status: u16, what: &str) -> Response {
    let r = match c.try_read_response(false) {
        Ok(r) => r,
        Err(e) => panic!(
            "{what}: no complete {status} answer ({e}); received {:?}",
            String::from_utf8_lossy(&c.buf)
        ),
    };
    assert_answer(&r, status, what);
    let (rest, how) = c.read_until_closed();
    assert_eq!(
        how,
        Closed::Eof,
        "{what}: the connection was reset after the {status} answer instead of closed"
    );
    assert!(
        rest.is_empty(),
        "{what}: bytes after the {status} answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    r
}

/// A request as a scripted backend received it.
#[derive(Clone, Debug)]
pub struct Recv {
    /// Which accepted connection (0-based, in accept order).
    pub conn: usize,
    /// Its index among the requests of that connection (0-based).
    pub seq: usize,
    pub head: Head,
    /// The body as on the wire (raw chunked when chunked).
    pub body: Vec<u8>,
}

#[derive(Default)]
pub struct HttpBackendState {
    pub accepted: AtomicUsize,
    /// Connections whose peer (ferry) closed or reset them.
    pub eofs: AtomicUsize,
    /// Of those, the ones that had carried at least one request (not a TCP
    /// health check, which connects and closes).
    pub request_conn_eofs: AtomicUsize,
    /// Handler threads that returned.
    pub finished: AtomicUsize,
    /// Every byte received on every connection, in arrival order.
    pub tap: Tap,
    requests: Mutex<Vec<Recv>>,
    /// A duplicate of each live connection (to kill it), dropped when its
    /// handler returns so that the socket really closes then.
    streams: Mutex<HashMap<usize, TcpStream>>,
    cv: Condvar,
}

impl HttpBackendState {
    fn record(&self, r: Recv) {
        self.requests.lock().unwrap().push(r);
        self.cv.notify_all();
    }
}

/// One accepted connection of an `HttpBackend`, as its handler sees it.
pub struct Peer {
    pub conn: HttpConn,
    pub id: usize,
    pub state: Arc<HttpBackendState>,
    seq: usize,
    eof_seen: bool,
}

impl Peer {
    fn note_eof(&mut self) {
        if !self.eof_seen {
            self.eof_seen = true;
            self.state.eofs.fetch_add(1, Ordering::SeqCst);
            if self.seq > 0 {
                self.state.request_conn_eofs.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Read and record the next request; `None` when the peer closed (or the
    /// connection failed), which counts as an EOF.
    pub fn read_request(&mut self) -> Option<Recv> {
        match self.conn.try_read_request() {
            Ok(Some((head, body))) => {
                let r = Recv {
                    conn: self.id,
                    seq: self.seq,
                    head,
                    body,
                };
                self.seq += 1;
                self.state.record(r.clone());
                Some(r)
            }
            _ => {
                self.note_eof();
                None
            }
        }
    }

    /// Read and record a request head only (the body is left unread).
    pub fn read_request_head(&mut self) -> Option<Head> {
        match self.conn.try_read_head() {
            Ok(Some(head)) => {
                self.state.record(Recv {
                    conn: self.id,
                    seq: self.seq,
                    head: head.clone(),
                    body: Vec::new(),
                });
                self.seq += 1;
                Some(head)
            }
            _ => {
                self.note_eof();
                None
            }
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.conn.s.write_all(bytes).is_ok()
    }

    /// Discard input until the peer closes (or the connection fails).
    pub fn wait_eof(&mut self) {
        let _ = self.conn.try_read_to_eof();
        self.note_eof();
    }

    /// Close with an RST when the handler returns.
    pub fn set_reset_on_close(&self) {
        let _ = socket2::SockRef::from(&self.conn.s).set_linger(Some(Duration::ZERO));
    }
}

/// What a serving backend does after writing a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Wait for the next request on the connection.
    KeepAlive,
    /// shutdown(Write), then read until the peer closes.
    Close,
    /// Close at once with an RST.
    Reset,
    /// Keep the connection open without reading until the peer closes.
    Hang,
}

pub struct Reply {
    pub bytes: Vec<u8>,
    pub then: Then,
}

pub fn reply(bytes: Vec<u8>) -> Reply {
    Reply {
        bytes,
        then: Then::KeepAlive,
    }
}

pub fn reply_then(bytes: Vec<u8>, then: Then) -> Reply {
    Reply { bytes, then }
}

/// A raw HTTP backend on 127.0.0.1:0: a thread per connection runs the
/// handler on a `Peer`; the state counts connections and records requests.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub state: Arc<HttpBackendState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpBackend {
    pub fn start<F>(handler: F) -> HttpBackend
    where
        F: Fn(&mut Peer) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpBackendState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (st, sp) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let id = st.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_write_timeout(Some(Duration::from_secs(120)));
                if let Ok(c) = conn.try_clone() {
                    st.streams.lock().unwrap().insert(id, c);
                }
                let (h, st2) = (handler.clone(), st.clone());
                thread::spawn(move || {
                    let mut conn = HttpConn::new(conn);
                    conn.timeout = Duration::from_secs(120);
                    conn.tap = Some(st2.tap.clone());
                    let mut peer = Peer {
                        conn,
                        id,
                        state: st2.clone(),
                        seq: 0,
                        eof_seen: false,
                    };
                    h(&mut peer);
                    drop(peer);
                    st2.streams.lock().unwrap().remove(&id);
                    st2.finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        HttpBackend {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// A keep-alive server: for each request, `f` gives the reply.
    pub fn serve<F>(f: F) -> HttpBackend
    where
        F: Fn(&Recv) -> Reply + Send + Sync + 'static,
    {
        HttpBackend::start(move |p| serve_loop(p, &f))
    }

    /// Answers every request with the same bytes, keeping the connection.
    pub fn fixed(bytes: &[u8]) -> HttpBackend {
        let bytes = bytes.to_vec();
        HttpBackend::serve(move |_| reply(bytes.clone()))
    }

    /// Answers `200` with the body `name` (which backend answered) plus the
    /// request target, keeping the connection.
    pub fn named(name: &'static str) -> HttpBackend {
        HttpBackend::serve(move |r| reply(ok(format!("{name} {}", r.head.target()).as_bytes())))
    }

    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    pub fn eofs(&self) -> usize {
        self.state.eofs.load(Ordering::SeqCst)
    }

    /// Request-carrying connections that ferry closed (or reset).
    pub fn closed_request_conns(&self) -> usize {
        self.state.request_conn_eofs.load(Ordering::SeqCst)
    }

    /// Connections that carried at least one request (ferry's TCP health
    /// checks connect without sending anything, so `accepted` counts those).
    pub fn request_conns(&self) -> usize {
        let mut ids: Vec<usize> = self.requests().iter().map(|r| r.conn).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn requests(&self) -> Vec<Recv> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests whose target is not `exclude` (e.g. health checks).
    pub fn count_requests_except(&self, exclude: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.head.target() != exclude)
            .count()
    }

    /// Wait until at least `n` requests were recorded.
    pub fn wait_requests(&self, n: usize, deadline: Duration) -> Vec<Recv> {
        let end = Instant::now() + deadline;
        let mut g = self.state.requests.lock().unwrap();
        while g.len() < n {
            let now = Instant::now();
            if now >= end {
                panic!(
                    "backend recorded {} of {n} requests within {deadline:?}: {:?}",
                    g.len(),
                    g.iter().map(|r| r.head.start.clone()).collect::<Vec<_>>()
                );
            }
            g = self.state.cv.wait_timeout(g, end - now).unwrap().0;
        }
        g.clone()
    }

    /// Wait until `pred` holds on this backend; panics with `what`.
    pub fn wait_until(&self, what: &str, deadline: Duration, pred: impl Fn(&HttpBackend) -> bool) {
        let end = Instant::now() + deadline;
        while !pred(self) {
            if Instant::now() >= end {
                panic!(
                    "backend never showed `{what}` within {deadline:?} (accepted {}, eofs {}, requests {})",
                    self.accepted(),
                    self.eofs(),
                    self.requests().len()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn tap(&self) -> Vec<u8> {
        self.state.tap.lock().unwrap().clone()
    }

    /// The backend dies: it stops listening (connects are refused from now
    /// on) and every live connection is shut both ways.
    pub fn kill(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
        for s in self.state.streams.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The keep-alive loop of `HttpBackend::serve`.
pub fn serve_loop(p: &mut Peer, f: &dyn Fn(&Recv) -> Reply) {
    while let Some(req) = p.read_request() {
        let r = f(&req);
        if !p.write(&r.bytes) {
            p.note_eof();
            return;
        }
        match r.then {
            Then::KeepAlive => continue,
            Then::Close => {
                let _ = p.conn.s.shutdown(Shutdown::Write);
                p.wait_eof();
                return;
            }
            Then::Reset => {
                let _ = socket2::SockRef::from(&p.conn.s).set_linger(Some(Duration::ZERO));
                return;
            }
            Then::Hang => {
                p.wait_eof();
                return;
            }
        }
    }
}

impl Proxy {
    /// An HTTP-mode proxy on 127.0.0.1:0 in front of `backends`.
    pub fn http(backends: &[SocketAddr], extra: &[&str]) -> Proxy {
        let names: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
        let mut args = vec!["-m", "http", "-l", "127.0.0.1", "-p", "0"];
        for n in &names {
            args.push("--backend");
            args.push(n);
        }
        args.extend_from_slice(extra);
        Proxy::start(&args)
    }
}
