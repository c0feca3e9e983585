//! Zero-downtime master upgrade (SIGUSR2, as Gunicorn and nginx do it): the master
//! runs its own binary again, from the path it was started from (so a new build
//! installed there takes over), with the same arguments, handing over its listening
//! sockets by descriptor inheritance. The listeners are never closed, so no
//! connection is refused or dropped: until the old master stops accepting, both
//! accept from the same sockets.
//!
//! The new master names what it got from the environment: [`FDS_ENV`] lists the
//! public listeners in order (`7,8+`: a `+` means the socket file is its to remove
//! at exit), [`ADMIN_ENV`] the admin endpoint's, and [`READY_ENV`] a pipe. It starts
//! its workers and, once they are ready, binds the control socket in its place
//! (renaming its own over the old one's) and writes one byte to the pipe. Only then
//! does the old master stop accepting and drain gracefully. A new master that
//! exits, or is not ready within `--start-timeout`, is killed (its workers follow
//! it by their parent-death signal) and the old one keeps serving.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;

use crate::listen::Listener;

pub const FDS_ENV: &str = "FERRY_UPGRADE_FDS";
pub const ADMIN_ENV: &str = "FERRY_UPGRADE_ADMIN_FD";
pub const READY_ENV: &str = "FERRY_UPGRADE_READY_FD";

/// What a new master got from the one that started it.
pub struct Inherited {
    pub listeners: Vec<Listener>,
    pub admin: Option<std::net::TcpListener>,
    /// The pipe to [`say_ready`] on, once this master serves.
    pub ready: OwnedFd,
}

/// The sockets handed over, if this master was started by an upgrade.
pub fn inherited() -> Result<Option<Inherited>, String> {
    let Some(fds) = std::env::var_os(FDS_ENV) else {
        return Ok(None);
    };
    let fds = fds.to_string_lossy().into_owned();
    let number = |s: &str, what: &str| {
        s.parse::<RawFd>()
            .ok()
            .filter(|n| *n > 2)
            .ok_or_else(|| format!("{what} names `{s}`, not a descriptor"))
    };
    let ready = std::env::var(READY_ENV).map_err(|_| format!("{READY_ENV} is missing"))?;
    let ready = number(&ready, READY_ENV)?;
    // Ours from here; close-on-exec again so that no worker inherits it.
    let ready = unsafe { OwnedFd::from_raw_fd(ready) };
    set_cloexec(ready.as_raw_fd()).map_err(|e| format!("{READY_ENV}: {e}"))?;
    let mut listeners = Vec::new();
    for item in fds.split(',').filter(|s| !s.is_empty()) {
        let (fd, owns_file) = match item.strip_suffix('+') {
            Some(fd) => (fd, true),
            None => (item, false),
        };
        let fd = number(fd, FDS_ENV)?;
        let mut l = crate::listen::adopt(fd, &format!("{FDS_ENV} (fd {fd})"))?;
        if owns_file {
            l.own_file();
        }
        listeners.push(l);
    }
    if listeners.is_empty() {
        return Err(format!("{FDS_ENV} names no listener"));
    }
    let admin = match std::env::var(ADMIN_ENV) {
        Err(_) => None,
        Ok(fd) => {
            let fd = number(&fd, ADMIN_ENV)?;
            let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            set_cloexec(fd).map_err(|e| format!("{ADMIN_ENV}: {e}"))?;
            l.set_nonblocking(true)
                .map_err(|e| format!("{ADMIN_ENV}: {e}"))?;
            Some(l)
        }
    };
    Ok(Some(Inherited {
        listeners,
        admin,
        ready,
    }))
}

/// Tells the old master that this one serves: it stops accepting and drains.
pub fn say_ready(fd: OwnedFd) {
    let mut file = std::fs::File::from(fd);
    if let Err(e) = io::Write::write_all(&mut file, b"R") {
        tracing::warn!("upgrade: cannot tell the old master we are ready: {e}");
    }
}

/// Where a new master binds the control socket until it is ready: beside the old
/// one's, then renamed over it.
pub fn staging_path(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid}.new"));
    PathBuf::from(name)
}

/// Marks an inherited descriptor close-on-exec again, so no worker inherits it.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The old master's side: at most one upgrade at a time, and who waits for its
/// outcome (`ferry ctl upgrade`).
pub struct Upgrader {
    /// What each upgrade hands over; `None` if this binary's path is unknown.
    plan: Option<Handover>,
    running: bool,
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u32, String>>>,
    done: tokio::sync::mpsc::UnboundedSender<Result<u32, String>>,
}

