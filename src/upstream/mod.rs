//! Backend sets: the backends a listener sends to, whether each is up, and
//! how a worker picks one (round-robin, least connections, power of two
//! random choices).
//!
//! Health is shared across workers as one atomic flag per backend: the
//! health-check thread ([`health`]) raises and lowers it by its rise and fall
//! counts, and a worker lowers it at once when a connect fails (passive
//! marking); only the checker raises it again. Everything else a worker uses
//! to choose (its cursor, its count of connections per backend) is its own.
//! The same shared state counts health-check results and connect failures
//! and timeouts for the metrics (atomics touched only on those rare events),
//! and each worker's pool hits, misses and evictions in a slot of its own
//! (one writer per cache line, so nothing is contended on the hot path).

pub mod health;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// How a worker chooses among the backends that are up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    /// Two random choices, the less loaded wins.
    P2c,
}

impl std::str::FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" => Ok(Balance::RoundRobin),
            "least-conn" => Ok(Balance::LeastConn),
            "p2c" => Ok(Balance::P2c),
            _ => Err(format!("'{s}' is not one of round-robin, least-conn, p2c")),
        }
    }
}

/// What became of a request's need for a backend connection, and of an
/// idle pooled one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolEvent {
    /// Served by a pooled (or kept) connection.
    Hit,
    /// Needed a new connection.
    Miss,
    /// A pooled connection closed by the backend, spoiled, or timed out.
    Eviction,
}

/// One worker's pool figures for one backend, on a cache line of its own;
/// only that worker writes them.
#[repr(align(64))]
#[derive(Debug, Default)]
struct PoolSlot {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// Pool figures of a backend summed over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolFigures {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// One backend as every thread sees it.
#[derive(Debug)]
pub struct BackendState {
    pub addr: SocketAddr,
    up: AtomicBool,
    pub checks_passed: AtomicU64,
    pub checks_failed: AtomicU64,
    pub marked_down: AtomicU64,
    /// Connects to it that failed or timed out (counted by the workers).
    pub connect_failures: AtomicU64,
    pub connect_timeouts: AtomicU64,
    /// Pool figures, one slot per worker (none for forward-mode origins).
    pool: Box<[PoolSlot]>,
}

impl BackendState {
    /// A backend that `workers` workers count pool figures for (0: none).
    pub fn new(addr: SocketAddr, workers: usize) -> BackendState {
        BackendState {
            addr,
            up: AtomicBool::new(true),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            marked_down: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            connect_timeouts: AtomicU64::new(0),
            pool: (0..workers).map(|_| PoolSlot::default()).collect(),
        }
    }

    /// Count a pool event in `worker`'s slot (its only writer: a plain load
    /// and store, no locked instruction).
    pub fn count_pool(&self, worker: usize, event: PoolEvent) {
        let Some(slot) = self.pool.get(worker) else {
            return;
        };
        let counter = match event {
            PoolEvent::Hit => &slot.hits,
            PoolEvent::Miss => &slot.misses,
            PoolEvent::Eviction => &slot.evictions,
        };
        counter.store(counter.load(Relaxed) + 1, Relaxed);
    }

