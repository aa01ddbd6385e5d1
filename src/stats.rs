//! Counters, their per-listener and per-worker copies, and the figures the
//! report, `/metrics` and `/stats` show.
//!
//! A worker counts into plain [`Counters`] structs it owns: one per
//! listener (everything that happens to a connection: accepted, bytes,
//! requests, pool use, connect failures, HTTP times) and one for itself
//! (loop passes, events, buffers and pipes held). Once per event-loop pass
//! it publishes each into its own cache-line-aligned [`SharedCounters`]
//! (relaxed stores, one writer; [`WorkerCounters`] holds a worker's set), so
//! the hot path neither allocates nor locks. A reporter (SIGUSR1, exit, the
//! admin listener) sums the published copies into [`Figures`]: per listener
//! name, the workers' own counters, and per backend (read from the
//! backends' shared [`BackendState`] atomics). The list of metrics is
//! written once, in `define_counters!`, with each metric's kind and scope;
//! everything else (publishing, summing, the report, the exports in
//! [`export`]) is generated from it.

pub mod export;

use crate::upstream::{BackendState, PoolFigures};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// How a metric adds up and prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows.
    Counter,
    /// A level that goes up and down.
    Gauge,
    /// A counter of nanoseconds, printed in seconds.
    Nanos,
}

/// Whose metric it is: a listener's (counted for the listener of the
/// connection it is about) or a worker's (its loop and its pools).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Listener,
    Worker,
}

/// A metric's description, as the exports need it.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub scope: Scope,
    pub help: &'static str,
}

macro_rules! define_counters {
    ($($name:ident: $kind:ident, $scope:ident, $help:literal;)*) => {
        /// Every metric, in the order the report and the exports print them.
        pub const METRICS: &[Metric] = &[
            $(Metric {
                name: stringify!($name),
                kind: Kind::$kind,
                scope: Scope::$scope,
                help: $help,
            },)*
        ];

        /// Counters of one listener or one worker; plain integers, written
        /// only by the worker that owns them.
        #[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
        pub struct Counters {
            $(pub $name: u64,)*
        }

        /// The published copy of one `Counters`, on its own cache lines.
        #[repr(align(64))]
        #[derive(Default, Debug)]
        pub struct SharedCounters {
            $($name: AtomicU64,)*
        }

        impl SharedCounters {
            /// Store the owner's counters (its only writer).
            pub fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Relaxed);)*
            }

            /// Read the last published values.
            pub fn load(&self) -> Counters {
                Counters { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl Counters {
            /// Add other counters to these.
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }

            /// Zero the levels (gauges), keeping what only grows.
            pub fn clear_gauges(&mut self) {
                $(if matches!(Kind::$kind, Kind::Gauge) { self.$name = 0; })*
            }

            /// Every value, in the order of [`METRICS`].
            pub fn values(&self) -> [u64; METRICS.len()] {
                [$(self.$name,)*]
            }

            /// True if no metric of another scope than `scope` was counted
            /// here (a worker counting a connection's metric into its own
            /// counters, or the reverse, is a bug).
            pub fn only(&self, scope: Scope) -> bool {
                true $(&& (Scope::$scope == scope || self.$name == 0))*
            }
        }
    };
}

