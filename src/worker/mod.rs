//! One worker: a thread with its own `mio::Poll`, its own SO_REUSEPORT
//! listeners, its own slabs of pairs and backend connections, buffer pool,
//! pipe pool, backend pools and timing wheels.
//!
//! The loop: poll -> dispatch each event by token -> drive the pairs whose
//! fairness budget ran out last time (run queue) -> fire due timers -> retry
//! accepting if it was paused -> publish counters. Nothing mutable is shared
//! with other workers except the process-wide connection gate (`Global`),
//! touched once at accept and once at close, and the backends' up/down flags.
//!
//! The worker's parts: this file holds its state, the loop, event dispatch,
//! driving pairs and timers; `backends` gives requests backend connections
//! (pools, origins, connects, release); `lifecycle` accepts, opens and
//! closes pairs, and stops or drains the worker.
//!
//! Invariants: every pair in the slab has its client registered under a token
//! with its generation, and every connection in `conns` its own; a connection
//! is owned by at most one pair, and one without an owner is in exactly one
//! backend's idle list; `close_pair` and `close_conn` are the only ways out of
//! the slabs and return buffers, pipes, timers and the connection slot; a
//! pair is in the run queue at most once (`queued`).

use crate::alloc_count;
use crate::config::{Config, ForwardConfig, HttpConfig, Mode, LINGER};
use crate::conn::Conn;
use crate::forward::resolver::Dns;
use crate::http::access_log::{AccessLog, Record};
use crate::http::session::{self, Action, Ctx, Forward, Ticks};
use crate::io::buffer::BufferPool;
use crate::io::pipe::PipePool;
use crate::net::sys::out_of_descriptors;
use crate::net::{self, sys};
use crate::pair::{self, CloseReason, Outcome, Pair, Phase};
use crate::relay::{Pools, Ready};
use crate::stats::{BackendFigures, Counters, Figures, Global, Scope, WorkerCounters};
use crate::timer::TimerWheel;
use crate::token::{self, Side, Target};
use crate::upstream::{self, BackendState, Balance, Pick, PoolEvent, Rng};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections accepted per listener per pass before others get a turn.
const ACCEPT_BATCH: usize = 64;
/// How long accepting pauses after EMFILE/ENFILE, and how often a worker
/// at the connection limit looks again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Events taken from the kernel per poll.
const EVENTS_PER_POLL: usize = 512;
/// Forward-mode origins a worker remembers with no connection to them (the
/// rest are forgotten as their last connection closes).
const ORIGINS_KEPT: usize = 256;
/// Session steps one drive may take before yielding (a bug guard).
const MAX_SESSION_STEPS: usize = 64;
/// What a pair's sockets are registered for (edge-triggered), urgent data
/// included: a read stops at its mark, so the relay must hear of it.
const PAIR_INTEREST: Interest = Interest::READABLE
    .add(Interest::WRITABLE)
    .add(Interest::PRIORITY);

/// The session's view of its worker and of listener `$index`, from
/// disjoint fields of the worker (a macro, so the borrows stay field by field).
macro_rules! session_ctx {
    ($w:ident, $index:expr, $slot:expr) => {{
        let index: usize = $index;
        let listener: &Listener = &$w.listeners[index];
        Ctx {
            pools: &mut $w.pools,
            counters: &mut $w.counters[index],
            log: listener.access_log.as_ref(),
            records: &mut $w.records,
            cfg: &listener.http,
            ticks: listener.ticks,
            tick: $w.tick,
            now_ns: $w.now_ns,
            forward: match ($w.dns.as_mut(), listener.mode) {
                (Some(dns), Mode::Forward) => Some(Forward {
                    cfg: &listener.forward,
                    dns,
                    listening: &$w.listening,
                    now: $w.now,
                }),
                _ => None,
            },
            slot: $slot,
            winding_down: $w.draining || $w.stop_deadline.is_some(),
        }
    }};
}

mod backends;
mod lifecycle;
mod memory;

pub use memory::Reserve;

