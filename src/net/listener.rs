//! Listening sockets: one SO_REUSEPORT socket per worker per address, so the
//! kernel spreads new connections over the workers with no shared accept lock.
//!
//! Port 0 is resolved by the first bind; the other workers' sockets bind the
//! port the kernel chose, so `-p 0` gives one ephemeral port for the process.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Why binding the listeners failed, with the address that failed.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub error: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.error.kind() == io::ErrorKind::AddrInUse {
            write!(f, "cannot listen on {}: address already in use", self.addr)
        } else {
            write!(f, "cannot listen on {}: {}", self.addr, self.error)
        }
    }
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listening socket (Linux
    // copies it on accept), which saves a setsockopt per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Fail if another socket listens on `addr`. The shards set SO_REUSEPORT,
/// which lets a second process of the same user bind a busy address and
/// silently take a share of its connections (a second ferry on the same
/// port, say); a plain bind, without it, is refused there as it should be.
/// Port 0 needs no check: the kernel picks a free port.
pub fn check_free(addr: SocketAddr) -> Result<(), BindError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = || -> io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_cloexec(true)?;
        socket.bind(&addr.into())
    };
    probe().map_err(|error| BindError { addr, error })
}

/// Bind `count` listening sockets on `addr` (resolving port 0 once) and
/// return them with the address they actually listen on.
pub fn bind_shards(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), BindError> {
    let fail = |addr, error| BindError { addr, error };
    let first = bind_one(addr, backlog).map_err(|e| fail(addr, e))?;
    let bound = first.local_addr().map_err(|e| fail(addr, e))?;
    let mut shards = Vec::with_capacity(count);
    shards.push(first);
    for _ in 1..count {
        let next = bind_one(bound, backlog).map_err(|e| fail(bound, e))?;
        shards.push(next);
    }
    Ok((bound, shards))
}
