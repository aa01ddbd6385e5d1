//! Sockets: listeners bound with SO_REUSEPORT (one per worker), non-blocking
//! connects to backends, and the raw syscalls the relay uses.

pub mod listener;
pub mod sys;

use std::io;
use std::net::SocketAddr;

/// Start a non-blocking connect to `addr`, with TCP_NODELAY set and, when
/// `rcvbuf` is not 0, SO_RCVBUF set before the connect (the window scale is
/// chosen at the handshake).
pub fn connect(addr: SocketAddr, rcvbuf: usize) -> io::Result<mio::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    if rcvbuf != 0 {
        socket.set_recv_buffer_size(rcvbuf)?;
    }
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
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
