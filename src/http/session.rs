//! The HTTP/1.1 session: one request/response exchange at a time over a
//! pair, on the same relay, buffers and pipes as TCP mode.
//!
//! ```text
//! Waiting --head parsed, rewritten--> (Connect: pooled or new backend)
//!   Connecting --connected--> Relaying --response complete--> Waiting (keep-alive)
//!                                  \--client or backend says close--> Closing
//! any bad input --> ferry's answer --> Closing --flushed, FIN, client EOF/linger--> closed
//! ```
//!
//! The session never touches sockets itself except to shut the client's
//! write side when closing; it reads the flows' state after the relay has
//! moved what it could, sets framing and prefixes, and tells the worker what
//! it needs ([`Action`]): a backend, a backend released (to the pool or
//! closed), or the pair closed. Request framing is judged in `head.rs`; a
//! request that fails on a reused pooled connection before any response byte
//! is sent again once on a fresh connection if it is idempotent and has no
//! body; nothing is retried after a response byte reached the client.

use super::access_log::{AccessLog, Record};
use super::answer::{answer, AUTH_REQUIRED_KEEP_ALIVE, CONNECT_ESTABLISHED};
use super::chunked::ChunkScanner;
use super::head::{
    parse_request, parse_response, BodyKind, Method, Parsed, RequestHead, ResponseHead,
};
use super::rewrite::{write_request, write_response, ClientConnection, Target};
use crate::config::{ForwardConfig, HttpConfig};
use crate::conn::Conn;
use crate::forward::acl::is_own_address;
use crate::forward::request::{judge, Verdict};
use crate::forward::resolver::{Asked, Cached, Dns};
use crate::net::sys;
use crate::pair::{ClientLimit, CloseReason, Pair, Phase};
use crate::relay::{Flow, FlowState, Framing, Pools, PrefixError};
use crate::stats::Counters;
use crate::token::Side;
use slab::Slab;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// The state of the exchange in progress.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    pub method: Method,
    pub client_minor: u8,
    /// The client's connection may carry another request after this one.
    pub client_keep_alive: bool,
    pub upgrade: bool,
    pub has_body: bool,
    /// Backends (by index in the listener's set) tried for this request.
    pub tried: u64,
    /// Sent again once already (a stale pooled connection).
    pub retried: bool,
    /// Only a freshly opened connection may carry the request now.
    pub fresh_only: bool,
    /// A response head arrived: nothing may be retried any more.
    pub response_started: bool,
    /// The backend allows its connection to be reused after this response.
    pub backend_reusable: bool,
    /// After a 101: both directions are a byte tunnel.
    pub tunnel: bool,
    /// The backend stopped taking the request body (it failed while the
    /// body was going to it): the rest is dropped, the response still read.
    pub abandoned: bool,
    /// The first byte of a request head arrived (the header timer runs).
    pub head_started: bool,
    /// Closing: the client's write side was shut.
    pub shut_sent: bool,
    /// The last connect attempt timed out (504 rather than 502 if all fail).
    pub timed_out: bool,
    /// This request's access-log record (a slot in the worker's records).
    pub log: Option<usize>,
    /// Bytes delivered to the client before this response's body.
    pub body_base: u64,
    /// Forward mode: the origin this request goes to, once resolved.
    pub origin: Option<SocketAddr>,
    /// Forward mode: a CONNECT, to become a tunnel once connected.
    pub connect: bool,
    /// The worker's clock (`Ctx::now_ns`; 0: not yet) when the request head
    /// was complete, when the request could start to the backend (its
    /// connection ready), and when the response was all read from the
    /// backend: the backend and client times of the acceleration metric.
    pub received_at: u64,
    pub sent_at: u64,
    pub backend_done_at: u64,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            method: Method::Get,
            client_minor: 1,
            client_keep_alive: true,
            upgrade: false,
            has_body: false,
            tried: 0,
            retried: false,
            fresh_only: false,
            response_started: false,
            backend_reusable: false,
            tunnel: false,
            abandoned: false,
            head_started: false,
            shut_sent: false,
            timed_out: false,
            log: None,
            body_base: 0,
            origin: None,
            connect: false,
            received_at: 0,
            sent_at: 0,
            backend_done_at: 0,
        }
    }
}

/// What the worker must do for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next event or timer.
    Wait,
    /// The session changed state: relay and advance again.
    Again,
    /// Attach a backend connection (pooled or new) for the request.
    Connect,
    /// Close the backend connection and send the request again on a fresh one.
    Retry,
    /// The connect failed or timed out: close it, mark the backend down, try the next.
    ConnectFailed,
    /// Detach the backend connection: back to the pool if `reuse`, else closed.
    Release {
        reuse: bool,
    },
    Close(CloseReason),
}