define_counters! {
    connections_accepted: Counter, Listener, "client connections accepted";
    connections_active: Gauge, Listener, "client connections open now";
    connections_refused_limit: Counter, Listener, "times a worker stopped accepting at --max-conns";
    connections_refused_client_limit: Counter, Listener, "connections refused at max_conns_per_client";
    backend_connect_failures: Counter, Listener, "backend connects refused or failed";
    backend_connect_timeouts: Counter, Listener, "backend connects that timed out";
    bytes_client_to_backend: Counter, Listener, "bytes relayed from clients to backends";
    bytes_backend_to_client: Counter, Listener, "bytes relayed from backends to clients";
    bytes_spliced_client_to_backend: Counter, Listener, "of the bytes from clients to backends, those moved by splice";
    bytes_spliced_backend_to_client: Counter, Listener, "of the bytes from backends to clients, those moved by splice";
    idle_timeouts: Counter, Listener, "pairs closed by --idle-timeout";
    pairs_stalled: Counter, Listener, "pairs closed for making no progress";
    errors: Counter, Listener, "connections ended by a backend socket error or bad framing";
    forward_tunnels: Counter, Listener, "forward: CONNECT tunnels opened";
    forward_auth_failures: Counter, Listener, "forward: requests answered 407 (no or wrong credentials)";
    forward_denied: Counter, Listener, "forward: requests answered 403 (port, network or loop)";
    forward_lookups: Counter, Listener, "forward: names sent to the resolver threads";
    forward_resolve_failures: Counter, Listener, "forward: requests whose origin name did not resolve";
    client_aborts: Counter, Listener, "connections ended by the client resetting or vanishing";
    accept_errors: Counter, Listener, "accept() failures, such as EMFILE";
    http_requests: Counter, Listener, "HTTP requests received";
    http_responses_1xx: Counter, Listener, "HTTP responses sent, 1xx";
    http_responses_2xx: Counter, Listener, "HTTP responses sent, 2xx";
    http_responses_3xx: Counter, Listener, "HTTP responses sent, 3xx";
    http_responses_4xx: Counter, Listener, "HTTP responses sent, 4xx";
    http_responses_5xx: Counter, Listener, "HTTP responses sent, 5xx";
    http_answers: Counter, Listener, "HTTP answers ferry made itself (400, 408, 502, ...)";
    http_exchanges_timed: Counter, Listener, "HTTP exchanges whose backend and client times were measured";
    http_backend_seconds: Nanos, Listener, "time backends were busy: request sent until the response was read from the backend";
    http_client_seconds: Nanos, Listener, "time clients were served: request received until the response was delivered";
    access_log_dropped: Counter, Listener, "access-log lines dropped because the logger lagged";
    backend_pool_hits: Counter, Listener, "requests sent on a pooled backend connection";
    backend_pool_misses: Counter, Listener, "requests that needed a new backend connection";
    backend_pool_evictions: Counter, Listener, "pooled connections closed by the backend or timed out";
    backend_retries: Counter, Listener, "requests sent again after a stale pooled connection failed";
    client_read_seconds: Nanos, Listener, "time spent reading client sockets";
    client_write_seconds: Nanos, Listener, "time spent writing client sockets";
    backend_read_seconds: Nanos, Listener, "time spent reading backend sockets";
    backend_write_seconds: Nanos, Listener, "time spent writing backend sockets";
    backend_connections: Gauge, Worker, "backend connections open (serving or pooled)";
    loop_iterations: Counter, Worker, "event-loop passes";
    loop_events: Counter, Worker, "events handled";
    slab_in_use: Gauge, Worker, "connection pairs held";
    buffers_in_use: Gauge, Worker, "relay buffers held";
    pipes_in_use: Gauge, Worker, "splice pipes held";
    worker_heap_allocations: Counter, Worker, "heap allocations made by worker threads";
}

impl Counters {
    /// Client time over backend time for the HTTP exchanges measured: how
    /// much longer clients took than backends (the accelerator's gain).
    /// None before any exchange was measured.
    pub fn acceleration(&self) -> Option<f64> {
        (self.http_backend_seconds > 0)
            .then(|| self.http_client_seconds as f64 / self.http_backend_seconds as f64)
    }
}

/// One worker's published counters: its own, and one set per listener.
#[derive(Debug)]
pub struct WorkerCounters {
    pub worker: SharedCounters,
    /// Indexed like the generation's listeners.
    pub listeners: Box<[SharedCounters]>,
}

impl WorkerCounters {
    pub fn new(listeners: usize) -> WorkerCounters {
        WorkerCounters {
            worker: SharedCounters::default(),
            listeners: (0..listeners).map(|_| SharedCounters::default()).collect(),
        }
    }
}

