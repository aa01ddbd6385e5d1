//! The byte relay for one direction of a pair: source socket -> carrier
//! (buffer or pipe) -> destination socket, with backpressure and half-close.
//!
//! A [`Flow`] is driven one syscall at a time by [`Flow::step`], which the
//! pair alternates between its two directions. Rules it keeps:
//!
//! * Flush first, then read ahead: bytes already carried are written when the
//!   destination takes them; while it does not, the source is read into the
//!   carrier's free room (the tail of the buffer, or the pipe after the bytes
//!   already in it), so the source keeps streaming. A full carrier stops
//!   reading its source (backpressure). A flow switches between buffer and
//!   pipe only when both are empty, so the order of bytes is kept.
//! * Edge-triggered readiness ([`Ready`]) is cleared only when the kernel
//!   says so: on `EAGAIN`, or on a short read or write, which on Linux means
//!   the socket was drained or its send buffer filled (a new edge follows any
//!   later change). A short read does not clear readability when the peer's
//!   FIN is already known (`RDHUP`), so end of stream is never missed, nor
//!   once urgent data arrived (`URGENT`), since a read stops at its mark.
//! * Half-close: end of stream from the source becomes `shutdown(SHUT_WR)` on
//!   the destination once every byte before it is delivered
//!   (Open -> Draining -> Shut).
//! * A carrier is held only while it holds bytes: [`Flow::park`] returns empty
//!   ones to their pools, so an idle pair holds neither buffer nor pipe.
//! * Framing ([`Framing`]) bounds what may be forwarded: a TCP stream forwards
//!   everything, an HTTP message only its own bytes (its length, or up to the
//!   end of its last chunk), leaving the next message's bytes in the buffer; a
//!   head being gathered is read but not forwarded. Buffer bytes from `start`
//!   up to `scanned` are cleared to go. (A chunked body for a client that
//!   cannot decode it is decoded in the buffer as it is scanned.)
//! * A prefix (a rewritten head, or an answer of ferry's own) goes out before
//!   the buffer. It is kept until the session drops it, so a request can be
//!   sent again on a fresh connection.

use crate::config::SpliceMode;
use crate::http::chunked::ChunkScanner;
use crate::io::buffer::{BufId, BufferPool};
use crate::io::pipe::{PipeId, PipePool};
use crate::net::sys::{self, Io};
use std::os::fd::RawFd;
use std::time::Instant;

/// What the kernel last said about one socket (edge-triggered, so it is
/// kept until a syscall proves it stale).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    /// The peer's FIN has arrived: reads will reach end of stream.
    pub const RDHUP: u8 = 4;
    /// The socket has a pending error.
    pub const ERROR: u8 = 8;
    /// Urgent data arrived (`EPOLLPRI`): a read stops short at its mark even
    /// with more bytes queued, and a splice cannot pass the mark at all (it
    /// answers `EAGAIN`, or end of stream once the FIN is in). Until a read
    /// finds the socket drained, only reads move this socket's bytes.
    pub const URGENT: u8 = 16;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    pub fn set(&mut self, bits: u8) {
        self.0 |= bits;
    }
    pub fn clear(&mut self, bits: u8) {
        self.0 &= !bits;
    }

    /// Fold a mio event into the readiness word.
    pub fn merge(&mut self, event: &mio::event::Event) {
        if event.is_readable() {
            self.set(Ready::READ);
        }
        if event.is_writable() || event.is_write_closed() {
            self.set(Ready::WRITE);
        }
        if event.is_read_closed() {
            self.set(Ready::READ | Ready::RDHUP);
        }
        if event.is_error() {
            self.set(Ready::READ | Ready::WRITE | Ready::ERROR);
        }
        if event.is_priority() {
            self.set(Ready::READ | Ready::URGENT);
        }
    }
}

/// Where a direction stands in its half-close life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// The source may still send.
    Open,
    /// The source ended; bytes may still be on their way to the destination.
    Draining,
    /// Everything was delivered and the destination was shut for writing.
    Shut,
}