/// What all workers and the main thread share.
pub struct Shared {
    pub config: Config,
    /// The process-wide connection gate (shared by every generation).
    pub global: Arc<Global>,
    /// Each worker's published counters (its own and its listeners').
    pub counters: Vec<WorkerCounters>,
    /// The configured backends, with the index of their listener.
    pub backends: Vec<(usize, Arc<BackendState>)>,
    pub stopping: AtomicBool,
    /// A reload replaced this generation: stop accepting, finish what is open.
    pub retiring: AtomicBool,
    /// Set with `retiring`: microseconds the open pairs get before they are
    /// closed (the new configuration's `reload_grace`); 0 for no limit.
    pub retire_within_us: AtomicU64,
    pub started: Instant,
}

impl Shared {
    /// This generation's figures: the workers' published counters summed
    /// by listener, and its backends' shared state.
    pub fn figures(&self) -> Figures {
        let mut f = Figures::default();
        for (i, l) in self.config.listeners.iter().enumerate() {
            let c = f.listener_mut(&l.name);
            for w in &self.counters {
                if let Some(shared) = w.listeners.get(i) {
                    c.add(&shared.load());
                }
            }
        }
        for w in &self.counters {
            f.workers.add(&w.worker.load());
        }
        for (i, state) in &self.backends {
            f.add_backend(BackendFigures::read(&self.config.listeners[*i].name, state));
        }
        f
    }
}

/// A listening socket of this worker and where its connections go.
pub struct Listener {
    pub socket: Option<TcpListener>,
    pub mode: Mode,
    /// This listener's backends: `first .. first + count` in the worker's list.
    pub first: usize,
    pub count: usize,
    pub balance: Balance,
    pub http: HttpConfig,
    /// The kernel may have connections queued for us.
    pub ready: bool,
    cursor: usize,
    /// The HTTP timeouts in wheel ticks, computed once.
    ticks: Ticks,
    pub access_log: Option<AccessLog>,
    /// Forward mode: auth and what may be reached.
    pub forward: ForwardConfig,
}

impl Listener {
    pub fn new(
        socket: TcpListener,
        mode: Mode,
        first: usize,
        count: usize,
        balance: Balance,
        http: HttpConfig,
    ) -> Listener {
        Listener {
            socket: Some(socket),
            mode,
            first,
            count,
            balance,
            http,
            ready: false,
            cursor: 0,
            ticks: Ticks::default(),
            access_log: None,
            forward: ForwardConfig::default(),
        }
    }
}

/// A backend as this worker sees it: shared health, own load and idle pool.
struct Backend {
    state: Arc<BackendState>,
    /// Connections of this worker to it carrying a request now (the load
    /// least-conn and p2c compare; idle pooled ones do not count).
    busy: u32,
    /// Pooled connections (slots in `conns`), most recently used last.
    idle: Vec<usize>,
    /// Connections of this worker to it, serving or pooled.
    conns: u32,
    /// A forward-mode origin (in `origins`), not a configured backend.
    origin: bool,
}

pub struct Worker {
    id: usize,
    poll: Poll,
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    backends: Vec<Backend>,
    pairs: Slab<Pair>,
    conns: Slab<Conn>,
    /// Access-log records of requests in progress (empty without a log).
    records: Slab<Record>,
    pools: Pools,
    wheel: TimerWheel,
    conn_wheel: TimerWheel,
    due: Vec<usize>,
    run_queue: VecDeque<(usize, u32)>,
    /// Per listener (same index): what happens to its connections.
    counters: Vec<Counters>,
    /// The worker's own: loop passes, events, what its pools hold.
    own: Counters,
    rng: Rng,
    next_gen: u32,
    now: Instant,
    /// `now` in nanoseconds since `epoch` (plus one, so 0 means unset):
    /// the session's clock for HTTP times.
    now_ns: u64,
    epoch: Instant,
    tick: u64,
    connect_ticks: u64,
    /// SO_RCVBUF for backend sockets (0: the kernel's autotuning).
    backend_rcvbuf: usize,
    /// How long after its last event the loop keeps polling with a zero
    /// timeout instead of sleeping (--busy-poll).
    busy_poll: Duration,
    idle_ticks: u64,
    /// Accepting waits until then (EMFILE, or the connection limit).
    accept_paused_until: Option<Instant>,
    /// A listener's batch ran out with connections still queued.
    accept_again: bool,
    /// Accepting paused because the process is at --max-conns.
    at_limit: bool,
    /// Set once SIGTERM reached this worker: the time live pairs must end by.
    stop_deadline: Option<Instant>,
    /// A reload retired this worker: it accepts no more and ends when empty.
    draining: bool,
    /// While draining: when the pairs left are closed (`reload_grace`).
    drain_deadline: Option<Instant>,
    last_log: Option<Instant>,
    /// Forward mode: name resolution (None without a forward listener).
    dns: Option<Dns>,
    /// Forward mode: origins this worker has connections to, by address:
    /// entries in `backends` after the configured ones.
    origins: HashMap<SocketAddr, usize>,
    /// Entries of `backends` free for another origin.
    free_origins: Vec<usize>,
    /// The addresses this worker listens on (a forward request to one loops).
    listening: Vec<SocketAddr>,
}

