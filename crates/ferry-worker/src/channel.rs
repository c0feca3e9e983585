//! Finding the channel the master gave this process: an already-connected Unix
//! socket on the descriptor named by `FERRY_FD`.

use ferry_protocol::CHANNEL_FD_ENV;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Takes ownership of the channel descriptor (`ferry_channel::split` makes it
/// non-blocking and hands it to tokio).
pub(crate) fn from_env() -> io::Result<std::os::unix::net::UnixStream> {
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
    die_with_group_on_sigterm();
    Ok(sock)
}

/// Under ferry, SIGTERM means "stop now" (the master sends it to a stuck worker, and
/// the kernel sends it when the master dies). Graceful stops come as `Drain` on the
/// channel, never as signals. So the handler takes the worker's whole process group
/// down at once, grandchildren included: nothing the worker started outlives it.
/// It is a plain signal handler, not a task, so it works even while a handler is
/// blocking the runtime's thread. Installed only when this process leads its own
/// group, as the master arranges; otherwise it could hit the shell that started us.
fn die_with_group_on_sigterm() {
    extern "C" fn on_sigterm(_: libc::c_int) {
        // kill(2) is async-signal-safe; the group includes this process.
        unsafe {
            libc::kill(0, libc::SIGKILL);
        }
    }
    unsafe {
        if libc::getpgrp() == libc::getpid() {
            LEADS_GROUP.store(true, Ordering::Relaxed);
            libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
        }
    }
}

/// Set when this process leads its own process group, as a worker under ferry does.
static LEADS_GROUP: AtomicBool = AtomicBool::new(false);

/// The master closed the channel before this worker was done (even mid-drain): it
/// died, or it is stopping this worker at once. Either way nothing may outlive us, so the whole process group
/// goes now, this process included. The kernel's parent-death SIGTERM would do the
/// same, but the master's exit closes its descriptors before that signal is sent:
/// a worker that just returned from `serve` could exit first and orphan its
/// children. Does nothing when this process does not lead its own group (run by
/// hand, or in tests), where the group is somebody else's.
///
/// It logs nothing first: our stderr is a pipe the master read, and a logger that
/// panics on the broken pipe (tracing-subscriber's default does) would end this
/// process before the kill, orphaning the group.
pub(crate) fn master_gone() {
    if LEADS_GROUP.load(Ordering::Relaxed) {
        unsafe {
            libc::kill(0, libc::SIGKILL);
        }
    }
}