/// The result of one step of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until the kernel reports new readiness.
    Blocked,
    /// A syscall was made; this many bytes were delivered.
    Worked(usize),
    /// A socket failed with this errno: the pair must close. `at_src` says
    /// whether the source (a read) or the destination (a write) failed.
    Fatal { errno: i32, at_src: bool },
    /// The bytes broke the message framing (a bad chunk): the pair must close.
    Invalid(&'static str),
}

/// What part of the source's bytes this direction may forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Everything until the source ends (TCP, tunnels, close-delimited bodies).
    Stream,
    /// A message head is being gathered: read, never forwarded as is.
    Head,
    /// A body of known length; this many bytes are still to be accounted.
    Length(u64),
    Chunked(ChunkScanner),
    /// A chunked body decoded on its way (for an HTTP/1.0 client): only the
    /// chunk data is forwarded.
    Dechunk(ChunkScanner),
    /// The message is complete; bytes after it belong to the next one.
    Complete,
    /// Read and drop whatever arrives (lingering before a close).
    Discard,
}

/// HTTP bodies at least this long may be spliced (in `auto` mode).
pub const SPLICE_MIN_BODY: u64 = 64 * 1024;

/// The carriers a flow needs from its worker.
pub struct Pools {
    pub buffers: BufferPool,
    pub pipes: PipePool,
    pub splice: SpliceMode,
}

/// Where a flow's counts go: the worker's counters for this direction.
pub struct Tally<'a> {
    pub bytes: &'a mut u64,
    pub spliced: &'a mut u64,
    pub read_ns: &'a mut u64,
    pub write_ns: &'a mut u64,
}

/// Full reads in a row after which `--splice auto` switches a direction to splice.
const STREAK_TO_SPLICE: u8 = 3;

/// One direction of a pair.
#[derive(Debug)]
pub struct Flow {
    pub state: FlowState,
    framing: Framing,
    buf: Option<BufId>,
    /// `start..scanned` may be forwarded; `scanned..end` waits (a head being
    /// gathered, or the next message).
    start: u32,
    scanned: u32,
    end: u32,
    prefix: Option<BufId>,
    prefix_start: u32,
    prefix_end: u32,
    pipe: Option<PipeId>,
    in_pipe: u32,
    splicing: bool,
    splice_broken: bool,
    full_reads: u8,
    /// Bytes this flow delivered, ever.
    delivered: u64,
    /// Try one read for body bytes before sending a head alone.
    hold_prefix: bool,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            state: FlowState::Open,
            framing: Framing::Stream,
            buf: None,
            start: 0,
            scanned: 0,
            end: 0,
            prefix: None,
            prefix_start: 0,
            prefix_end: 0,
            pipe: None,
            in_pipe: 0,
            splicing: false,
            splice_broken: false,
            full_reads: 0,
            delivered: 0,
            hold_prefix: false,
        }
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

/// Why a prefix could not be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// The bytes do not fit in a buffer.
    TooLarge,
    /// No buffer is free.
    NoBuffer,
}

