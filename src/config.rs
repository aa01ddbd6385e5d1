//! The running configuration: global settings and the list of listeners.
//!
//! Built from the command line today (see `cli.rs`); a config file will fill
//! the same struct. Defaults live here as constants so that `--help`,
//! `--info` and the docs quote one source.

pub use crate::forward::acl::{Acl, Cidr};
pub use crate::forward::auth::Credentials;
pub use crate::http::rewrite::AddFields;
pub use crate::upstream::health::{HealthConfig, Probe};
pub use crate::upstream::Balance;
use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0";
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_BACKEND: &str = "127.0.0.1";
pub const DEFAULT_BACKEND_PORT: u16 = 8081;
/// SO_RCVBUF asked for each backend socket (the kernel doubles it for its
/// bookkeeping and caps it at net.core.rmem_max); 0 leaves the kernel's
/// autotuning, which may grow a receive buffer to tcp_rmem's maximum
/// (32 MiB here). Bounded, it caps the kernel memory a backend may fill
/// behind a slow client, and on loopback it makes the proxy, reading,
/// pull the backend's data through in its own time instead of the backend
/// pushing every segment itself: 1 MiB responses in TCP mode went from
/// 1,418 to 2,566 req/s in `make bench` (HAProxy 1,575-1,664), at 64 KiB
/// pipes (see docs/BENCHMARKS.md).
pub const DEFAULT_BACKEND_RCVBUF: usize = 1 << 20;
/// The largest --backend-rcvbuf accepted (the kernel caps it lower still).
pub const MAX_BACKEND_RCVBUF: usize = 1 << 30;
/// The longest --busy-poll accepted, in microseconds: 10 ms.
pub const MAX_BUSY_POLL_US: u64 = 10_000;
pub const DEFAULT_MAX_CONNS: usize = 10_000;
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 5.0;
pub const DEFAULT_IDLE_TIMEOUT: f64 = 300.0;
pub const DEFAULT_BACKLOG: i32 = 1024;
pub const DEFAULT_GRACE: f64 = 10.0;
/// Bytes asked of F_SETPIPE_SZ for each splice pipe (64 slots; pages are
/// taken only while bytes sit in the pipe, so an empty pooled pipe holds
/// none). With backend windows bounded (`DEFAULT_BACKEND_RCVBUF`), 256 KiB
/// moved 1 MiB responses in 4 splices each way instead of 16 and, in
/// `make bench`, TCP mode went from 2,420 to 4,000 req/s (x1.50 -> x2.50
/// HAProxy) and HTTP mode from 1,493 to 2,222; 128 KiB bodies were within
/// noise, 512 KiB and 1 MiB pipes no faster (bench/load-split.sh). An
/// unprivileged user past fs.pipe-user-pages-soft gets smaller pipes: the
/// size granted is read back.
pub const PIPE_SIZE: usize = 1 << 18;
pub const MIN_BUFFER_SIZE: usize = 1024;
pub const DEFAULT_HEADER_TIMEOUT: f64 = 10.0;
pub const DEFAULT_KEEPALIVE_TIMEOUT: f64 = 60.0;
pub const DEFAULT_BACKEND_TIMEOUT: f64 = 60.0;
pub const DEFAULT_POOL_IDLE_TIMEOUT: f64 = 4.0;
pub const DEFAULT_POOL_SIZE: usize = 32;
pub const DEFAULT_POOL_MAX_REQUESTS: u32 = 100;
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_HEALTH_INTERVAL: f64 = 2.0;
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 3;
/// How long a connection lingers after ferry's own answer, reading what the
/// client still sends, so that closing does not reset the answer away.
pub const LINGER: Duration = Duration::from_secs(2);
/// A reload retired the worker: a keep-alive client waiting between
/// requests is closed after at most this much more quiet (a request under
/// way is answered, with `Connection: close`), so the old generation ends
/// soon instead of after `--keepalive-timeout`.
pub const RETIRE_IDLE: Duration = Duration::from_secs(2);
/// Backends one listener may have (a request tracks which it tried in a u64).
pub const MAX_BACKENDS: usize = 64;
pub const MAX_BUFFER_SIZE: usize = 16 << 20;
/// Ports CONNECT may reach unless `--connect-ports` says otherwise.
pub const DEFAULT_CONNECT_PORTS: [u16; 1] = [443];

/// When a direction moves bytes with splice(2) instead of copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceMode {
    /// Copy through user-space buffers only.
    Off,
    /// Splice from the first byte.
    On,
    /// Copy, and switch to splice once a direction shows itself a bulk stream.
    Auto,
}

impl std::str::FromStr for SpliceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(SpliceMode::Off),
            "on" => Ok(SpliceMode::On),
            "auto" => Ok(SpliceMode::Auto),
            _ => Err(format!("'{s}' is not one of auto, on, off")),
        }
    }
}

