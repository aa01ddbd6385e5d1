//! Thin, allocation-free wrappers over the syscalls the relay makes.
//!
//! Each returns an [`Io`] so that callers match on "moved n bytes",
//! "would block" and "failed with errno" without building `io::Error`
//! values on the hot path. `EINTR` is retried here and never escapes.

use std::os::fd::RawFd;

/// The outcome of one non-blocking transfer syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// Moved this many bytes; 0 from a read or a splice-in means end of stream.
    Done(usize),
    /// The kernel had nothing to give or no room to take (`EAGAIN`).
    WouldBlock,
    /// Failed with this errno.
    Failed(i32),
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn classify(ret: isize) -> Option<Io> {
    if ret >= 0 {
        return Some(Io::Done(ret as usize));
    }
    match errno() {
        libc::EINTR => None,
        libc::EAGAIN => Some(Io::WouldBlock),
        e => Some(Io::Failed(e)),
    }
}

/// `read(2)` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Io {
    loop {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes for the call.
        let ret = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if let Some(io) = classify(ret) {
            return io;
        }
    }
}

/// `send(2)` of `buf` with `MSG_NOSIGNAL`, so a closed peer is an `EPIPE`, never a signal.
pub fn write(fd: RawFd, buf: &[u8]) -> Io {
    loop {
        // SAFETY: `buf` is a valid readable region of `buf.len()` bytes for the call.
        let ret = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if let Some(io) = classify(ret) {
            return io;
        }
    }
}

/// `sendmsg(2)` of two slices in one call with `MSG_NOSIGNAL` (a head and
/// the body bytes after it, so they leave in one segment).
pub fn write2(fd: RawFd, first: &[u8], second: &[u8]) -> Io {
    let mut iov = [
        libc::iovec {
            iov_base: first.as_ptr() as *mut libc::c_void,
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_ptr() as *mut libc::c_void,
            iov_len: second.len(),
        },
    ];
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    loop {
        // SAFETY: `msg` points at two iovecs over live slices, read only by the kernel.
        let ret = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if let Some(io) = classify(ret) {
            return io;
        }
    }
}

/// `splice(2)` of up to `len` bytes from `from` to `to`, one of which must be a pipe.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> Io {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: plain fds and null offsets (both ends are streams); no memory is passed.
        let ret = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if let Some(io) = classify(ret) {
            return io;
        }
    }
}

/// True if the socket has nothing to read and no end of stream pending
/// (`recv` with `MSG_PEEK` answers `EAGAIN`): an idle connection that is
/// safe to reuse.
pub fn is_quiet(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: one writable byte; MSG_PEEK leaves the data in the socket.
    let ret = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    ret < 0 && errno() == libc::EAGAIN
}

/// `shutdown(fd, SHUT_WR)`: sends FIN once everything queued before it is sent.
pub fn shutdown_write(fd: RawFd) -> Result<(), i32> {
    // SAFETY: shutdown on an fd we own; no memory is passed.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Raise the soft descriptor limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// A human name for an errno, for log lines.
pub fn errno_name(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// Make the socket's coming close a reset (SO_LINGER 0): no FIN, no
/// TIME_WAIT, and whatever is still queued either way is dropped.
pub fn reset_on_close(socket: &mio::net::TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO));
}

/// The process or the system is out of descriptors or socket memory: a
/// local shortage that passes, not a fault of a peer.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
