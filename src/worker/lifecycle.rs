//! A worker's pairs from accept to close, and the worker's own end: accept
//! under the connection gate, open a pair, the one close path, and graceful
//! stop or drain (a retiring generation).

use super::*;
use crate::pair::ClientLimit;
use crate::relay::FlowState;

impl Worker {
    pub(super) fn accept_if_due(&mut self) {
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
    pub(super) fn accept_from(&mut self, i: usize) {
        if self.accept_paused_until.is_some() || self.stop_deadline.is_some() || self.draining {
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
                    self.counters[i].connections_refused_limit += 1;
                    self.at_limit = true;
                }
                self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                return;
            }
            self.at_limit = false;
            let socket = self.listeners[i].socket.as_ref().expect("checked above");
            match socket.accept() {
                Ok((client, peer)) => {
                    let limit = self.client_limit(i, peer.ip());
                    if limit == ClientLimit::Refused && self.listeners[i].mode == Mode::Tcp {
                        // TCP has no way to say why: a reset, not an empty
                        // session that would look like the server's own close.
                        sys::reset_on_close(&client);
                        self.shared.global.release();
                        continue;
                    }
                    self.open_pair(i, client, peer.ip(), limit);
                    if self.accept_paused_until.is_some() {
                        return; // no descriptor was left for its backend
                    }
                }
                Err(e) => {
                    self.shared.global.release();
                    match e.raw_os_error() {
                        _ if e.kind() == io::ErrorKind::WouldBlock => {
                            self.listeners[i].ready = false;
                            return;
                        }
                        _ if out_of_descriptors(&e) => {
                            self.counters[i].accept_errors += 1;
                            self.log_limited(format_args!("accept failed: {e}; pausing accepts"));
                            self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                            return;
                        }
                        _ => self.counters[i].accept_errors += 1,
                    }
                }
            }
        }
        self.accept_again = true;
    }

    /// Count a new client of listener `i` from `ip` against the listener's
    /// `max_conns_per_client`, if it sets one.
    fn client_limit(&mut self, i: usize, ip: std::net::IpAddr) -> ClientLimit {
        let Some(limit) = self.shared.config.listeners[i].max_conns_per_client else {
            return ClientLimit::None;
        };
        if self.shared.global.clients.try_enter(ip, limit) {
            ClientLimit::Counted
        } else {
            self.counters[i].connections_refused_client_limit += 1;
            ClientLimit::Refused
        }
    }

    /// A pair's client is no longer open: uncount it.
    fn client_left(&self, ip: std::net::IpAddr, limit: ClientLimit) {
        if limit == ClientLimit::Counted {
            self.shared.global.clients.leave(ip);
        }
    }

    pub(super) fn take_gen(&mut self) -> u32 {
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & token::GEN_MASK;
        gen
    }

    pub(super) fn open_pair(
        &mut self,
        listener: usize,
        mut client: TcpStream,
        ip: std::net::IpAddr,
        limit: ClientLimit,
    ) {
        // TCP_NODELAY came with the socket from its listener.
        debug_assert!(
            client.nodelay().unwrap_or(true),
            "TCP_NODELAY not inherited"
        );
        let gen = self.take_gen();
        let slot = self.pairs.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut client,
            token::pair(slot, Side::Client, gen),
            PAIR_INTEREST,
        ) {
            self.counters[listener].errors += 1;
            self.log_limited(format_args!("cannot register a connection: {e}"));
            self.shared.global.release();
            self.client_left(ip, limit);
            return;
        }
        let mode = self.listeners[listener].mode;
        let phase = if mode == Mode::Tcp {
            Phase::Connecting
        } else {
            Phase::Waiting
        };
        self.pairs.insert(Pair::new(
            gen,
            listener as u16,
            client,
            ip,
            limit,
            phase,
            self.tick,
        ));
        let counters = &mut self.counters[listener];
        counters.connections_accepted += 1;
        counters.connections_active += 1;
        self.shared.global.record_peak();
        match mode {
            Mode::Tcp => self.connect_tcp(slot),
            Mode::Http | Mode::Forward => {
                let pair = &mut self.pairs[slot];
                let mut ctx = session_ctx!(self, listener, slot);
                session::begin(pair, &mut ctx);
                let when = pair.deadline;
                self.wheel.arm(&mut self.pairs, slot, when);
            }
        }
    }

    /// Start the backend connect of TCP pair `slot` and arm its timer. With
    /// no descriptor left for the backend socket the client waits, holding
    /// no backend, and accepting pauses: dropping it would free the
    /// descriptor for the next accept, and so drain the whole backlog into
    /// dropped clients. The pair's timer tries again until the connect
    /// timeout, counted from the accept, runs out (`Worker::timeout`).
    pub(super) fn connect_tcp(&mut self, slot: usize) {
        let pair = &self.pairs[slot];
        let (li, give_up) = (
            pair.listener as usize,
            pair.last_active + self.connect_ticks,
        );
        let b = self.listeners[li].first;
        match self.open_conn(b, slot) {
            Ok(c) => {
                let pair = &mut self.pairs[slot];
                pair.backend = Some(c);
                pair.deadline = self.tick + self.connect_ticks;
            }
            Err(e) if out_of_descriptors(&e) => {
                self.log_limited(format_args!(
                    "no descriptor for a backend connection: {e}; pausing accepts"
                ));
                self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                let retry = self.wheel.deadline(self.now, ACCEPT_RETRY);
                self.pairs[slot].deadline = retry.min(give_up);
            }
            Err(e) => {
                // close_pair counts and logs the failure.
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                return self.close_pair(slot, CloseReason::ConnectFailed(errno));
            }
        }
        let when = self.pairs[slot].deadline;
        self.wheel.arm(&mut self.pairs, slot, when);
    }

    /// The one way out of the pair slab: returns buffers, pipes, timer, the
    /// backend connection and the connection slot.
    pub(super) fn close_pair(&mut self, slot: usize, reason: CloseReason) {
        if let CloseReason::Error(failed, _) = reason {
            self.pass_abort(slot, failed);
        }
        self.detach_backend(slot, false);
        self.wheel.cancel(&mut self.pairs, slot);
        let mut pair = self.pairs.remove(slot);
        if let Some(r) = pair.exchange.log.take() {
            let listener = &self.listeners[pair.listener as usize];
            session::emit_record(
                listener.access_log.as_ref(),
                &mut self.records,
                r,
                &mut self.counters[pair.listener as usize],
            );
        }
        pair.release(&mut self.pools);
        self.shared.global.release();
        self.client_left(pair.client_ip, pair.client_limit);
        if self.at_limit {
            // A slot is free: look at the backlog now rather than at the next retry.
            self.accept_paused_until = None;
            self.accept_again = true;
        }
        let c = &mut self.counters[pair.listener as usize];
        c.connections_active -= 1;
        match reason {
            CloseReason::Done | CloseReason::Shutdown => {}
            CloseReason::Error(Side::Client, _) => c.client_aborts += 1,
            CloseReason::Error(..) | CloseReason::Invalid(..) => c.errors += 1,
            CloseReason::ConnectFailed(_) => c.backend_connect_failures += 1,
            CloseReason::ConnectTimeout => c.backend_connect_timeouts += 1,
            CloseReason::IdleTimeout => c.idle_timeouts += 1,
            CloseReason::Stalled => c.pairs_stalled += 1,
        }
        // Only TCP pairs close for a connect failure; their one backend is
        // the listener's first (HTTP retries another backend instead).
        let backend = || &self.backends[self.listeners[pair.listener as usize].first].state;
        match reason {
            CloseReason::ConnectFailed(e) => {
                let state = backend();
                state.count_connect_failure();
                let backend = state.addr;
                self.log_limited(format_args!(
                    "connect to {backend} failed: {}",
                    sys::errno_name(e)
                ));
            }
            CloseReason::ConnectTimeout => {
                let state = backend();
                state.count_connect_timeout();
                let backend = state.addr;
                self.log_limited(format_args!("connect to {backend} timed out"))
            }
            CloseReason::Stalled => {
                self.log_limited(format_args!("closed a pair that made no progress (a bug)"))
            }
            CloseReason::Error(side, e) if self.shared.config.verbose => self.log(format_args!(
                "connection closed: {side:?} side: {}",
                sys::errno_name(e)
            )),
            CloseReason::Invalid(side, why) if self.shared.config.verbose => self.log(
                format_args!("connection closed: {side:?} sent a bad message: {why}"),
            ),
            _ => {}
        }
        // Dropping `pair` closes the client socket, which also removes it from epoll.
        drop(pair);
    }

    /// TCP mode: the `failed` side of the pair reset (or its socket failed)
    /// before the other peer had all its bytes and their end: that peer is
    /// reset too (SO_LINGER 0), since a FIN would pass a cut stream off as
    /// a whole one. A peer that has had everything, end included, gets the
    /// usual FIN, so a reply followed by a close is still delivered whole.
    fn pass_abort(&mut self, slot: usize, failed: Side) {
        let pair = &self.pairs[slot];
        if self.listeners[pair.listener as usize].mode != Mode::Tcp {
            return; // HTTP: the session judges what a failure means
        }
        let (flow, other) = match failed {
            Side::Client => (
                &pair.to_backend,
                pair.backend.map(|c| &self.conns[c].stream),
            ),
            Side::Backend => (&pair.to_client, Some(&pair.client)),
        };
        if flow.state == FlowState::Open || flow.pending() > 0 {
            if let Some(stream) = other {
                sys::reset_on_close(stream);
            }
        }
    }

    pub(super) fn begin_stop(&mut self) {
        if self.stop_deadline.is_some() {
            return;
        }
        self.stop_accepting();
        self.stop_deadline = Some(self.now + self.shared.config.grace);
    }

    /// A reload retired this worker: the next generation accepts from the
    /// same sockets; this one serves the pairs it has to their end, closing
    /// keep-alive clients after their next response, or after
    /// [`RETIRE_IDLE`](crate::config::RETIRE_IDLE) if none comes.
    pub(super) fn begin_drain(&mut self) {
        if self.draining {
            return;
        }
        self.stop_accepting();
        self.draining = true;
        let within = self.shared.retire_within_us.load(Ordering::SeqCst);
        if within > 0 {
            self.drain_deadline = Some(self.now + Duration::from_micros(within));
        }
        // Pooled backend connections will not be used again here.
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner.is_none())
            .map(|(slot, _)| slot)
            .collect();
        for c in idle {
            self.close_conn_idle(c);
        }
        // Keep-alive clients between requests: a little more quiet ends them.
        let until = self.wheel.deadline(self.now, crate::config::RETIRE_IDLE);
        let quiet: Vec<usize> = self
            .pairs
            .iter()
            .filter(|(_, p)| {
                p.phase == Phase::Waiting
                    && !p.exchange.head_started
                    && p.to_backend.leftover() == 0
                    && p.deadline > until
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in quiet {
            self.pairs[slot].deadline = until;
            self.wheel.arm(&mut self.pairs, slot, until);
        }
    }

    pub(super) fn stop_accepting(&mut self) {
        for l in &mut self.listeners {
            if let Some(mut socket) = l.socket.take() {
                let _ = self.poll.registry().deregister(&mut socket);
            }
            l.ready = false;
        }
        self.accept_again = false;
    }

    /// While draining: true once no pair is left, closing those still open
    /// at the drain deadline (`reload_grace`).
    pub(super) fn finish_drain(&mut self) -> bool {
        if self.drain_deadline.is_some_and(|t| self.now >= t) {
            let slots: Vec<usize> = self.pairs.iter().map(|(slot, _)| slot).collect();
            for slot in slots {
                self.close_pair(slot, CloseReason::Shutdown);
            }
        }
        self.pairs.is_empty()
    }

    /// While stopping: true once no pair is left (closing stragglers at the
    /// deadline, and idle keep-alive clients at once).
    pub(super) fn finish_stop(&mut self) -> bool {
        let deadline = self.stop_deadline.expect("called only while stopping");
        let hard = self.now >= deadline;
        let slots: Vec<usize> = self
            .pairs
            .iter()
            .filter(|(_, p)| hard || (p.phase == Phase::Waiting && p.to_backend.leftover() == 0))
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            self.close_pair(slot, CloseReason::Shutdown);
        }
        self.pairs.is_empty()
    }
}
