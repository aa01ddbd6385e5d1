//! A hashed timing wheel: O(1) arm and cancel, no allocation.
//!
//! Time is cut into ticks of [`TICK`]; a timer due at tick `t` sits in bucket
//! `t % SLOTS`, in an intrusive doubly linked list whose links live in the
//! timed object itself ([`TimerNode`], reached through [`Timed`]). A bitmap of
//! non-empty buckets lets the loop sleep until the next bucket that holds
//! anything. Entries due in a later round of the wheel stay in their bucket
//! until their tick comes.
//!
//! Invariants: a node is in exactly one bucket iff `armed`; `armed_count`
//! equals the number of armed nodes; a bucket's bit is set iff its list is
//! non-empty.

use std::ops::IndexMut;
use std::time::{Duration, Instant};

/// The wheel's resolution.
pub const TICK: Duration = Duration::from_millis(50);
const SLOTS: usize = 2048;
const NIL: u32 = u32::MAX;

/// The links a timed object carries.
#[derive(Clone, Copy, Debug)]
pub struct TimerNode {
    prev: u32,
    next: u32,
    when: u64,
    armed: bool,
}

impl Default for TimerNode {
    fn default() -> Self {
        TimerNode {
            prev: NIL,
            next: NIL,
            when: 0,
            armed: false,
        }
    }
}

impl TimerNode {
    /// The tick this timer is armed for, if armed.
    pub fn when(&self) -> Option<u64> {
        self.armed.then_some(self.when)
    }
}

/// Anything that carries a [`TimerNode`].
pub trait Timed {
    fn timer(&mut self) -> &mut TimerNode;
}

