//! Finding the channel the master gave this process: an already-connected Unix
//! socket on the descriptor named by `FERRY_FD`.

use ferry_protocol::CHANNEL_FD_ENV;
use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// Takes ownership of the channel descriptor and hands it to tokio.
pub(crate) fn from_env() -> io::Result<tokio::net::UnixStream> {
    let var = std::env::var(CHANNEL_FD_ENV).map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{CHANNEL_FD_ENV} is not set: this program is a ferry worker; run it as `ferry -- <command>`"),
        )
    })?;
    let fd: RawFd = var.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{CHANNEL_FD_ENV}={var:?} is not a descriptor number"),
        )
    })?;
    // Nothing else in this process uses the descriptor: the master placed it for us.
    let sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    // A descriptor that is not a connected socket fails here rather than mid-request.
    sock.peer_addr()?;
    // The master placed the descriptor without close-on-exec so we could inherit it;
    // set it now so programs this worker runs do not hold the channel open after we exit.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // tokio requires non-blocking sockets: a blocking one would stall the runtime thread.
    sock.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(sock)
}
