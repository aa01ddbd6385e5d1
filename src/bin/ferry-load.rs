//! `ferry-load`: a load generator for forward proxies, in the spirit of wrk,
//! for what wrk cannot drive: CONNECT tunnels.
//!
//! Three modes, each through the proxy to one target `host:port`:
//!
//! - `connect`: one tunnel per request. Connect to the proxy, send
//!   `CONNECT host:port`, read its 200, send one `GET path` inside the tunnel,
//!   read the whole response (by Content-Length), close. The latency of a
//!   request runs from the TCP connect to the last byte of the response.
//! - `tunnel`: long-lived tunnels, each carrying GETs one after another
//!   (keep-alive), as a browser does over HTTPS. Latency per GET.
//! - `get`: plain forward GETs in absolute form (`GET http://host:port/path`),
//!   keep-alive with the proxy. Latency per GET.
//!
//! Each of `-t` threads runs its own edge-triggered mio loop over its share of
//! the `-c` connections. Every response is checked: a status other than 200,
//! a body cut short, a reset, an unparsable head or framing, a stall past
//! `--timeout` is an error, counted by kind and never dropped silently. A
//! connection that the proxy closes cleanly between two keep-alive responses
//! is reopened and the request sent again (counted as a reconnect, not an
//! error); a close before the first response on a connection is an error.
//!
//! Output: a human summary on stdout, then one machine line
//! `RESULT mode=... requests=N errors=E rps=X mbps=Y p50_ms=.. p90_ms=.. p99_ms=..`
//! (mbps = MB/s, 10^6 bytes read from the proxy per second) and one
//! `LOADJSON {...}` line with the fields of the bench's wrk summary
//! (bench/wrk_report.lua), so that bench/lib.sh records both alike.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;
use base64::Engine;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Bytes a response head (or a CONNECT answer) may take.
const MAX_HEAD: usize = 16 * 1024;
/// Read buffer per connection; bodies are counted and dropped, not kept.
const READ_BUF: usize = 64 * 1024;
/// How often the loop wakes to check the deadline and stalled requests.
const TICK: Duration = Duration::from_millis(50);

#[derive(FromArgs)]
/// Load generator for forward proxies: CONNECT tunnels (one per request or
/// long-lived) and plain forward GETs, with latency percentiles.
struct Args {
    /// connect (one tunnel per request), tunnel (long-lived tunnels carrying
    /// keep-alive GETs) or get (absolute-form GETs); default connect
    #[argh(option, short = 'm', default = "String::from(\"connect\")")]
    mode: String,
    /// proxy ADDRESS:PORT (default 127.0.0.1:3128)
    #[argh(option, short = 'x', default = "String::from(\"127.0.0.1:3128\")")]
    proxy: String,
    /// target HOST:PORT the proxy should reach
    #[argh(option, short = 'T')]
    target: String,
    /// path to GET on the target (default /)
    #[argh(option, default = "String::from(\"/\")")]
    path: String,
    /// connections kept busy at once (default 50)
    #[argh(option, short = 'c', default = "50")]
    connections: usize,
    /// seconds to run (default 5)
    #[argh(option, short = 'd', default = "5.0")]
    duration: f64,
    /// threads, each with its own event loop (default 1)
    #[argh(option, short = 't', default = "1")]
    threads: usize,
    /// USER:PASS sent as Proxy-Authorization: Basic
    #[argh(option)]
    auth: Option<String>,
    /// seconds a request may take before it counts as a timeout (default 10)
    #[argh(option, default = "10.0")]
    timeout: f64,
    /// body length every 200 response must have; another length is an error
    #[argh(option)]
    expect_length: Option<u64>,
    /// tunnel mode: reopen a tunnel after this many requests (default 0: never)
    #[argh(option, default = "0")]
    tunnel_requests: u64,
    /// read response bodies into memory instead of dropping them in the
    /// kernel (recv MSG_TRUNC): a costlier sink, as wrk is
    #[argh(switch)]
    copy_bodies: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Connect,
    Tunnel,
    Get,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Connect => "connect",
            Mode::Tunnel => "tunnel",
            Mode::Get => "get",
        }
    }
}

