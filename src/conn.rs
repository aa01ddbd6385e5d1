//! Backend connections: a slab of their own, so a connection keeps one token
//! for its whole life whether it serves a pair or waits in a worker's pool.
//!
//! A connection is owned by at most one pair (`owner`). While it has no
//! owner it sits in its backend's idle list, still registered with epoll, so
//! that the backend closing it (or sending stray bytes) evicts it at once,
//! and its pool timer (`--pool-idle-timeout`) closes it before the backend
//! would (Apache's KeepAliveTimeout is 5 s).

use crate::relay::Ready;
use crate::timer::{Timed, TimerNode};
use mio::net::TcpStream;

pub struct Conn {
    pub gen: u32,
    pub stream: TcpStream,
    pub ready: Ready,
    /// Index of the backend in the worker's backend list.
    pub backend: u32,
    /// The pair this connection serves, if any.
    pub owner: Option<usize>,
    /// The listener of the pair it serves or served last (whose counters
    /// an eviction from the pool goes to).
    pub listener: u16,
    /// Requests completed on this connection.
    pub requests: u32,
    /// Taken from the pool for the current request (a failure may be a
    /// stale connection rather than a dead backend).
    pub reused: bool,
    /// Carrying a request now (counted in its backend's load).
    pub busy: bool,
    /// Kept with its client (the pool was full): the tick from which it is
    /// as stale as a pooled connection past `--pool-idle-timeout`.
    pub kept_until: u64,
    pub timer: TimerNode,
}

impl Timed for Conn {
    fn timer(&mut self) -> &mut TimerNode {
        &mut self.timer
    }
}

impl Conn {
    pub fn new(gen: u32, stream: TcpStream, backend: u32, owner: usize, listener: u16) -> Conn {
        Conn {
            gen,
            stream,
            ready: Ready::default(),
            backend,
            owner: Some(owner),
            listener,
            requests: 0,
            reused: false,
            busy: false,
            kept_until: 0,
            timer: TimerNode::default(),
        }
    }
}