/// Process-wide figures the workers share; touched only at accept and close.
#[derive(Default, Debug)]
pub struct Global {
    /// Client connections open across all workers (the --max-conns gate).
    pub active: AtomicUsize,
    /// The highest `active` has been.
    pub max_active: AtomicUsize,
    /// Open connections per client address (`max_conns_per_client`).
    pub clients: crate::clients::ClientTable,
}

impl Global {
    /// Claim a connection slot under `limit`; false when the process is full.
    pub fn try_admit(&self, limit: usize) -> bool {
        let before = self.active.fetch_add(1, Relaxed);
        if before >= limit {
            self.active.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// Note that an admitted connection really opened (for the peak).
    pub fn record_peak(&self) {
        self.max_active
            .fetch_max(self.active.load(Relaxed), Relaxed);
    }

    pub fn release(&self) {
        let before = self.active.fetch_sub(1, Relaxed);
        debug_assert!(before > 0, "connection released twice");
    }
}

/// One backend of one listener, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendFigures {
    pub listener: String,
    pub addr: SocketAddr,
    /// Up or down now; None once no running listener has this backend.
    pub up: Option<bool>,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub marked_down: u64,
    pub connect_failures: u64,
    pub connect_timeouts: u64,
    /// Requests served by a pooled connection to it, requests that needed a
    /// new one, pooled connections lost (summed over workers).
    pub pool: PoolFigures,
}

impl BackendFigures {
    /// Read a backend's shared state.
    pub fn read(listener: &str, state: &BackendState) -> BackendFigures {
        BackendFigures {
            listener: listener.to_string(),
            addr: state.addr,
            up: Some(state.is_up()),
            checks_passed: state.checks_passed.load(Relaxed),
            checks_failed: state.checks_failed.load(Relaxed),
            marked_down: state.marked_down.load(Relaxed),
            connect_failures: state.connect_failures.load(Relaxed),
            connect_timeouts: state.connect_timeouts.load(Relaxed),
            pool: state.pool_figures(),
        }
    }

    fn add(&mut self, other: &BackendFigures) {
        if other.up.is_some() {
            self.up = other.up;
        }
        self.checks_passed += other.checks_passed;
        self.checks_failed += other.checks_failed;
        self.marked_down += other.marked_down;
        self.connect_failures += other.connect_failures;
        self.connect_timeouts += other.connect_timeouts;
        self.pool.hits += other.pool.hits;
        self.pool.misses += other.pool.misses;
        self.pool.evictions += other.pool.evictions;
    }
}

/// Counters summed by listener name, the workers' own, and the backends'.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// The workers' own counters (loop, pools), summed over workers.
    pub workers: Counters,
    /// Per listener name, in the order they first appeared.
    pub listeners: Vec<(String, Counters)>,
    /// Per (listener, backend address), in the order they first appeared.
    pub backends: Vec<BackendFigures>,
}

impl Figures {
    /// Everything summed: the process's totals.
    pub fn total(&self) -> Counters {
        let mut sum = self.workers;
        for (_, c) in &self.listeners {
            sum.add(c);
        }
        sum
    }

    /// The counters of listener `name`, made if new.
    pub fn listener_mut(&mut self, name: &str) -> &mut Counters {
        let i = match self.listeners.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.listeners.push((name.to_string(), Counters::default()));
                self.listeners.len() - 1
            }
        };
        &mut self.listeners[i].1
    }

    /// Add a backend's figures to those of the same listener and address.
    pub fn add_backend(&mut self, b: BackendFigures) {
        match self
            .backends
            .iter_mut()
            .find(|x| x.listener == b.listener && x.addr == b.addr)
        {
            Some(x) => x.add(&b),
            None => self.backends.push(b),
        }
    }

    /// Add another set of figures (a generation's) to these.
    pub fn add(&mut self, other: &Figures) {
        self.workers.add(&other.workers);
        for (name, c) in &other.listeners {
            self.listener_mut(name).add(c);
        }
        for b in &other.backends {
            self.add_backend(b.clone());
        }
    }

    /// Figures of workers that ended: levels are zero, backends have no state.
    pub fn clear_gauges(&mut self) {
        self.workers.clear_gauges();
        for (_, c) in &mut self.listeners {
            c.clear_gauges();
        }
        for b in &mut self.backends {
            b.up = None;
        }
    }
}

