//! A worker's backend connections: a pooled connection or a new connect
//! for each request (configured backends and forward-mode origins), the
//! release of a connection after its exchange (back to the pool, kept with
//! its client, or closed), and the pool figures.

use super::*;

impl Worker {
    /// Give the pair's request a backend connection: a pooled one if the
    /// chosen backend has one, else a new connect; or ferry's answer when no
    /// backend can take it.
    pub(super) fn attach_backend(&mut self, slot: usize) {
        self.attach_backend_inner(slot);
        self.log_backend(slot);
    }

    pub(super) fn attach_backend_inner(&mut self, slot: usize) {
        if self.take_kept(slot) {
            let pair = &mut self.pairs[slot];
            let mut ctx = session_ctx!(self, pair.listener as usize, slot);
            let action = session::connected(pair, &mut ctx);
            debug_assert_eq!(
                action,
                Action::Again,
                "a kept connection never carries a tunnel"
            );
            return;
        }
        if self.listeners[self.pairs[slot].listener as usize].mode == Mode::Forward {
            return self.attach_origin(slot);
        }
        loop {
            let pair = &mut self.pairs[slot];
            let listener = &mut self.listeners[pair.listener as usize];
            let (first, backends) = (listener.first, &self.backends);
            let pick = upstream::pick(
                listener.balance,
                listener.count,
                &mut listener.cursor,
                &mut self.rng,
                pair.exchange.tried,
                |i| backends[first + i].state.is_up(),
                |i| backends[first + i].busy,
            );
            let index = match pick {
                Pick::Backend(i) => i,
                Pick::NoneUp | Pick::Exhausted => {
                    let mut ctx = session_ctx!(self, pair.listener as usize, slot);
                    // Down before this request tried any: 503; else they failed it: 502/504.
                    let none_healthy = pick == Pick::NoneUp && pair.exchange.tried == 0;
                    let action = session::no_backend(pair, none_healthy, &mut ctx);
                    debug_assert!(matches!(action, Action::Again | Action::Close(_)));
                    if let Action::Close(reason) = action {
                        self.close_pair(slot, reason);
                    }
                    return;
                }
            };
            pair.exchange.tried |= 1u64 << index.min(63);
            let b = first + index;
            let li = pair.listener as usize;
            if !pair.exchange.fresh_only {
                if let Some(c) = self.backends[b].idle.pop() {
                    return self.attach_pooled(slot, b, c);
                }
            }
            self.count_pool(li, b, PoolEvent::Miss);
            let addr = self.backends[b].state.addr;
            match self.open_conn(b, slot) {
                Ok(c) => return self.attach_connecting(slot, c),
                Err(e) if out_of_descriptors(&e) => return self.starved(slot, &e),
                Err(e) => {
                    self.counters[li].backend_connect_failures += 1;
                    self.backends[b].state.count_connect_failure();
                    self.backends[b].state.mark_down();
                    self.log_limited(format_args!("connect to {addr} failed: {e}; marked down"));
                }
            }
        }
    }

    /// No descriptor is left for a backend (or origin) connection: the
    /// shortage is the proxy's, so no backend is marked down or counted as
    /// failing for it; the request gets a 503 and accepting pauses, as for
    /// EMFILE on accept.
    fn starved(&mut self, slot: usize, e: &io::Error) {
        self.log_limited(format_args!(
            "no descriptor for a backend connection: {e}; pausing accepts"
        ));
        self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
        let pair = &mut self.pairs[slot];
        let mut ctx = session_ctx!(self, pair.listener as usize, slot);
        if let Action::Close(reason) = session::no_backend(pair, true, &mut ctx) {
            self.close_pair(slot, reason);
        }
    }

    /// Serve the pair's request on idle pooled connection `c` to backend
    /// (or origin) `b`.
    fn attach_pooled(&mut self, slot: usize, b: usize, c: usize) {
        let li = self.pairs[slot].listener;
        self.count_pool(li as usize, b, PoolEvent::Hit);
        self.conn_wheel.cancel(&mut self.conns, c);
        let conn = &mut self.conns[c];
        conn.owner = Some(slot);
        // Its figures go to the listener it serves now (origins are shared
        // by the worker's forward listeners).
        conn.listener = li;
        conn.reused = true;
        self.mark_busy(c, true);
        let pair = &mut self.pairs[slot];
        pair.backend = Some(c);
        let mut ctx = session_ctx!(self, li as usize, slot);
        let action = session::connected(pair, &mut ctx);
        debug_assert_eq!(
            action,
            Action::Again,
            "a pooled connection never carries a tunnel"
        );
    }

    /// The pair waits for connection `c`, just opened, to connect.
    fn attach_connecting(&mut self, slot: usize, c: usize) {
        let pair = &mut self.pairs[slot];
        pair.backend = Some(c);
        pair.phase = Phase::Connecting;
        pair.deadline = self.tick + self.connect_ticks;
    }

