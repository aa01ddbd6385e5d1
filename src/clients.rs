//! Open connections per client address, for `max_conns_per_client`.
//!
//! One table for the whole process (every worker, every generation), since
//! SO_REUSEPORT spreads one client's connections over all workers. Only
//! listeners with a limit count their connections here. The table is split
//! into shards, each a small mutex-guarded map, touched once at accept and
//! once at close, never per event. Each shard reserves room up front for
//! its share of `--max-conns` addresses, so the maps do not grow on the hot
//! path unless the addresses cluster in one shard. An entry is removed when
//! its count drops to zero, so the table holds at most one entry per open
//! counted connection.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

const SHARDS: usize = 64;

#[derive(Debug)]
pub struct ClientTable {
    shards: Vec<Mutex<HashMap<IpAddr, u32>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl ClientTable {
    /// A table with room for about `addresses` client addresses.
    pub fn new(addresses: usize) -> ClientTable {
        let per_shard = addresses / SHARDS * 2 + 16;
        ClientTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_capacity(per_shard)))
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[self.hasher.hash_one(ip) as usize % SHARDS]
    }

    /// Count one more connection from `ip` unless it has `limit` open
    /// already; whether it was counted (and must be [`leave`](Self::leave)
    /// once closed).
    pub fn try_enter(&self, ip: IpAddr, limit: usize) -> bool {
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        let open = shard.entry(ip).or_insert(0);
        if *open as usize >= limit {
            if *open == 0 {
                shard.remove(&ip);
            }
            return false;
        }
        *open += 1;
        true
    }

    /// A counted connection from `ip` closed.
    pub fn leave(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = shard.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                shard.remove(&ip);
            }
        } else {
            debug_assert!(false, "a client connection left twice");
        }
    }

    /// Open counted connections from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        let shard = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(&ip).map_or(0, |&n| n as usize)
    }

    /// Addresses with a counted connection open.
    pub fn addresses(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

impl Default for ClientTable {
    /// A table that reserves little: for a process with no limit set.
    fn default() -> Self {
        ClientTable::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_address_up_to_its_limit_and_forgets_it_at_zero() {
        let t = ClientTable::new(100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(t.try_enter(a, 2));
        assert!(t.try_enter(a, 2));
        assert!(!t.try_enter(a, 2), "a third connection over a limit of 2");
        assert!(t.try_enter(b, 2), "another address has its own count");
        assert_eq!((t.open(a), t.open(b), t.addresses()), (2, 1, 2));
        t.leave(a);
        assert!(t.try_enter(a, 2), "room again after one closed");
        t.leave(a);
        t.leave(a);
        t.leave(b);
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let t = ClientTable::new(10);
        assert!(t.try_enter("::ffff:127.0.0.1".parse().unwrap(), 1));
        assert!(!t.try_enter("127.0.0.1".parse().unwrap(), 1));
        t.leave("127.0.0.1".parse().unwrap());
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn a_refusal_leaves_no_entry() {
        let t = ClientTable::new(10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!t.try_enter(a, 0));
        assert_eq!(t.addresses(), 0);
    }
}
