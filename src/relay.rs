//! The byte relay for one direction of a pair: source socket -> carrier
//! (buffer or pipe) -> destination socket, with backpressure and half-close.
//!
//! A [`Flow`] is driven one syscall at a time by [`Flow::step`], which the
//! pair alternates between its two directions. Rules it keeps:
//!
//! * Flush before fill: bytes already carried are written before anything new
//!   is read, so a full carrier stops reading its source (backpressure) and a
//!   flow never holds bytes in its buffer and its pipe at once (order).
//! * Edge-triggered readiness ([`Ready`]) is cleared only when the kernel
//!   says so: on `EAGAIN`, or on a short read or write, which on Linux means
//!   the socket was drained or its send buffer filled (a new edge follows any
//!   later change). A short read does not clear readability when the peer's
//!   FIN is already known (`RDHUP`), so end of stream is never missed.
//! * Half-close: end of stream from the source becomes `shutdown(SHUT_WR)` on
//!   the destination once every byte before it is delivered
//!   (Open -> Draining -> Shut).
//! * A carrier is held only while it holds bytes: [`Flow::park`] returns empty
//!   ones to their pools, so an idle pair holds neither buffer nor pipe.

use crate::config::SpliceMode;
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
    /// A socket failed with this errno: the pair must close.
    Fatal(i32),
}

/// The carriers and counters a flow needs from its worker.
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
    buf: Option<BufId>,
    start: u32,
    end: u32,
    pipe: Option<PipeId>,
    in_pipe: u32,
    splicing: bool,
    splice_broken: bool,
    full_reads: u8,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            state: FlowState::Open,
            buf: None,
            start: 0,
            end: 0,
            pipe: None,
            in_pipe: 0,
            splicing: false,
            splice_broken: false,
            full_reads: 0,
        }
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

impl Flow {
    /// Bytes read from the source and not yet delivered.
    pub fn pending(&self) -> usize {
        (self.end - self.start + self.in_pipe) as usize
    }

    /// Make one move: flush what is carried, else shut or read more.
    pub fn step(
        &mut self,
        src: RawFd,
        src_ready: &mut Ready,
        dst: RawFd,
        dst_ready: &mut Ready,
        pools: &mut Pools,
        tally: &mut Tally,
    ) -> Step {
        if self.pending() > 0 {
            if !dst_ready.has(Ready::WRITE) {
                return Step::Blocked;
            }
            return self.flush(dst, dst_ready, pools, tally);
        }
        match self.state {
            FlowState::Shut => Step::Blocked,
            FlowState::Draining => {
                // A failed shutdown means the destination is gone; the next
                // write or read on it reports that, so it is not an error here.
                let _ = sys::shutdown_write(dst);
                self.state = FlowState::Shut;
                Step::Worked(0)
            }
            FlowState::Open => {
                if !src_ready.has(Ready::READ) {
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
        let (io, want, spliced) = if self.end > self.start {
            let id = self.buf.expect("bytes in the buffer imply a buffer");
            let data = &pools.buffers.get(id)[self.start as usize..self.end as usize];
            (sys::write(dst, data), data.len(), false)
        } else {
            let (read_end, _, _) = pools
                .pipes
                .ends(self.pipe.expect("bytes in the pipe imply a pipe"));
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
                    self.start += n as u32;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                }
                *tally.bytes += n as u64;
                if n < want {
                    dst_ready.clear(Ready::WRITE);
                }
                Step::Worked(n)
            }
            Io::WouldBlock => {
                dst_ready.clear(Ready::WRITE);
                Step::Worked(0)
            }
            Io::Failed(e) => Step::Fatal(e),
        }
    }

    fn wants_pipe(&self, mode: SpliceMode) -> bool {
        !self.splice_broken
            && match mode {
                SpliceMode::Off => false,
                SpliceMode::On => true,
                SpliceMode::Auto => self.splicing,
            }
    }

    fn fill(
        &mut self,
        src: RawFd,
        src_ready: &mut Ready,
        pools: &mut Pools,
        tally: &mut Tally,
    ) -> Step {
        debug_assert_eq!(self.pending(), 0, "fill only when nothing is carried");
        if self.wants_pipe(pools.splice) {
            if self.pipe.is_none() {
                self.pipe = pools.pipes.take();
            }
            if let Some(pipe) = self.pipe {
                return self.fill_pipe(pipe, src, src_ready, pools, tally);
            }
        }
        if self.buf.is_none() {
            self.buf = pools.buffers.take();
        }
        let Some(id) = self.buf else {
            debug_assert!(false, "the buffer pool holds two buffers for every pair");
            return Step::Blocked;
        };
        let space = pools.buffers.get_mut(id);
        let t0 = Instant::now();
        let io = sys::read(src, space);
        *tally.read_ns += elapsed_ns(t0);
        match io {
            Io::Done(0) => {
                self.state = FlowState::Draining;
                Step::Worked(0)
            }
            Io::Done(n) => {
                self.start = 0;
                self.end = n as u32;
                if n == space.len() {
                    self.full_reads = self.full_reads.saturating_add(1);
                    if self.full_reads >= STREAK_TO_SPLICE {
                        self.splicing = true;
                    }
                } else {
                    self.full_reads = 0;
                    if !src_ready.has(Ready::RDHUP) {
                        src_ready.clear(Ready::READ);
                    }
                }
                Step::Worked(0)
            }
            Io::WouldBlock => {
                src_ready.clear(Ready::READ);
                Step::Worked(0)
            }
            Io::Failed(e) => Step::Fatal(e),
        }
    }

    fn fill_pipe(
        &mut self,
        pipe: PipeId,
        src: RawFd,
        src_ready: &mut Ready,
        pools: &mut Pools,
        tally: &mut Tally,
    ) -> Step {
        let (_, write_end, capacity) = pools.pipes.ends(pipe);
        let t0 = Instant::now();
        let io = sys::splice(src, write_end, capacity);
        *tally.read_ns += elapsed_ns(t0);
        match io {
            Io::Done(0) => {
                self.state = FlowState::Draining;
                Step::Worked(0)
            }
            Io::Done(n) => {
                self.in_pipe = n as u32;
                Step::Worked(0)
            }
            // The pipe is empty here, so EAGAIN means the socket is drained.
            Io::WouldBlock => {
                src_ready.clear(Ready::READ);
                Step::Worked(0)
            }
            Io::Failed(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                // This socket cannot splice: copy from now on.
                self.splice_broken = true;
                Step::Worked(0)
            }
            Io::Failed(e) => Step::Fatal(e),
        }
    }

    /// Return carriers that hold nothing, so an idle flow holds no memory.
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

    /// Return every carrier (the pair is closing); undelivered bytes are dropped.
    pub fn release(&mut self, pools: &mut Pools) {
        if let Some(id) = self.buf.take() {
            pools.buffers.put(id);
        }
        if let Some(id) = self.pipe.take() {
            pools.pipes.put(id, self.in_pipe as usize);
        }
        self.start = 0;
        self.end = 0;
        self.in_pipe = 0;
    }
}