    /// Forward mode: a connection to the origin the request names, pooled if
    /// one is idle (never for a tunnel), else a new connect; 502 if the
    /// connect cannot even start.
    pub(super) fn attach_origin(&mut self, slot: usize) {
        let pair = &self.pairs[slot];
        let addr = pair
            .exchange
            .origin
            .expect("a forward request has its origin");
        let fresh_only = pair.exchange.fresh_only;
        let li = pair.listener as usize;
        let b = self.origin_index(addr);
        if !fresh_only {
            if let Some(c) = self.backends[b].idle.pop() {
                return self.attach_pooled(slot, b, c);
            }
        }
        self.count_pool(li, b, PoolEvent::Miss);
        match self.open_conn(b, slot) {
            Ok(c) => self.attach_connecting(slot, c),
            Err(e) if out_of_descriptors(&e) => self.starved(slot, &e),
            Err(e) => {
                self.counters[li].backend_connect_failures += 1;
                if self.shared.config.verbose {
                    self.log(format_args!("connect to {addr} failed: {e}"));
                }
                if self.backends[b].conns == 0 && self.origins.len() > ORIGINS_KEPT {
                    self.origins.remove(&addr);
                    self.free_origins.push(b);
                }
                let pair = &mut self.pairs[slot];
                let mut ctx = session_ctx!(self, pair.listener as usize, slot);
                let action = session::no_backend(pair, false, &mut ctx);
                if let Action::Close(reason) = action {
                    self.close_pair(slot, reason);
                }
            }
        }
    }

    /// The entry of `backends` for origin `addr`, made if new.
    pub(super) fn origin_index(&mut self, addr: SocketAddr) -> usize {
        if let Some(&b) = self.origins.get(&addr) {
            return b;
        }
        let entry = Backend {
            state: Arc::new(BackendState::new(addr, 0)),
            busy: 0,
            idle: Vec::new(),
            conns: 0,
            origin: true,
        };
        let b = match self.free_origins.pop() {
            Some(b) => {
                self.backends[b] = entry;
                b
            }
            None => {
                self.backends.push(entry);
                self.backends.len() - 1
            }
        };
        self.origins.insert(addr, b);
        b
    }

    /// Forward mode: hand the resolver's answers to the pairs that asked.
    pub(super) fn take_answers(&mut self) {
        let Some(dns) = self.dns.as_mut() else {
            return;
        };
        let mut answers = Vec::new();
        while let Ok(answer) = dns.answers.try_recv() {
            answers.push(answer);
        }
        for answer in answers {
            let joined = match self.dns.as_mut() {
                Some(dns) => dns.answered(&answer, self.now),
                None => Vec::new(),
            };
            self.resolved(answer.slot, answer.gen, answer.ip);
            for (slot, gen) in joined {
                self.resolved(slot, gen, answer.ip);
            }
        }
    }

    /// The lookup pair `slot` (generation `gen`) waited for was answered.
    fn resolved(&mut self, slot: usize, gen: u32, ip: Option<std::net::IpAddr>) {
        match self.pairs.get(slot) {
            Some(pair) if pair.gen == gen && pair.phase == Phase::Resolving => {}
            _ => return, // the client went away meanwhile
        }
        let pair = &mut self.pairs[slot];
        let mut ctx = session_ctx!(self, pair.listener as usize, slot);
        let action = session::resolved(pair, ip, &mut ctx);
        if self.apply(slot, action) {
            self.drive(slot);
        } else if let Some(pair) = self.pairs.get(slot) {
            let when = pair.deadline;
            if when != 0 {
                self.wheel.arm(&mut self.pairs, slot, when);
            }
        }
    }

    /// Note in the pair's access-log record which backend serves it.
    pub(super) fn log_backend(&mut self, slot: usize) {
        let pair = &self.pairs[slot];
        if let (Some(r), Some(c)) = (pair.exchange.log, pair.backend) {
            let addr = self.backends[self.conns[c].backend as usize].state.addr;
            if let Some(record) = self.records.get_mut(r) {
                record.backend = Some(addr);
            }
        }
    }

    /// Start a connect to backend `b` for the pair in `owner`.
    pub(super) fn open_conn(&mut self, b: usize, owner: usize) -> io::Result<usize> {
        let mut stream = net::connect(self.backends[b].state.addr, self.backend_rcvbuf)?;
        let gen = self.take_gen();
        let slot = self.conns.vacant_key();
        self.poll.registry().register(
            &mut stream,
            token::pair(slot, Side::Backend, gen),
            PAIR_INTEREST,
        )?;
        let listener = self.pairs[owner].listener;
        self.conns
            .insert(Conn::new(gen, stream, b as u32, owner, listener));
        self.backends[b].conns += 1;
        self.mark_busy(slot, true);
        Ok(slot)
    }

