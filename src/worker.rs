//! One worker: a thread with its own `mio::Poll`, its own SO_REUSEPORT
//! listeners, its own slab of pairs, buffer pool, pipe pool and timer wheel.
//!
//! The loop: poll -> dispatch each event by token -> drive the pairs whose
//! fairness budget ran out last time (run queue) -> fire due timers -> retry
//! accepting if it was paused -> publish counters. Nothing mutable is shared
//! with other workers except the process-wide connection gate (`Global`),
//! touched once at accept and once at close.
//!
//! Invariants: every pair in the slab has both sockets registered under
//! tokens with its generation; `close_pair` is the only way out of the slab
//! and returns the buffers, pipes, timer and connection slot; a pair is in
//! the run queue at most once (`queued`).

use crate::alloc_count;
use crate::config::Config;
use crate::io::buffer::BufferPool;
use crate::io::pipe::PipePool;
use crate::net::{self, sys};
use crate::pair::{self, CloseReason, Outcome, Pair, Phase};
use crate::relay::Pools;
use crate::stats::{Counters, Global, SharedCounters};
use crate::timer::TimerWheel;
use crate::token::{self, Side, Target};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll};
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
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

/// What all workers and the main thread share.
pub struct Shared {
    pub config: Config,
    pub global: Global,
    pub counters: Vec<SharedCounters>,
    pub stopping: AtomicBool,
    pub started: Instant,
}

/// A listening socket of this worker and where its connections go.
pub struct Listener {
    pub socket: Option<TcpListener>,
    pub backend: SocketAddr,
    /// The kernel may have connections queued for us.
    pub ready: bool,
}

pub struct Worker {
    id: usize,
    poll: Poll,
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    pairs: Slab<Pair>,
    pools: Pools,
    wheel: TimerWheel,
    due: Vec<usize>,
    run_queue: VecDeque<(usize, u32)>,
    counters: Counters,
    next_gen: u32,
    now: Instant,
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
    last_log: Option<Instant>,
}

impl Worker {
    pub fn new(id: usize, poll: Poll, shared: Arc<Shared>, listeners: Vec<Listener>) -> Worker {
        let cfg = &shared.config;
        let max_pairs = cfg.max_conns;
        let now = Instant::now();
        let wheel = TimerWheel::new(now);
        let connect_ticks = wheel.deadline(now, cfg.connect_timeout) - wheel.tick_of(now);
        let idle_ticks = wheel.deadline(now, cfg.idle_timeout) - wheel.tick_of(now);
        let pools = Pools {
            buffers: BufferPool::new(2 * max_pairs, cfg.buffer_size),
            pipes: PipePool::new(cfg.pipes_per_worker(), crate::config::PIPE_SIZE),
            splice: cfg.splice,
        };
        Worker {
            id,
            poll,
            listeners,
            pairs: Slab::with_capacity(max_pairs),
            pools,
            wheel,
            due: Vec::with_capacity(max_pairs),
            run_queue: VecDeque::with_capacity(max_pairs),
            counters: Counters::default(),
            next_gen: 0,
            now,
            tick: 0,
            connect_ticks,
            idle_ticks,
            accept_paused_until: None,
            accept_again: false,
            at_limit: false,
            stop_deadline: None,
            last_log: None,
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
            self.tick = self.wheel.tick_of(self.now);
            self.counters.loop_iterations += 1;
            for event in events.iter() {
                self.counters.loop_events += 1;
                self.dispatch(event);
            }
            self.run_queued();
            self.fire_timers();
            self.accept_if_due();
            if self.stop_deadline.is_some() && self.finish_stop() {
                break;
            }
            self.publish();
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
        let mut sooner = |d: Duration| timeout = Some(timeout.map_or(d, |t| t.min(d)));
        if let Some(until) = self.accept_paused_until {
            sooner(until.saturating_duration_since(now));
        }
        if let Some(deadline) = self.stop_deadline {
            sooner(deadline.saturating_duration_since(now));
        }
        timeout
    }

    fn dispatch(&mut self, event: &mio::event::Event) {
        match token::decode(event.token()) {
            Target::Waker => {
                if self.shared.stopping.load(Ordering::Relaxed) {
                    self.begin_stop();
                }
            }
            Target::Listener(i) => {
                if let Some(l) = self.listeners.get_mut(i) {
                    l.ready = true;
                    self.accept_from(i);
                }
            }
            Target::Pair { slot, side, gen } => {
                let Some(pair) = self.pairs.get_mut(slot) else {
                    return;
                };
                if pair.gen != gen {
                    return; // stale: the slot was reused
                }
                match side {
                    Side::Client => pair.client_ready.merge(event),
                    Side::Backend => pair.backend_ready.merge(event),
                }
                self.drive(slot);
            }
        }
    }

    fn drive(&mut self, slot: usize) {
        loop {
            let pair = &mut self.pairs[slot];
            match pair::drive(pair, &mut self.pools, &mut self.counters, self.tick) {
                Outcome::Idle => return,
                Outcome::Again => {
                    if !pair.queued {
                        pair.queued = true;
                        self.run_queue.push_back((slot, pair.gen));
                    }
                    return;
                }
                Outcome::Connected => {
                    pair.last_active = self.tick;
                    self.wheel
                        .arm(&mut self.pairs, slot, self.tick + self.idle_ticks);
                }
                Outcome::Close(reason) => return self.close_pair(slot, reason),
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
        self.wheel.expire(&mut self.pairs, self.now, &mut due);
        for &slot in &due {
            let pair = &self.pairs[slot];
            match pair.phase {
                Phase::Connecting => self.close_pair(slot, CloseReason::ConnectTimeout),
                Phase::Relaying if self.tick >= pair.last_active + self.idle_ticks => {
                    self.close_pair(slot, CloseReason::IdleTimeout)
                }
                Phase::Relaying => {
                    let when = pair.last_active + self.idle_ticks;
                    self.wheel.arm(&mut self.pairs, slot, when);
                }
            }
        }
        due.clear();
        self.due = due;
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
        if self.accept_paused_until.is_some() || self.stop_deadline.is_some() {
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
                    self.counters.connections_refused_limit += 1;
                    self.at_limit = true;
                }
                self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                return;
            }
            self.at_limit = false;
            let socket = self.listeners[i].socket.as_ref().expect("checked above");
            match socket.accept() {
                Ok((client, _peer)) => self.open_pair(i, client),
                Err(e) => {
                    self.shared.global.release();
                    match e.raw_os_error() {
                        _ if e.kind() == io::ErrorKind::WouldBlock => {
                            self.listeners[i].ready = false;
                            return;
                        }
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            self.counters.accept_errors += 1;
                            self.log_limited(format_args!("accept failed: {e}; pausing accepts"));
                            self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                            return;
                        }
                        _ => self.counters.accept_errors += 1,
                    }
                }
            }
        }
        self.accept_again = true;
    }