impl std::fmt::Display for SpliceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpliceMode::Off => "off",
            SpliceMode::On => "on",
            SpliceMode::Auto => "auto",
        })
    }
}

/// What a listener does with its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Relay bytes to the backend, whatever the protocol.
    Tcp,
    /// HTTP/1.1 reverse proxy: parse, rewrite, keep-alive, pools, balancing.
    Http,
    /// HTTP forward proxy: absolute-form requests and CONNECT tunnels to
    /// the origin each request names.
    Forward,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Mode::Tcp),
            "http" => Ok(Mode::Http),
            "forward" => Ok(Mode::Forward),
            _ => Err(format!("'{s}' is not one of tcp, http, forward")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
            Mode::Forward => "forward",
        })
    }
}

/// HTTP mode settings of a listener.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub backend_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_size: usize,
    pub pool_max_requests: u32,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub add: AddFields,
    /// Where the access log goes (`-` for stderr); none by default.
    pub access_log: Option<String>,
}

/// Forward mode settings of a listener.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// Accepted `user:password` pairs; empty means no auth is asked.
    pub auth: Credentials,
    /// Ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Networks origins may (not) be in.
    pub acl: Acl,
    /// Serve without auth on a non-loopback address (`--open`).
    pub open: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            auth: Credentials::default(),
            connect_ports: DEFAULT_CONNECT_PORTS.to_vec(),
            acl: Acl::default(),
            open: false,
        }
    }
}

/// One listening address and where its connections go.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// What reports and metrics call this listener (`listener="NAME"`):
    /// the `name` key of a config file, or `main` for the command line's.
    pub name: String,
    pub listen: SocketAddr,
    pub mode: Mode,
    pub backends: Vec<SocketAddr>,
    pub balance: Balance,
    /// Connections one client address may have open at once through this
    /// listener (counted process-wide); `None`: no limit.
    pub max_conns_per_client: Option<usize>,
    pub health: HealthConfig,
    pub http: HttpConfig,
    pub forward: ForwardConfig,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    pub max_conns: usize,
    pub buffer_size: usize,
    /// SO_RCVBUF for backend sockets; 0: the kernel's autotuning.
    pub backend_rcvbuf: usize,
    /// How long a worker keeps polling without sleeping after its last
    /// event; zero: it sleeps as soon as nothing is ready. Each sleep costs
    /// a wakeup that, on a VM whose idle vCPU halts, the sending peer pays:
    /// with 50 µs, 1 KiB responses in TCP mode went from ~70k to ~77k req/s
    /// in bench/load-split.sh (wrk and the backend paying ~13.1 µs per
    /// request instead of ~14.3), at more proxy CPU per request; 1 MiB
    /// responses got slower (make bench: 2,808 req/s against 3,793).
    /// Suspending it while bulk data moved (a pass that spliced, or moved
    /// 16 KiB or more per event) did not win the 1 MiB rate back.
    pub busy_poll: Duration,
    pub splice: SpliceMode,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub backlog: i32,
    pub grace: Duration,
    /// After a reload, how long the replaced generation's connections may
    /// take to finish before they are closed; `None`: as long as they last.
    pub reload_grace: Option<Duration>,
    pub verbose: bool,
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener (/metrics, /stats, /health); off when `None`.
    pub admin: Option<SocketAddr>,
    /// The bearer token the admin listener asks for, if any.
    pub admin_token: Option<String>,
}

impl Config {
    /// Splice pipes each worker may hold: a quarter of its share of connections, at least 8.
    pub fn pipes_per_worker(&self) -> usize {
        (self.max_conns / 4 / self.workers).max(8)
    }

    /// Idle backend connections a worker's pools may keep: `pool_size` per
    /// backend of each HTTP listener (TCP mode keeps none).
    pub fn pooled_per_worker(&self) -> usize {
        self.listeners
            .iter()
            .filter(|l| l.mode != Mode::Tcp)
            .fold(0usize, |sum, l| {
                sum.saturating_add(l.http.pool_size.saturating_mul(l.backends.len()))
            })
    }

    /// Descriptors the process needs at --max-conns: two per pair, the idle
    /// backend connections of every worker's pools, each worker's listening
    /// sockets, poll and waker, and a few for the process (signals, logs,
    /// admin, resolver, health checks). Splice pipes are not counted: they
    /// fall back to copying when descriptors run short.
    pub fn fds_needed(&self) -> u64 {
        let per_worker = self
            .pooled_per_worker()
            .saturating_add(self.listeners.len() + 2);
        (2 * self.max_conns as u64)
            .saturating_add(self.workers as u64 * per_worker as u64)
            .saturating_add(32)
    }
}

/// The number of CPUs this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