/// What every thread needs, built once.
struct Plan {
    mode: Mode,
    proxy: SocketAddr,
    /// `CONNECT host:port HTTP/1.1` head (connect and tunnel modes).
    connect_head: Vec<u8>,
    /// The request sent for each measured GET.
    request: Vec<u8>,
    timeout: Duration,
    expect_length: Option<u64>,
    tunnel_requests: u64,
    copy_bodies: bool,
}

impl Plan {
    fn from_args(a: &Args) -> Result<Plan, String> {
        let mode = match a.mode.as_str() {
            "connect" => Mode::Connect,
            "tunnel" => Mode::Tunnel,
            "get" => Mode::Get,
            m => return Err(format!("--mode '{m}': give connect, tunnel or get")),
        };
        let proxy = a
            .proxy
            .to_socket_addrs()
            .map_err(|e| format!("--proxy '{}': {e}", a.proxy))?
            .next()
            .ok_or_else(|| format!("--proxy '{}': no address", a.proxy))?;
        if !a.target.contains(':') || a.target.starts_with(':') {
            return Err(format!("--target '{}': give HOST:PORT", a.target));
        }
        if !a.path.starts_with('/') {
            return Err(format!("--path '{}' must start with /", a.path));
        }
        if a.connections == 0 || a.threads == 0 {
            return Err("-c and -t must be at least 1".into());
        }
        if !(a.duration > 0.0 && a.timeout > 0.0) {
            return Err("-d and --timeout must be positive".into());
        }
        let auth = match &a.auth {
            None => String::new(),
            Some(cred) if cred.contains(':') => format!(
                "Proxy-Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(cred)
            ),
            Some(_) => return Err("--auth: give USER:PASS".into()),
        };
        let t = &a.target;
        let connect_head = format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n{auth}\r\n").into_bytes();
        let request = match mode {
            Mode::Get => format!(
                "GET http://{t}{} HTTP/1.1\r\nHost: {t}\r\n{auth}\r\n",
                a.path
            ),
            Mode::Connect | Mode::Tunnel => format!("GET {} HTTP/1.1\r\nHost: {t}\r\n\r\n", a.path),
        }
        .into_bytes();
        Ok(Plan {
            mode,
            proxy,
            connect_head,
            request,
            timeout: Duration::from_secs_f64(a.timeout),
            expect_length: a.expect_length,
            tunnel_requests: a.tunnel_requests,
            copy_bodies: a.copy_bodies,
        })
    }
}

// ---------------------------------------------------------------- parsing

/// How the body after a response head ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (a CONNECT 2xx, 1xx, 204, 304).
    Empty,
    Length(u64),
    /// Transfer-Encoding: not supported here, so an error when seen.
    Chunked,
    /// No length: the body runs to the close.
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    status: u16,
    framing: Framing,
    /// The server will close after this response.
    close: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadError {
    TooLarge,
    Malformed,
    BadLength,
}

/// Parse a response head at the start of `buf`: `Ok(None)` while incomplete.
/// `to_connect` says that it answers a CONNECT (a 2xx then has no body).
fn parse_head(buf: &[u8], to_connect: bool) -> Result<Option<Head>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let status = resp.code.ok_or(HeadError::Malformed)?;
    let minor = resp.version.ok_or(HeadError::Malformed)?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = minor == 0;
    for f in resp.headers.iter() {
        if f.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(f.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(HeadError::BadLength)?;
            if length.is_some_and(|l| l != v) {
                return Err(HeadError::BadLength);
            }
            length = Some(v);
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if f.name.eq_ignore_ascii_case("connection")
            || f.name.eq_ignore_ascii_case("proxy-connection")
        {
            for token in f.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    close = false;
                }
            }
        }
    }
    let framing = if (to_connect && (200..300).contains(&status))
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        close,
    }))
}

// ---------------------------------------------------------------- statistics

#[derive(Default)]
struct Stats {
    requests: u64,
    bytes: u64,
    err_connect: u64,
    err_status: u64,
    err_read: u64,
    err_write: u64,
    err_short: u64,
    err_parse: u64,
    err_timeout: u64,
    reconnects: u64,
    tunnels: u64,
    latencies_us: Vec<u32>,
}

impl Stats {
    fn errors(&self) -> u64 {
        self.err_connect
            + self.err_status
            + self.err_read
            + self.err_write
            + self.err_short
            + self.err_parse
            + self.err_timeout
    }

