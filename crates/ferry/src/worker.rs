//! One pool slot's life: start a worker, complete its handshake, put it in the pool,
//! route its frames until it exits or breaks the protocol, then clean up and start
//! its replacement.
//!
//! A slot's worker ends in exactly one place, [`run_slot`]: whatever ended it (EOF,
//! exit, violation), the worker leaves the pool first, then its in-flight requests
//! fail (502, or a retry elsewhere), then its whole process group is killed.

use ferry_protocol::codec::MasterCodec;
use ferry_protocol::*;
use futures_util::{SinkExt, StreamExt};
use std::fmt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::unix::OwnedReadHalf;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::channel::{self, Channel};
use crate::master::Ctx;
use crate::spawn::Spawned;

/// Why a worker could not be started.
pub struct StartError {
    pub cause: String,
    pub stderr_tail: Vec<String>,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)?;
        if !self.stderr_tail.is_empty() {
            write!(
                f,
                "; its last stderr lines:\n    {}",
                self.stderr_tail.join("\n    ")
            )?;
        }
        Ok(())
    }
}

/// A worker past its handshake.
struct Live {
    channel: Arc<Channel>,
    child: Child,
    reader: FramedRead<OwnedReadHalf, MasterCodec>,
    limit: usize,
}

/// Runs slot `index` forever. `boot` receives the outcome of the first start; if
/// that start fails the slot gives up (a broken deploy must fail loudly).
pub async fn run_slot(ctx: Arc<Ctx>, index: usize, boot: oneshot::Sender<Result<(), StartError>>) {
    let mut boot = Some(boot);
    loop {
        match start(&ctx, index).await {
            Ok(live) => {
                if let Some(b) = boot.take() {
                    let _ = b.send(Ok(()));
                }
                serve(&ctx, index, live).await;
            }
            Err(e) => match boot.take() {
                Some(b) => {
                    let _ = b.send(Err(e));
                    return;
                }
                None => tracing::error!(worker = index, "replacement worker failed to start: {e}"),
            },
        }
    }
}

async fn start(ctx: &Ctx, index: usize) -> Result<Live, StartError> {
    let cfg = &ctx.config;
    let fail = |cause: String| StartError {
        cause,
        stderr_tail: Vec::new(),
    };
    let Spawned {
        mut child,
        pid,
        channel,
        stderr_tail,
        output_done,
    } = ctx
        .spawner
        .spawn(ctx.command.clone(), index)
        .await
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let (read, write) = channel.into_split();
    let max_frame = cfg.max_frame_size as usize;
    let mut reader = FramedRead::new(read, MasterCodec::new(max_frame));
    let mut writer = FramedWrite::new(write, MasterCodec::new(max_frame));

    let first = tokio::select! {
        r = tokio::time::timeout(cfg.start_timeout, reader.next()) => r,
        // An exit is handled like EOF below (which then collects the status), so that a
        // grandchild holding the channel open cannot hide its parent's exit.
        _ = child.wait() => Ok(None),
    };
    let hello = match first {
        Ok(Some(Ok(WorkerMsg::Hello(h)))) => Ok(h),
        Ok(Some(Ok(other))) => Err(format!("it sent {} instead of Hello", kind(&other))),
        Ok(Some(Err(ProtocolError::VersionMismatch { ours, theirs }))) => Err(format!(
            "it speaks protocol version {theirs}; this ferry speaks version {ours}"
        )),
        Ok(Some(Err(ProtocolError::Io(e)))) => Err(e.to_string()),
        Ok(Some(Err(e))) => Err(format!("its first frame was invalid: {e}")),
        Ok(None) => {
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            Err(match status {
                Ok(Ok(s)) => exit_error(s).to_string(),
                _ => "it closed its channel (fd 3) before the handshake".into(),
            })
        }
        Err(_) => Err(format!(
            "it did not complete its handshake within {:?}",
            cfg.start_timeout
        )),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(cause) => {
            kill_group(pid);
            let _ = child.wait().await;
            // Give its output a moment to drain, so the message can quote it.
            let _ = tokio::time::timeout(Duration::from_millis(500), output_done).await;
            let tail = stderr_tail.lock().unwrap().iter().cloned().collect();
            return Err(StartError {
                cause,
                stderr_tail: tail,
            });
        }
    };
    let welcome = Welcome {
        protocol_version: PROTOCOL_VERSION,
        worker_index: index as u32,
        max_frame_size: max_frame as u32,
        max_in_flight: cfg.concurrency,
        initial_window: DEFAULT_INITIAL_WINDOW,
    };
    if let Err(e) = writer.send(MasterMsg::Welcome(welcome.clone())).await {
        kill_group(pid);
        let _ = child.wait().await;
        return Err(fail(format!(
            "the channel failed during the handshake: {e}"
        )));
    }
    writer.set_backpressure_boundary(256 * 1024);
    let (queue, rx) = mpsc::unbounded_channel();
    tokio::spawn(channel::write_loop(rx, writer));
    let channel = Channel::new(index, pid, queue, &hello, &welcome);
    let limit = (cfg.concurrency.min(hello.max_in_flight).max(1)) as usize;
    tracing::info!(worker = index, pid, sdk = %format!("{} {}", hello.sdk_name, hello.sdk_version), "worker started");
    Ok(Live {
        channel,
        child,
        reader,
        limit,
    })
}