pub struct TimerWheel {
    heads: Vec<u32>,
    occupied: Vec<u64>,
    start: Instant,
    current: u64,
    armed_count: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl TimerWheel {
    pub fn new(start: Instant) -> TimerWheel {
        TimerWheel {
            heads: vec![NIL; SLOTS],
            occupied: vec![0; SLOTS / 64],
            start,
            current: 0,
            armed_count: 0,
        }
    }

    /// The tick `now` falls in.
    pub fn tick_of(&self, now: Instant) -> u64 {
        // u64 arithmetic only: this runs on every loop pass.
        const TICK_MS: u64 = TICK.as_millis() as u64;
        let since = now.saturating_duration_since(self.start);
        since.as_secs() * (1000 / TICK_MS) + since.subsec_millis() as u64 / TICK_MS
    }

    /// The tick that is `after` past `now`, rounded up.
    pub fn deadline(&self, now: Instant, after: Duration) -> u64 {
        let ticks = after.as_millis().div_ceil(TICK.as_millis()) as u64;
        self.tick_of(now) + ticks.max(1)
    }

    /// Arm (or re-arm) `key`'s timer for tick `when`.
    pub fn arm<T: Timed, S: IndexMut<usize, Output = T> + ?Sized>(
        &mut self,
        nodes: &mut S,
        key: usize,
        when: u64,
    ) {
        self.cancel(nodes, key);
        let when = when.max(self.current + 1);
        let bucket = (when % SLOTS as u64) as usize;
        let head = self.heads[bucket];
        {
            let node = nodes[key].timer();
            node.when = when;
            node.prev = NIL;
            node.next = head;
            node.armed = true;
        }
        if head != NIL {
            nodes[head as usize].timer().prev = key as u32;
        }
        self.heads[bucket] = key as u32;
        self.occupied[bucket / 64] |= 1 << (bucket % 64);
        self.armed_count += 1;
    }

    /// Disarm `key`'s timer if it is armed.
    pub fn cancel<T: Timed, S: IndexMut<usize, Output = T> + ?Sized>(
        &mut self,
        nodes: &mut S,
        key: usize,
    ) {
        let node = *nodes[key].timer();
        if !node.armed {
            return;
        }
        let bucket = (node.when % SLOTS as u64) as usize;
        if node.prev == NIL {
            debug_assert_eq!(self.heads[bucket], key as u32);
            self.heads[bucket] = node.next;
            if node.next == NIL {
                self.occupied[bucket / 64] &= !(1 << (bucket % 64));
            }
        } else {
            nodes[node.prev as usize].timer().next = node.next;
        }
        if node.next != NIL {
            nodes[node.next as usize].timer().prev = node.prev;
        }
        *nodes[key].timer() = TimerNode::default();
        self.armed_count -= 1;
    }

    /// Move the wheel to `now`, pushing the keys of every timer now due onto
    /// `due` (disarmed). `due` should have capacity for every timer.
    pub fn expire<T: Timed, S: IndexMut<usize, Output = T> + ?Sized>(
        &mut self,
        nodes: &mut S,
        now: Instant,
        due: &mut Vec<usize>,
    ) {
        let target = self.tick_of(now);
        if target <= self.current {
            return;
        }
        let steps = (target - self.current).min(SLOTS as u64);
        for step in 1..=steps {
            let bucket = ((self.current + step) % SLOTS as u64) as usize;
            let mut key = self.heads[bucket];
            while key != NIL {
                let node = *nodes[key as usize].timer();
                if node.when <= target {
                    self.cancel(nodes, key as usize);
                    due.push(key as usize);
                }
                key = node.next;
            }
        }
        self.current = target;
    }

    /// How long the loop may sleep before the next bucket with a timer in it.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.armed_count == 0 {
            return None;
        }
        let ahead = self.next_occupied()?;
        let at = self.start + TICK * (self.current + ahead) as u32;
        Some(at.saturating_duration_since(now))
    }

    /// Ticks from `current` to the next non-empty bucket (1..=SLOTS), found a
    /// bitmap word at a time.
    fn next_occupied(&self) -> Option<u64> {
        let first = ((self.current + 1) % SLOTS as u64) as usize;
        let words = self.occupied.len();
        for step in 0..=words {
            let w = (first / 64 + step) % words;
            let mut bits = self.occupied[w];
            if step == 0 {
                bits &= !0u64 << (first % 64);
            } else if step == words {
                bits &= !(!0u64 << (first % 64));
            }
            if bits != 0 {
                let bucket = w * 64 + bits.trailing_zeros() as usize;
                let ahead = (bucket + SLOTS - first) % SLOTS + 1;
                return Some(ahead as u64);
            }
        }
        None
    }

    pub fn armed(&self) -> usize {
        self.armed_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Clone)]
    struct Item(TimerNode);
    impl Timed for Item {
        fn timer(&mut self) -> &mut TimerNode {
            &mut self.0
        }
    }

    #[test]
    fn timers_fire_at_their_tick_and_not_before() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let mut items = vec![Item::default(); 4];
        wheel.arm(&mut items[..], 0, 3);
        wheel.arm(&mut items[..], 1, 3);
        wheel.arm(&mut items[..], 2, 10);
        wheel.arm(&mut items[..], 3, 3 + SLOTS as u64);
        let mut due = Vec::new();
        wheel.expire(&mut items[..], t0 + TICK * 2, &mut due);
        assert!(due.is_empty());
        wheel.expire(&mut items[..], t0 + TICK * 3, &mut due);
        due.sort();
        assert_eq!(due, vec![0, 1]);
        assert_eq!(wheel.armed(), 2);
        due.clear();
        wheel.cancel(&mut items[..], 2);
        wheel.expire(&mut items[..], t0 + TICK * 20, &mut due);
        assert!(
            due.is_empty(),
            "a cancelled timer never fires; a later round waits"
        );
        wheel.expire(&mut items[..], t0 + TICK * (3 + SLOTS as u32), &mut due);
        assert_eq!(due, vec![3]);
        assert_eq!(wheel.armed(), 0);
        assert!(wheel.next_timeout(t0).is_none());
    }

    #[test]
    fn rearming_moves_a_timer_and_next_timeout_sees_it() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let mut items = vec![Item::default(); 2];
        wheel.arm(&mut items[..], 0, 5);
        wheel.arm(&mut items[..], 0, 40);
        wheel.arm(&mut items[..], 1, 40);
        assert_eq!(wheel.armed(), 2);
        assert_eq!(wheel.next_timeout(t0), Some(TICK * 40));
        let mut due = Vec::new();
        wheel.expire(&mut items[..], t0 + TICK * 39, &mut due);
        assert!(due.is_empty());
        wheel.expire(&mut items[..], t0 + TICK * 41, &mut due);
        assert_eq!(due.len(), 2);
    }

    #[test]
    fn next_timeout_wraps_around_the_wheel() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(t0);
        let mut items = vec![Item::default(); 2];
        let mut due = Vec::new();
        wheel.expire(&mut items[..], t0 + TICK * 2000, &mut due);
        // Bucket 2100 % 2048 = 52 lies behind the cursor's word.
        wheel.arm(&mut items[..], 0, 2100);
        assert_eq!(wheel.next_timeout(t0 + TICK * 2000), Some(TICK * 100));
        wheel.arm(&mut items[..], 1, 2001);
        assert_eq!(wheel.next_timeout(t0 + TICK * 2000), Some(TICK));
        wheel.cancel(&mut items[..], 1);
        // A timer a whole round ahead sits in the bucket just behind the cursor.
        wheel.arm(&mut items[..], 1, 2000 + 2048);
        wheel.cancel(&mut items[..], 0);
        assert_eq!(wheel.next_timeout(t0 + TICK * 2000), Some(TICK * 2048));
    }
}