    fn merge(&mut self, o: Stats) {
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.err_connect += o.err_connect;
        self.err_status += o.err_status;
        self.err_read += o.err_read;
        self.err_write += o.err_write;
        self.err_short += o.err_short;
        self.err_parse += o.err_parse;
        self.err_timeout += o.err_timeout;
        self.reconnects += o.reconnects;
        self.tunnels += o.tunnels;
        self.latencies_us.extend(o.latencies_us);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Connect,
    Status,
    Read,
    Write,
    Short,
    Parse,
    Timeout,
}

impl Stats {
    fn count(&mut self, f: Failure) {
        match f {
            Failure::Connect => self.err_connect += 1,
            Failure::Status => self.err_status += 1,
            Failure::Read => self.err_read += 1,
            Failure::Write => self.err_write += 1,
            Failure::Short => self.err_short += 1,
            Failure::Parse => self.err_parse += 1,
            Failure::Timeout => self.err_timeout += 1,
        }
    }
}

/// The value below which `p` percent of the sorted samples lie.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------- connections

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Writing the CONNECT head (the first write also finds out whether the
    /// TCP connect worked: on loopback it is usually done when connect()
    /// returns, and a write before that just blocks).
    SendConnect,
    /// Reading the proxy's answer to CONNECT.
    ReadConnect,
    /// Writing the GET.
    SendRequest,
    /// Reading the response head, then its body.
    ReadResponse,
}

/// What `step` ended on.
enum Step {
    /// Waiting for readiness.
    Blocked,
    /// Start over on a new connection (after a clean end or a failure).
    Reopen,
}

/// One of the worker's connection slots; the slot and its buffer live for
/// the whole run, the stream is replaced each time the slot reopens.
struct Conn {
    stream: Option<TcpStream>,
    /// A write went through on this stream: the TCP connect worked.
    connected: bool,
    phase: Phase,
    written: usize,
    buf: Box<[u8]>,
    filled: usize,
    head: Option<Head>,
    /// Body bytes still expected (Framing::Length).
    body_left: u64,
    body_seen: u64,
    /// Responses completed on this connection.
    served: u64,
    /// When the connection was opened, and when the current request began.
    opened: Instant,
    request_start: Instant,
}

struct Worker<'a> {
    plan: &'a Plan,
    poll: Poll,
    conns: Vec<Conn>,
    stats: Stats,
    stop: Instant,
}

/// Take up to `len` (at most `buf.len()`) bytes off the socket and drop them
/// without copying: recv(2) with MSG_TRUNC, which TCP on Linux turns into
/// "discard". A sink that copies 1.7 GB/s into user space spends most of the
/// load CPU on it; this leaves that CPU to drive the proxy. `len` is 0 only
/// when nothing is left to read, which does not happen (the body is complete
/// at 0), but a 0 would read as an EOF.
fn discard(stream: &TcpStream, len: usize, buf: &mut [u8]) -> io::Result<usize> {
    let len = len.min(buf.len());
    // SAFETY: `buf` is valid for writes of `len` bytes (checked just above),
    // so the call stays sound even if the kernel copied instead of
    // discarding; the fd is the stream's own, open for the whole call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn open(plan: &Plan) -> io::Result<TcpStream> {
    // No TCP_NODELAY (one syscall less per tunnel): each request head is one
    // write made after the previous answer was read, which acknowledged
    // everything sent before, so Nagle never holds it back.
    TcpStream::connect(plan.proxy)
}

