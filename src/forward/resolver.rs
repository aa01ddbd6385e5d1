//! Name resolution off the event loop: resolver threads run the system's
//! blocking lookup (getaddrinfo) and hand each answer back to the worker
//! that asked, through that worker's channel and a wake of its poll.
//!
//! The pool is elastic, so that one slow lookup (getaddrinfo can take 5-30 s
//! against a dead DNS server) never delays other clients: [`MIN_THREADS`]
//! threads always wait; a thread that takes a query and leaves no other
//! thread idle starts a spare one, up to [`MAX_THREADS`]; a thread idle for
//! [`IDLE_EXIT`] ends, unless it is the last idle one or the pool is at its
//! minimum. The spare is started by a resolver thread, never by a worker,
//! so no worker's loop waits for a thread to be created. Only when
//! [`MAX_THREADS`] lookups hang at once do later ones wait for a thread.
//!
//! Each worker keeps its own bounded cache ([`Dns`]), so a name it has
//! resolved in the last [`TTL`] is answered at once, with no thread hop and
//! no lock; failures are remembered for [`NEGATIVE_TTL`]. Queries wait in a
//! bounded queue ([`QUEUE`]): when it is full the request is answered 503
//! rather than queued without end. A name already being looked up for a
//! pair of the worker is not asked again: later pairs wait for the same
//! answer (at most [`QUEUE`] of them per name). The threads end once every
//! [`Resolver`] handle (one per worker) is dropped.

use mio::Waker;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Resolver threads that always wait for queries.
pub const MIN_THREADS: usize = 2;
/// Resolver threads at most: as many lookups may hang at once before a
/// query waits in the queue for a thread. Each thread holds a small stack
/// (the default 2 MiB is reserved, only what is touched is used).
pub const MAX_THREADS: usize = 64;
/// How long a thread beyond the minimum waits for a query before it ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Lookups waiting for a thread, at most.
pub const QUEUE: usize = 1024;
/// How long a resolved name is reused (getaddrinfo does not tell the record's TTL).
pub const TTL: Duration = Duration::from_secs(60);
/// How long a failed name is answered 502 without asking again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Names one worker's cache holds, at most.
pub const CACHE_SIZE: usize = 1024;

/// A lookup a worker asks for, on behalf of the pair in `slot`.
struct Query {
    worker: usize,
    slot: usize,
    gen: u32,
    host: Box<str>,
}

/// The result of a lookup, for the pair that asked.
pub struct Answer {
    pub slot: usize,
    pub gen: u32,
    pub host: Box<str>,
    pub ip: Option<IpAddr>,
}

/// The size of the pool: [`Tuning::DEFAULT`] in production, smaller and
/// quicker in tests. `min` is at least 1, since spares are started by the
/// threads that go busy.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub min: usize,
    pub max: usize,
    pub idle_exit: Duration,
}

impl Tuning {
    pub const DEFAULT: Tuning = Tuning {
        min: MIN_THREADS,
        max: MAX_THREADS,
        idle_exit: IDLE_EXIT,
    };
}

/// The queue and the thread counts, under one lock shared by the workers
/// (who push) and the resolver threads (who pop).
struct State {
    queue: VecDeque<Query>,
    /// Threads alive, or being started.
    threads: usize,
    /// Threads waiting for a query (counted from before they wait).
    idle: usize,
    /// Every [`Resolver`] handle is gone: the threads end.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a query is queued, or when the pool closes.
    ready: Condvar,
}

impl Shared {
    /// The shared side of a pool whose first `threads` are being started.
    fn new(threads: usize) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                threads,
                idle: threads,
                closed: false,
            }),
            ready: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the resolver threads hold: the queue, the way back to each worker
/// and the lookup itself (a plain function in production, so the call is
/// direct; a test passes one that blocks).
struct Pool<L> {
    shared: Arc<Shared>,
    outboxes: Vec<(Sender<Answer>, Arc<Waker>)>,
    lookup: L,
    tuning: Tuning,
}

/// Closes the pool when the last [`Resolver`] clone is dropped.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// The process's resolver pool (cloned into each worker's [`Dns`]).
#[derive(Clone)]
pub struct Resolver {
    handle: Arc<Handle>,
}

impl Resolver {
    /// Queue `query` for a thread, or give it back if the queue is full or
    /// the pool is closed.
    fn send(&self, query: Query) -> Result<(), Query> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        if state.closed || state.queue.len() >= QUEUE {
            return Err(query);
        }
        state.queue.push_back(query);
        drop(state);
        shared.ready.notify_one();
        Ok(())
    }

    /// Threads alive now (for tests).
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.handle.shared.lock().threads
    }
}

