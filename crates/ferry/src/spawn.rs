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
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Lines of a child's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

/// A started child: the process, the master's end of its channel, and its output.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub channel: tokio::net::UnixStream,
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
    /// Starts the spawner thread; it lives as long as the process.
    pub fn start(rt: tokio::runtime::Handle) -> Self {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ferry-spawner".into())
            .spawn(move || {
                // tokio's child reaping must be registered from inside the runtime.
                let _enter = rt.enter();
                for job in rx {
                    let _ = job.reply.send(fork_one(&job.command, job.index));
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
        let std = StdUnixStream::from(master_end);
        // tokio needs the socket non-blocking, or reads would stall a runtime thread.
        std.set_nonblocking(true)?;
        let channel = tokio::net::UnixStream::from_std(std)?;
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
fn fork_one(command: &[String], index: usize) -> io::Result<(Child, OwnedFd)> {
    let (master_end, child_end) = StdUnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    let parent_pid = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env(CHANNEL_FD_ENV, CHANNEL_FD.to_string())
        .env("FERRY_WORKER_INDEX", index.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that stopping a worker stops everything it started.
        .process_group(0)
        .kill_on_drop(true);
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
            // SIGTERM, not SIGKILL: a worker gets the chance to take its own process
            // group down with it (the SDK does), so no grandchild outlives the master.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
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

async fn pass_through(
    stream: impl AsyncRead + Unpin,
    index: usize,
    pid: u32,
    which: &'static str,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "ferry::worker_output", worker = index, pid, "{which}: {line}");
        if let Some(tail) = &tail {
            let mut tail = tail.lock().unwrap();
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}