impl Worker {
    pub fn new(
        id: usize,
        poll: Poll,
        shared: Arc<Shared>,
        listeners: Vec<Listener>,
        backends: Vec<Arc<BackendState>>,
        dns: Option<Dns>,
    ) -> Worker {
        let cfg = &shared.config;
        // Sized as the server checked before starting us (`memory.rs`).
        let reserve = Reserve::of(cfg);
        let now = Instant::now();
        let wheel = TimerWheel::new(now);
        let span = |d: Duration| wheel.deadline(now, d) - wheel.tick_of(now);
        let connect_ticks = span(cfg.connect_timeout);
        let idle_ticks = span(cfg.idle_timeout);
        let mut listeners = listeners;
        let listener_count = listeners.len();
        for l in &mut listeners {
            l.ticks = Ticks {
                header: span(l.http.header_timeout),
                keepalive: span(l.http.keepalive_timeout),
                backend: span(l.http.backend_timeout),
                idle: idle_ticks,
                linger: span(LINGER),
                connect: connect_ticks,
            };
        }
        let pools = Pools {
            buffers: BufferPool::new(reserve.buffers, cfg.buffer_size),
            pipes: PipePool::new(cfg.pipes_per_worker(), crate::config::PIPE_SIZE),
            splice: cfg.splice,
        };
        let backends = backends
            .into_iter()
            .map(|state| Backend {
                state,
                busy: 0,
                idle: Vec::with_capacity(64),
                conns: 0,
                origin: false,
            })
            .collect();
        let listening = listeners
            .iter()
            .filter_map(|l| l.socket.as_ref()?.local_addr().ok())
            .collect();
        Worker {
            id,
            poll,
            listeners,
            backends,
            pairs: Slab::with_capacity(reserve.pairs),
            records: Slab::with_capacity(reserve.records),
            conns: Slab::with_capacity(reserve.conns),
            pools,
            wheel,
            conn_wheel: TimerWheel::new(now),
            due: Vec::with_capacity(reserve.conns),
            run_queue: VecDeque::with_capacity(reserve.pairs),
            counters: vec![Counters::default(); listener_count],
            own: Counters::default(),
            rng: Rng::new(0x9E37_79B9 ^ ((id as u64 + 1) * 0x2545_F491)),
            next_gen: 0,
            now,
            now_ns: 1,
            epoch: now,
            tick: 0,
            connect_ticks,
            backend_rcvbuf: cfg.backend_rcvbuf,
            busy_poll: cfg.busy_poll,
            idle_ticks,
            accept_paused_until: None,
            accept_again: false,
            at_limit: false,
            stop_deadline: None,
            draining: false,
            drain_deadline: None,
            last_log: None,
            dns,
            origins: HashMap::new(),
            free_origins: Vec::new(),
            listening,
            shared,
        }
    }