/// Start the resolver threads; returns the handle and each worker's inbox.
pub fn start(wakers: Vec<Arc<Waker>>) -> std::io::Result<(Resolver, Vec<Receiver<Answer>>)> {
    start_with(wakers, Tuning::DEFAULT, lookup)
}

/// [`start`] with the pool's size and the lookup function given.
pub fn start_with<L>(
    wakers: Vec<Arc<Waker>>,
    tuning: Tuning,
    lookup: L,
) -> std::io::Result<(Resolver, Vec<Receiver<Answer>>)>
where
    L: Fn(&str) -> Option<IpAddr> + Send + Sync + 'static,
{
    debug_assert!(1 <= tuning.min && tuning.min <= tuning.max);
    let shared = Shared::new(tuning.min);
    // Made first, so that an error below closes the threads already started.
    let resolver = Resolver {
        handle: Arc::new(Handle {
            shared: shared.clone(),
        }),
    };
    let mut outboxes = Vec::new();
    let mut receivers = Vec::new();
    for waker in wakers {
        let (tx, rx) = mpsc::channel();
        outboxes.push((tx, waker));
        receivers.push(rx);
    }
    let pool = Arc::new(Pool {
        shared,
        outboxes,
        lookup,
        tuning,
    });
    for started in 0..tuning.min {
        if let Err(e) = spawn(&pool) {
            let mut state = pool.shared.lock();
            state.threads -= tuning.min - started;
            state.idle -= tuning.min - started;
            return Err(e);
        }
    }
    Ok((resolver, receivers))
}

/// Start one resolver thread, already counted as alive and idle.
fn spawn<L>(pool: &Arc<Pool<L>>) -> std::io::Result<()>
where
    L: Fn(&str) -> Option<IpAddr> + Send + Sync + 'static,
{
    let pool = pool.clone();
    std::thread::Builder::new()
        .name("ferry-resolver".into())
        .spawn(move || serve(&pool))
        .map(drop)
}

/// A resolver thread: take a query, look it up, answer; end when idle too
/// long (beyond the minimum) or when the pool closes.
fn serve<L>(pool: &Arc<Pool<L>>)
where
    L: Fn(&str) -> Option<IpAddr> + Send + Sync + 'static,
{
    let shared = &pool.shared;
    let tuning = pool.tuning;
    let mut state = shared.lock();
    loop {
        // Idle here, and counted so.
        let query = loop {
            if state.closed {
                break None;
            }
            if let Some(query) = state.queue.pop_front() {
                break Some(query);
            }
            let (guard, waited) = shared
                .ready
                .wait_timeout(state, tuning.idle_exit)
                .unwrap_or_else(PoisonError::into_inner);
            state = guard;
            let spare = state.threads > tuning.min && state.idle > 1;
            if waited.timed_out() && state.queue.is_empty() && spare {
                break None;
            }
        };
        state.idle -= 1;
        let Some(query) = query else {
            state.threads -= 1;
            return;
        };
        // The last idle thread went busy: start a spare for the next query.
        let grow = state.idle == 0 && state.threads < tuning.max;
        if grow {
            state.threads += 1;
            state.idle += 1;
        }
        drop(state);
        if grow && spawn(pool).is_err() {
            // No thread now (out of memory or threads): queries wait for
            // the busy ones, and the next busy thread tries again.
            let mut state = shared.lock();
            state.threads -= 1;
            state.idle -= 1;
        }
        answer(pool, query);
        state = shared.lock();
        state.idle += 1;
    }
}

/// Look `query` up and send the answer to the worker that asked.
fn answer<L>(pool: &Pool<L>, query: Query)
where
    L: Fn(&str) -> Option<IpAddr>,
{
    let ip = (pool.lookup)(&query.host);
    let Some((tx, waker)) = pool.outboxes.get(query.worker) else {
        return;
    };
    let answer = Answer {
        slot: query.slot,
        gen: query.gen,
        host: query.host,
        ip,
    };
    if tx.send(answer).is_ok() {
        let _ = waker.wake();
    }
}

/// The system's answer for `host`, preferring IPv4 (most origins listen
/// there, and a name such as `localhost` often lists ::1 first).
fn lookup(host: &str) -> Option<IpAddr> {
    let addrs: Vec<SocketAddr> = (host, 0).to_socket_addrs().ok()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map(|a| a.ip())
}

/// What a worker's cache knows about a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    Ip(IpAddr),
    /// The name did not resolve a moment ago.
    Failed,
    Unknown,
}

/// Whether a lookup could be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    Queued,
    /// The name is being looked up already: the pair waits for that answer.
    Joined,
    /// The queue is full (or the resolver is gone).
    Busy,
}

struct Entry {
    ip: Option<IpAddr>,
    expires: Instant,
}

