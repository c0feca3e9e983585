//! Starting worker processes: one private socketpair per child, the child's end on
//! fd 3, its own process group, and its output passed through to our log.
//!
//! All children are forked from one long-lived thread, because `PR_SET_PDEATHSIG`
//! fires when the *thread* that forked the child exits, not the process: forking
//! from a tokio worker thread that later parks or exits would kill healthy children.

use ferry_protocol::{CHANNEL_FD, CHANNEL_FD_ENV};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::privilege::Launch;
use crate::sync::lock;

/// The soft descriptor limit workers start with: the one the master itself was
/// started with, before it raised its own for client connections (0: unchanged).
static WORKER_SOFT_NOFILE: AtomicU64 = AtomicU64::new(0);

/// Workers are started with `soft` as their soft descriptor limit: what the master
/// was given, not what it raised itself to.
pub fn keep_worker_fd_limit(soft: u64) {
    WORKER_SOFT_NOFILE.store(soft, Ordering::Relaxed);
}

/// Lines of a child's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

/// A started child: the process, the master's end of its channel, and its output.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// Blocking as it came; `ferry_channel::split` makes it non-blocking.
    pub channel: StdUnixStream,
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Resolves when the child's stdout and stderr have both closed.
    pub output_done: oneshot::Receiver<()>,
}

struct Job {
    command: Arc<Vec<String>>,
    index: usize,
    reply: oneshot::Sender<io::Result<(Child, OwnedFd)>>,
}

/// The handle to the spawner thread.
#[derive(Clone)]
pub struct Spawner {
    jobs: std_mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawner thread; it lives as long as the process. Every worker is
    /// started as `launch` says.
    pub fn start(rt: tokio::runtime::Handle, launch: Launch) -> Self {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ferry-spawner".into())
            .spawn(move || {
                // tokio's child reaping must be registered from inside the runtime.
                let _enter = rt.enter();
                for job in rx {
                    let _ = job.reply.send(fork_one(&job.command, job.index, &launch));
                }
            })
            .expect("the spawner thread starts");
        Spawner { jobs }
    }

    /// Starts worker `index` running `command`.
    pub async fn spawn(&self, command: Arc<Vec<String>>, index: usize) -> io::Result<Spawned> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                command,
                index,
                reply,
            })
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        let (mut child, master_end) = rx
            .await
            .map_err(|_| io::Error::other("the spawner thread is gone"))??;
        let pid = child.id().unwrap_or(0);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let (done_tx, output_done) = oneshot::channel();
        let out = child
            .stdout
            .take()
            .map(|s| tokio::spawn(pass_through(s, index, pid, "stdout", None)));
        let err = child.stderr.take().map(|s| {
            tokio::spawn(pass_through(
                s,
                index,
                pid,
                "stderr",
                Some(stderr_tail.clone()),
            ))
        });
        tokio::spawn(async move {
            for task in [out, err].into_iter().flatten() {
                let _ = task.await;
            }
            let _ = done_tx.send(());
        });
        let channel = StdUnixStream::from(master_end);
        Ok(Spawned {
            child,
            pid,
            channel,
            stderr_tail,
            output_done,
        })
    }
}

/// Runs on the spawner thread.
fn fork_one(command: &[String], index: usize, launch: &Launch) -> io::Result<(Child, OwnedFd)> {
    let (master_end, child_end) = StdUnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    let parent_pid = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env(CHANNEL_FD_ENV, CHANNEL_FD.to_string())
        .env("FERRY_WORKER_INDEX", index.to_string())
        // systemd hears from the master only.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        // Nor are the master's listeners theirs.
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove(crate::upgrade::FDS_ENV)
        .env_remove(crate::upgrade::READY_ENV)
        .env_remove(crate::upgrade::ADMIN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that stopping a worker stops everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(gid) = launch.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = launch.uid {
        // std drops the supplementary groups too, before setuid.
        cmd.uid(uid);
    }
    for (k, v) in &launch.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &launch.chdir {
        cmd.current_dir(dir);
    }
    let umask = launch.umask;
    // Between fork and exec only async-signal-safe calls are allowed: these are.
    unsafe {
        cmd.pre_exec(move || {
            if child_fd == CHANNEL_FD {
                // dup2 onto itself keeps close-on-exec set: clear it instead.
                if libc::fcntl(child_fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(child_fd, CHANNEL_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            if let Some(mask) = umask {
                libc::umask(mask as libc::mode_t);
            }
            // SIGTERM, not SIGKILL: a worker gets the chance to take its own process
            // group down with it (the SDK does), so no grandchild outlives the master.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
            }
            let soft = WORKER_SOFT_NOFILE.load(Ordering::Relaxed);
            if soft != 0 {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur = soft.min(lim.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
            }
            // The master may have died before prctl took effect.
            if libc::getppid() != parent_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Our copy of the child's end must go now, or we would never see EOF when it dies.
    drop(child_end);
    drop(cmd);
    Ok((child, master_end.into()))
}

/// Longest line of a worker's output relayed as one log line; a longer one is split
/// into pieces this long (and counted in `/status`), so a worker cannot make the
/// master hold a line of any size.
pub const MAX_LINE: usize = 16 * 1024;

/// Lines of worker output split because they were longer than [`MAX_LINE`].
pub static LINES_SPLIT: AtomicU64 = AtomicU64::new(0);

/// Relays one of a worker's output pipes to the log, a line at a time, until the
/// worker closes it. Any bytes are taken (invalid UTF-8 is shown replaced, never a
/// reason to stop), since a reader that stopped would leave the worker's next write
/// failing on a broken pipe. The log itself is written by a thread of its own
/// (`main.rs`), so a slow stderr never blocks this task.
async fn pass_through(
    stream: impl AsyncRead + Unpin,
    index: usize,
    pid: u32,
    which: &'static str,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let (used, complete) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => {
                let room = MAX_LINE - line.len();
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) if i < room => {
                        line.extend_from_slice(&buf[..i]);
                        (i + 1, true)
                    }
                    _ => {
                        let n = buf.len().min(room);
                        line.extend_from_slice(&buf[..n]);
                        (n, line.len() == MAX_LINE)
                    }
                }
            }
        };
        reader.consume(used);
        if complete {
            if line.len() == MAX_LINE {
                LINES_SPLIT.fetch_add(1, Ordering::Relaxed);
            }
            emit(&line, index, pid, which, tail.as_deref());
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&line, index, pid, which, tail.as_deref());
    }
}

fn emit(line: &[u8], index: usize, pid: u32, which: &str, tail: Option<&Mutex<VecDeque<String>>>) {
    let line = String::from_utf8_lossy(line);
    tracing::info!(target: "ferry::worker_output", worker = index, pid, "{which}: {line}");
    if let Some(tail) = tail {
        let mut tail = lock(tail);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line.into_owned());
    }
}