/// Durations in timer ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ticks {
    pub header: u64,
    pub keepalive: u64,
    pub backend: u64,
    pub idle: u64,
    pub linger: u64,
    pub connect: u64,
}

/// What the session may use of its worker.
pub struct Ctx<'a> {
    pub pools: &'a mut Pools,
    pub counters: &'a mut Counters,
    /// The access log, if on, and the records of requests in progress.
    pub log: Option<&'a AccessLog>,
    pub records: &'a mut Slab<Record>,
    pub cfg: &'a HttpConfig,
    pub ticks: Ticks,
    pub tick: u64,
    /// The worker's clock in nanoseconds, read once per loop pass (never 0).
    pub now_ns: u64,
    /// Forward mode: what clients may reach, and name resolution.
    pub forward: Option<Forward<'a>>,
    /// The pair's slot (a pending lookup's answer names it).
    pub slot: usize,
    /// The worker is stopping or retired by a reload: keep-alive clients
    /// are told `Connection: close` with their next response.
    pub winding_down: bool,
}

/// What a forward-mode session uses besides the HTTP settings.
pub struct Forward<'a> {
    pub cfg: &'a ForwardConfig,
    pub dns: &'a mut Dns,
    /// This worker's listening addresses (a request to one would loop).
    pub listening: &'a [SocketAddr],
    pub now: std::time::Instant,
}

/// A new client connection: wait for its first request head.
pub fn begin(pair: &mut Pair, ctx: &mut Ctx) {
    pair.phase = Phase::Waiting;
    let _ = pair.to_backend.set_framing(Framing::Head, ctx.pools);
    let _ = pair.to_client.set_framing(Framing::Complete, ctx.pools);
    pair.deadline = ctx.tick + ctx.ticks.header;
}

/// Look at what the relay left and move the exchange on.
pub fn advance(pair: &mut Pair, conn: Option<&mut Conn>, ctx: &mut Ctx) -> Action {
    match pair.phase {
        Phase::Waiting => read_request(pair, ctx),
        Phase::Resolving | Phase::Connecting => Action::Wait,
        Phase::Relaying => progress(pair, conn, ctx),
        Phase::Closing => closing(pair),
    }
}

/// The backend connect completed (or a pooled connection was attached).
pub fn connected(pair: &mut Pair, ctx: &mut Ctx) -> Action {
    pair.phase = Phase::Relaying;
    pair.deadline = ctx.tick + ctx.ticks.backend;
    // A retry restarts the backend's time: the failed attempt did not serve.
    pair.exchange.sent_at = ctx.now_ns;
    if pair.exchange.connect {
        return open_tunnel(pair, ctx);
    }
    Action::Again
}

/// CONNECT: the origin accepted; say so and relay bytes both ways.
fn open_tunnel(pair: &mut Pair, ctx: &mut Ctx) -> Action {
    let ex = &mut pair.exchange;
    ex.tunnel = true;
    ex.response_started = true;
    ex.backend_reusable = false;
    ex.client_keep_alive = false;
    ctx.counters.forward_tunnels += 1;
    count_status(ctx.counters, 200);
    if let Some(record) = ex.log.and_then(|r| ctx.records.get_mut(r)) {
        record.status = 200;
    }
    let set = pair.to_client.set_prefix(ctx.pools, |out| {
        let n = CONNECT_ESTABLISHED.len();
        out.get_mut(..n)?.copy_from_slice(CONNECT_ESTABLISHED);
        Some(n)
    });
    if set.is_err() {
        return Action::Close(CloseReason::Error(Side::Client, libc::ENOBUFS));
    }
    let _ = pair.to_client.set_framing(Framing::Stream, ctx.pools);
    pair.deadline = ctx.tick + ctx.ticks.idle;
    Action::Again
}

/// Forward mode: the resolver answered the lookup this pair waited for.
pub fn resolved(pair: &mut Pair, ip: Option<IpAddr>, ctx: &mut Ctx) -> Action {
    if pair.phase != Phase::Resolving {
        return Action::Wait;
    }
    pair.phase = Phase::Waiting;
    let Some(origin) = pair.exchange.origin.map(|o| o.port()) else {
        return answer_with(pair, 502, ctx);
    };
    match ip {
        Some(ip) => go_to(pair, SocketAddr::new(ip, origin), ctx),
        None => {
            ctx.counters.forward_resolve_failures += 1;
            answer_with(pair, 502, ctx)
        }
    }
}

