//! A connection pair (client socket + backend socket) and its state machine.
//!
//! ```text
//! Connecting --connected--> Relaying --both flows Shut--> (closed)
//!      \--refused/timeout--> (closed)     \--error/idle/stall--> (closed)
//! ```
//!
//! The pair lives in one slab slot; both of its sockets' tokens carry that
//! slot and the pair's generation. [`drive`] does the work an event allows
//! and tells the worker what to do next ([`Outcome`]); the worker owns the
//! one close path (`Worker::close_pair`), which returns everything.

use crate::net::{self, ConnectCheck};
use crate::relay::{Flow, FlowState, Pools, Ready, Step, Tally};
use crate::stats::Counters;
use crate::timer::{Timed, TimerNode};
use mio::net::TcpStream;
use std::os::fd::AsRawFd;

/// Where the pair stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The backend connect is in progress.
    Connecting,
    /// Both sockets are up; bytes flow both ways.
    Relaying,
}

/// Why a pair is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions ended cleanly.
    Done,
    /// A socket failed with this errno.
    Error(i32),
    /// The backend refused or failed the connect.
    ConnectFailed(i32),
    ConnectTimeout,
    IdleTimeout,
    /// The pair spun without moving a byte.
    Stalled,
    /// The worker is stopping and the grace period ran out.
    Shutdown,
}

/// What the worker should do after driving a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Wait for the next event.
    Idle,
    /// The fairness budget ran out with work left: drive again soon.
    Again,
    /// The backend connect just completed: switch timers, then drive again.
    Connected,
    Close(CloseReason),
}

/// Bytes one drive may move before yielding to other pairs.
const BUDGET_BYTES: usize = 256 * 1024;
/// Steps one drive may take; reaching it with no byte moved is a stall.
const MAX_ROUNDS: usize = 1024;

pub struct Pair {
    pub gen: u32,
    pub listener: u16,
    pub phase: Phase,
    pub client: TcpStream,
    pub backend: TcpStream,
    pub client_ready: Ready,
    pub backend_ready: Ready,
    /// client -> backend
    pub to_backend: Flow,
    /// backend -> client
    pub to_client: Flow,
    pub timer: TimerNode,
    /// Tick of the last byte moved, for the lazily checked idle timeout.
    pub last_active: u64,
    /// In the worker's run queue.
    pub queued: bool,
}

impl Timed for Pair {
    fn timer(&mut self) -> &mut TimerNode {
        &mut self.timer
    }
}

impl Pair {
    pub fn new(gen: u32, listener: u16, client: TcpStream, backend: TcpStream, tick: u64) -> Pair {
        Pair {
            gen,
            listener,
            phase: Phase::Connecting,
            client,
            backend,
            client_ready: Ready::default(),
            backend_ready: Ready::default(),
            to_backend: Flow::default(),
            to_client: Flow::default(),
            timer: TimerNode::default(),
            last_active: tick,
            queued: false,
        }
    }

    /// Give back both flows' carriers (on close).
    pub fn release(&mut self, pools: &mut Pools) {
        self.to_backend.release(pools);
        self.to_client.release(pools);
    }
}

/// Do what the sockets' readiness allows.
pub fn drive(pair: &mut Pair, pools: &mut Pools, counters: &mut Counters, tick: u64) -> Outcome {
    match pair.phase {
        Phase::Connecting => check_connect(pair),
        Phase::Relaying => relay(pair, pools, counters, tick),
    }
}

fn check_connect(pair: &mut Pair) -> Outcome {
    if pair.client_ready.has(Ready::ERROR) {
        return Outcome::Close(CloseReason::Error(libc::ECONNRESET));
    }
    if !pair.backend_ready.has(Ready::WRITE | Ready::ERROR) {
        return Outcome::Idle;
    }
    match net::check_connect(&pair.backend) {
        ConnectCheck::Connected => {
            pair.phase = Phase::Relaying;
            pair.backend_ready.clear(Ready::ERROR);
            Outcome::Connected
        }
        ConnectCheck::InProgress => {
            pair.backend_ready.clear(Ready::WRITE | Ready::ERROR);
            Outcome::Idle
        }
        ConnectCheck::Failed(e) => Outcome::Close(CloseReason::ConnectFailed(
            e.raw_os_error().unwrap_or(libc::EIO),
        )),
    }
}

fn relay(pair: &mut Pair, pools: &mut Pools, c: &mut Counters, tick: u64) -> Outcome {
    let client = pair.client.as_raw_fd();
    let backend = pair.backend.as_raw_fd();
    let mut moved = 0usize;
    let mut outcome = Outcome::Close(CloseReason::Stalled);
    for _ in 0..MAX_ROUNDS {
        let up = pair.to_backend.step(
            client,
            &mut pair.client_ready,
            backend,
            &mut pair.backend_ready,
            pools,
            &mut Tally {
                bytes: &mut c.bytes_client_to_backend,
                spliced: &mut c.bytes_spliced_client_to_backend,
                read_ns: &mut c.client_read_seconds,
                write_ns: &mut c.backend_write_seconds,
            },
        );
        let down = pair.to_client.step(
            backend,
            &mut pair.backend_ready,
            client,
            &mut pair.client_ready,
            pools,
            &mut Tally {
                bytes: &mut c.bytes_backend_to_client,
                spliced: &mut c.bytes_spliced_backend_to_client,
                read_ns: &mut c.backend_read_seconds,
                write_ns: &mut c.client_write_seconds,
            },
        );
        match (up, down) {
            (Step::Fatal(e), _) | (_, Step::Fatal(e)) => {
                outcome = Outcome::Close(CloseReason::Error(e));
                break;
            }
            (Step::Blocked, Step::Blocked) => {
                outcome = Outcome::Idle;
                break;
            }
            (a, b) => moved += worked(a) + worked(b),
        }
        if moved >= BUDGET_BYTES {
            outcome = Outcome::Again;
            break;
        }
    }
    if outcome == Outcome::Close(CloseReason::Stalled) && moved > 0 {
        // Many small moves, not a stall: let the others run first.
        outcome = Outcome::Again;
    }
    if moved > 0 {
        pair.last_active = tick;
    }
    pair.to_backend.park(pools);
    pair.to_client.park(pools);
    if outcome == Outcome::Idle {
        return half_close(pair);
    }
    outcome
}

fn worked(step: Step) -> usize {
    match step {
        Step::Worked(n) => n,
        _ => 0,
    }
}

/// The half-close table: what the pair's two directions together mean.
fn half_close(pair: &mut Pair) -> Outcome {
    use FlowState::*;
    match (pair.to_backend.state, pair.to_client.state) {
        // Both peers ended and everything was delivered.
        (Shut, Shut) => Outcome::Close(CloseReason::Done),
        // At least one direction still carries bytes or awaits them.
        (Open | Draining, _) | (_, Open | Draining) => {
            if pair.client_ready.has(Ready::ERROR) || pair.backend_ready.has(Ready::ERROR) {
                pending_error(pair)
            } else {
                Outcome::Idle
            }
        }
    }
}

/// A socket reported an error while nothing was in flight to reveal it.
fn pending_error(pair: &mut Pair) -> Outcome {
    for (stream, ready) in [
        (&pair.client, &mut pair.client_ready),
        (&pair.backend, &mut pair.backend_ready),
    ] {
        if ready.has(Ready::ERROR) {
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return Outcome::Close(CloseReason::Error(
                        e.raw_os_error().unwrap_or(libc::EIO),
                    ))
                }
                Ok(None) => ready.clear(Ready::ERROR),
            }
        }
    }
    Outcome::Idle
}
