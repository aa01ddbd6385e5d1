//! ferry: a Linux TCP and HTTP/1.1 proxy on a hand-rolled, edge-triggered event loop.
//!
//! The map, from the outside in:
//!
//! * `cli` turns flags, and `config_file` a TOML file, into [`settings`]
//!   (each value with where it was given), which build and check a
//!   [`config::Config`]; `server` binds the
//!   listeners, starts a generation of [`worker`]s (one per core), starts
//!   a new one on SIGHUP and retires the old, handles signals and prints
//!   the [`stats`] report.
//! * A `worker` is one thread with one `mio::Poll`, its own SO_REUSEPORT
//!   listeners (`net::listener`), a slab of [`pair`]s, a buffer pool and a
//!   pipe pool (`io`), and a timing wheel ([`timer`]). Tokens ([`token`])
//!   carry slot, side and generation so stale events are dropped.
//! * A `pair` is a client socket and a backend socket with an explicit state
//!   machine (Connecting -> Relaying -> closed). Its two directions are
//!   [`relay::Flow`]s: copy through a pooled buffer or splice through a
//!   pooled pipe, with backpressure and half-close.
//! * HTTP mode: [`http`] parses and judges heads (`head`), scans chunked
//!   bodies (`chunked`), rewrites heads (`rewrite`), makes ferry's own
//!   answers (`answer`) and runs the session state machine over a pair
//!   (`session`); [`conn`] holds backend connections (serving or pooled) and
//!   [`upstream`] the backends' health, balancing and health checks.
//! * Forward mode: [`forward`] holds proxy auth, the reachability rules
//!   (ports, networks), the target parsing and the resolver threads with
//!   each worker's cache; the HTTP session serves it.
//! * [`stats`] holds the counters (per listener and per worker, published
//!   once per loop pass), the report and the Prometheus and JSON exports;
//!   [`admin`] serves them (`/metrics`, `/stats`, `/health`) from two
//!   blocking threads of its own, never on a worker.
//! * [`clients`] counts open connections per client address for the
//!   listeners with a `max_conns_per_client`, across the whole process.
//! * `alloc_count` is the counting allocator that proves the hot path does
//!   not allocate; `argv` hides `--auth` values from `ps`.
//!
//! See docs/ARCHITECTURE.md for how data flows and the rules of the loop.

pub mod admin;
pub mod alloc_count;
pub mod argv;
pub mod cli;
pub mod clients;
pub mod config;
pub mod config_file;
pub mod conn;
pub mod forward;
pub mod http;
pub mod io;
pub mod net;
pub mod pair;
pub mod relay;
pub mod server;
pub mod settings;
pub mod stats;
pub mod timer;
pub mod token;
pub mod upstream;
pub mod worker;

#[cfg(test)]
mod test_rng;

/// Version, build profile, compiler, target features and compiled-in defaults.
pub fn build_info() -> String {
    use config::*;
    format!(
        "ferry {}\nprofile: {}\nrustc: {}\ntarget features: {}\n\
         defaults: listen {DEFAULT_LISTEN}:{DEFAULT_PORT}, backend {DEFAULT_BACKEND}:{DEFAULT_BACKEND_PORT}, \
         workers {} (CPUs), max-conns {DEFAULT_MAX_CONNS}, buffer-size {DEFAULT_BUFFER_SIZE}, backend-rcvbuf {DEFAULT_BACKEND_RCVBUF}, busy-poll 0 (off), splice auto, \
         connect-timeout {DEFAULT_CONNECT_TIMEOUT}s, idle-timeout {DEFAULT_IDLE_TIMEOUT}s, backlog {DEFAULT_BACKLOG}, \
         grace {DEFAULT_GRACE}s, pipe size {PIPE_SIZE}",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) { "debug (debug assertions on)" } else { "release" },
        env!("FERRY_RUSTC_VERSION"),
        env!("FERRY_TARGET_FEATURES"),
        default_workers(),
    )
}