/// Forward mode: the origin's address is known; may it be reached?
fn go_to(pair: &mut Pair, addr: SocketAddr, ctx: &mut Ctx) -> Action {
    let Some(fwd) = ctx.forward.as_ref() else {
        return answer_with(pair, 502, ctx);
    };
    if is_own_address(fwd.listening, addr) || !fwd.cfg.acl.permits(addr.ip()) {
        ctx.counters.forward_denied += 1;
        return answer_with(pair, 403, ctx);
    }
    pair.exchange.origin = Some(addr);
    Action::Connect
}

/// The relay saw a socket fail.
pub fn on_error(
    pair: &mut Pair,
    conn: Option<&mut Conn>,
    reason: CloseReason,
    ctx: &mut Ctx,
) -> Action {
    match reason {
        CloseReason::Error(Side::Backend, _) if response_unread(pair) => {
            // The backend reset after sending (part of) its response, which
            // the relay read before the error: judge those bytes as if it had
            // closed (a whole response still reaches the client).
            pair.to_client.state = FlowState::Draining;
            progress(pair, conn, ctx)
        }
        CloseReason::Error(Side::Backend, _) if body_still_going(pair) => {
            abandon_request(pair, ctx)
        }
        CloseReason::Error(Side::Backend, _)
            if !pair.exchange.response_started && pair.phase == Phase::Relaying =>
        {
            backend_failed(pair, conn, ctx)
        }
        // The head was read but none of it reached the client yet (it waits
        // one read for its body to join it): the client can still be told.
        CloseReason::Error(Side::Backend, _)
            if pair.exchange.response_started && pair.to_client.prefix_unsent() =>
        {
            refuse_response(pair, ctx)
        }
        CloseReason::Invalid(Side::Client, _) => answer_with(pair, 400, ctx),
        other => cut_short(pair, other),
    }
}

/// Close the pair in the middle of a response. A body ferry decodes for an
/// HTTP/1.0 client is delimited by the close, so a FIN would pass the part
/// delivered off as the whole: the client gets a reset instead. So does the
/// client of a close-delimited response whose backend failed (a reset): RFC
/// 9112 section 8 counts such a body incomplete, and only a reset tells the
/// client so.
fn cut_short(pair: &mut Pair, reason: CloseReason) -> Action {
    let close_delimited_failed = matches!(reason, CloseReason::Error(Side::Backend, _))
        && pair.to_client.framing() == Framing::Stream
        && !pair.exchange.tunnel;
    if close_delimited_failed || matches!(pair.to_client.framing(), Framing::Dechunk(_)) {
        sys::reset_on_close(&pair.client);
    }
    Action::Close(reason)
}

/// Whether response bytes wait in the buffer for their head to be parsed.
fn response_unread(pair: &Pair) -> bool {
    pair.phase == Phase::Relaying
        && !pair.exchange.tunnel
        && pair.to_client.state == FlowState::Open
        && pair.to_client.framing() == Framing::Head
        && pair.to_client.leftover() > 0
}

/// Whether the request body is still on its way to the backend.
fn body_still_going(pair: &Pair) -> bool {
    let ex = &pair.exchange;
    pair.phase == Phase::Relaying
        && ex.has_body
        && !ex.tunnel
        && !ex.abandoned
        && (pair.to_backend.framing() != Framing::Complete || pair.to_backend.pending() > 0)
}

/// The backend failed while the request body was going to it. A server may
/// refuse a body early (413, 401...) and close without reading the rest,
/// which resets the connection; its answer was sent before and can still be
/// read. So the rest of the request is dropped and the response awaited as
/// usual; the connection ends after it. (If no answer came, reading finds
/// the end of stream and the client gets a 502.)
fn abandon_request(pair: &mut Pair, ctx: &mut Ctx) -> Action {
    let ex = &mut pair.exchange;
    ex.abandoned = true;
    ex.client_keep_alive = false;
    ex.backend_reusable = false;
    pair.to_backend.release(ctx.pools);
    let _ = pair.to_backend.set_framing(Framing::Discard, ctx.pools);
    Action::Again
}

/// Whether the backend still owes the final response head: none of it came
/// yet, or only interim (1xx) responses, all delivered. After a `100
/// Continue` the backend timeout still runs, so a backend that falls silent
/// gets the client a 504, not a wait for the whole idle timeout.
fn awaiting_final_head(pair: &Pair) -> bool {
    let ex = &pair.exchange;
    !ex.tunnel
        && (!ex.response_started
            || (pair.to_client.framing() == Framing::Head
                && pair.to_client.pending() == 0
                && pair.to_client.leftover() == 0))
}

