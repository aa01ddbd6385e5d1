//! Sockets: listeners bound with SO_REUSEPORT (one per worker), non-blocking
//! connects to backends, and the raw syscalls the relay uses.

pub mod listener;
pub mod sys;

use std::io;
use std::net::SocketAddr;

/// Start a non-blocking connect to `addr`, with TCP_NODELAY set.
pub fn connect(addr: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let stream = mio::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The outcome of checking a connect in progress once the socket reported an event.
pub enum ConnectCheck {
    Connected,
    InProgress,
    Failed(io::Error),
}

/// Ask the kernel where a non-blocking connect stands (SO_ERROR, then getpeername).
pub fn check_connect(stream: &mio::net::TcpStream) -> ConnectCheck {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return ConnectCheck::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => ConnectCheck::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => ConnectCheck::InProgress,
        Err(e) => ConnectCheck::Failed(e),
    }
}
