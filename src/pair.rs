//! A connection pair: the client socket, the backend connection serving it
//! (if any), the two directions between them, and where the pair stands.
//!
//! TCP mode:
//! ```text
//! Connecting --connected--> Relaying --both flows Shut--> (closed)
//!      \--refused/timeout--> (closed)     \--error/idle/stall--> (closed)
//! ```
//! HTTP mode (see `http::session`) adds `Waiting` (reading the next request
//! head, no backend) and `Closing` (ferry's answer or the last response is
//! out; lingering before the close), and goes round
//! `Waiting -> Connecting -> Relaying -> Waiting` once per request.
//!
//! The pair lives in one slab slot; its client token carries that slot and
//! the pair's generation, its backend connection has a token of its own
//! (`conn.rs`). [`relay`] moves the bytes both ways; the worker owns the one
//! close path (`Worker::close_pair`), which returns everything.

use crate::conn::Conn;
use crate::http::session::Exchange;
use crate::net::{self, ConnectCheck};
use crate::relay::{Flow, FlowState, Pools, Ready, Step, Tally};
use crate::stats::Counters;
use crate::timer::{Timed, TimerNode};
use crate::token::Side;
use mio::net::TcpStream;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// Where the pair stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// HTTP: gathering a request head; no backend attached.
    Waiting,
    /// Forward: the origin's name is being resolved; no backend attached.
    Resolving,
    /// The backend connect is in progress.
    Connecting,
    /// Bytes flow between client and backend.
    Relaying,
    /// HTTP: the last bytes to the client are out or going; lingering.
    Closing,
}

/// Why a pair is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions ended cleanly.
    Done,
    /// A socket failed with this errno.
    Error(Side, i32),
    /// The backend refused or failed the connect.
    ConnectFailed(i32),
    ConnectTimeout,
    IdleTimeout,
    /// The pair spun without moving a byte.
    Stalled,
    /// A peer broke the message framing.
    Invalid(Side, &'static str),
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
    /// The backend connect just completed.
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
    pub client_ready: Ready,
    pub client_ip: IpAddr,
    /// The backend connection (a slot in the worker's connection slab).
    pub backend: Option<usize>,
    /// client -> backend
    pub to_backend: Flow,
    /// backend -> client
    pub to_client: Flow,
    pub timer: TimerNode,
    /// The tick the pair's timer should fire at (0: none).
    pub deadline: u64,
    /// Tick of the last byte moved, for the lazily checked idle timeout.
    pub last_active: u64,
    /// In the worker's run queue.
    pub queued: bool,
    /// HTTP: the request/response exchange in progress.
    pub exchange: Exchange,
    /// Where the client stands with its listener's `max_conns_per_client`.
    pub client_limit: ClientLimit,
}

/// A pair's client under its listener's `max_conns_per_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientLimit {
    /// The listener sets no limit: not counted.
    None,
    /// Counted in the process's client table; uncounted at close.
    Counted,
    /// Over the limit, not counted: HTTP answers its first request 429.
    Refused,
}

impl Timed for Pair {
    fn timer(&mut self) -> &mut TimerNode {
        &mut self.timer
    }
}

impl Pair {
    pub fn new(
        gen: u32,
        listener: u16,
        client: TcpStream,
        client_ip: IpAddr,
        client_limit: ClientLimit,
        phase: Phase,
        tick: u64,
    ) -> Pair {
        Pair {
            gen,
            listener,
            phase,
            client,
            client_ready: Ready::default(),
            client_ip,
            backend: None,
            to_backend: Flow::default(),
            to_client: Flow::default(),
            timer: TimerNode::default(),
            deadline: 0,
            last_active: tick,
            queued: false,
            exchange: Exchange::default(),
            client_limit,
        }
    }

    /// Give back both flows' carriers (on close).
    pub fn release(&mut self, pools: &mut Pools) {
        self.to_backend.release(pools);
        self.to_client.release(pools);
    }
}

/// TCP mode: do what the sockets' readiness allows.
pub fn drive_tcp(
    pair: &mut Pair,
    conn: &mut Conn,
    pools: &mut Pools,
    counters: &mut Counters,
    tick: u64,
) -> Outcome {
    match pair.phase {
        Phase::Connecting => check_connect(pair, conn),
        Phase::Relaying => match relay(pair, Some(conn), pools, counters, tick) {
            Outcome::Idle => half_close(pair, conn),
            other => other,
        },
        Phase::Waiting | Phase::Resolving | Phase::Closing => {
            unreachable!("TCP pairs never wait for a head")
        }
    }
}

