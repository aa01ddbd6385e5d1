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
use std::sync::atomic::{AtomicBool, Ordering};
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
        let max_pairs = cfg.max_conns;
        let http = listeners.iter().any(|l| l.mode != Mode::Tcp);
        let logging = listeners.iter().any(|l| l.access_log.is_some());
        // An HTTP pair may hold a rewritten head besides the buffer of each
        // direction (a request head kept for a retry, a response head, an
        // upload and a response in flight at once). The reservation is
        // address space; pages are used only by buffers in flight.
        let buffers = if http { 4 * max_pairs } else { 2 * max_pairs };
        let pooled: usize = listeners.iter().map(|l| l.http.pool_size * l.count).sum();
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
            buffers: BufferPool::new(buffers, cfg.buffer_size),
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
            pairs: Slab::with_capacity(max_pairs),
            records: Slab::with_capacity(if logging { max_pairs } else { 0 }),
            conns: Slab::with_capacity(max_pairs + pooled),
            pools,
            wheel,
            conn_wheel: TimerWheel::new(now),
            due: Vec::with_capacity(max_pairs + pooled),
            run_queue: VecDeque::with_capacity(max_pairs),
            counters: vec![Counters::default(); listener_count],
            own: Counters::default(),
            rng: Rng::new(0x9E37_79B9 ^ ((id as u64 + 1) * 0x2545_F491)),
            next_gen: 0,
            now,
            now_ns: 1,
            epoch: now,
            tick: 0,
            connect_ticks,
            idle_ticks,
            accept_paused_until: None,
            accept_again: false,
            at_limit: false,
            stop_deadline: None,
            draining: false,
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
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = Instant::now();
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
            if self.draining && self.pairs.is_empty() {
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
            let conn = &mut self.conns[pair.backend.expect("a TCP pair always has its backend")];
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
                return;
            }
        }
        // A session that keeps changing state without waiting is a bug: close it.
        self.close_pair(slot, CloseReason::Stalled);
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

    /// Give the pair's request a backend connection: a pooled one if the
    /// chosen backend has one, else a new connect; or ferry's answer when no
    /// backend can take it.
    fn attach_backend(&mut self, slot: usize) {
        self.attach_backend_inner(slot);
        self.log_backend(slot);
    }

    fn attach_backend_inner(&mut self, slot: usize) {
        if self.take_kept(slot) {
            let pair = &mut self.pairs[slot];
            let mut ctx = session_ctx!(self, pair.listener as usize, slot);
            let action = session::connected(pair, &mut ctx);
            debug_assert_eq!(
                action,
                Action::Again,
                "a kept connection never carries a tunnel"
            );
            return;
        }
        if self.listeners[self.pairs[slot].listener as usize].mode == Mode::Forward {
            return self.attach_origin(slot);
        }
        loop {
            let pair = &mut self.pairs[slot];
            let listener = &mut self.listeners[pair.listener as usize];
            let (first, backends) = (listener.first, &self.backends);
            let pick = upstream::pick(
                listener.balance,
                listener.count,
                &mut listener.cursor,
                &mut self.rng,
                pair.exchange.tried,
                |i| backends[first + i].state.is_up(),
                |i| backends[first + i].busy,
            );
            let index = match pick {
                Pick::Backend(i) => i,
                Pick::NoneUp | Pick::Exhausted => {
                    let mut ctx = session_ctx!(self, pair.listener as usize, slot);
                    // Down before this request tried any: 503; else they failed it: 502/504.
                    let none_healthy = pick == Pick::NoneUp && pair.exchange.tried == 0;
                    let action = session::no_backend(pair, none_healthy, &mut ctx);
                    debug_assert!(matches!(action, Action::Again | Action::Close(_)));
                    if let Action::Close(reason) = action {
                        self.close_pair(slot, reason);
                    }
                    return;
                }
            };
            pair.exchange.tried |= 1u64 << index.min(63);
            let b = first + index;
            let li = pair.listener as usize;
            if !pair.exchange.fresh_only {
                if let Some(c) = self.backends[b].idle.pop() {
                    self.count_pool(li, b, PoolEvent::Hit);
                    let pair = &mut self.pairs[slot];
                    self.conn_wheel.cancel(&mut self.conns, c);
                    let conn = &mut self.conns[c];
                    conn.owner = Some(slot);
                    conn.listener = pair.listener;
                    conn.reused = true;
                    conn.busy = true;
                    self.backends[b].busy += 1;
                    pair.backend = Some(c);
                    let mut ctx = session_ctx!(self, pair.listener as usize, slot);
                    let action = session::connected(pair, &mut ctx);
                    debug_assert_eq!(
                        action,
                        Action::Again,
                        "a pooled connection never carries a tunnel"
                    );
                    return;
                }
            }
            self.count_pool(li, b, PoolEvent::Miss);
            let addr = self.backends[b].state.addr;
            match self.open_conn(b, slot) {
                Ok(c) => {
                    let pair = &mut self.pairs[slot];
                    pair.backend = Some(c);
                    pair.phase = Phase::Connecting;
                    pair.deadline = self.tick + self.connect_ticks;
                    return;
                }
                Err(e) => {
                    self.counters[li].backend_connect_failures += 1;
                    self.backends[b].state.count_connect_failure();
                    self.backends[b].state.mark_down();
                    self.log_limited(format_args!("connect to {addr} failed: {e}; marked down"));
                }
            }
        }
    }

    /// Forward mode: a connection to the origin the request names, pooled if
    /// one is idle (never for a tunnel), else a new connect; 502 if the
    /// connect cannot even start.
    fn attach_origin(&mut self, slot: usize) {
        let pair = &self.pairs[slot];
        let addr = pair
            .exchange
            .origin
            .expect("a forward request has its origin");
        let fresh_only = pair.exchange.fresh_only;
        let li = pair.listener as usize;
        let b = self.origin_index(addr);
        if !fresh_only {
            if let Some(c) = self.backends[b].idle.pop() {
                self.count_pool(li, b, PoolEvent::Hit);
                self.conn_wheel.cancel(&mut self.conns, c);
                let conn = &mut self.conns[c];
                conn.owner = Some(slot);
                // Origins are shared by the worker's forward listeners.
                conn.listener = li as u16;
                conn.reused = true;
                self.mark_busy(c, true);
                let pair = &mut self.pairs[slot];
                pair.backend = Some(c);
                let mut ctx = session_ctx!(self, pair.listener as usize, slot);
                let action = session::connected(pair, &mut ctx);
                debug_assert_eq!(action, Action::Again);
                return;
            }
        }
        self.count_pool(li, b, PoolEvent::Miss);
        match self.open_conn(b, slot) {
            Ok(c) => {
                let pair = &mut self.pairs[slot];
                pair.backend = Some(c);
                pair.phase = Phase::Connecting;
                pair.deadline = self.tick + self.connect_ticks;
            }
            Err(e) => {
                self.counters[li].backend_connect_failures += 1;
                if self.shared.config.verbose {
                    self.log(format_args!("connect to {addr} failed: {e}"));
                }
                if self.backends[b].conns == 0 && self.origins.len() > ORIGINS_KEPT {
                    self.origins.remove(&addr);
                    self.free_origins.push(b);
                }
                let pair = &mut self.pairs[slot];
                let mut ctx = session_ctx!(self, pair.listener as usize, slot);
                let action = session::no_backend(pair, false, &mut ctx);
                if let Action::Close(reason) = action {
                    self.close_pair(slot, reason);
                }
            }
        }
    }

    /// The entry of `backends` for origin `addr`, made if new.
    fn origin_index(&mut self, addr: SocketAddr) -> usize {
        if let Some(&b) = self.origins.get(&addr) {
            return b;
        }
        let entry = Backend {
            state: Arc::new(BackendState::new(addr, 0)),
            busy: 0,
            idle: Vec::new(),
            conns: 0,
            origin: true,
        };
        let b = match self.free_origins.pop() {
            Some(b) => {
                self.backends[b] = entry;
                b
            }
            None => {
                self.backends.push(entry);
                self.backends.len() - 1
            }
        };
        self.origins.insert(addr, b);
        b
    }

    /// Forward mode: hand the resolver's answers to the pairs that asked.
    fn take_answers(&mut self) {
        let Some(dns) = self.dns.as_mut() else {
            return;
        };
        let mut answers = Vec::new();
        while let Ok(answer) = dns.answers.try_recv() {
            answers.push(answer);
        }
        for answer in answers {
            if let Some(dns) = self.dns.as_mut() {
                dns.store(answer.host, answer.ip, self.now);
            }
            let slot = answer.slot;
            match self.pairs.get(slot) {
                Some(pair) if pair.gen == answer.gen && pair.phase == Phase::Resolving => {}
                _ => continue, // the client went away meanwhile
            }
            let pair = &mut self.pairs[slot];
            let mut ctx = session_ctx!(self, pair.listener as usize, slot);
            let action = session::resolved(pair, answer.ip, &mut ctx);
            if self.apply(slot, action) {
                self.drive(slot);
            } else if let Some(pair) = self.pairs.get(slot) {
                let when = pair.deadline;
                if when != 0 {
                    self.wheel.arm(&mut self.pairs, slot, when);
                }
            }
        }
    }

    /// Note in the pair's access-log record which backend serves it.
    fn log_backend(&mut self, slot: usize) {
        let pair = &self.pairs[slot];
        if let (Some(r), Some(c)) = (pair.exchange.log, pair.backend) {
            let addr = self.backends[self.conns[c].backend as usize].state.addr;
            if let Some(record) = self.records.get_mut(r) {
                record.backend = Some(addr);
            }
        }
    }

    /// Start a connect to backend `b` for the pair in `owner`.
    fn open_conn(&mut self, b: usize, owner: usize) -> io::Result<usize> {
        let mut stream = net::connect(self.backends[b].state.addr)?;
        let gen = self.take_gen();
        let slot = self.conns.vacant_key();
        self.poll.registry().register(
            &mut stream,
            token::pair(slot, Side::Backend, gen),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let listener = self.pairs[owner].listener;
        self.conns
            .insert(Conn::new(gen, stream, b as u32, owner, listener));
        self.backends[b].conns += 1;
        self.mark_busy(slot, true);
        Ok(slot)
    }

    /// Take the pair's backend connection away: into its backend's pool if
    /// `reuse` and there is room, else closed. When the pool is full and the
    /// client stays for another request, the connection stays with the
    /// client instead (it is preferred for that client's next request), so
    /// a burst of idle moments beyond the pool size does not churn
    /// connections; the backend closing it evicts it as in the pool.
    fn detach_backend(&mut self, slot: usize, reuse: bool) {
        let Some(c) = self.pairs[slot].backend else {
            return;
        };
        self.mark_busy(c, false);
        let pair = &self.pairs[slot];
        let conn = &mut self.conns[c];
        let b = conn.backend as usize;
        let listener = &self.listeners[pair.listener as usize];
        let mut healthy = reuse
            && self.stop_deadline.is_none()
            && !self.draining
            && !conn.ready.has(Ready::RDHUP | Ready::ERROR);
        if healthy && conn.ready.has(Ready::READ) {
            // Readable after a complete response: only reusable if nothing is there.
            healthy = sys::is_quiet(conn.stream.as_raw_fd());
            conn.ready.clear(Ready::READ);
        }
        if healthy && conn.requests + 1 >= listener.http.pool_max_requests {
            // Retired after its last request: nothing is in flight, so close
            // it without TIME_WAIT, which would otherwise hold one of the
            // few thousand local ports toward this backend for a minute.
            self.pairs[slot].backend = None;
            conn.owner = None;
            return self.close_conn_idle(c);
        }
        // --pool-size 0 means no idle backend connection is kept at all.
        if healthy
            && listener.http.pool_size > 0
            && self.backends[b].idle.len() >= listener.http.pool_size
            && pair.phase == Phase::Waiting
        {
            conn.requests += 1;
            conn.reused = true;
            return;
        }
        self.pairs[slot].backend = None;
        conn.owner = None;
        conn.reused = false;
        if healthy && self.backends[b].idle.len() < listener.http.pool_size {
            conn.requests += 1;
            self.backends[b].idle.push(c);
            let when = self
                .conn_wheel
                .deadline(self.now, listener.http.pool_idle_timeout);
            self.conn_wheel.arm(&mut self.conns, c, when);
        } else {
            self.close_conn(c);
        }
    }

    /// The connection a waiting client kept from its last request, if it is
    /// still usable for this one.
    fn take_kept(&mut self, slot: usize) -> bool {
        let Some(c) = self.pairs[slot].backend else {
            return false;
        };
        let conn = &self.conns[c];
        let b = conn.backend as usize;
        let pair = &self.pairs[slot];
        let first = self.listeners[pair.listener as usize].first;
        let usable = !pair.exchange.fresh_only
            && pair
                .exchange
                .origin
                .is_none_or(|o| o == self.backends[b].state.addr)
            && self.backends[b].state.is_up()
            && !conn.ready.has(Ready::READ | Ready::RDHUP | Ready::ERROR);
        if !usable {
            self.detach_backend(slot, false);
            return false;
        }
        self.count_pool(pair.listener as usize, b, PoolEvent::Hit);
        self.conns[c].reused = true;
        self.mark_busy(c, true);
        let pair = &mut self.pairs[slot];
        pair.exchange.tried |= 1u64 << (b - first).min(63);
        true
    }

    /// Count connection `c` as carrying a request to its backend, or not.
    fn mark_busy(&mut self, c: usize, busy: bool) {
        let conn = &mut self.conns[c];
        if conn.busy != busy {
            conn.busy = busy;
            let backend = &mut self.backends[conn.backend as usize];
            if busy {
                backend.busy += 1;
            } else {
                backend.busy -= 1;
            }
        }
    }

    /// Close a backend connection with no request in flight: a reset
    /// (SO_LINGER 0) rather than FIN and TIME_WAIT, since no byte is owed.
    fn close_conn_idle(&mut self, c: usize) {
        let _ = socket2::SockRef::from(&self.conns[c].stream).set_linger(Some(Duration::ZERO));
        self.close_conn(c);
    }

    /// The one way out of the connection slab.
    fn close_conn(&mut self, c: usize) {
        self.conn_wheel.cancel(&mut self.conns, c);
        self.mark_busy(c, false);
        let conn = self.conns.remove(c);
        let b = conn.backend as usize;
        let backend = &mut self.backends[b];
        if conn.owner.is_none() {
            if let Some(i) = backend.idle.iter().position(|&s| s == c) {
                backend.idle.swap_remove(i);
            }
        }
        backend.conns -= 1;
        if backend.origin && backend.conns == 0 && self.origins.len() > ORIGINS_KEPT {
            self.origins.remove(&backend.state.addr);
            self.free_origins.push(b);
        }
        // Dropping the stream closes it, which also removes it from epoll.
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

    /// Count a pool event for the listener and, per worker, for the backend.
    fn count_pool(&mut self, li: usize, b: usize, event: PoolEvent) {
        let c = &mut self.counters[li];
        match event {
            PoolEvent::Hit => c.backend_pool_hits += 1,
            PoolEvent::Miss => c.backend_pool_misses += 1,
            PoolEvent::Eviction => c.backend_pool_evictions += 1,
        }
        self.backends[b].state.count_pool(self.id, event);
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

    fn accept_if_due(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if self.now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        self.accept_again = false;
        for i in 0..self.listeners.len() {
            if self.listeners[i].ready {
                self.accept_from(i);
            }
        }
    }

    /// Accept from listener `i` until the kernel has none, the batch is
    /// spent, or the process reaches --max-conns.
    fn accept_from(&mut self, i: usize) {
        if self.accept_paused_until.is_some() || self.stop_deadline.is_some() || self.draining {
            return;
        }
        let max_conns = self.shared.config.max_conns;
        for _ in 0..ACCEPT_BATCH {
            if self.listeners[i].socket.is_none() {
                return;
            }
            if !self.shared.global.try_admit(max_conns) {
                // The rest wait in the kernel backlog until a slot frees.
                if !self.at_limit {
                    self.counters[i].connections_refused_limit += 1;
                    self.at_limit = true;
                }
                self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                return;
            }
            self.at_limit = false;
            let socket = self.listeners[i].socket.as_ref().expect("checked above");
            match socket.accept() {
                Ok((client, peer)) => self.open_pair(i, client, peer.ip()),
                Err(e) => {
                    self.shared.global.release();
                    match e.raw_os_error() {
                        _ if e.kind() == io::ErrorKind::WouldBlock => {
                            self.listeners[i].ready = false;
                            return;
                        }
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            self.counters[i].accept_errors += 1;
                            self.log_limited(format_args!("accept failed: {e}; pausing accepts"));
                            self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                            return;
                        }
                        _ => self.counters[i].accept_errors += 1,
                    }
                }
            }
        }
        self.accept_again = true;
    }

    fn take_gen(&mut self) -> u32 {
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & token::GEN_MASK;
        gen
    }

    fn open_pair(&mut self, listener: usize, mut client: TcpStream, ip: std::net::IpAddr) {
        let _ = client.set_nodelay(true);
        let gen = self.take_gen();
        let slot = self.pairs.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut client,
            token::pair(slot, Side::Client, gen),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.counters[listener].errors += 1;
            self.log_limited(format_args!("cannot register a connection: {e}"));
            self.shared.global.release();
            return;
        }
        let mode = self.listeners[listener].mode;
        let phase = if mode == Mode::Tcp {
            Phase::Connecting
        } else {
            Phase::Waiting
        };
        self.pairs.insert(Pair::new(
            gen,
            listener as u16,
            client,
            ip,
            phase,
            self.tick,
        ));
        let counters = &mut self.counters[listener];
        counters.connections_accepted += 1;
        counters.connections_active += 1;
        self.shared.global.record_peak();
        match mode {
            Mode::Tcp => {
                let b = self.listeners[listener].first;
                match self.open_conn(b, slot) {
                    Ok(c) => {
                        let pair = &mut self.pairs[slot];
                        pair.backend = Some(c);
                        pair.deadline = self.tick + self.connect_ticks;
                        self.wheel
                            .arm(&mut self.pairs, slot, self.tick + self.connect_ticks);
                    }
                    Err(e) => {
                        // close_pair counts and logs the failure.
                        self.close_pair(
                            slot,
                            CloseReason::ConnectFailed(e.raw_os_error().unwrap_or(libc::EIO)),
                        );
                    }
                }
            }
            Mode::Http | Mode::Forward => {
                let pair = &mut self.pairs[slot];
                let mut ctx = session_ctx!(self, listener, slot);
                session::begin(pair, &mut ctx);
                let when = pair.deadline;
                self.wheel.arm(&mut self.pairs, slot, when);
            }
        }
    }

    /// The one way out of the pair slab: returns buffers, pipes, timer, the
    /// backend connection and the connection slot.
    fn close_pair(&mut self, slot: usize, reason: CloseReason) {
        self.detach_backend(slot, false);
        self.wheel.cancel(&mut self.pairs, slot);
        let mut pair = self.pairs.remove(slot);
        if let Some(r) = pair.exchange.log.take() {
            let listener = &self.listeners[pair.listener as usize];
            session::emit_record(
                listener.access_log.as_ref(),
                &mut self.records,
                r,
                &mut self.counters[pair.listener as usize],
            );
        }
        pair.release(&mut self.pools);
        self.shared.global.release();
        if self.at_limit {
            // A slot is free: look at the backlog now rather than at the next retry.
            self.accept_paused_until = None;
            self.accept_again = true;
        }
        let c = &mut self.counters[pair.listener as usize];
        c.connections_active -= 1;
        match reason {
            CloseReason::Done | CloseReason::Shutdown => {}
            CloseReason::Error(Side::Client, _) => c.client_aborts += 1,
            CloseReason::Error(..) | CloseReason::Invalid(..) => c.errors += 1,
            CloseReason::ConnectFailed(_) => c.backend_connect_failures += 1,
            CloseReason::ConnectTimeout => c.backend_connect_timeouts += 1,
            CloseReason::IdleTimeout => c.idle_timeouts += 1,
            CloseReason::Stalled => c.pairs_stalled += 1,
        }
        // Only TCP pairs close for a connect failure; their one backend is
        // the listener's first (HTTP retries another backend instead).
        let backend = || &self.backends[self.listeners[pair.listener as usize].first].state;
        match reason {
            CloseReason::ConnectFailed(e) => {
                let state = backend();
                state.count_connect_failure();
                let backend = state.addr;
                self.log_limited(format_args!(
                    "connect to {backend} failed: {}",
                    sys::errno_name(e)
                ));
            }
            CloseReason::ConnectTimeout => {
                let state = backend();
                state.count_connect_timeout();
                let backend = state.addr;
                self.log_limited(format_args!("connect to {backend} timed out"))
            }
            CloseReason::Stalled => {
                self.log_limited(format_args!("closed a pair that made no progress (a bug)"))
            }
            CloseReason::Error(side, e) if self.shared.config.verbose => self.log(format_args!(
                "connection closed: {side:?} side: {}",
                sys::errno_name(e)
            )),
            CloseReason::Invalid(side, why) if self.shared.config.verbose => self.log(
                format_args!("connection closed: {side:?} sent a bad message: {why}"),
            ),
            _ => {}
        }
        // Dropping `pair` closes the client socket, which also removes it from epoll.
        drop(pair);
    }

    fn begin_stop(&mut self) {
        if self.stop_deadline.is_some() {
            return;
        }
        self.stop_accepting();
        self.stop_deadline = Some(self.now + self.shared.config.grace);
    }

    /// A reload retired this worker: the next generation accepts from the
    /// same sockets; this one serves the pairs it has to their end, closing
    /// keep-alive clients after their next response.
    fn begin_drain(&mut self) {
        if self.draining {
            return;
        }
        self.stop_accepting();
        self.draining = true;
        // Pooled backend connections will not be used again here.
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner.is_none())
            .map(|(slot, _)| slot)
            .collect();
        for c in idle {
            self.close_conn_idle(c);
        }
    }

    fn stop_accepting(&mut self) {
        for l in &mut self.listeners {
            if let Some(mut socket) = l.socket.take() {
                let _ = self.poll.registry().deregister(&mut socket);
            }
            l.ready = false;
        }
        self.accept_again = false;
    }

    /// While stopping: true once no pair is left (closing stragglers at the
    /// deadline, and idle keep-alive clients at once).
    fn finish_stop(&mut self) -> bool {
        let deadline = self.stop_deadline.expect("called only while stopping");
        let hard = self.now >= deadline;
        let slots: Vec<usize> = self
            .pairs
            .iter()
            .filter(|(_, p)| hard || (p.phase == Phase::Waiting && p.to_backend.leftover() == 0))
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            self.close_pair(slot, CloseReason::Shutdown);
        }
        self.pairs.is_empty()
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