/// One worker's side of resolution: its cache, inbox and the resolver handle.
pub struct Dns {
    worker: usize,
    resolver: Resolver,
    pub answers: Receiver<Answer>,
    cache: HashMap<Box<str>, Entry>,
    /// Names asked and not yet answered, with the pairs (slot, generation)
    /// that joined the first asker.
    pending: HashMap<Box<str>, Vec<(usize, u32)>>,
}

impl Dns {
    pub fn new(worker: usize, resolver: Resolver, answers: Receiver<Answer>) -> Dns {
        Dns {
            worker,
            resolver,
            answers,
            cache: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    pub fn cached(&self, host: &str, now: Instant) -> Cached {
        match self.cache.get(host) {
            Some(e) if e.expires > now => e.ip.map_or(Cached::Failed, Cached::Ip),
            _ => Cached::Unknown,
        }
    }

    /// Ask the resolver threads about `host` for the pair in `slot`, or
    /// let it wait for the answer to a lookup already asked.
    pub fn ask(&mut self, slot: usize, gen: u32, host: &str) -> Asked {
        if let Some(waiting) = self.pending.get_mut(host) {
            if waiting.len() >= QUEUE {
                return Asked::Busy;
            }
            waiting.push((slot, gen));
            return Asked::Joined;
        }
        let query = Query {
            worker: self.worker,
            slot,
            gen,
            host: host.into(),
        };
        match self.resolver.send(query) {
            Ok(()) => {
                self.pending.insert(host.into(), Vec::new());
                Asked::Queued
            }
            Err(_) => Asked::Busy,
        }
    }

    /// Take an answer in: cache it, and return the pairs (slot, generation)
    /// that joined the lookup besides the one that asked it.
    pub fn answered(&mut self, answer: &Answer, now: Instant) -> Vec<(usize, u32)> {
        self.store(answer.host.clone(), answer.ip, now);
        self.pending.remove(&answer.host).unwrap_or_default()
    }

    /// Remember an answer. A full cache drops what expired, or else everything.
    pub fn store(&mut self, host: Box<str>, ip: Option<IpAddr>, now: Instant) {
        if self.cache.len() >= CACHE_SIZE && !self.cache.contains_key(&host) {
            self.cache.retain(|_, e| e.expires > now);
            if self.cache.len() >= CACHE_SIZE {
                self.cache.clear();
            }
        }
        let ttl = if ip.is_some() { TTL } else { NEGATIVE_TTL };
        self.cache.insert(
            host,
            Entry {
                ip,
                expires: now + ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A pool with no threads: queries stay in its queue.
    fn unserved() -> Resolver {
        Resolver {
            handle: Arc::new(Handle {
                shared: Shared::new(0),
            }),
        }
    }

    /// The hosts in the queue of `resolver`, taken out.
    fn queued(resolver: &Resolver) -> Vec<(usize, Box<str>)> {
        let mut state = resolver.handle.shared.lock();
        state.queue.drain(..).map(|q| (q.slot, q.host)).collect()
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        assert!(lookup("localhost").is_some_and(|ip| ip.is_loopback()));
        assert_eq!(lookup("no-such-host.invalid"), None);
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let (_tx, answers) = mpsc::channel();
        let mut dns = Dns::new(0, unserved(), answers);
        let now = Instant::now();
        dns.store("a".into(), Some([10, 0, 0, 1].into()), now);
        dns.store("b".into(), None, now);
        assert_eq!(dns.cached("a", now), Cached::Ip([10, 0, 0, 1].into()));
        assert_eq!(dns.cached("b", now), Cached::Failed);
        assert_eq!(dns.cached("b", now + NEGATIVE_TTL), Cached::Unknown);
        assert_eq!(dns.cached("a", now + TTL), Cached::Unknown);
        for i in 0..CACHE_SIZE + 10 {
            dns.store(format!("h{i}").into(), None, now);
        }
        assert!(dns.cache.len() <= CACHE_SIZE);
        // The queue is bounded: once it is full, a new name finds it busy.
        for i in 0..QUEUE {
            assert_eq!(dns.ask(i, 0, &format!("q{i}")), Asked::Queued);
        }
        assert_eq!(dns.ask(0, 0, "y"), Asked::Busy);
    }

    #[test]
    fn a_name_being_looked_up_is_not_asked_again() {
        let (_tx, answers) = mpsc::channel();
        let resolver = unserved();
        let mut dns = Dns::new(0, resolver.clone(), answers);
        assert_eq!(dns.ask(1, 10, "a"), Asked::Queued);
        assert_eq!(dns.ask(2, 20, "a"), Asked::Joined);
        assert_eq!(dns.ask(3, 30, "a"), Asked::Joined);
        assert_eq!(dns.ask(4, 40, "b"), Asked::Queued);
        assert_eq!(queued(&resolver), [(1, "a".into()), (4, "b".into())]);
        let answer = Answer {
            slot: 1,
            gen: 10,
            host: "a".into(),
            ip: Some([10, 0, 0, 1].into()),
        };
        let now = Instant::now();
        assert_eq!(dns.answered(&answer, now), [(2, 20), (3, 30)]);
        assert_eq!(dns.cached("a", now), Cached::Ip([10, 0, 0, 1].into()));
        // Answered: the next miss asks again (here after the cache expired).
        assert_eq!(dns.ask(5, 50, "a"), Asked::Queued);
        // Joiners are bounded like the queue.
        for i in 0..QUEUE {
            assert_eq!(dns.ask(100 + i, 0, "b"), Asked::Joined);
        }
        assert_eq!(dns.ask(9999, 0, "b"), Asked::Busy);
    }

    /// A gate the test opens: lookups of names starting with "slow" wait
    /// at it (as getaddrinfo against a dead DNS server would), the others
    /// answer 127.0.0.1 at once.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl Gate {
        fn lookup(&self) -> impl Fn(&str) -> Option<IpAddr> + Send + Sync + 'static {
            let gate = self.clone();
            move |host: &str| {
                if host.starts_with("slow") {
                    let (open, opened) = &*gate.0;
                    let mut open = open.lock().unwrap();
                    while !*open {
                        open = opened.wait(open).unwrap();
                    }
                }
                Some(Ipv4Addr::LOCALHOST.into())
            }
        }

        fn open(&self) {
            *self.0 .0.lock().unwrap() = true;
            self.0 .1.notify_all();
        }
    }

    /// A pool with `tuning` whose lookups wait at `gate`, answering worker 0
    /// (whose poll is returned too, to keep its waker alive).
    fn gated(tuning: Tuning, gate: &Gate) -> (mio::Poll, Resolver, Dns) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (resolver, mut inboxes) = start_with(vec![waker], tuning, gate.lookup()).unwrap();
        let dns = Dns::new(0, resolver.clone(), inboxes.remove(0));
        (poll, resolver, dns)
    }

    /// Wait (10 s at most) until `done` holds.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    const QUICK: Tuning = Tuning {
        idle_exit: Duration::from_millis(100),
        ..Tuning::DEFAULT
    };

    #[test]
    fn slow_lookups_in_flight_do_not_delay_another_name() {
        let gate = Gate::default();
        let (_poll, resolver, mut dns) = gated(QUICK, &gate);
        for i in 0..10 {
            assert_eq!(dns.ask(i, 0, &format!("slow{i}")), Asked::Queued);
        }
        // A fixed pool of fewer threads fails here already: some slow names
        // stay queued behind the hanging ones.
        eventually("10 slow lookups in flight at once", || {
            resolver.handle.shared.lock().queue.is_empty()
        });
        assert_eq!(dns.ask(10, 0, "fast"), Asked::Queued);
        // With a fixed pool of fewer than 11 threads this answer would wait
        // for the gate, which only opens below.
        let answer = dns.answers.recv_timeout(Duration::from_secs(10));
        let answer = answer.expect("the other name is answered while the slow ones hang");
        assert_eq!((answer.slot, &*answer.host), (10, "fast"));
        let threads = resolver.threads();
        assert!((11..=MAX_THREADS).contains(&threads), "{threads} threads");

        gate.open();
        let mut slow: Vec<usize> = (0..10)
            .map(|_| {
                dns.answers
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap()
                    .slot
            })
            .collect();
        slow.sort_unstable();
        assert_eq!(slow, (0..10).collect::<Vec<_>>());
        // Idle for QUICK.idle_exit, the threads beyond the minimum end.
        eventually("the pool shrinks to its minimum", || {
            resolver.threads() == MIN_THREADS
        });
        // And every thread ends once the workers' handles are gone.
        let shared = resolver.handle.shared.clone();
        drop((resolver, dns));
        eventually("the pool ends", || shared.lock().threads == 0);
    }

    #[test]
    fn the_pool_grows_no_further_than_its_cap() {
        let gate = Gate::default();
        let tuning = Tuning {
            min: 1,
            max: 3,
            ..QUICK
        };
        let (_poll, resolver, mut dns) = gated(tuning, &gate);
        for i in 0..5 {
            assert_eq!(dns.ask(i, 0, &format!("slow{i}")), Asked::Queued);
        }
        // Three threads hang; the two other names wait in the queue.
        eventually("the cap reached", || {
            let state = resolver.handle.shared.lock();
            state.threads == 3 && state.idle == 0 && state.queue.len() == 2
        });
        std::thread::sleep(QUICK.idle_exit * 2);
        assert_eq!(resolver.threads(), 3);
        gate.open();
        for _ in 0..5 {
            dns.answers.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        eventually("the pool shrinks to its minimum", || {
            resolver.threads() == 1
        });
    }
}