/// Everything the report and the admin listener show, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub figures: Figures,
    pub uptime: Duration,
    /// The most client connections open at once.
    pub max_concurrent: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Write one report value: seconds for time counters, else the integer.
fn report_value(out: &mut String, kind: Kind, value: u64) {
    let _ = match kind {
        Kind::Nanos => write!(out, "{:.6}", seconds(value)),
        _ => write!(out, "{value}"),
    };
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}"))
}

/// The report printed on SIGUSR1 and at exit, between `ferry: report begin`
/// and `ferry: report end`:
///
/// * the process's totals, one `name value` line per metric (times in
///   seconds), with `uptime_seconds`, `connections_max_concurrent`,
///   `acceleration_ratio` (client time / backend time, `n/a` before any
///   HTTP exchange), `reloads_ok` and `reloads_failed`;
/// * per listener, `listener NAME name value` for each listener metric and
///   `listener NAME acceleration_ratio R`;
/// * per backend, `backend NAME ADDR name value` (`up` is 1, 0, or `-`
///   once no running listener has it).
pub fn render_report(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("ferry: report begin\n");
    let _ = writeln!(out, "uptime_seconds {:.3}", s.uptime.as_secs_f64());
    let total = s.figures.total();
    for (m, value) in METRICS.iter().zip(total.values()) {
        out.push_str(m.name);
        out.push(' ');
        report_value(&mut out, m.kind, value);
        out.push('\n');
        if m.name == "connections_active" {
            let _ = writeln!(out, "connections_max_concurrent {}", s.max_concurrent);
        }
    }
    let _ = writeln!(
        out,
        "acceleration_ratio {}",
        ratio_text(total.acceleration())
    );
    let _ = writeln!(out, "reloads_ok {}", s.reloads_ok);
    let _ = writeln!(out, "reloads_failed {}", s.reloads_failed);
    for (name, c) in &s.figures.listeners {
        for (m, value) in METRICS.iter().zip(c.values()) {
            if m.scope == Scope::Listener {
                let _ = write!(out, "listener {name} {} ", m.name);
                report_value(&mut out, m.kind, value);
                out.push('\n');
            }
        }
        let _ = writeln!(
            out,
            "listener {name} acceleration_ratio {}",
            ratio_text(c.acceleration())
        );
    }
    for b in &s.figures.backends {
        let prefix = format!("backend {} {}", b.listener, b.addr);
        let up = b.up.map_or("-", |up| if up { "1" } else { "0" });
        let _ = writeln!(out, "{prefix} up {up}");
        let _ = writeln!(out, "{prefix} checks_passed {}", b.checks_passed);
        let _ = writeln!(out, "{prefix} checks_failed {}", b.checks_failed);
        let _ = writeln!(out, "{prefix} marked_down {}", b.marked_down);
        let _ = writeln!(out, "{prefix} connect_failures {}", b.connect_failures);
        let _ = writeln!(out, "{prefix} connect_timeouts {}", b.connect_timeouts);
        let _ = writeln!(out, "{prefix} pool_hits {}", b.pool.hits);
        let _ = writeln!(out, "{prefix} pool_misses {}", b.pool.misses);
        let _ = writeln!(out, "{prefix} pool_evictions {}", b.pool.evictions);
    }
    out.push_str("ferry: report end\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::PoolEvent;

    /// Two listeners over two workers, a backend, and 1.5 s of client read time.
    pub(crate) fn sample() -> Snapshot {
        let workers = [WorkerCounters::new(2), WorkerCounters::new(2)];
        let web = Counters {
            bytes_client_to_backend: 10,
            client_read_seconds: 1_500_000_000,
            http_requests: 3,
            http_responses_2xx: 2,
            http_responses_5xx: 1,
            http_exchanges_timed: 2,
            http_backend_seconds: 500_000_000,
            http_client_seconds: 2_000_000_000,
            ..Default::default()
        };
        let tls = Counters {
            bytes_client_to_backend: 5,
            connections_active: 1,
            ..Default::default()
        };
        let own = Counters {
            loop_iterations: 7,
            ..Default::default()
        };
        for w in &workers {
            w.listeners[0].publish(&web);
            w.listeners[1].publish(&tls);
            w.worker.publish(&own);
        }
        let mut figures = Figures::default();
        for w in &workers {
            figures.workers.add(&w.worker.load());
            for (name, shared) in ["web", "tls"].iter().zip(w.listeners.iter()) {
                figures.listener_mut(name).add(&shared.load());
            }
        }
        let state = BackendState::new("127.0.0.1:8081".parse().unwrap(), 2);
        state.count_pool(0, PoolEvent::Hit);
        state.count_pool(1, PoolEvent::Hit);
        state.count_pool(1, PoolEvent::Miss);
        state.checks_passed.fetch_add(4, Relaxed);
        state.mark_down();
        figures.add_backend(BackendFigures::read("web", &state));
        Snapshot {
            figures,
            uptime: Duration::from_secs(2),
            max_concurrent: 1,
            reloads_ok: 1,
            reloads_failed: 2,
        }
    }

    #[test]
    fn report_sums_workers_and_listeners_and_names_every_metric() {
        let report = render_report(&sample());
        for line in [
            "\nbytes_client_to_backend 30\n",
            "\nclient_read_seconds 3.000000\n",
            "\nconnections_max_concurrent 1\n",
            "\nloop_iterations 14\n",
            "\nacceleration_ratio 4.000\n",
            "\nreloads_failed 2\n",
            "\nlistener web bytes_client_to_backend 20\n",
            "\nlistener tls bytes_client_to_backend 10\n",
            "\nlistener tls connections_active 2\n",
            "\nlistener web acceleration_ratio 4.000\n",
            "\nlistener tls acceleration_ratio n/a\n",
            "\nbackend web 127.0.0.1:8081 up 0\n",
            "\nbackend web 127.0.0.1:8081 checks_passed 4\n",
        ] {
            assert!(report.contains(line), "{line:?} missing from\n{report}");
        }
        for m in METRICS {
            assert!(report.contains(&format!("\n{} ", m.name)), "{}", m.name);
        }
        assert!(!report.contains("listener web loop_iterations"), "{report}");
        assert!(report.starts_with("ferry: report begin\n"));
        assert!(report.ends_with("ferry: report end\n"));
    }

    #[test]
    fn the_gate_holds_at_the_limit_and_keeps_the_peak() {
        let global = Global::default();
        assert!(global.try_admit(1));
        global.record_peak();
        assert!(!global.try_admit(1), "the limit holds");
        global.release();
        assert!(global.try_admit(1));
        assert_eq!(global.max_active.load(Relaxed), 1);
    }

    #[test]
    fn figures_of_generations_add_up_by_listener_name_and_backend() {
        let mut a = sample().figures;
        let mut retired = a.clone();
        retired.clear_gauges();
        assert_eq!(retired.listeners[1].1.connections_active, 0);
        assert_eq!(retired.backends[0].up, None);
        a.add(&retired);
        assert_eq!(a.listeners.len(), 2, "same names merge");
        assert_eq!(a.listener_mut("web").http_requests, 12);
        assert_eq!(a.listener_mut("tls").connections_active, 2);
        assert_eq!(a.backends.len(), 1);
        assert_eq!(a.backends[0].checks_passed, 8);
        assert_eq!(a.backends[0].up, Some(false), "a live state wins over none");
        a.listener_mut("new").http_requests = 1;
        assert_eq!(a.total().http_requests, 13);
    }

    #[test]
    fn scope_check_catches_a_metric_counted_in_the_wrong_place() {
        let mut c = Counters {
            bytes_backend_to_client: 1,
            ..Default::default()
        };
        assert!(c.only(Scope::Listener));
        assert!(!c.only(Scope::Worker));
        c.loop_events = 1;
        assert!(!c.only(Scope::Listener));
    }
}
