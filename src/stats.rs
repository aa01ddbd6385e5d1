//! Per-worker counters and the statistics report.
//!
//! Each worker counts into a plain [`Counters`] struct it owns and, once per
//! event-loop pass, publishes it into its own cache-line-aligned
//! [`SharedCounters`] (relaxed stores, one writer). The reporter (SIGUSR1, exit,
//! and later the metrics endpoint) sums the workers' published copies. The
//! list of metrics is written once, in `define_counters!`, and everything else
//! (publishing, summing, the report) is generated from it.

use std::fmt::Write as _;
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

macro_rules! define_counters {
    ($($name:ident: $kind:ident, $help:literal;)*) => {
        /// A worker's own counters; plain integers, written only by that worker.
        #[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
        pub struct Counters {
            $(pub $name: u64,)*
        }

        /// The published copy of one worker's counters, on its own cache lines.
        #[repr(align(64))]
        #[derive(Default, Debug)]
        pub struct SharedCounters {
            $($name: AtomicU64,)*
        }

        impl SharedCounters {
            /// Store a worker's counters (its only writer).
            pub fn publish(&self, c: &Counters) {
                $(self.$name.store(c.$name, Relaxed);)*
            }

            /// Read the last published values.
            pub fn load(&self) -> Counters {
                Counters { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl Counters {
            /// Add another worker's counters to these.
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }

            /// Zero the levels (gauges), keeping what only grows.
            pub fn clear_gauges(&mut self) {
                $(if matches!(Kind::$kind, Kind::Gauge) { self.$name = 0; })*
            }

            /// Visit every metric: name, kind, help text and value.
            pub fn each(&self, mut visit: impl FnMut(&'static str, Kind, &'static str, u64)) {
                $(visit(stringify!($name), Kind::$kind, $help, self.$name);)*
            }
        }
    };
}

define_counters! {
    connections_accepted: Counter, "client connections accepted";
    connections_active: Gauge, "client connections open now";
    connections_refused_limit: Counter, "times a worker stopped accepting at --max-conns";
    backend_connect_failures: Counter, "backend connects refused or failed";
    backend_connect_timeouts: Counter, "backend connects that timed out";
    bytes_client_to_backend: Counter, "bytes relayed from clients to backends";
    bytes_backend_to_client: Counter, "bytes relayed from backends to clients";
    bytes_spliced_client_to_backend: Counter, "of those, bytes moved by splice";
    bytes_spliced_backend_to_client: Counter, "of those, bytes moved by splice";
    idle_timeouts: Counter, "pairs closed by --idle-timeout";
    pairs_stalled: Counter, "pairs closed for making no progress";
    errors: Counter, "connections ended by a backend socket error or bad framing";
    forward_tunnels: Counter, "forward: CONNECT tunnels opened";
    forward_auth_failures: Counter, "forward: requests answered 407 (no or wrong credentials)";
    forward_denied: Counter, "forward: requests answered 403 (port, network or loop)";
    forward_lookups: Counter, "forward: names sent to the resolver threads";
    forward_resolve_failures: Counter, "forward: requests whose origin name did not resolve";
    client_aborts: Counter, "connections ended by the client resetting or vanishing";
    accept_errors: Counter, "accept() failures, such as EMFILE";
    http_requests: Counter, "HTTP requests received";
    http_responses_1xx: Counter, "HTTP responses sent, 1xx";
    http_responses_2xx: Counter, "HTTP responses sent, 2xx";
    http_responses_3xx: Counter, "HTTP responses sent, 3xx";
    http_responses_4xx: Counter, "HTTP responses sent, 4xx";
    http_responses_5xx: Counter, "HTTP responses sent, 5xx";
    http_answers: Counter, "HTTP answers ferry made itself (400, 408, 502, ...)";
    access_log_dropped: Counter, "access-log lines dropped because the logger lagged";
    backend_pool_hits: Counter, "requests sent on a pooled backend connection";
    backend_pool_misses: Counter, "requests that needed a new backend connection";
    backend_pool_evictions: Counter, "pooled connections closed by the backend or timed out";
    backend_retries: Counter, "requests sent again after a stale pooled connection failed";
    backend_connections: Gauge, "backend connections open (serving or pooled)";
    loop_iterations: Counter, "event-loop passes";
    loop_events: Counter, "events handled";
    client_read_seconds: Nanos, "time spent reading client sockets";
    client_write_seconds: Nanos, "time spent writing client sockets";
    backend_read_seconds: Nanos, "time spent reading backend sockets";
    backend_write_seconds: Nanos, "time spent writing backend sockets";
    slab_in_use: Gauge, "connection pairs held";
    buffers_in_use: Gauge, "relay buffers held";
    pipes_in_use: Gauge, "splice pipes held";
    worker_heap_allocations: Counter, "heap allocations made by worker threads";
}

/// Process-wide figures the workers share; touched only at accept and close.
#[derive(Default, Debug)]
pub struct Global {
    /// Client connections open across all workers (the --max-conns gate).
    pub active: AtomicUsize,
    /// The highest `active` has been.
    pub max_active: AtomicUsize,
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

/// Sum the published counters of every worker.
pub fn total(workers: &[SharedCounters]) -> Counters {
    let mut sum = Counters::default();
    for w in workers {
        sum.add(&w.load());
    }
    sum
}

/// The report printed on SIGUSR1 and at exit: one `name value` line per metric.
pub fn render_report(c: &Counters, global: &Global, uptime: Duration) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("ferry: report begin\n");
    let _ = writeln!(out, "uptime_seconds {:.3}", uptime.as_secs_f64());
    let max = global.max_active.load(Relaxed);
    c.each(|name, kind, _help, value| {
        let _ = match kind {
            Kind::Nanos => writeln!(out, "{name} {:.6}", value as f64 / 1e9),
            _ => writeln!(out, "{name} {value}"),
        };
        if name == "connections_active" {
            let _ = writeln!(out, "connections_max_concurrent {max}");
        }
    });
    out.push_str("ferry: report end\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sums_workers_and_names_every_metric() {
        let workers = [SharedCounters::default(), SharedCounters::default()];
        let mut a = Counters {
            bytes_client_to_backend: 10,
            client_read_seconds: 1_500_000_000,
            ..Default::default()
        };
        workers[0].publish(&a);
        a.bytes_client_to_backend = 5;
        workers[1].publish(&a);
        let global = Global::default();
        assert!(global.try_admit(1));
        global.record_peak();
        assert!(!global.try_admit(1), "the limit holds");
        let report = render_report(&total(&workers), &global, Duration::from_secs(2));
        assert!(
            report.contains("\nbytes_client_to_backend 15\n"),
            "{report}"
        );
        assert!(
            report.contains("\nclient_read_seconds 3.000000\n"),
            "{report}"
        );
        assert!(
            report.contains("\nconnections_max_concurrent 1\n"),
            "{report}"
        );
        assert!(report.starts_with("ferry: report begin\n"));
        assert!(report.ends_with("ferry: report end\n"));
    }
}
