//! Kernel pipes for splice(2) and the bounded per-worker pool they come from.
//!
//! Pipes are created lazily up to the pool's cap and sized once with
//! F_SETPIPE_SZ (the size the kernel granted is read back). A pipe returned
//! empty is kept for reuse; a pipe returned with bytes still in it (an
//! aborted transfer) is closed, since those bytes belong to nobody. When the
//! cap is reached or pipe(2) fails (for example at the descriptor limit),
//! `take` answers `None` and the caller copies instead.

use std::os::fd::RawFd;

/// Index of a pipe in its pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeId(u32);

#[derive(Clone, Copy)]
struct Pipe {
    read_end: RawFd,
    write_end: RawFd,
    capacity: usize,
}

pub struct PipePool {
    pipes: Vec<Option<Pipe>>,
    free: Vec<u32>,
    want_size: usize,
    in_use: usize,
}

impl PipePool {
    /// A pool that holds at most `max` pipes of about `size` bytes each.
    pub fn new(max: usize, size: usize) -> PipePool {
        PipePool {
            pipes: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            want_size: size,
            in_use: 0,
        }
    }

    /// A pipe, reused or new; `None` when the cap is reached or pipe(2) fails.
    pub fn take(&mut self) -> Option<PipeId> {
        if let Some(id) = self.free.pop() {
            self.in_use += 1;
            return Some(PipeId(id));
        }
        let slot = self.pipes.iter().position(Option::is_none);
        if slot.is_none() && self.pipes.len() == self.pipes.capacity() {
            return None;
        }
        let pipe = open_pipe(self.want_size)?;
        let id = match slot {
            Some(i) => {
                self.pipes[i] = Some(pipe);
                i
            }
            None => {
                self.pipes.push(Some(pipe));
                self.pipes.len() - 1
            }
        };
        self.in_use += 1;
        Some(PipeId(id as u32))
    }

    /// Give a pipe back; `pending` is how many bytes are still inside it.
    pub fn put(&mut self, id: PipeId, pending: usize) {
        debug_assert!(self.in_use > 0);
        self.in_use -= 1;
        if pending == 0 {
            self.free.push(id.0);
        } else if let Some(pipe) = self.pipes[id.0 as usize].take() {
            close_pipe(pipe);
        }
    }

    /// The (read end, write end, capacity) of a pipe that is out.
    pub fn ends(&self, id: PipeId) -> (RawFd, RawFd, usize) {
        let pipe = self.pipes[id.0 as usize].expect("pipe id names an open pipe");
        (pipe.read_end, pipe.write_end, pipe.capacity)
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

impl Drop for PipePool {
    fn drop(&mut self) {
        for pipe in self.pipes.drain(..).flatten() {
            close_pipe(pipe);
        }
    }
}

fn open_pipe(size: usize) -> Option<Pipe> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: fcntl on the pipe we just opened; the size is a plain int.
    let capacity = unsafe {
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, size as libc::c_int);
        libc::fcntl(fds[1], libc::F_GETPIPE_SZ)
    };
    Some(Pipe {
        read_end: fds[0],
        write_end: fds[1],
        capacity: if capacity > 0 {
            capacity as usize
        } else {
            65536
        },
    })
}

fn close_pipe(pipe: Pipe) {
    // SAFETY: both ends belong to this pool and are closed exactly once here.
    unsafe {
        libc::close(pipe.read_end);
        libc::close(pipe.write_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_caps_and_reuses_pipes() {
        let mut pool = PipePool::new(2, 1 << 16);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(pool.take().is_none(), "the cap holds");
        assert!(pool.ends(a).2 >= 4096);
        pool.put(a, 0);
        assert_eq!(pool.take(), Some(a), "an empty pipe is reused");
        pool.put(b, 10);
        let c = pool
            .take()
            .expect("a pipe closed with data frees its place");
        assert_eq!(c, b, "its slot is reused for a fresh pipe");
        pool.put(a, 0);
        pool.put(c, 0);
        assert_eq!(pool.in_use(), 0);
    }
}