/// The pair's timer fired.
pub fn on_timeout(pair: &mut Pair, ctx: &mut Ctx) -> Action {
    match pair.phase {
        Phase::Waiting if pair.to_backend.leftover() > 0 => answer_with(pair, 408, ctx),
        Phase::Waiting => Action::Close(CloseReason::Done),
        Phase::Resolving => {
            pair.exchange.timed_out = true;
            answer_with(pair, 504, ctx)
        }
        Phase::Connecting => {
            ctx.counters.backend_connect_timeouts += 1;
            pair.exchange.timed_out = true;
            Action::ConnectFailed
        }
        Phase::Relaying if awaiting_final_head(pair) => {
            // The backend's time runs from the last request byte sent to it:
            // a client still uploading a body slowly is no backend delay.
            let until = pair.last_active + ctx.ticks.backend;
            if ctx.tick < until {
                pair.deadline = until;
                return Action::Wait;
            }
            pair.exchange.timed_out = true;
            answer_with(pair, 504, ctx)
        }
        Phase::Relaying => {
            let idle_until = pair.last_active + ctx.ticks.idle;
            if ctx.tick >= idle_until {
                cut_short(pair, CloseReason::IdleTimeout)
            } else {
                pair.deadline = idle_until;
                Action::Wait
            }
        }
        Phase::Closing => Action::Close(CloseReason::Done),
    }
}

/// No backend could take the request: every one is down (503), or each
/// that was tried failed (502) or timed out (504).
pub fn no_backend(pair: &mut Pair, all_down: bool, ctx: &mut Ctx) -> Action {
    let status = if all_down {
        503
    } else if pair.exchange.timed_out {
        504
    } else {
        502
    };
    answer_with(pair, status, ctx)
}

fn read_request(pair: &mut Pair, ctx: &mut Ctx) -> Action {
    if pair.to_client.pending() > 0 {
        // ferry's own answer (a 407) is still going out: the next request waits.
        return Action::Wait;
    }
    let client_open = pair.to_backend.state == FlowState::Open;
    let bytes = pair.to_backend.unscanned(ctx.pools);
    if bytes.is_empty() {
        // A client that closes between requests is simply done.
        return if client_open {
            Action::Wait
        } else {
            Action::Close(CloseReason::Done)
        };
    }
    if !pair.exchange.head_started {
        pair.exchange.head_started = true;
        pair.deadline = ctx.tick + ctx.ticks.header;
    }
    let head = match parse_request(bytes, ctx.cfg.max_header_size, ctx.cfg.max_headers) {
        Parsed::Partial if client_open => return Action::Wait,
        Parsed::Partial => return Action::Close(CloseReason::Done),
        Parsed::Invalid(reject) => return answer_with(pair, reject.status, ctx),
        Parsed::Complete(head) => head,
    };
    if pair.client_limit == ClientLimit::Refused {
        // Its address has max_conns_per_client connections open already.
        return answer_with(pair, 429, ctx);
    }
    // Forward mode: where the request goes, or why it goes nowhere.
    let mut origin: Option<SocketAddr> = None;
    let mut lookup = false;
    if let Some(fwd) = ctx.forward.as_mut() {
        match judge(&bytes[..head.head_len], head.method, fwd.cfg) {
            Verdict::AuthRequired => return auth_required(pair, &head, ctx),
            Verdict::Refuse(status) => {
                if status == 403 {
                    ctx.counters.forward_denied += 1;
                }
                return answer_with(pair, status, ctx);
            }
            Verdict::Go { authority, .. } => {
                let ip = authority
                    .ip()
                    .or_else(|| match fwd.dns.cached(authority.host, fwd.now) {
                        Cached::Ip(ip) => Some(ip),
                        Cached::Failed | Cached::Unknown => None,
                    });
                // The port is kept with a placeholder address until resolved.
                let unresolved = IpAddr::from([0, 0, 0, 0]);
                origin = Some(SocketAddr::new(ip.unwrap_or(unresolved), authority.port));
                if ip.is_none() {
                    if fwd.dns.cached(authority.host, fwd.now) == Cached::Failed {
                        ctx.counters.forward_resolve_failures += 1;
                        return answer_with(pair, 502, ctx);
                    }
                    match fwd.dns.ask(ctx.slot, pair.gen, authority.host) {
                        Asked::Busy => return answer_with(pair, 503, ctx),
                        Asked::Queued => ctx.counters.forward_lookups += 1,
                        Asked::Joined => {}
                    }
                    lookup = true;
                }
            }
        }
    } else if head.method == Method::Connect {
        // A reverse proxy does not open tunnels (that is forward mode's job).
        return answer_with(pair, 400, ctx);
    }
    let connect = head.method == Method::Connect;
    let log = ctx.log.map(|_| {
        let mut record = Record::new(pair.client_ip);
        record.capture(&bytes[..head.head_len]);
        ctx.records.insert(record)
    });
    let (ip, add) = (pair.client_ip, ctx.cfg.add);
    let target = Target {
        client: ip,
        http10: head.minor == 0,
        upgrading: head.upgrade,
    };
    let rewritten = if connect {
        // The CONNECT head ends here; what follows is the tunnel's first bytes.
        pair.to_backend.consume(head.head_len);
        Ok(())
    } else {
        pair.to_backend
            .rewrite_head(ctx.pools, head.head_len, |received, out| {
                write_request(received, target, add, out)
            })
    };
    match rewritten {
        Ok(()) => {}
        Err(PrefixError::TooLarge) => return answer_with(pair, 431, ctx),
        Err(PrefixError::NoBuffer) => return answer_with(pair, 503, ctx),
    }
    let framing = match head.body {
        _ if connect => Framing::Stream,
        BodyKind::None | BodyKind::UntilClose => Framing::Complete,
        BodyKind::Length(n) => Framing::Length(n),
        BodyKind::Chunked => Framing::Chunked(ChunkScanner::default()),
    };
    if pair.to_backend.set_framing(framing, ctx.pools).is_err() {
        return answer_with(pair, 400, ctx);
    }
    let _ = pair.to_client.set_framing(Framing::Head, ctx.pools);
    pair.exchange = Exchange {
        method: head.method,
        client_minor: head.minor,
        client_keep_alive: head.keep_alive,
        upgrade: head.upgrade,
        has_body: head.body != BodyKind::None,
        head_started: true,
        log,
        origin,
        connect,
        // A tunnel is never carried by a pooled connection.
        fresh_only: connect,
        received_at: ctx.now_ns,
        ..Exchange::default()
    };
    ctx.counters.http_requests += 1;
    match origin {
        None => Action::Connect,
        Some(_) if lookup => {
            pair.phase = Phase::Resolving;
            pair.deadline = ctx.tick + ctx.ticks.connect;
            Action::Wait
        }
        Some(addr) => go_to(pair, addr, ctx),
    }
}