    /// The pool figures summed over workers.
    pub fn pool_figures(&self) -> PoolFigures {
        let mut sum = PoolFigures::default();
        for slot in self.pool.iter() {
            sum.hits += slot.hits.load(Relaxed);
            sum.misses += slot.misses.load(Relaxed);
            sum.evictions += slot.evictions.load(Relaxed);
        }
        sum
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Take the backend out of rotation (a failed connect or check).
    pub fn mark_down(&self) {
        if self.up.swap(false, Relaxed) {
            self.marked_down.fetch_add(1, Relaxed);
        }
    }

    /// A connect to it failed (refused, reset, unreachable).
    pub fn count_connect_failure(&self) {
        self.connect_failures.fetch_add(1, Relaxed);
    }

    /// A connect to it took longer than --connect-timeout.
    pub fn count_connect_timeout(&self) {
        self.connect_timeouts.fetch_add(1, Relaxed);
    }

    /// Put it back (only the health checker does, after `rise` passes).
    pub fn mark_up(&self) {
        self.up.store(true, Relaxed);
    }
}

/// A small xorshift generator for p2c; seeded per worker.
#[derive(Clone, Copy, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

/// The outcome of choosing a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Backend(usize),
    /// Every backend is down.
    NoneUp,
    /// Every backend that is up was tried for this request already.
    Exhausted,
}

/// Choose among `count` backends. `up(i)` says whether backend `i` is up,
/// `load(i)` how many connections this worker has on it; `tried` is a bit
/// set of backends already tried for this request.
pub fn pick(
    balance: Balance,
    count: usize,
    cursor: &mut usize,
    rng: &mut Rng,
    tried: u64,
    up: impl Fn(usize) -> bool,
    load: impl Fn(usize) -> u32,
) -> Pick {
    let usable = |i: usize| up(i) && (i >= 64 || tried & (1 << i) == 0);
    if !(0..count).any(&up) {
        return Pick::NoneUp;
    }
    let candidates = (0..count).filter(|&i| usable(i)).count();
    if candidates == 0 {
        return Pick::Exhausted;
    }
    let nth = |k: usize| {
        (0..count)
            .filter(|&i| usable(i))
            .nth(k)
            .expect("k < candidates")
    };
    let chosen = match balance {
        Balance::RoundRobin => {
            let start = *cursor % count;
            *cursor = cursor.wrapping_add(1);
            (0..count)
                .map(|d| (start + d) % count)
                .find(|&i| usable(i))
                .expect("one is usable")
        }
        Balance::LeastConn => {
            let start = *cursor % count;
            *cursor = cursor.wrapping_add(1);
            (0..count)
                .map(|d| (start + d) % count)
                .filter(|&i| usable(i))
                .min_by_key(|&i| load(i))
                .expect("one is usable")
        }
        Balance::P2c => {
            let a = nth(rng.below(candidates));
            let b = nth(rng.below(candidates));
            if load(b) < load(a) {
                b
            } else {
                a
            }
        }
    };
    Pick::Backend(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_down_and_tried_backends() {
        let (mut cursor, mut rng) = (0, Rng::new(7));
        let up = |i: usize| i != 1;
        let picks: Vec<Pick> = (0..4)
            .map(|_| pick(Balance::RoundRobin, 3, &mut cursor, &mut rng, 0, up, |_| 0))
            .collect();
        assert_eq!(
            picks,
            [
                Pick::Backend(0),
                Pick::Backend(2),
                Pick::Backend(2),
                Pick::Backend(0)
            ]
        );
        assert_eq!(
            pick(
                Balance::RoundRobin,
                3,
                &mut cursor,
                &mut rng,
                0b101,
                up,
                |_| 0
            ),
            Pick::Exhausted
        );
        assert_eq!(
            pick(
                Balance::RoundRobin,
                3,
                &mut cursor,
                &mut rng,
                0,
                |_| false,
                |_| 0
            ),
            Pick::NoneUp
        );
    }

    #[test]
    fn least_conn_and_p2c_prefer_the_less_loaded() {
        let (mut cursor, mut rng) = (0, Rng::new(7));
        let load = |i: usize| [5, 1, 3][i];
        for _ in 0..5 {
            assert_eq!(
                pick(
                    Balance::LeastConn,
                    3,
                    &mut cursor,
                    &mut rng,
                    0,
                    |_| true,
                    load
                ),
                Pick::Backend(1)
            );
        }
        let mut counts = [0; 3];
        for _ in 0..300 {
            if let Pick::Backend(i) =
                pick(Balance::P2c, 3, &mut cursor, &mut rng, 0, |_| true, load)
            {
                counts[i] += 1;
            }
        }
        assert!(counts[1] > counts[2] && counts[2] > counts[0], "{counts:?}");
    }
}