    /// Run until stopped; returns once every pair is closed.
    pub fn run(mut self) -> io::Result<()> {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if let Some(socket) = l.socket.as_mut() {
                self.poll
                    .registry()
                    .register(socket, token::listener(i), Interest::READABLE)?;
                l.ready = true;
            }
        }
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        // The last time a poll returned events, for --busy-poll.
        let mut last_busy = self.now;
        loop {
            let timeout = if self.now.duration_since(last_busy) < self.busy_poll {
                // Busy-polling: look again at once instead of sleeping, so
                // that the next event finds the worker awake (see
                // `Config::busy_poll`).
                Some(Duration::ZERO)
            } else {
                self.poll_timeout()
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = Instant::now();
            if !events.is_empty() {
                last_busy = self.now;
            }
            self.now_ns = self.now.duration_since(self.epoch).as_nanos() as u64 + 1;
            self.tick = self.wheel.tick_of(self.now);
            self.own.loop_iterations += 1;
            for event in events.iter() {
                self.own.loop_events += 1;
                self.dispatch(event);
            }
            self.run_queued();
            self.fire_timers();
            self.accept_if_due();
            if self.stop_deadline.is_some() && self.finish_stop() {
                break;
            }
            if self.draining && self.finish_drain() {
                break;
            }
            self.publish();
        }
        let idle: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in idle {
            self.close_conn(slot);
        }
        self.publish();
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.run_queue.is_empty() || self.accept_again {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.wheel.next_timeout(now);
        let mut sooner = |d: Option<Duration>| {
            if let Some(d) = d {
                timeout = Some(timeout.map_or(d, |t| t.min(d)));
            }
        };
        sooner(self.conn_wheel.next_timeout(now));
        sooner(
            self.accept_paused_until
                .map(|t| t.saturating_duration_since(now)),
        );
        sooner(self.stop_deadline.map(|t| t.saturating_duration_since(now)));
        sooner(
            self.drain_deadline
                .map(|t| t.saturating_duration_since(now)),
        );
        timeout
    }

    fn dispatch(&mut self, event: &mio::event::Event) {
        match token::decode(event.token()) {
            Target::Waker => {
                self.take_answers();
                if self.shared.stopping.load(Ordering::Relaxed) {
                    self.begin_stop();
                } else if self.shared.retiring.load(Ordering::Relaxed) {
                    self.begin_drain();
                }
            }
            Target::Listener(i) => {
                if let Some(l) = self.listeners.get_mut(i) {
                    l.ready = true;
                    self.accept_from(i);
                }
            }
            Target::Pair {
                slot,
                side: Side::Client,
                gen,
            } => {
                let Some(pair) = self.pairs.get_mut(slot) else {
                    return;
                };
                if pair.gen != gen {
                    return; // stale: the slot was reused
                }
                pair.client_ready.merge(event);
                self.drive(slot);
            }
            Target::Pair {
                slot,
                side: Side::Backend,
                gen,
            } => {
                let Some(conn) = self.conns.get_mut(slot) else {
                    return;
                };
                if conn.gen != gen {
                    return;
                }
                conn.ready.merge(event);
                match conn.owner {
                    Some(owner) => self.drive(owner),
                    None if conn.ready.has(Ready::READ | Ready::ERROR) => {
                        // An idle pooled connection spoke or closed: it cannot be reused.
                        let (li, b) = (conn.listener as usize, conn.backend as usize);
                        self.count_pool(li, b, PoolEvent::Eviction);
                        self.close_conn(slot);
                    }
                    None => {}
                }
            }
        }
    }

    fn drive(&mut self, slot: usize) {
        match self.listeners[self.pairs[slot].listener as usize].mode {
            Mode::Tcp => self.drive_tcp(slot),
            Mode::Http | Mode::Forward => self.drive_http(slot),
        }
        if let Some(pair) = self.pairs.get(slot) {
            if pair.timer.when() != Some(pair.deadline) && pair.deadline != 0 {
                let when = pair.deadline;
                self.wheel.arm(&mut self.pairs, slot, when);
            }
        }
    }

    fn enqueue(&mut self, slot: usize) {
        let pair = &mut self.pairs[slot];
        if !pair.queued {
            pair.queued = true;
            self.run_queue.push_back((slot, pair.gen));
        }
    }

    fn drive_tcp(&mut self, slot: usize) {
        loop {
            let pair = &mut self.pairs[slot];
            let Some(c) = pair.backend else {
                // Waiting for a descriptor to connect with (`connect_tcp`).
                if pair.client_ready.has(Ready::ERROR) {
                    let reason = CloseReason::Error(Side::Client, libc::ECONNRESET);
                    self.close_pair(slot, reason);
                }
                return;
            };
            let conn = &mut self.conns[c];
            let counters = &mut self.counters[pair.listener as usize];
            match pair::drive_tcp(pair, conn, &mut self.pools, counters, self.tick) {
                Outcome::Idle => return,
                Outcome::Again => return self.enqueue(slot),
                Outcome::Connected => {
                    pair.last_active = self.tick;
                    pair.deadline = self.tick + self.idle_ticks;
                }
                Outcome::Close(reason) => return self.close_pair(slot, reason),
            }
        }
    }

    fn drive_http(&mut self, slot: usize) {
        if let (Phase::Waiting, Some(c)) = (self.pairs[slot].phase, self.pairs[slot].backend) {
            if self.conns[c]
                .ready
                .has(Ready::READ | Ready::RDHUP | Ready::ERROR)
            {
                // The connection kept for this client closed or spoke out of turn.
                let li = self.pairs[slot].listener as usize;
                self.count_pool(li, self.conns[c].backend as usize, PoolEvent::Eviction);
                self.detach_backend(slot, false);
            }
        }
        let li = self.pairs[slot].listener as usize;
        let answered = answers(&self.counters[li]);
        for _ in 0..MAX_SESSION_STEPS {
            let pair = &mut self.pairs[slot];
            let mut conn = pair.backend.map(|c| &mut self.conns[c]);
            let mut ctx = session_ctx!(self, pair.listener as usize, slot);
            let action = if pair.phase == Phase::Connecting {
                let conn = conn.expect("connecting implies a connection");
                match pair::check_connect(pair, conn) {
                    Outcome::Connected => session::connected(pair, &mut ctx),
                    Outcome::Close(CloseReason::ConnectFailed(_)) => {
                        ctx.counters.backend_connect_failures += 1;
                        self.backends[conn.backend as usize]
                            .state
                            .count_connect_failure();
                        Action::ConnectFailed
                    }
                    Outcome::Close(reason) => Action::Close(reason),
                    Outcome::Idle | Outcome::Again => Action::Wait,
                }
            } else {
                match pair::relay(pair, conn.as_deref_mut(), ctx.pools, ctx.counters, ctx.tick) {
                    Outcome::Idle | Outcome::Connected => session::advance(pair, conn, &mut ctx),
                    Outcome::Again => return self.enqueue(slot),
                    Outcome::Close(reason) => session::on_error(pair, conn, reason, &mut ctx),
                }
            };
            if !self.apply(slot, action) {
                return self.drop_kept_while_resolving(slot);
            }
        }
        if answers(&self.counters[li]) != answered {
            // Responses went out (say, a pipeline of ferry's own 407s): that
            // is work, not a stall; the rest waits for the other pairs' turn.
            return self.enqueue(slot);
        }
        // A session that keeps changing state without waiting is a bug: close it.
        self.close_pair(slot, CloseReason::Stalled);
    }

    /// Forward mode: a request waiting for its origin's name must not go out
    /// on the connection its client kept from the last request (another
    /// origin's, as far as anyone knows yet), nor fail with it: that
    /// connection goes back to the pool, or is closed, at once.
    fn drop_kept_while_resolving(&mut self, slot: usize) {
        if let Some(pair) = self.pairs.get(slot) {
            if pair.phase == Phase::Resolving && pair.backend.is_some() {
                self.detach_backend(slot, true);
            }
        }
    }

    /// Carry out a session's action; true if the session should run again.
    fn apply(&mut self, slot: usize, action: Action) -> bool {
        match action {
            Action::Wait => false,
            Action::Again => true,
            Action::Connect => {
                self.attach_backend(slot);
                true
            }
            Action::Retry => {
                self.detach_backend(slot, false);
                self.attach_backend(slot);
                true
            }
            Action::ConnectFailed if self.pairs[slot].exchange.origin.is_some() => {
                // Forward mode: the origin is what the client asked for; no other.
                self.detach_backend(slot, false);
                let pair = &mut self.pairs[slot];
                let mut ctx = session_ctx!(self, pair.listener as usize, slot);
                let action = session::no_backend(pair, false, &mut ctx);
                self.apply(slot, action)
            }
            Action::ConnectFailed => {
                if let Some(c) = self.pairs[slot].backend {
                    let backend = &self.backends[self.conns[c].backend as usize];
                    backend.state.mark_down();
                    let addr = backend.state.addr;
                    self.log_limited(format_args!("connect to {addr} failed; marked down"));
                }
                self.detach_backend(slot, false);
                self.attach_backend(slot);
                true
            }
            Action::Release { reuse } => {
                self.detach_backend(slot, reuse);
                true
            }
            Action::Close(reason) => {
                self.close_pair(slot, reason);
                false
            }
        }
    }

    fn run_queued(&mut self) {
        for _ in 0..self.run_queue.len() {
            let Some((slot, gen)) = self.run_queue.pop_front() else {
                break;
            };
            match self.pairs.get_mut(slot) {
                Some(pair) if pair.gen == gen => pair.queued = false,
                _ => continue,
            }
            self.drive(slot);
        }
    }

    fn fire_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.conn_wheel.expire(&mut self.conns, self.now, &mut due);
        for &c in &due {
            let (li, b) = (
                self.conns[c].listener as usize,
                self.conns[c].backend as usize,
            );
            self.count_pool(li, b, PoolEvent::Eviction);
            self.close_conn_idle(c);
        }
        due.clear();
        self.wheel.expire(&mut self.pairs, self.now, &mut due);
        for &slot in &due {
            if self.pairs.contains(slot) {
                self.timeout(slot);
            }
        }
        due.clear();
        self.due = due;
    }