impl Flow {
    /// Bytes cleared to be forwarded and not yet delivered.
    pub fn pending(&self) -> usize {
        (self.prefix_end - self.prefix_start + self.scanned - self.start + self.in_pipe) as usize
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// A prefix is set and none of it has gone out yet.
    pub fn prefix_unsent(&self) -> bool {
        self.prefix.is_some() && self.prefix_start == 0 && self.prefix_end > 0
    }

    /// Bytes of the prefix not yet delivered.
    pub fn prefix_pending(&self) -> usize {
        (self.prefix_end - self.prefix_start) as usize
    }

    /// Bytes this flow has delivered to its destination so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes read past the current message's cleared part (a head being
    /// gathered, or the next message).
    pub fn leftover(&self) -> usize {
        (self.end - self.scanned) as usize
    }

    /// The bytes not yet cleared to go: a head being gathered.
    pub fn unscanned<'p>(&self, pools: &'p Pools) -> &'p [u8] {
        match self.buf {
            Some(id) => &pools.buffers.get(id)[self.scanned as usize..self.end as usize],
            None => &[],
        }
    }

    /// Drop the first `n` unscanned bytes (a head now rewritten into the prefix).
    pub fn consume(&mut self, n: usize) {
        debug_assert_eq!(
            self.start, self.scanned,
            "only a head at the front is consumed"
        );
        debug_assert!(n <= self.leftover());
        self.start += n as u32;
        self.scanned = self.start;
        self.compact_if_empty();
    }

    /// Frame what follows with `framing`, scanning bytes already buffered.
    pub fn set_framing(&mut self, framing: Framing, pools: &mut Pools) -> Result<(), &'static str> {
        self.framing = match framing {
            Framing::Length(0) => Framing::Complete,
            other => other,
        };
        if self.framing == Framing::Head && self.start > 0 {
            // Give the next head the whole buffer.
            if let Some(id) = self.buf {
                let (from, to) = (self.start as usize, self.end as usize);
                pools.buffers.get_mut(id).copy_within(from..to, 0);
                self.end -= self.start;
                self.start = 0;
                self.scanned = 0;
            }
        }
        self.scan(pools)
    }

    /// Put `write`'s bytes before everything else this flow sends.
    pub fn set_prefix(
        &mut self,
        pools: &mut Pools,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<(), PrefixError> {
        self.drop_prefix(pools);
        let id = pools.buffers.take().ok_or(PrefixError::NoBuffer)?;
        match write(pools.buffers.get_mut(id)) {
            Some(n) => {
                self.prefix = Some(id);
                self.prefix_start = 0;
                self.prefix_end = n as u32;
                Ok(())
            }
            None => {
                pools.buffers.put(id);
                Err(PrefixError::TooLarge)
            }
        }
    }

    /// Replace the head at the front of the unscanned bytes (`head_len` of
    /// them) with what `write` makes of it, sent as the prefix.
    pub fn rewrite_head(
        &mut self,
        pools: &mut Pools,
        head_len: usize,
        write: impl FnOnce(&[u8], &mut [u8]) -> Option<usize>,
    ) -> Result<(), PrefixError> {
        let from = self.buf.expect("a head to rewrite is in the buffer");
        debug_assert!(head_len <= self.leftover());
        self.drop_prefix(pools);
        let to = pools.buffers.take().ok_or(PrefixError::NoBuffer)?;
        let (received, out) = pools.buffers.read_and_write(from, to);
        let at = self.scanned as usize;
        match write(&received[at..at + head_len], out) {
            Some(n) => {
                self.prefix = Some(to);
                self.prefix_start = 0;
                self.prefix_end = n as u32;
                self.consume(head_len);
                Ok(())
            }
            None => {
                pools.buffers.put(to);
                Err(PrefixError::TooLarge)
            }
        }
    }

    /// Before sending the prefix alone, look once for body bytes to send with it.
    pub fn hold_prefix_for_body(&mut self) {
        self.hold_prefix = self.scanned == self.start && self.framing != Framing::Complete;
    }

    /// Send the prefix again from its first byte (a retry on a fresh connection).
    pub fn rewind_prefix(&mut self) -> bool {
        if self.prefix.is_some() {
            self.prefix_start = 0;
            true
        } else {
            false
        }
    }

    /// Forget the prefix and give its buffer back.
    pub fn drop_prefix(&mut self, pools: &mut Pools) {
        if let Some(id) = self.prefix.take() {
            pools.buffers.put(id);
        }
        self.prefix_start = 0;
        self.prefix_end = 0;
    }

    fn compact_if_empty(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.scanned = 0;
            self.end = 0;
        }
    }

    /// Clear newly buffered bytes to go, as far as the framing allows.
    fn scan(&mut self, pools: &mut Pools) -> Result<(), &'static str> {
        match &mut self.framing {
            Framing::Stream => self.scanned = self.end,
            Framing::Head | Framing::Complete => {}
            Framing::Discard => {
                self.start = self.end;
                self.scanned = self.end;
                self.compact_if_empty();
            }
            Framing::Length(left) => {
                let take = (*left).min((self.end - self.scanned) as u64);
                self.scanned += take as u32;
                *left -= take;
                if *left == 0 {
                    self.framing = Framing::Complete;
                }
            }
            Framing::Chunked(scanner) => {
                if let Some(id) = self.buf {
                    let bytes = &pools.buffers.get(id)[self.scanned as usize..self.end as usize];
                    let used = scanner.scan(bytes).map_err(|e| e.0)?;
                    self.scanned += used as u32;
                    if scanner.is_done() {
                        self.framing = Framing::Complete;
                    }
                }
            }
            Framing::Dechunk(scanner) => {
                if let Some(id) = self.buf {
                    // Decode in place: the data moves down over the framing
                    // just walked, and what follows the message after it.
                    let (at, end) = (self.scanned as usize, self.end as usize);
                    let buf = pools.buffers.get_mut(id);
                    let (used, kept) = scanner.dechunk(&mut buf[at..end]).map_err(|e| e.0)?;
                    buf.copy_within(at + used..end, at + kept);
                    self.scanned += kept as u32;
                    self.end -= (used - kept) as u32;
                    if scanner.is_done() {
                        self.framing = Framing::Complete;
                    }
                }
            }
        }
        Ok(())
    }

    /// Make one move: flush what is cleared to go, else shut or read more.
    /// `peer_shut`: the other direction is already shut, so once this one
    /// is, the pair closes both sockets at once.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        src: RawFd,
        src_ready: &mut Ready,
        dst: RawFd,
        dst_ready: &mut Ready,
        peer_shut: bool,
        pools: &mut Pools,
        tally: &mut Tally,
    ) -> Step {
        let pending = self.pending();
        if pending > 0 && dst_ready.has(Ready::WRITE) {
            if std::mem::take(&mut self.hold_prefix) && self.state == FlowState::Open {
                // The body usually follows its head within microseconds: one
                // read now (EAGAIN costs one syscall) lets both leave in one
                // segment, which saves the receiver a wake-up and a read.
                src_ready.set(Ready::READ);
                return self.fill(src, src_ready, pools, tally);
            }
            return self.flush(dst, dst_ready, pools, tally);
        }
        // The destination takes nothing now (or nothing is due): read ahead
        // while the carrier has room, so the source keeps streaming.
        match self.state {
            FlowState::Shut => Step::Blocked,
            // With no destination yet (a CONNECT whose origin is still being
            // resolved) the end waits for it, or the FIN would be lost.
            FlowState::Draining if pending == 0 && self.framing == Framing::Stream && dst >= 0 => {
                // A failed shutdown means the destination is gone; the next
                // write or read on it reports that, so it is not an error here.
                // When the other direction is shut too, the pair closes both
                // sockets now, and close() sends the same FIN: the
                // destination was read to its end, so nothing unread turns
                // the close into a reset.
                if !peer_shut {
                    let _ = sys::shutdown_write(dst);
                }
                self.state = FlowState::Shut;
                Step::Worked(0)
            }
            // A message that ended early is the session's to judge.
            FlowState::Draining => Step::Blocked,
            FlowState::Open => {
                if self.framing == Framing::Complete || !src_ready.has(Ready::READ) {
                    return Step::Blocked;
                }
                self.fill(src, src_ready, pools, tally)
            }
        }
    }

    fn flush(
        &mut self,
        dst: RawFd,
        dst_ready: &mut Ready,
        pools: &mut Pools,
        tally: &mut Tally,
    ) -> Step {
        let t0 = Instant::now();
        let prefix_len = (self.prefix_end - self.prefix_start) as usize;
        let body_len = (self.scanned - self.start) as usize;
        let (io, want, spliced) = if prefix_len > 0 {
            let id = self.prefix.expect("prefix bytes imply a prefix buffer");
            let head = &pools.buffers.get(id)[self.prefix_start as usize..self.prefix_end as usize];
            match self.buf {
                // The head and the body bytes read with it leave together.
                Some(body) if body_len > 0 => {
                    let data = &pools.buffers.get(body)[self.start as usize..self.scanned as usize];
                    (sys::write2(dst, head, data), prefix_len + body_len, false)
                }
                _ => (sys::write(dst, head), prefix_len, false),
            }
        } else if body_len > 0 {
            let id = self.buf.expect("bytes in the buffer imply a buffer");
            let data = &pools.buffers.get(id)[self.start as usize..self.scanned as usize];
            (sys::write(dst, data), body_len, false)
        } else {
            let pipe = self.pipe.expect("bytes in the pipe imply a pipe");
            let (read_end, _, _) = pools.pipes.ends(pipe);
            (
                sys::splice(read_end, dst, self.in_pipe as usize),
                self.in_pipe as usize,
                true,
            )
        };
        *tally.write_ns += elapsed_ns(t0);
        match io {
            Io::Done(n) => {
                debug_assert!(n <= want);
                if spliced {
                    self.in_pipe -= n as u32;
                    *tally.spliced += n as u64;
                } else {
                    let from_prefix = n.min(prefix_len);
                    self.prefix_start += from_prefix as u32;
                    self.start += (n - from_prefix) as u32;
                    self.compact_if_empty();
                }
                *tally.bytes += n as u64;
                self.delivered += n as u64;
                if n < want {
                    dst_ready.clear(Ready::WRITE);
                }
                Step::Worked(n)
            }
            Io::WouldBlock => {
                dst_ready.clear(Ready::WRITE);
                Step::Worked(0)
            }
            Io::Failed(errno) => Step::Fatal {
                errno,
                at_src: false,
            },
        }
    }

    /// How many more bytes of the current message a pipe may take.
    fn pipe_limit(&self) -> u64 {
        match self.framing {
            Framing::Length(left) => left,
            _ => u64::MAX,
        }
    }

    /// How many bytes a splice may take now, if this fill should splice.
    fn splice_len(&self, mode: SpliceMode) -> Option<u64> {
        let allowed = !self.splice_broken
            && self.start == self.end
            && match mode {
                SpliceMode::Off => false,
                SpliceMode::On => true,
                SpliceMode::Auto => self.splicing,
            };
        match self.framing {
            _ if !allowed => None,
            Framing::Stream => Some(u64::MAX),
            Framing::Length(left) if left >= SPLICE_MIN_BODY || mode == SpliceMode::On => {
                Some(left)
            }
            _ => None,
        }
    }

    fn fill(
        &mut self,
        src: RawFd,
        src_ready: &mut Ready,
        pools: &mut Pools,
        tally: &mut Tally,
    ) -> Step {
        let urgent = src_ready.has(Ready::URGENT);
        if self.in_pipe > 0 {
            if urgent {
                // Reads take over past the urgent mark once the pipe is empty.
                return Step::Blocked;
            }
            // Bytes go on into the pipe after those already in it (order kept).
            let pipe = self.pipe.expect("bytes in the pipe imply a pipe");
            return self.fill_pipe(pipe, self.pipe_limit(), src, src_ready, pools, tally);
        }
        if let Some(limit) = self.splice_len(pools.splice).filter(|_| !urgent) {
            if self.pipe.is_none() {
                self.pipe = pools.pipes.take();
            }
            if let Some(pipe) = self.pipe {
                return self.fill_pipe(pipe, limit, src, src_ready, pools, tally);
            }
        }
        if self.buf.is_none() {
            self.buf = pools.buffers.take();
        }
        let Some(id) = self.buf else {
            debug_assert!(false, "the buffer pool holds enough buffers for every pair");
            return Step::Blocked;
        };
        let capacity = pools.buffers.buffer_size();
        // Reads are not cut at the message's end: bytes past it stay in the
        // buffer as the next message's start (pipelining), or mark a backend
        // that sent more than it announced. Cutting would also leave READ set
        // after almost every message, for lack of a short read.
        let room = capacity - self.end as usize;
        if room == 0 {
            // A head that fills the buffer: the session answers it.
            return Step::Blocked;
        }
        let at = self.end as usize;
        let t0 = Instant::now();
        let io = sys::read(src, &mut pools.buffers.get_mut(id)[at..at + room]);
        *tally.read_ns += elapsed_ns(t0);
        match io {
            Io::Done(0) => {
                self.state = FlowState::Draining;
                Step::Worked(0)
            }
            Io::Done(n) => {
                self.end += n as u32;
                if n == capacity {
                    self.full_reads = self.full_reads.saturating_add(1);
                    if self.full_reads >= STREAK_TO_SPLICE {
                        self.splicing = true;
                    }
                } else {
                    self.full_reads = 0;
                }
                if n < room && !src_ready.has(Ready::RDHUP | Ready::URGENT) {
                    src_ready.clear(Ready::READ);
                }
                match self.scan(pools) {
                    // Dropping bytes is this flow's work while it lingers
                    // (or decodes chunks: the framing is dropped): counted
                    // as moved, a fast sender uses up the pair's budget
                    // (fairness) instead of looking like a stall.
                    Ok(()) if matches!(self.framing, Framing::Discard | Framing::Dechunk(_)) => {
                        Step::Worked(n)
                    }
                    Ok(()) => Step::Worked(0),
                    Err(why) => Step::Invalid(why),
                }
            }
            Io::WouldBlock => {
                // Drained: past any urgent mark too.
                src_ready.clear(Ready::READ | Ready::URGENT);
                Step::Worked(0)
            }
            Io::Failed(errno) => Step::Fatal {
                errno,
                at_src: true,
            },
        }
    }

    fn fill_pipe(
        &mut self,
        pipe: PipeId,
        limit: u64,
        src: RawFd,
        src_ready: &mut Ready,
        pools: &mut Pools,
        tally: &mut Tally,
    ) -> Step {
        let (_, write_end, capacity) = pools.pipes.ends(pipe);
        let room = capacity.saturating_sub(self.in_pipe as usize);
        if room == 0 || limit == 0 {
            return Step::Blocked;
        }
        let t0 = Instant::now();
        let io = sys::splice(src, write_end, (room as u64).min(limit) as usize);
        *tally.read_ns += elapsed_ns(t0);
        match io {
            Io::Done(0) => {
                // A splice also answers 0 at an urgent mark once the FIN is
                // in, with bytes still queued after it: a read, which steps
                // over the mark, says whether the stream really ended.
                src_ready.set(Ready::READ | Ready::URGENT);
                Step::Worked(0)
            }
            Io::Done(n) => {
                self.in_pipe += n as u32;
                if let Framing::Length(left) = &mut self.framing {
                    *left -= n as u64;
                    if *left == 0 {
                        self.framing = Framing::Complete;
                    }
                }
                Step::Worked(0)
            }
            // With bytes in the pipe EAGAIN may mean "pipe full": keep READ
            // and try again once the pipe drains. An empty pipe means the
            // socket is drained.
            Io::WouldBlock if self.in_pipe > 0 => Step::Blocked,
            Io::WouldBlock => {
                src_ready.clear(Ready::READ);
                Step::Worked(0)
            }
            Io::Failed(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                // This socket cannot splice: copy from now on.
                self.splice_broken = true;
                Step::Worked(0)
            }
            Io::Failed(errno) => Step::Fatal {
                errno,
                at_src: true,
            },
        }
    }

    /// Return carriers that hold nothing, so an idle flow holds no memory.
    /// (The prefix stays until the session drops it.)
    pub fn park(&mut self, pools: &mut Pools) {
        if self.end == self.start {
            if let Some(id) = self.buf.take() {
                pools.buffers.put(id);
            }
        }
        if self.in_pipe == 0 {
            if let Some(id) = self.pipe.take() {
                pools.pipes.put(id, 0);
            }
        }
    }

    /// Return every carrier; bytes not yet delivered are dropped.
    pub fn release(&mut self, pools: &mut Pools) {
        self.drop_prefix(pools);
        if let Some(id) = self.buf.take() {
            pools.buffers.put(id);
        }
        if let Some(id) = self.pipe.take() {
            pools.pipes.put(id, self.in_pipe as usize);
        }
        self.start = 0;
        self.scanned = 0;
        self.end = 0;
        self.in_pipe = 0;
    }
}