impl<'a> Worker<'a> {
    fn new(plan: &'a Plan, n: usize, stop: Instant) -> io::Result<Worker<'a>> {
        let now = Instant::now();
        let mut w = Worker {
            plan,
            poll: Poll::new()?,
            conns: (0..n)
                .map(|_| Conn {
                    stream: None,
                    connected: false,
                    phase: Phase::SendRequest,
                    written: 0,
                    buf: vec![0u8; READ_BUF].into_boxed_slice(),
                    filled: 0,
                    head: None,
                    body_left: 0,
                    body_seen: 0,
                    served: 0,
                    opened: now,
                    request_start: now,
                })
                .collect(),
            stats: Stats::default(),
            stop,
        };
        w.stats.latencies_us.reserve(1 << 16);
        for i in 0..n {
            w.start(i);
        }
        Ok(w)
    }

    /// Open connection `i`, counting connect failures until one works or the
    /// run is over.
    fn start(&mut self, i: usize) {
        while Instant::now() < self.stop {
            match open(self.plan) {
                Ok(mut stream) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        eprintln!("ferry-load: register: {e}");
                        self.stats.err_connect += 1;
                        continue;
                    }
                    let now = Instant::now();
                    let c = &mut self.conns[i];
                    c.stream = Some(stream);
                    c.connected = false;
                    c.phase = match self.plan.mode {
                        Mode::Connect | Mode::Tunnel => Phase::SendConnect,
                        Mode::Get => Phase::SendRequest,
                    };
                    c.written = 0;
                    c.filled = 0;
                    c.head = None;
                    c.served = 0;
                    c.opened = now;
                    c.request_start = now;
                    return;
                }
                Err(_) => {
                    self.stats.err_connect += 1;
                    // Out of ports or fds: do not spin.
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn close(&mut self, i: usize) {
        // Closing the fd removes it from epoll (no duplicate of it exists),
        // so no deregister: one syscall less per tunnel.
        self.conns[i].stream = None;
    }

    /// Start slot `i` over on a new connection and take it as far as it goes
    /// (edge-triggered: the new socket reports only what happens from now).
    fn reopen(&mut self, i: usize) {
        loop {
            self.close(i);
            self.start(i);
            if self.conns[i].stream.is_none() {
                return;
            }
            if let Step::Blocked = self.step(i) {
                return;
            }
        }
    }

    fn run(mut self) -> Stats {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            if now >= self.stop {
                break;
            }
            let wait = (self.stop - now).min(TICK);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("ferry-load: poll: {e}");
                break;
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if self.conns[i].stream.is_none() {
                    continue;
                }
                // An event left over from the slot's previous stream only
                // makes step try operations that return WouldBlock.
                if let Step::Reopen = self.step(i) {
                    self.reopen(i);
                }
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= TICK {
                last_sweep = now;
                self.sweep_timeouts(now);
            }
        }
        for i in 0..self.conns.len() {
            self.close(i);
        }
        self.stats
    }

    fn sweep_timeouts(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let stalled =
                c.stream.is_some() && now.duration_since(c.request_start) > self.plan.timeout;
            if stalled {
                self.stats.count(Failure::Timeout);
                self.reopen(i);
            }
        }
    }

    /// Advance connection `i` until it blocks or must be reopened.
    fn step(&mut self, i: usize) -> Step {
        let plan = self.plan;
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return Step::Reopen;
            };
            match c.phase {
                Phase::SendConnect | Phase::SendRequest => {
                    let data = if c.phase == Phase::SendConnect {
                        &plan.connect_head
                    } else {
                        &plan.request
                    };
                    if c.written == 0 && c.phase == Phase::SendRequest && plan.mode != Mode::Connect
                    {
                        // Connect mode times the whole tunnel from the TCP
                        // connect; the others time each GET.
                        c.request_start = Instant::now();
                    }
                    // Before the first write went through, a failure is the
                    // TCP connect's.
                    let failure = if c.connected {
                        Failure::Write
                    } else {
                        Failure::Connect
                    };
                    match stream.write(&data[c.written..]) {
                        Ok(0) => return self.fail(failure),
                        Ok(n) => {
                            c.written += n;
                            c.connected = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected && !c.connected => {
                            return Step::Blocked
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return self.fail(failure),
                    }
                    if c.written == data.len() {
                        c.written = 0;
                        c.filled = 0;
                        c.head = None;
                        c.body_seen = 0;
                        c.phase = if c.phase == Phase::SendConnect {
                            Phase::ReadConnect
                        } else {
                            Phase::ReadResponse
                        };
                        // The answer cannot be there yet (the proxy runs
                        // elsewhere), and a read now would only say
                        // WouldBlock: wait for the readable event instead.
                        // Edge-triggered is safe here: nothing unread is
                        // pending (the proxy sends nothing unasked), so the
                        // answer's arrival is a new edge.
                        return Step::Blocked;
                    }
                }
                Phase::ReadConnect | Phase::ReadResponse => {
                    let to_connect = c.phase == Phase::ReadConnect;
                    // Before the head, accumulate; after it, only count.
                    let start = if c.head.is_some() { 0 } else { c.filled };
                    let got = match c.head {
                        // A body of known length is dropped in the kernel,
                        // uncopied, unless --copy-bodies.
                        Some(h) if !plan.copy_bodies && matches!(h.framing, Framing::Length(_)) => {
                            discard(
                                stream,
                                c.body_left.min(c.buf.len() as u64) as usize,
                                &mut c.buf,
                            )
                        }
                        _ => stream.read(&mut c.buf[start..]),
                    };
                    let n = match got {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return self.fail(Failure::Read),
                    };
                    if n == 0 {
                        return self.on_eof(i);
                    }
                    self.stats.bytes += n as u64;
                    let c = &mut self.conns[i];
                    let body_new = match c.head {
                        Some(_) => n as u64,
                        None => {
                            c.filled += n;
                            match parse_head(&c.buf[..c.filled], to_connect) {
                                Ok(None) => continue,
                                Err(_) => return self.fail(Failure::Parse),
                                Ok(Some(h)) => {
                                    c.head = Some(h);
                                    match h.framing {
                                        Framing::Length(l) => c.body_left = l,
                                        Framing::Chunked => return self.fail(Failure::Parse),
                                        Framing::Empty | Framing::UntilClose => c.body_left = 0,
                                    }
                                    (c.filled - h.len) as u64
                                }
                            }
                        }
                    };
                    let c = &mut self.conns[i];
                    let h = c.head.expect("head parsed");
                    c.body_seen += body_new;
                    match h.framing {
                        Framing::UntilClose => continue,
                        Framing::Length(_) => {
                            if body_new > c.body_left {
                                // More than the response: nothing was pipelined.
                                return self.fail(Failure::Parse);
                            }
                            c.body_left -= body_new;
                            if c.body_left > 0 {
                                continue;
                            }
                        }
                        Framing::Empty => {
                            if body_new > 0 {
                                return self.fail(Failure::Parse);
                            }
                        }
                        Framing::Chunked => unreachable!("refused above"),
                    }
                    if let Some(step) = self.on_message(i) {
                        return step;
                    }
                }
            }
        }
    }

    /// A CONNECT answer or a response is complete: `None` to go on with this
    /// connection, `Some(step)` to stop here.
    fn on_message(&mut self, i: usize) -> Option<Step> {
        let plan = self.plan;
        let c = &mut self.conns[i];
        let h = c.head.expect("head parsed");
        if h.status != 200 {
            return Some(self.fail(Failure::Status));
        }
        let now = Instant::now();
        if now >= self.stop {
            // The run is over: send nothing more, or the backend would count
            // requests that ferry-load does not (bench/report.py compares).
            // Closing the slot is enough: start() opens nothing after stop.
            return Some(Step::Reopen);
        }
        if c.phase == Phase::ReadConnect {
            // A 200 to CONNECT turns the connection into a tunnel: its
            // version or Connection field says nothing about the tunnel's end
            // (tinyproxy answers HTTP/1.0 without keep-alive).
            self.stats.tunnels += 1;
            c.phase = Phase::SendRequest;
            c.written = 0;
            return None;
        }
        if plan.expect_length.is_some_and(|l| l != c.body_seen) {
            return Some(self.fail(Failure::Short));
        }
        let since = if plan.mode == Mode::Connect {
            c.opened
        } else {
            c.request_start
        };
        let us = now.duration_since(since).as_micros().min(u32::MAX as u128) as u32;
        c.served += 1;
        let again = match plan.mode {
            Mode::Connect => false,
            Mode::Tunnel => plan.tunnel_requests == 0 || c.served < plan.tunnel_requests,
            Mode::Get => true,
        };
        let close = h.close;
        self.stats.requests += 1;
        self.stats.latencies_us.push(us);
        if !again || close {
            if close && again {
                self.stats.reconnects += 1;
            }
            return Some(Step::Reopen);
        }
        c.phase = Phase::SendRequest;
        c.written = 0;
        c.request_start = now;
        None
    }

    /// The proxy closed the connection while we were reading.
    fn on_eof(&mut self, i: usize) -> Step {
        let c = &self.conns[i];
        match (c.phase, c.head) {
            // A body that runs to the close: the close ends it.
            (_, Some(h)) if h.framing == Framing::UntilClose => {
                let c = &mut self.conns[i];
                c.head = Some(Head { close: true, ..h });
                match self.on_message(i) {
                    Some(step) => step,
                    None => Step::Reopen,
                }
            }
            // Keep-alive race: closed before any byte of the next response
            // on a connection that already served one. Send it again.
            (Phase::ReadResponse, None) if c.filled == 0 && c.served > 0 => {
                self.stats.reconnects += 1;
                Step::Reopen
            }
            (Phase::ReadResponse, Some(_)) => self.fail(Failure::Short),
            _ => self.fail(Failure::Read),
        }
    }

    fn fail(&mut self, f: Failure) -> Step {
        // Failures after the end of the run are the run's own cut, not errors.
        if Instant::now() < self.stop {
            self.stats.count(f);
        }
        Step::Reopen
    }
}

// ---------------------------------------------------------------- main

fn run(args: &Args) -> Result<(), String> {
    let plan = Arc::new(Plan::from_args(args)?);
    let threads = args.threads.min(args.connections);
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(args.duration);
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let plan = Arc::clone(&plan);
            let n = args.connections / threads + usize::from(k < args.connections % threads);
            thread::spawn(move || -> io::Result<Stats> { Ok(Worker::new(&plan, n, stop)?.run()) })
        })
        .collect();
    let mut total = Stats::default();
    for h in handles {
        let s = h
            .join()
            .map_err(|_| "a worker thread panicked".to_string())?
            .map_err(|e| format!("worker: {e}"))?;
        total.merge(s);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    report(args, &plan, &mut total, elapsed);
    Ok(())
}