    fn timeout(&mut self, slot: usize) {
        let pair = &mut self.pairs[slot];
        pair.deadline = 0;
        let index = pair.listener as usize;
        match self.listeners[index].mode {
            Mode::Tcp => match pair.phase {
                Phase::Connecting if pair.backend.is_none() => {
                    if self.tick >= pair.last_active + self.connect_ticks {
                        let reason = CloseReason::Error(Side::Backend, libc::EMFILE);
                        self.close_pair(slot, reason);
                    } else {
                        self.connect_tcp(slot);
                    }
                }
                Phase::Connecting => self.close_pair(slot, CloseReason::ConnectTimeout),
                _ if self.tick >= pair.last_active + self.idle_ticks => {
                    self.close_pair(slot, CloseReason::IdleTimeout)
                }
                _ => pair.deadline = pair.last_active + self.idle_ticks,
            },
            Mode::Http | Mode::Forward => {
                if pair.phase == Phase::Connecting {
                    if let Some(c) = pair.backend {
                        let b = self.conns[c].backend as usize;
                        self.backends[b].state.count_connect_timeout();
                    }
                }
                let mut ctx = session_ctx!(self, index, slot);
                let action = session::on_timeout(pair, &mut ctx);
                if self.apply(slot, action) {
                    self.drive(slot);
                    return;
                }
            }
        }
        if let Some(pair) = self.pairs.get(slot) {
            if pair.deadline != 0 {
                let when = pair.deadline;
                self.wheel.arm(&mut self.pairs, slot, when);
            }
        }
    }