/// 407: ask for credentials. Without a body to skip, the connection stays
/// open for the retry with credentials, as clients expect.
fn auth_required(pair: &mut Pair, head: &RequestHead, ctx: &mut Ctx) -> Action {
    ctx.counters.forward_auth_failures += 1;
    if head.body != BodyKind::None || !head.keep_alive {
        return answer_with(pair, 407, ctx);
    }
    ctx.counters.http_answers += 1;
    count_status(ctx.counters, 407);
    if ctx.log.is_some() {
        // The connection goes on, so no close path logs this answer: log it now.
        let mut record = Record::new(pair.client_ip);
        record.capture(&pair.to_backend.unscanned(ctx.pools)[..head.head_len]);
        record.status = 407;
        record.bytes = AUTH_REQUIRED_KEEP_ALIVE.len() as u64;
        let r = ctx.records.insert(record);
        emit_record(ctx.log, ctx.records, r, ctx.counters);
    }
    pair.to_backend.consume(head.head_len);
    let set = pair.to_client.set_prefix(ctx.pools, |out| {
        let n = AUTH_REQUIRED_KEEP_ALIVE.len();
        out.get_mut(..n)?.copy_from_slice(AUTH_REQUIRED_KEEP_ALIVE);
        Some(n)
    });
    if set.is_err() {
        return Action::Close(CloseReason::Error(Side::Client, libc::ENOBUFS));
    }
    let _ = pair.to_backend.set_framing(Framing::Head, ctx.pools);
    pair.exchange = Exchange::default();
    pair.deadline = ctx.tick + ctx.ticks.keepalive;
    Action::Again
}