fn report(args: &Args, plan: &Plan, s: &mut Stats, elapsed: f64) {
    s.latencies_us.sort_unstable();
    let l = &s.latencies_us;
    let p = |q| percentile(l, q);
    let mean = if l.is_empty() {
        0.0
    } else {
        l.iter().map(|&v| v as f64).sum::<f64>() / l.len() as f64
    };
    let max = l.last().copied().unwrap_or(0);
    let rps = s.requests as f64 / elapsed;
    let mbps = s.bytes as f64 / elapsed / 1e6;
    let ms = |us: u32| us as f64 / 1000.0;
    println!(
        "ferry-load: {} via {} to {}{}, {} connections, {} thread(s), {:.2} s",
        plan.mode.name(),
        args.proxy,
        args.target,
        args.path,
        args.connections,
        args.threads.min(args.connections),
        elapsed
    );
    println!(
        "  requests  {} ({:.1}/s), {} bytes read ({:.1} MB/s){}",
        s.requests,
        rps,
        s.bytes,
        mbps,
        if plan.mode == Mode::Get {
            String::new()
        } else {
            format!(", {} tunnels opened", s.tunnels)
        }
    );
    println!(
        "  latency   p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, mean {:.3} ms, max {:.3} ms",
        ms(p(50.0)),
        ms(p(90.0)),
        ms(p(99.0)),
        mean / 1000.0,
        ms(max)
    );
    println!(
        "  errors    {} (connect {}, status {}, read {}, write {}, short {}, parse {}, timeout {}); reconnects {}",
        s.errors(),
        s.err_connect,
        s.err_status,
        s.err_read,
        s.err_write,
        s.err_short,
        s.err_parse,
        s.err_timeout,
        s.reconnects
    );
    println!(
        "RESULT mode={} requests={} errors={} rps={:.1} mbps={:.2} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3}",
        plan.mode.name(),
        s.requests,
        s.errors(),
        rps,
        mbps,
        ms(p(50.0)),
        ms(p(90.0)),
        ms(p(99.0))
    );
    println!(
        "LOADJSON {{\"requests\":{},\"bytes\":{},\"duration_us\":{},\"err_connect\":{},\"err_read\":{},\
         \"err_write\":{},\"err_status\":{},\"err_timeout\":{},\"err_short\":{},\"err_parse\":{},\
         \"reconnects\":{},\"tunnels\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"mean_us\":{:.1},\"max_us\":{}}}",
        s.requests,
        s.bytes,
        (elapsed * 1e6) as u64,
        s.err_connect,
        s.err_read + s.err_short + s.err_parse,
        s.err_write,
        s.err_status,
        s.err_timeout,
        s.err_short,
        s.err_parse,
        s.reconnects,
        s.tunnels,
        p(50.0),
        p(90.0),
        p(99.0),
        mean,
        max
    );
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&["ferry-load"], &words) {
        Ok(a) => a,
        Err(exit) if exit.status.is_ok() => {
            println!("{}", exit.output);
            return;
        }
        Err(exit) => {
            eprintln!("ferry-load: {}", exit.output.trim_end());
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("ferry-load: {e}");
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str, to_connect: bool) -> Result<Option<Head>, HeadError> {
        parse_head(s.as_bytes(), to_connect)
    }

    #[test]
    fn content_length_response_is_framed_by_its_length() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nServer: x\r\n\r\nbody",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(1024));
        assert_eq!(
            h.len,
            "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nServer: x\r\n\r\n".len()
        );
        assert!(!h.close);
    }

    #[test]
    fn incomplete_head_asks_for_more() {
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Le", false), Ok(None));
        assert_eq!(head("", false), Ok(None));
    }

    #[test]
    fn connect_answer_has_no_body_whatever_its_fields() {
        let h = head(
            "HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy\r\n\r\n",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, h.framing), (200, Framing::Empty));
        let h = head("HTTP/1.1 200 Connection established\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.framing, h.close), (200, Framing::Empty, false));
        // A refusal to CONNECT has a body like any response.
        let h = head(
            "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\n",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, h.framing), (407, Framing::Length(5)));
    }

    #[test]
    fn close_comes_from_the_connection_field_or_http_1_0() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.close);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(h.close);
        let h = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!h.close);
        let h = head(
            "HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.close);
    }

    #[test]
    fn bodies_without_length_run_to_the_close_and_chunked_is_flagged() {
        let h = head("HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        for s in [
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        ] {
            assert_eq!(head(s, false).unwrap().unwrap().framing, Framing::Empty);
        }
    }

    #[test]
    fn bad_heads_are_errors() {
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(HeadError::BadLength)
        );
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            Err(HeadError::BadLength)
        );
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .unwrap()
            .unwrap()
            .framing,
            Framing::Length(2)
        );
        assert_eq!(
            head("SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(HeadError::Malformed)
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head(&huge, false), Err(HeadError::TooLarge));
    }

    #[test]
    fn discard_drops_bytes_without_copying_and_reports_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let ours = TcpStream::from_std(ours);
        peer.write_all(&[7u8; 3000]).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = vec![0u8; 1024];
        let mut total = 0;
        loop {
            match discard(&ours, 5000, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(n <= 1024, "at most the buffer's length per call");
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(total, 3000);
        assert!(buf.iter().all(|&b| b == 0), "dropped, not copied");
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    fn args(words: &[&str]) -> Args {
        Args::from_args(&["ferry-load"], words).unwrap()
    }

    #[test]
    fn requests_are_built_per_mode_with_credentials() {
        let p = Plan::from_args(&args(&[
            "-T", "h:81", "--path", "/a", "-m", "get", "--auth", "u:p",
        ]))
        .unwrap();
        assert_eq!(
            String::from_utf8(p.request).unwrap(),
            "GET http://h:81/a HTTP/1.1\r\nHost: h:81\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        let p = Plan::from_args(&args(&["-T", "h:81", "--path", "/a", "--auth", "u:p"])).unwrap();
        assert_eq!(p.mode, Mode::Connect);
        assert_eq!(
            String::from_utf8(p.connect_head).unwrap(),
            "CONNECT h:81 HTTP/1.1\r\nHost: h:81\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        // Inside the tunnel the origin gets an origin-form request, no credentials.
        assert_eq!(
            String::from_utf8(p.request).unwrap(),
            "GET /a HTTP/1.1\r\nHost: h:81\r\n\r\n"
        );
        assert!(Plan::from_args(&args(&["-T", "h", "-m", "get"])).is_err());
        assert!(Plan::from_args(&args(&["-T", "h:1", "-m", "post"])).is_err());
        assert!(Plan::from_args(&args(&["-T", "h:1", "--auth", "nocolon"])).is_err());
    }
}
