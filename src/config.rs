//! The running configuration: global settings and the list of listeners.
//!
//! Built from the command line today (see `cli.rs`); a config file will fill
//! the same struct. Defaults live here as constants so that `--help`,
//! `--info` and the docs quote one source.

use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0";
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_BACKEND: &str = "127.0.0.1";
pub const DEFAULT_BACKEND_PORT: u16 = 8081;
pub const DEFAULT_MAX_CONNS: usize = 10_000;
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 5.0;
pub const DEFAULT_IDLE_TIMEOUT: f64 = 300.0;
pub const DEFAULT_BACKLOG: i32 = 1024;
pub const DEFAULT_GRACE: f64 = 10.0;
/// Bytes asked of F_SETPIPE_SZ for each splice pipe.
pub const PIPE_SIZE: usize = 1 << 20;
pub const MIN_BUFFER_SIZE: usize = 1024;
pub const MAX_BUFFER_SIZE: usize = 16 << 20;

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
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Tcp => "tcp",
        })
    }
}

/// One listening address and where its connections go.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    pub mode: Mode,
    pub backend: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    pub max_conns: usize,
    pub buffer_size: usize,
    pub splice: SpliceMode,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub backlog: i32,
    pub grace: Duration,
    pub verbose: bool,
    pub listeners: Vec<ListenerConfig>,
}

impl Config {
    /// Splice pipes each worker may hold: a quarter of its share of connections, at least 8.
    pub fn pipes_per_worker(&self) -> usize {
        (self.max_conns / 4 / self.workers).max(8)
    }

    /// Descriptors the process needs for --max-conns pairs (pipes fall back
    /// to copying when descriptors run short, so they are not counted).
    pub fn fds_needed(&self) -> u64 {
        2 * self.max_conns as u64
    }
}

/// The number of CPUs this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