fn progress(pair: &mut Pair, conn: Option<&mut Conn>, ctx: &mut Ctx) -> Action {
    if pair.exchange.tunnel {
        return match (pair.to_backend.state, pair.to_client.state) {
            (FlowState::Shut, FlowState::Shut) => Action::Close(CloseReason::Done),
            _ => Action::Wait,
        };
    }
    if pair.to_client.framing() == Framing::Complete && pair.exchange.backend_done_at == 0 {
        // The whole response was read from the backend: it is free now,
        // however long the client takes to receive what ferry holds.
        pair.exchange.backend_done_at = ctx.now_ns;
    }
    // An abandoned request has gone as far as it will.
    let request_done = pair.to_backend.framing() == Framing::Complete || pair.exchange.abandoned;
    if pair.to_backend.state != FlowState::Open && !request_done {
        // The client went away in the middle of its request.
        return Action::Close(CloseReason::Error(Side::Client, libc::ECONNRESET));
    }
    let backend_open = pair.to_client.state == FlowState::Open;
    match pair.to_client.framing() {
        Framing::Head => {
            if pair.to_client.pending() > 0 {
                return Action::Wait; // an interim response is still going out
            }
            let bytes = pair.to_client.unscanned(ctx.pools);
            match parse_response(bytes, pair.exchange.method, ctx.pools.buffers.buffer_size()) {
                Parsed::Partial if bytes.is_empty() && !backend_open => {
                    backend_failed(pair, conn, ctx)
                }
                Parsed::Partial if backend_open => Action::Wait,
                Parsed::Partial => answer_with(pair, 502, ctx),
                Parsed::Invalid(_) => answer_with(pair, 502, ctx),
                Parsed::Complete(head) => start_response(pair, head, ctx),
            }
        }
        Framing::Stream if pair.to_client.state == FlowState::Shut => {
            // A close-delimited response was delivered and the client's
            // write side shut. Linger rather than close: bytes the client
            // sent meanwhile (a pipelined request) are still unread, and a
            // close would reset the connection and drop the response's tail
            // from the send queue.
            start_closing(pair, ctx);
            Action::Release { reuse: false }
        }
        Framing::Stream => Action::Wait,
        Framing::Complete
            if pair.to_client.pending() == 0 && request_done && pair.to_backend.pending() == 0 =>
        {
            finish(pair, conn, ctx)
        }
        Framing::Complete if pair.to_client.pending() == 0 && !request_done => {
            // The backend answered before reading the whole request (an early
            // 413, or a refused 100-continue): the rest of the request cannot
            // follow on this connection, nor can another request.
            pair.exchange.backend_reusable = false;
            pair.exchange.client_keep_alive = false;
            finish(pair, conn, ctx)
        }
        Framing::Complete => Action::Wait,
        // The backend ended before its message did: the client must not
        // take a truncated body for a whole one.
        _ if !backend_open => cut_short(pair, CloseReason::Error(Side::Backend, libc::ECONNRESET)),
        _ => Action::Wait,
    }
}

fn count_status(c: &mut Counters, status: u16) {
    match status / 100 {
        1 => c.http_responses_1xx += 1,
        2 => c.http_responses_2xx += 1,
        3 => c.http_responses_3xx += 1,
        4 => c.http_responses_4xx += 1,
        _ => c.http_responses_5xx += 1,
    }
}

/// A backend's response head is on its way to the client: count its
/// status and log it (a head refused instead is counted as ferry's answer).
fn forwarded_status(ex: &Exchange, status: u16, ctx: &mut Ctx) {
    count_status(ctx.counters, status);
    if let Some(record) = ex.log.and_then(|r| ctx.records.get_mut(r)) {
        record.status = status;
    }
}