/// What ended a worker.
enum End {
    Exited(ExitStatus),
    ChannelClosed,
    Violation(String),
}

async fn serve(ctx: &Ctx, index: usize, live: Live) {
    let Live {
        channel,
        mut child,
        mut reader,
        limit,
    } = live;
    let started = Instant::now();
    let pid = channel.pid;
    ctx.pool.add(channel.clone(), limit);

    let end = loop {
        tokio::select! {
            frame = reader.next() => match frame {
                Some(Ok(msg)) => {
                    if let Err(v) = channel.handle(msg) {
                        break End::Violation(v.0);
                    }
                }
                Some(Err(ProtocolError::Io(_))) | None => break End::ChannelClosed,
                Some(Err(e)) => break End::Violation(e.to_string()),
            },
            status = child.wait() => match status {
                Ok(s) => break End::Exited(s),
                Err(_) => break End::ChannelClosed,
            },
        }
    };

    ctx.pool.remove(&channel);
    let held = channel.describe_in_flight();
    channel.fail_all();
    kill_group(pid);
    let status = match &end {
        End::Exited(s) => Some(*s),
        _ => child.wait().await.ok(),
    };
    let status = status.map_or_else(
        || "unknown status".to_string(),
        |s| exit_error(s).to_string(),
    );
    let uptime = started.elapsed();
    match end {
        End::Violation(v) => tracing::error!(
            worker = index,
            pid,
            ?uptime,
            served = channel.served(),
            "worker killed for a protocol violation: {v}; it held {} request(s) {held:?}; {status}",
            held.len()
        ),
        _ => tracing::warn!(
            worker = index,
            pid,
            ?uptime,
            served = channel.served(),
            "worker exited: {status}; it held {} request(s) {held:?}",
            held.len()
        ),
    }
}

/// Kills a worker's whole process group, so nothing it started outlives it.
pub fn kill_group(pid: u32) {
    if pid > 0 {
        // The group id is the worker's pid (it was made a group leader at spawn).
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
    }
}

struct ExitDescription(ExitStatus);

impl fmt::Display for ExitDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            _ => write!(f, "ended with {}", self.0),
        }
    }
}

fn exit_error(s: ExitStatus) -> ExitDescription {
    ExitDescription(s)
}

fn kind(m: &WorkerMsg) -> &'static str {
    match m {
        WorkerMsg::Hello(_) => "Hello",
        WorkerMsg::ResponseHead(_) => "ResponseHead",
        WorkerMsg::BodyChunk(_) => "BodyChunk",
        WorkerMsg::BodyEnd(_) => "BodyEnd",
        WorkerMsg::Credit(_) => "Credit",
        WorkerMsg::Failed(_) => "RequestFailed",
        WorkerMsg::Pong(_) => "Pong",
        WorkerMsg::Goodbye(_) => "Goodbye",
    }
}