    /// Take the pair's backend connection away: into its backend's pool if
    /// `reuse` and there is room, else closed. When the pool is full and the
    /// client stays for another request, the connection stays with the
    /// client instead (it is preferred for that client's next request), so
    /// a burst of idle moments beyond the pool size does not churn
    /// connections; the backend closing it evicts it as in the pool.
    pub(super) fn detach_backend(&mut self, slot: usize, reuse: bool) {
        let Some(c) = self.pairs[slot].backend else {
            return;
        };
        self.mark_busy(c, false);
        let pair = &self.pairs[slot];
        let conn = &mut self.conns[c];
        let b = conn.backend as usize;
        let listener = &self.listeners[pair.listener as usize];
        let mut healthy = reuse
            && self.stop_deadline.is_none()
            && !self.draining
            && !conn.ready.has(Ready::RDHUP | Ready::ERROR);
        if healthy && conn.ready.has(Ready::READ) {
            // Readable after a complete response: only reusable if nothing is there.
            healthy = sys::is_quiet(conn.stream.as_raw_fd());
            conn.ready.clear(Ready::READ);
        }
        if healthy && conn.requests + 1 >= listener.http.pool_max_requests {
            // Retired after its last request: nothing is in flight, so close
            // it without TIME_WAIT, which would otherwise hold one of the
            // few thousand local ports toward this backend for a minute.
            self.pairs[slot].backend = None;
            conn.owner = None;
            return self.close_conn_idle(c);
        }
        // --pool-size 0 means no idle backend connection is kept at all.
        if healthy
            && listener.http.pool_size > 0
            && self.backends[b].idle.len() >= listener.http.pool_size
            && pair.phase == Phase::Waiting
        {
            conn.requests += 1;
            conn.reused = true;
            conn.kept_until = self
                .conn_wheel
                .deadline(self.now, listener.http.pool_idle_timeout);
            return;
        }
        self.pairs[slot].backend = None;
        conn.owner = None;
        conn.reused = false;
        if healthy && self.backends[b].idle.len() < listener.http.pool_size {
            conn.requests += 1;
            self.backends[b].idle.push(c);
            let when = self
                .conn_wheel
                .deadline(self.now, listener.http.pool_idle_timeout);
            self.conn_wheel.arm(&mut self.conns, c, when);
        } else {
            self.close_conn(c);
        }
    }

    /// The connection a waiting client kept from its last request, if it is
    /// still usable for this one.
    pub(super) fn take_kept(&mut self, slot: usize) -> bool {
        let Some(c) = self.pairs[slot].backend else {
            return false;
        };
        let conn = &self.conns[c];
        let b = conn.backend as usize;
        let pair = &self.pairs[slot];
        let first = self.listeners[pair.listener as usize].first;
        let usable = !pair.exchange.fresh_only
            && pair
                .exchange
                .origin
                .is_none_or(|o| o == self.backends[b].state.addr)
            && self.backends[b].state.is_up()
            && !conn.ready.has(Ready::READ | Ready::RDHUP | Ready::ERROR)
            // Idle as long as a pooled connection the pool would have closed
            // by now: the backend may be closing it (Apache's KeepAliveTimeout
            // is 5 s), and a POST sent into that close could not be retried.
            && self.conn_wheel.tick_of(self.now) < conn.kept_until;
        if !usable {
            self.detach_backend(slot, false);
            return false;
        }
        self.count_pool(pair.listener as usize, b, PoolEvent::Hit);
        self.conns[c].reused = true;
        self.mark_busy(c, true);
        let pair = &mut self.pairs[slot];
        pair.exchange.tried |= 1u64 << (b - first).min(63);
        true
    }

    /// Count connection `c` as carrying a request to its backend, or not.
    pub(super) fn mark_busy(&mut self, c: usize, busy: bool) {
        let conn = &mut self.conns[c];
        if conn.busy != busy {
            conn.busy = busy;
            let backend = &mut self.backends[conn.backend as usize];
            if busy {
                backend.busy += 1;
            } else {
                backend.busy -= 1;
            }
        }
    }

    /// Close a backend connection with no request in flight: a reset
    /// (SO_LINGER 0) rather than FIN and TIME_WAIT, since no byte is owed.
    pub(super) fn close_conn_idle(&mut self, c: usize) {
        sys::reset_on_close(&self.conns[c].stream);
        self.close_conn(c);
    }

    /// The one way out of the connection slab.
    pub(super) fn close_conn(&mut self, c: usize) {
        self.conn_wheel.cancel(&mut self.conns, c);
        self.mark_busy(c, false);
        let conn = self.conns.remove(c);
        let b = conn.backend as usize;
        let backend = &mut self.backends[b];
        if conn.owner.is_none() {
            if let Some(i) = backend.idle.iter().position(|&s| s == c) {
                backend.idle.swap_remove(i);
            }
        }
        backend.conns -= 1;
        if backend.origin && backend.conns == 0 && self.origins.len() > ORIGINS_KEPT {
            self.origins.remove(&backend.state.addr);
            self.free_origins.push(b);
        }
        // Dropping the stream closes it, which also removes it from epoll.
    }

    /// Count a pool event for the listener and, per worker, for the backend.
    pub(super) fn count_pool(&mut self, li: usize, b: usize, event: PoolEvent) {
        let c = &mut self.counters[li];
        match event {
            PoolEvent::Hit => c.backend_pool_hits += 1,
            PoolEvent::Miss => c.backend_pool_misses += 1,
            PoolEvent::Eviction => c.backend_pool_evictions += 1,
        }
        self.backends[b].state.count_pool(self.id, event);
    }
}