fn start_response(pair: &mut Pair, head: ResponseHead, ctx: &mut Ctx) -> Action {
    if (100..200).contains(&head.status) && head.status != 101 && pair.exchange.client_minor == 0 {
        // HTTP/1.0 has no interim responses: a 1.0 client would take one for
        // the final answer (RFC 9110 15.2), so it is dropped here.
        pair.to_client.consume(head.head_len);
        let _ = pair.to_client.set_framing(Framing::Head, ctx.pools);
        return Action::Again;
    }
    let ex = &mut pair.exchange;
    ex.response_started = true;
    let via = ctx.cfg.add.via;
    if (100..200).contains(&head.status) && head.status != 101 {
        // Interim (100 Continue and friends): forward it, then await the final head.
        return match pair
            .to_client
            .rewrite_head(ctx.pools, head.head_len, |received, out| {
                write_response(received, ClientConnection::KeepAlive, via, out)
            }) {
            Ok(()) => {
                forwarded_status(&pair.exchange, head.status, ctx);
                // The final head may need the whole buffer: move what
                // followed the interim head (now in the prefix) to the front.
                let _ = pair.to_client.set_framing(Framing::Head, ctx.pools);
                Action::Again
            }
            Err(_) => answer_with(pair, 502, ctx),
        };
    }
    if head.status == 101 {
        if !ex.upgrade {
            return answer_with(pair, 502, ctx);
        }
        if pair
            .to_client
            .rewrite_head(ctx.pools, head.head_len, |received, out| {
                write_response(received, ClientConnection::Upgrade, via, out)
            })
            .is_err()
        {
            return answer_with(pair, 502, ctx);
        }
        forwarded_status(ex, head.status, ctx);
        ex.tunnel = true;
        ex.backend_reusable = false;
        let _ = pair.to_backend.set_framing(Framing::Stream, ctx.pools);
        let _ = pair.to_client.set_framing(Framing::Stream, ctx.pools);
        pair.deadline = ctx.tick + ctx.ticks.idle;
        return Action::Again;
    }
    // A backend that answers before the request body is all here ends the
    // connection after its answer (the rest of the body cannot follow), so
    // the client is told (RFC 9110 15, RFC 9112 9.6).
    let answered_early = pair.to_backend.framing() != Framing::Complete;
    // ferry forwards an HTTP/1.0 request as HTTP/1.0, so a backend should
    // not answer it chunked; one that does anyway has the body decoded for
    // the client, which cannot, and delimited by the close (as nginx does).
    let dechunk = head.body == BodyKind::Chunked && ex.client_minor == 0;
    let close = !ex.client_keep_alive
        || ctx.winding_down
        || head.body == BodyKind::UntilClose
        || dechunk
        || answered_early
        || !client_may_send_more(&pair.to_backend);
    ex.client_keep_alive = !close;
    ex.backend_reusable = head.keep_alive && !ex.abandoned;
    let directive = if dechunk {
        ClientConnection::CloseDechunked
    } else if close {
        ClientConnection::Close
    } else if ex.client_minor == 0 {
        ClientConnection::KeepAlive10
    } else {
        ClientConnection::KeepAlive
    };
    if pair
        .to_client
        .rewrite_head(ctx.pools, head.head_len, |received, out| {
            write_response(received, directive, via, out)
        })
        .is_err()
    {
        return answer_with(pair, 502, ctx);
    }
    let framing = match head.body {
        BodyKind::None => Framing::Complete,
        BodyKind::Length(n) => Framing::Length(n),
        BodyKind::Chunked if dechunk => Framing::Dechunk(ChunkScanner::default()),
        BodyKind::Chunked => Framing::Chunked(ChunkScanner::default()),
        BodyKind::UntilClose => Framing::Stream,
    };
    if pair.to_client.set_framing(framing, ctx.pools).is_err() {
        return refuse_response(pair, ctx);
    }
    forwarded_status(&pair.exchange, head.status, ctx);
    pair.exchange.body_base = pair.to_client.delivered() + pair.to_client.prefix_pending() as u64;
    pair.to_client.hold_prefix_for_body();
    pair.deadline = ctx.tick + ctx.ticks.idle;
    Action::Again
}

/// The body read with the head broke its framing (a bad chunk or trailer),
/// or the backend failed, before any of the response went out: the client
/// can still be told 502, as for a bad head.
fn refuse_response(pair: &mut Pair, ctx: &mut Ctx) -> Action {
    pair.to_client.release(ctx.pools);
    let _ = pair.to_client.set_framing(Framing::Head, ctx.pools);
    answer_with(pair, 502, ctx)
}

/// The backend closed or reset before sending any response byte.
fn backend_failed(pair: &mut Pair, conn: Option<&mut Conn>, ctx: &mut Ctx) -> Action {
    let ex = &mut pair.exchange;
    let stale = conn.is_some_and(|c| c.reused);
    if stale
        && !ex.response_started
        && !ex.retried
        && !ex.has_body
        && ex.method.is_idempotent()
        && pair.to_backend.rewind_prefix()
    {
        ex.retried = true;
        ex.fresh_only = true;
        // A stale connection is not the backend's fault: it may be chosen again.
        ex.tried = 0;
        ctx.counters.backend_retries += 1;
        pair.to_client.release(ctx.pools);
        let _ = pair.to_client.set_framing(Framing::Head, ctx.pools);
        pair.to_client.state = FlowState::Open;
        return Action::Retry;
    }
    answer_with(pair, 502, ctx)
}

/// Both messages are complete: keep the client for the next request, or close.
fn finish(pair: &mut Pair, conn: Option<&mut Conn>, ctx: &mut Ctx) -> Action {
    let ex = pair.exchange;
    count_times(&ex, ctx);
    if let Some(r) = ex.log {
        if let Some(record) = ctx.records.get_mut(r) {
            record.bytes = pair.to_client.delivered().saturating_sub(ex.body_base);
        }
        emit_record(ctx.log, ctx.records, r, ctx.counters);
        pair.exchange.log = None;
    }
    // Whether the connection ended its exchange cleanly; the worker decides
    // whether it still has requests left (--pool-max-requests).
    let reuse = ex.backend_reusable
        && pair.to_client.leftover() == 0
        && pair.to_client.state == FlowState::Open
        && conn.is_some();
    pair.to_backend.drop_prefix(ctx.pools);
    pair.to_client.release(ctx.pools);
    pair.to_client.state = FlowState::Open;
    if ex.client_keep_alive && client_may_send_more(&pair.to_backend) {
        pair.phase = Phase::Waiting;
        pair.exchange = Exchange::default();
        let _ = pair.to_backend.set_framing(Framing::Head, ctx.pools);
        let _ = pair.to_client.set_framing(Framing::Complete, ctx.pools);
        pair.deadline = ctx.tick + ctx.ticks.keepalive;
    } else {
        start_closing(pair, ctx);
    }
    Action::Release { reuse }
}

