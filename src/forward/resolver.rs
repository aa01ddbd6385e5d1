//! Name resolution off the event loop: a few resolver threads run the
//! system's blocking lookup (getaddrinfo) and hand each answer back to the
//! worker that asked, through that worker's channel and a wake of its poll.
//!
//! Each worker keeps its own bounded cache ([`Dns`]), so a name it has
//! resolved in the last [`TTL`] is answered at once, with no thread hop and
//! no lock; failures are remembered for [`NEGATIVE_TTL`]. Queries wait in a
//! bounded queue ([`QUEUE`]): when it is full the request is answered 503
//! rather than queued without end. With several threads, one slow lookup
//! does not hold up the others. A name already being looked up for a pair
//! of the worker is not asked again: later pairs wait for the same answer
//! (at most [`QUEUE`] of them per name).

use mio::Waker;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Resolver threads for the whole process.
pub const THREADS: usize = 4;
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

/// The process's resolver threads (cloned into each worker's [`Dns`]).
#[derive(Clone)]
pub struct Resolver {
    queries: SyncSender<Query>,
}

/// Start the resolver threads; returns the handle and each worker's inbox.
pub fn start(wakers: Vec<Arc<Waker>>) -> std::io::Result<(Resolver, Vec<Receiver<Answer>>)> {
    let (queries, inbox) = mpsc::sync_channel::<Query>(QUEUE);
    let inbox = Arc::new(Mutex::new(inbox));
    let mut outboxes: Vec<(Sender<Answer>, Arc<Waker>)> = Vec::new();
    let mut receivers = Vec::new();
    for waker in wakers {
        let (tx, rx) = mpsc::channel();
        outboxes.push((tx, waker));
        receivers.push(rx);
    }
    let outboxes = Arc::new(outboxes);
    for i in 0..THREADS {
        let inbox = inbox.clone();
        let outboxes = outboxes.clone();
        std::thread::Builder::new()
            .name(format!("ferry-resolver-{i}"))
            .spawn(move || serve(&inbox, &outboxes))?;
    }
    Ok((Resolver { queries }, receivers))
}

fn serve(inbox: &Mutex<Receiver<Query>>, outboxes: &[(Sender<Answer>, Arc<Waker>)]) {
    loop {
        let query = match inbox.lock() {
            Ok(rx) => match rx.recv() {
                Ok(q) => q,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let ip = lookup(&query.host);
        let Some((tx, waker)) = outboxes.get(query.worker) else {
            continue;
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
        match self.resolver.queries.try_send(query) {
            Ok(()) => {
                self.pending.insert(host.into(), Vec::new());
                Asked::Queued
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Asked::Busy,
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

    #[test]
    fn localhost_resolves_to_loopback() {
        assert!(lookup("localhost").is_some_and(|ip| ip.is_loopback()));
        assert_eq!(lookup("no-such-host.invalid"), None);
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let (queries, _inbox) = mpsc::sync_channel(1);
        let (_tx, answers) = mpsc::channel();
        let mut dns = Dns::new(0, Resolver { queries }, answers);
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
        // One slot in the queue: the second ask finds it full.
        assert_eq!(dns.ask(0, 0, "x"), Asked::Queued);
        assert_eq!(dns.ask(0, 0, "y"), Asked::Busy);
    }

    #[test]
    fn a_name_being_looked_up_is_not_asked_again() {
        let (queries, inbox) = mpsc::sync_channel(8);
        let (_tx, answers) = mpsc::channel();
        let mut dns = Dns::new(0, Resolver { queries }, answers);
        assert_eq!(dns.ask(1, 10, "a"), Asked::Queued);
        assert_eq!(dns.ask(2, 20, "a"), Asked::Joined);
        assert_eq!(dns.ask(3, 30, "a"), Asked::Joined);
        assert_eq!(dns.ask(4, 40, "b"), Asked::Queued);
        let sent: Vec<(usize, Box<str>)> = inbox.try_iter().map(|q| (q.slot, q.host)).collect();
        assert_eq!(sent, [(1, "a".into()), (4, "b".into())]);
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
}