/// Has the backend connect finished, and how?
pub fn check_connect(pair: &mut Pair, conn: &mut Conn) -> Outcome {
    if pair.client_ready.has(Ready::ERROR) {
        return Outcome::Close(CloseReason::Error(Side::Client, libc::ECONNRESET));
    }
    if !conn.ready.has(Ready::WRITE | Ready::ERROR) {
        return Outcome::Idle;
    }
    if !conn.ready.has(Ready::ERROR) {
        // On Linux a connecting socket reports writable only once the
        // handshake completed; a failure always comes with EPOLLERR.
        pair.phase = Phase::Relaying;
        return Outcome::Connected;
    }
    match net::check_connect(&conn.stream) {
        ConnectCheck::Connected => {
            pair.phase = Phase::Relaying;
            conn.ready.clear(Ready::ERROR);
            Outcome::Connected
        }
        ConnectCheck::InProgress => {
            conn.ready.clear(Ready::WRITE | Ready::ERROR);
            Outcome::Idle
        }
        ConnectCheck::Failed(e) => Outcome::Close(CloseReason::ConnectFailed(
            e.raw_os_error().unwrap_or(libc::EIO),
        )),
    }
}

/// Move bytes both ways until both directions block, the budget is spent,
/// or a socket fails. Without a backend (HTTP between requests) the backend
/// side is never ready, so only client-side work happens.
pub fn relay(
    pair: &mut Pair,
    conn: Option<&mut Conn>,
    pools: &mut Pools,
    c: &mut Counters,
    tick: u64,
) -> Outcome {
    let client = pair.client.as_raw_fd();
    let mut no_backend = Ready::default();
    let (backend, backend_ready) = match conn {
        Some(conn) => (conn.stream.as_raw_fd(), &mut conn.ready),
        None => (-1, &mut no_backend),
    };
    let mut moved = 0usize;
    let mut outcome = Outcome::Close(CloseReason::Stalled);
    for _ in 0..MAX_ROUNDS {
        let up = pair.to_backend.step(
            client,
            &mut pair.client_ready,
            backend,
            backend_ready,
            pair.to_client.state == FlowState::Shut,
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
            backend_ready,
            client,
            &mut pair.client_ready,
            pair.to_backend.state == FlowState::Shut,
            pools,
            &mut Tally {
                bytes: &mut c.bytes_backend_to_client,
                spliced: &mut c.bytes_spliced_backend_to_client,
                read_ns: &mut c.backend_read_seconds,
                write_ns: &mut c.client_write_seconds,
            },
        );
        let side = |at_src: bool, src: Side, dst: Side| if at_src { src } else { dst };
        match (up, down) {
            (Step::Fatal { errno, at_src }, _) => {
                outcome = Outcome::Close(CloseReason::Error(
                    side(at_src, Side::Client, Side::Backend),
                    errno,
                ));
                break;
            }
            (_, Step::Fatal { errno, at_src }) => {
                outcome = Outcome::Close(CloseReason::Error(
                    side(at_src, Side::Backend, Side::Client),
                    errno,
                ));
                break;
            }
            (Step::Invalid(why), _) => {
                outcome = Outcome::Close(CloseReason::Invalid(Side::Client, why));
                break;
            }
            (_, Step::Invalid(why)) => {
                outcome = Outcome::Close(CloseReason::Invalid(Side::Backend, why));
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
    outcome
}

fn worked(step: Step) -> usize {
    match step {
        Step::Worked(n) => n,
        _ => 0,
    }
}

/// The half-close table: what the pair's two directions together mean.
fn half_close(pair: &mut Pair, conn: &mut Conn) -> Outcome {
    use FlowState::*;
    match (pair.to_backend.state, pair.to_client.state) {
        // Both peers ended and everything was delivered.
        (Shut, Shut) => Outcome::Close(CloseReason::Done),
        // At least one direction still carries bytes or awaits them.
        (Open | Draining, _) | (_, Open | Draining) => pending_error(pair, conn),
    }
}

/// A socket reported an error while nothing was in flight to reveal it.
pub fn pending_error(pair: &mut Pair, conn: &mut Conn) -> Outcome {
    for (side, stream, ready) in [
        (Side::Client, &pair.client, &mut pair.client_ready),
        (Side::Backend, &conn.stream, &mut conn.ready),
    ] {
        if ready.has(Ready::ERROR) {
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return Outcome::Close(CloseReason::Error(
                        side,
                        e.raw_os_error().unwrap_or(libc::EIO),
                    ))
                }
                Ok(None) => ready.clear(Ready::ERROR),
            }
        }
    }
    Outcome::Idle
}