    /// Publish the worker's own counters and each listener's, for the
    /// reporters (relaxed stores into this worker's slots; no lock, no
    /// allocation).
    fn publish(&mut self) {
        let c = &mut self.own;
        c.slab_in_use = self.pairs.len() as u64;
        c.backend_connections = self.conns.len() as u64;
        c.buffers_in_use = self.pools.buffers.in_use() as u64;
        c.pipes_in_use = self.pools.pipes.in_use() as u64;
        c.worker_heap_allocations = alloc_count::thread_allocations();
        debug_assert!(
            c.only(Scope::Worker),
            "a connection counted as the worker's"
        );
        let slots = &self.shared.counters[self.id];
        slots.worker.publish(c);
        for (shared, counters) in slots.listeners.iter().zip(&self.counters) {
            debug_assert!(
                counters.only(Scope::Listener),
                "a worker's metric counted as a listener's"
            );
            shared.publish(counters);
        }
        debug_assert_eq!(
            self.counters
                .iter()
                .map(|c| c.connections_active)
                .sum::<u64>(),
            self.pairs.len() as u64,
            "connections_active counts the pairs"
        );
    }

    fn log(&self, what: std::fmt::Arguments) {
        eprintln!("ferry: worker {}: {what}", self.id);
    }

    /// Log at most once a second per worker unless --verbose, so a dead
    /// backend cannot flood the log.
    fn log_limited(&mut self, what: std::fmt::Arguments) {
        let quiet = self
            .last_log
            .is_some_and(|t| self.now.duration_since(t) < Duration::from_secs(1));
        if self.shared.config.verbose || !quiet {
            self.last_log = Some(self.now);
            self.log(what);
        }
    }
}

/// Responses a listener's pairs sent so far, ferry's own answers included.
fn answers(c: &Counters) -> u64 {
    c.http_responses_1xx
        + c.http_responses_2xx
        + c.http_responses_3xx
        + c.http_responses_4xx
        + c.http_responses_5xx
}