/// Whether another request may follow on the client's connection: it is
/// still open, or it ended after requests that are already buffered (a
/// client may pipeline requests and half-close; each gets its answer).
fn client_may_send_more(to_backend: &Flow) -> bool {
    to_backend.state == FlowState::Open || to_backend.leftover() > 0
}

/// Add an exchange's backend time (request sent until the response was
/// read) and client time (request received until the response was
/// delivered) to the listener's: their ratio is the acceleration, how much
/// longer clients hold ferry than ferry holds the backend.
fn count_times(ex: &Exchange, ctx: &mut Ctx) {
    if ex.received_at == 0 || ex.sent_at == 0 || ex.backend_done_at == 0 {
        return;
    }
    debug_assert!(ex.received_at <= ex.sent_at && ex.sent_at <= ex.backend_done_at);
    let c = &mut *ctx.counters;
    c.http_exchanges_timed += 1;
    c.http_backend_seconds += ex.backend_done_at.saturating_sub(ex.sent_at);
    c.http_client_seconds += ctx.now_ns.saturating_sub(ex.received_at);
}

fn start_closing(pair: &mut Pair, ctx: &mut Ctx) {
    pair.phase = Phase::Closing;
    pair.exchange.shut_sent = false;
    pair.exchange.client_keep_alive = false;
    let _ = pair.to_backend.set_framing(Framing::Discard, ctx.pools);
    let _ = pair.to_client.set_framing(Framing::Complete, ctx.pools);
    pair.deadline = ctx.tick + ctx.ticks.linger;
}

/// Send ferry's own answer and close after it.
fn answer_with(pair: &mut Pair, status: u16, ctx: &mut Ctx) -> Action {
    if pair.exchange.response_started && pair.to_client.framing() != Framing::Head {
        // Part of a response already reached the client: only a close is honest.
        return cut_short(pair, CloseReason::Error(Side::Backend, libc::EPROTO));
    }
    ctx.counters.http_answers += 1;
    count_status(ctx.counters, status);
    let refused_early = ctx
        .log
        .filter(|_| pair.exchange.log.is_none() && !pair.exchange.response_started);
    if refused_early.is_some() && pair.to_backend.leftover() > 0 {
        // Refused before a request was accepted: log what the client sent.
        let mut record = Record::new(pair.client_ip);
        record.capture_line(pair.to_backend.unscanned(ctx.pools));
        pair.exchange.log = Some(ctx.records.insert(record));
    }
    if let Some(r) = pair.exchange.log.take() {
        if let Some(record) = ctx.records.get_mut(r) {
            record.status = status;
            record.bytes = answer(status).len() as u64;
        }
        emit_record(ctx.log, ctx.records, r, ctx.counters);
    }
    pair.to_client.release(ctx.pools);
    pair.to_backend.release(ctx.pools);
    let bytes = answer(status);
    let set = pair.to_client.set_prefix(ctx.pools, |out| {
        let n = bytes.len().min(out.len());
        out[..n].copy_from_slice(&bytes[..n]);
        Some(n)
    });
    if set.is_err() {
        return Action::Close(CloseReason::Error(Side::Client, libc::ENOBUFS));
    }
    start_closing(pair, ctx);
    if pair.backend.is_some() {
        Action::Release { reuse: false }
    } else {
        Action::Again
    }
}

fn closing(pair: &mut Pair) -> Action {
    if pair.to_client.pending() > 0 {
        return Action::Wait;
    }
    if !pair.exchange.shut_sent {
        pair.exchange.shut_sent = true;
        let _ = sys::shutdown_write(pair.client.as_raw_fd());
    }
    if pair.to_backend.state != FlowState::Open {
        return Action::Close(CloseReason::Done);
    }
    Action::Wait
}

/// Finish a request's access-log record and hand it to the logger.
pub fn emit_record(
    log: Option<&AccessLog>,
    records: &mut Slab<Record>,
    slot: usize,
    counters: &mut Counters,
) {
    let Some(mut record) = records.try_remove(slot) else {
        return;
    };
    let Some(log) = log else { return };
    record.duration = std::time::SystemTime::now()
        .duration_since(record.start)
        .unwrap_or_default();
    if !log.send(record) {
        counters.access_log_dropped += 1;
    }
}