/// The outcome of each upgrade [`Upgrader::start`]s, in order.
pub type Outcomes = tokio::sync::mpsc::UnboundedReceiver<Result<u32, String>>;

impl Upgrader {
    pub fn new(plan: Option<Handover>) -> (Upgrader, Outcomes) {
        let (done, outcomes) = tokio::sync::mpsc::unbounded_channel();
        let u = Upgrader {
            plan,
            running: false,
            waiting: Vec::new(),
            done,
        };
        (u, outcomes)
    }

    /// Starts an upgrade (`why` names who asked), unless one is under way; `reply`,
    /// if given, hears its outcome either way.
    pub fn start(
        &mut self,
        why: &str,
        reply: Option<tokio::sync::oneshot::Sender<Result<u32, String>>>,
    ) {
        let Some(plan) = self.plan.clone() else {
            tracing::warn!("{why}: cannot upgrade: the path of this binary is unknown");
            if let Some(r) = reply {
                let _ = r.send(Err("the path of this binary is unknown".into()));
            }
            return;
        };
        self.waiting.extend(reply);
        if self.running {
            tracing::warn!("{why}: an upgrade is already under way");
            return;
        }
        self.running = true;
        tracing::info!("{why}: starting a new master from {}", plan.exe.display());
        let done = self.done.clone();
        tokio::spawn(async move {
            let _ = done.send(run(plan).await);
        });
    }

    /// An upgrade ended: everyone waiting hears how.
    pub fn finished(&mut self, outcome: &Result<u32, String>) {
        self.running = false;
        for r in self.waiting.drain(..) {
            let _ = r.send(outcome.clone());
        }
    }
}

/// What the old master hands over.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The binary to run and its arguments (this master's, from its start).
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// Each public listener's descriptor, and whether the new master is to remove
    /// its socket file at exit.
    pub listeners: Vec<(RawFd, bool)>,
    pub admin: Option<RawFd>,
    /// The control socket's path, beside which the new master binds its own.
    pub control: Option<PathBuf>,
    /// How long the new master has to become ready.
    pub within: Duration,
}

/// Starts the new master and waits until it is ready: its pid, or why not (it has
/// then been killed).
pub async fn run(h: Handover) -> Result<u32, String> {
    let (read_end, write_end) = pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let fds: Vec<String> = h
        .listeners
        .iter()
        .map(|(fd, owned)| format!("{fd}{}", if *owned { "+" } else { "" }))
        .collect();
    let write_fd = write_end.as_raw_fd();
    let mut passed: Vec<RawFd> = h.listeners.iter().map(|(fd, _)| *fd).collect();
    passed.extend(h.admin);
    passed.push(write_fd);
    let mut cmd = tokio::process::Command::new(&h.exe);
    cmd.args(&h.args)
        .env(FDS_ENV, fds.join(","))
        .env(READY_ENV, write_fd.to_string())
        .env_remove(ADMIN_ENV)
        // Not the new master's: systemd's sockets are among the listeners handed over,
        // and the watchdog is for the main pid, which the new master becomes later.
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("WATCHDOG_PID");
    if let Some(fd) = h.admin {
        cmd.env(ADMIN_ENV, fd.to_string());
    }
    // Only an async-signal-safe call between fork and exec: the handed-over
    // descriptors are inherited by this child only.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &passed {
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", h.exe.display()))?;
    drop(write_end);
    let pid = child.id().unwrap_or(0);
    let mut ready = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
        .map_err(|e| format!("the ready pipe: {e}"))?;
    let mut byte = [0u8; 1];
    let outcome = tokio::select! {
        r = ready.read(&mut byte) => match r {
            Ok(1) => Ok(pid),
            _ => Err(format!("the new master ({pid}) exited before it was ready")),
        },
        _ = tokio::time::sleep(h.within) => Err(format!(
            "the new master ({pid}) was not ready within {:?} (--start-timeout)",
            h.within
        )),
    };
    match &outcome {
        Ok(_) => {
            // Reparented to init once we exit; nothing left for us to wait on.
            drop(child);
        }
        Err(_) => {
            let _ = child.start_kill();
            let staging = h.control.map(|c| staging_path(&c, pid));
            tokio::spawn(async move {
                let status = child.wait().await;
                tracing::info!("upgrade: the new master ({pid}) ended: {status:?}");
                // Killed, it could not remove the control socket it was staging.
                if let Some(path) = staging {
                    let _ = std::fs::remove_file(path);
                }
            });
        }
    }
    outcome
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_sits_beside_the_socket() {
        assert_eq!(
            staging_path(Path::new("/run/ferry/8080.sock"), 42),
            PathBuf::from("/run/ferry/8080.sock.42.new")
        );
    }
}