    fn open_pair(&mut self, listener: usize, mut client: TcpStream) {
        let _ = client.set_nodelay(true);
        let backend_addr = self.listeners[listener].backend;
        let mut backend = match net::connect(backend_addr) {
            Ok(s) => s,
            Err(e) => {
                self.counters.backend_connect_failures += 1;
                self.log_limited(format_args!("connect to {backend_addr} failed: {e}"));
                self.shared.global.release();
                return;
            }
        };
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & token::GEN_MASK;
        let slot = self.pairs.vacant_key();
        let registry = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = registry
            .register(&mut client, token::pair(slot, Side::Client, gen), both)
            .and_then(|_| {
                registry.register(&mut backend, token::pair(slot, Side::Backend, gen), both)
            });
        if let Err(e) = registered {
            self.counters.errors += 1;
            self.log_limited(format_args!("cannot register a connection: {e}"));
            self.shared.global.release();
            return;
        }
        self.pairs
            .insert(Pair::new(gen, listener as u16, client, backend, self.tick));
        self.wheel
            .arm(&mut self.pairs, slot, self.tick + self.connect_ticks);
        self.counters.connections_accepted += 1;
        self.shared.global.record_peak();
    }

    /// The one way out of the slab: returns buffers, pipes, timer and slot.
    fn close_pair(&mut self, slot: usize, reason: CloseReason) {
        self.wheel.cancel(&mut self.pairs, slot);
        let mut pair = self.pairs.remove(slot);
        pair.release(&mut self.pools);
        self.shared.global.release();
        if self.at_limit {
            // A slot is free: look at the backlog now rather than at the next retry.
            self.accept_paused_until = None;
            self.accept_again = true;
        }
        let c = &mut self.counters;
        match reason {
            CloseReason::Done | CloseReason::Shutdown => {}
            CloseReason::Error(_) => c.errors += 1,
            CloseReason::ConnectFailed(_) => c.backend_connect_failures += 1,
            CloseReason::ConnectTimeout => c.backend_connect_timeouts += 1,
            CloseReason::IdleTimeout => c.idle_timeouts += 1,
            CloseReason::Stalled => c.pairs_stalled += 1,
        }
        match reason {
            CloseReason::ConnectFailed(e) => {
                let backend = self.listeners[pair.listener as usize].backend;
                self.log_limited(format_args!(
                    "connect to {backend} failed: {}",
                    sys::errno_name(e)
                ));
            }
            CloseReason::ConnectTimeout => {
                let backend = self.listeners[pair.listener as usize].backend;
                self.log_limited(format_args!("connect to {backend} timed out"));
            }
            CloseReason::Stalled => {
                self.log_limited(format_args!("closed a pair that made no progress (a bug)"))
            }
            CloseReason::Error(e) if self.shared.config.verbose => {
                self.log(format_args!("connection closed: {}", sys::errno_name(e)))
            }
            _ => {}
        }
        // Dropping `pair` closes both sockets, which also removes them from epoll.
        drop(pair);
    }

    fn begin_stop(&mut self) {
        if self.stop_deadline.is_some() {
            return;
        }
        for l in &mut self.listeners {
            if let Some(mut socket) = l.socket.take() {
                let _ = self.poll.registry().deregister(&mut socket);
            }
            l.ready = false;
        }
        self.stop_deadline = Some(self.now + self.shared.config.grace);
    }

    /// While stopping: true once no pair is left (closing stragglers at the deadline).
    fn finish_stop(&mut self) -> bool {
        let deadline = self.stop_deadline.expect("called only while stopping");
        if self.now >= deadline {
            let slots: Vec<usize> = self.pairs.iter().map(|(slot, _)| slot).collect();
            for slot in slots {
                self.close_pair(slot, CloseReason::Shutdown);
            }
        }
        self.pairs.is_empty()
    }

    fn publish(&mut self) {
        let c = &mut self.counters;
        c.connections_active = self.pairs.len() as u64;
        c.slab_in_use = self.pairs.len() as u64;
        c.buffers_in_use = self.pools.buffers.in_use() as u64;
        c.pipes_in_use = self.pools.pipes.in_use() as u64;
        c.worker_heap_allocations = alloc_count::thread_allocations();
        self.shared.counters[self.id].publish(c);
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
