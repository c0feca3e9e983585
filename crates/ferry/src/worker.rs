//! One worker process's life: start it and complete its handshake ([`start`]), then
//! watch it on its own task ([`launch`]): route its frames, ping it, time out its
//! requests, notice when it is stuck, overdue on a cancellation, due for recycling, or
//! told to drain.
//!
//! A worker ends in one place, the end of `supervise` (or, should that panic, its drop
//! guard, which does the minimum): whatever ended it
//! (exit, EOF, violation, stuck, drain), it leaves the pool first, then its in-flight
//! requests fail (502, or a retry elsewhere), then its whole process group is killed
//! and reaped, and one log line says why, with its pid, uptime and requests served.
//! Whether and when it is replaced is the slot's business (`slot.rs`).

use ferry_protocol::codec::MasterCodec;
use ferry_protocol::*;
use futures_util::StreamExt;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::ctx::Ctx;
use crate::dispatch::channel::{self, Channel};
use crate::dispatch::table::Violation;
use crate::dispatch::writer::{self, ChannelWriter, Outgoing};
use crate::events::Event;
use crate::process::{kill_group, rss_of, ExitDescription, GroupLeader};
use crate::spawn::Spawned;
use crate::sync::lock;
use ferry_channel::ReadHalf;

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
pub struct Live {
    channel: Arc<Channel>,
    process: GroupLeader,
    reader: FramedRead<ReadHalf, MasterCodec>,
    /// The channel's writer task: it ends only when the channel broke (or every
    /// sender is gone, which happens after the supervisor is done).
    writer: JoinHandle<()>,
    limit: usize,
}

/// Starts a worker for slot `index` and completes its handshake.
pub async fn start(ctx: &Ctx, index: usize) -> Result<Live, StartError> {
    let cfg = &ctx.config;
    let fail = |cause: String| StartError {
        cause,
        stderr_tail: Vec::new(),
    };
    let Spawned {
        child,
        pid,
        channel,
        stderr_tail,
        output_done,
    } = ctx
        .spawner
        .spawn(ctx.command.clone(), index)
        .await
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    ctx.remember_pid(pid);
    let mut process = GroupLeader::new(child, pid);
    let (read, write) =
        ferry_channel::split(channel).map_err(|e| fail(format!("cannot use its channel: {e}")))?;
    let max_frame = cfg.max_frame_size as usize;
    let mut reader = FramedRead::new(read, MasterCodec::new(max_frame));
    let mut writer = ChannelWriter::new(write, max_frame);

    let first = tokio::select! {
        r = tokio::time::timeout(cfg.start_timeout, reader.next()) => r,
        // An exit is handled like EOF below (which then collects the status), so that a
        // grandchild holding the channel open cannot hide its parent's exit.
        _ = process.exited() => Ok(None),
    };
    let hello = match first {
        Ok(Some(Ok(WorkerMsg::Hello(h)))) => Ok(h),
        Ok(Some(Ok(other))) => Err(format!("it sent {} instead of Hello", kind(&other))),
        Ok(Some(Err(ProtocolError::VersionMismatch { ours, theirs }))) => Err(format!(
            "it speaks protocol version {theirs}; this ferry speaks version {ours}"
        )),
        Ok(Some(Err(ProtocolError::Io(e)))) => Err(e.to_string()),
        Ok(Some(Err(e))) => Err(format!("its first frame was invalid: {e}")),
        // Its exit status, if it exits soon, says more; it is read once reaped below.
        Ok(None) => match tokio::time::timeout(Duration::from_secs(2), process.exited()).await {
            Ok(()) => Err(String::new()),
            Err(_) => Err("it closed its channel (fd 3) before the handshake".into()),
        },
        Err(_) => Err(format!(
            "it did not complete its handshake within {:?}",
            cfg.start_timeout
        )),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(cause) => {
            let status = process.kill_and_reap().await;
            ctx.forget_pid(pid);
            let cause = match status {
                Ok(s) if cause.is_empty() => ExitDescription(s).to_string(),
                _ if cause.is_empty() => "it exited before the handshake".into(),
                _ => cause,
            };
            // Give its output a moment to drain, so the message can quote it.
            let _ = tokio::time::timeout(Duration::from_millis(500), output_done).await;
            let tail = lock(&stderr_tail).iter().cloned().collect();
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
    if let Err(e) = writer
        .send(Outgoing::Msg(MasterMsg::Welcome(welcome.clone())))
        .await
    {
        let _ = process.kill_and_reap().await;
        ctx.forget_pid(pid);
        return Err(fail(format!(
            "the channel failed during the handshake: {e}"
        )));
    }
    let (queue, rx) = mpsc::unbounded_channel();
    let channel = Channel::new(index, pid, queue, &hello, &welcome, ctx.request_limit());
    let writer = tokio::spawn(writer::write_loop(rx, writer));
    let limit = (cfg.concurrency.min(hello.max_in_flight).max(1)) as usize;
    tracing::info!(worker = index, pid, sdk = %format!("{} {}", hello.sdk_name, hello.sdk_version), "worker started");
    ctx.events
        .emit(|| Event::WorkerStarted { slot: index, pid });
    Ok(Live {
        channel,
        process,
        reader,
        writer,
        limit,
    })
}

/// What a running worker can be told.
pub enum Control {
    /// A spare goes into the pool and takes requests from now on.
    Serve,
    /// Leave the pool, finish in-flight requests (up to `--graceful-timeout`), exit.
    Drain,
}

/// Where a worker starts its supervised life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// In the pool, taking requests.
    Serve,
    /// Ready beside the pool, to take over from a worker that goes.
    Spare,
}

/// What a running worker's supervisor asks of its slot: replace this worker (it
/// served its `--max-requests`, or outgrew `--max-memory`), because of `why`.
pub struct RecycleMe {
    pub why: String,
}

/// How a supervised worker's life went, for its slot's restart policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    pub uptime: Duration,
    /// Requests it finished: one that served any was a working deploy.
    pub served: u64,
}

/// A worker the supervisor is watching.
pub struct Instance {
    pub pid: u32,
    pub control: mpsc::UnboundedSender<Control>,
    /// Resolves once the worker is gone and reaped.
    pub done: oneshot::Receiver<Ended>,
    /// Where the supervisor asks, at most once, for this worker to be replaced.
    pub recycle: mpsc::UnboundedReceiver<RecycleMe>,
}

/// Watches a started worker on its own task, and puts it in the pool at once
/// (`Role::Serve`) or keeps it out until it is told [`Control::Serve`] (`Role::Spare`).
pub fn launch(ctx: Arc<Ctx>, index: usize, live: Live, role: Role) -> Instance {
    let pid = live.channel.pid;
    let (control, control_rx) = mpsc::unbounded_channel();
    let (recycle, recycle_rx) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    match role {
        Role::Serve => ctx.pool.add(live.channel.clone(), live.limit),
        Role::Spare => live.channel.set_state(channel::State::Spare),
    }
    ctx.stats.worker_up(&live.channel);
    tokio::spawn(async move {
        let mut guard = Unsupervised {
            ctx: ctx.clone(),
            channel: live.channel.clone(),
            armed: true,
        };
        let ended = supervise(&ctx, index, live, control_rx, recycle).await;
        guard.armed = false;
        let _ = done_tx.send(ended);
    });
    Instance {
        pid,
        control,
        done,
        recycle: recycle_rx,
    }
}

/// If `supervise` ever panicked, its worker would stay in the pool with nobody to
/// answer, expire or fail its requests. This does the minimum `supervise` would have
/// done: out of the pool, requests failed, process group killed. (The slot sees its
/// `done` dropped and starts a replacement.)
struct Unsupervised {
    ctx: Arc<Ctx>,
    channel: Arc<Channel>,
    armed: bool,
}

impl Drop for Unsupervised {
    fn drop(&mut self) {
        if self.armed {
            tracing::error!(
                pid = self.channel.pid,
                "worker supervisor panicked; killing the worker"
            );
            self.ctx.pool.remove(&self.channel);
            self.channel.fail_all();
            kill_group(self.channel.pid);
            self.ctx.forget_pid(self.channel.pid);
            self.ctx.stats.worker_gone(&self.channel);
        }
    }
}

/// What ended a worker.
enum End {
    Exited,
    ChannelClosed,
    WriterFailed,
    Violation(String),
    Stuck(String),
    DrainTimeout,
}

/// Resident memory is read this often when `--max-memory` is set, and a worker still
/// due for recycling after a failed replacement asks again this often.
const RECHECK: Duration = Duration::from_secs(3);

async fn supervise(
    ctx: &Ctx,
    index: usize,
    live: Live,
    mut control: mpsc::UnboundedReceiver<Control>,
    recycle: mpsc::UnboundedSender<RecycleMe>,
) -> Ended {
    let cfg = &ctx.config;
    let Live {
        channel,
        mut process,
        mut reader,
        mut writer,
        limit,
    } = live;
    let pid = channel.pid;
    let started = Instant::now();
    let mut tick = tokio::time::interval(cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The slow log shares the tick: often enough that no request slow past its
    // threshold slips through between two looks.
    let period = match cfg.slow_request_threshold {
        Some(t) => expiry_period(cfg.request_timeout).min((t / 4).max(Duration::from_millis(10))),
        None => expiry_period(cfg.request_timeout),
    };
    let mut expiry = tokio::time::interval(period);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    let mut exhausted = false;
    let mut retiring = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut next_check = started + RECHECK;

    let end = loop {
        tokio::select! {
            frame = reader.next() => match route(&channel, frame) {
                Ok(true) => {}
                Ok(false) => break End::ChannelClosed,
                Err(v) => break End::Violation(v.0),
            },
            () = process.exited() => {
                // Its last frames (a drained worker's final responses, its Goodbye) may
                // still be in the socket: route them before failing what it held. It
                // takes no new requests meanwhile.
                ctx.pool.remove(&channel);
                if let Err(v) = read_what_is_left(&channel, &mut reader).await {
                    break End::Violation(v.0);
                }
                break End::Exited;
            }
            // A write to the worker failed: what we queue goes nowhere from now on, so
            // its requests fail at once instead of waiting for their timeouts.
            // (A worker that retired and exited fails our writes, its Goodbye unread:
            // routed first, it sends the requests written after it elsewhere.)
            _ = &mut writer => {
                ctx.pool.remove(&channel);
                if let Err(v) = read_what_is_left(&channel, &mut reader).await {
                    break End::Violation(v.0);
                }
                // A write fails mostly because the worker died: then say so, with its status.
                let died = tokio::time::timeout(LEFTOVER_WAIT, process.exited()).await.is_ok();
                break if died || channel.goodbye().is_some() { End::Exited } else { End::WriterFailed };
            }
            Some(order) = control.recv(), if drain_deadline.is_none() => match order {
                Control::Serve => {
                    if channel.state() == channel::State::Spare {
                        channel.set_state(channel::State::Ready);
                        ctx.pool.add(channel.clone(), limit);
                    }
                }
                Control::Drain => {
                    ctx.pool.remove(&channel);
                    channel.set_state(channel::State::Draining);
                    channel.start_drain();
                    drain_deadline = Some(Instant::now() + cfg.graceful_timeout);
                    tracing::info!(worker = index, pid, in_flight = channel.describe_in_flight().len(), "draining worker");
                }
            },
            // It retires on its own (Goodbye before Drain): out of the pool, replaced like
            // a recycled worker (no crash backoff); it exits once its requests are done.
            () = channel.said_goodbye.notified(), if drain_deadline.is_none() && !retiring => {
                ctx.pool.remove(&channel);
                channel.set_state(channel::State::Draining);
                retiring = true;
                let reason = channel.goodbye().unwrap_or_default();
                ctx.events.emit(|| Event::Retiring { slot: index, pid, reason: reason.clone() });
                let _ = recycle.send(RecycleMe { why: format!("it retires ({reason})") });
            }
            // Given its last request (`--max-requests`): out of the pool at once, so it
            // serves exactly its limit, and replaced.
            () = channel.exhausted.notified(), if drain_deadline.is_none() => {
                ctx.pool.remove(&channel);
                exhausted = true;
                let _ = recycle.send(RecycleMe { why: format!("it was given its {} requests", channel.dispatched()) });
            }
            _ = expiry.tick() => {
                channel.expire_heads(cfg.request_timeout);
                if let Some(threshold) = cfg.slow_request_threshold {
                    channel.log_slow(threshold);
                }
            }
            _ = tick.tick() => {
                if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                    break End::DrainTimeout;
                }
                let silent = channel.silent_for();
                if silent > cfg.heartbeat_timeout {
                    break End::Stuck(format!("it answered no heartbeat for {silent:.1?}"));
                }
                if let Some(what) = channel.overdue_cancel(cfg.cancel_grace) {
                    break End::Stuck(format!("it did not confirm the cancellation of {what} within {:?}", cfg.cancel_grace));
                }
                nonce += 1;
                channel.send(MasterMsg::Ping(Ping { nonce }));
                let stalled = channel.cancel_stalled(cfg.send_timeout);
                if stalled > 0 {
                    tracing::warn!(worker = index, pid, "cancelled {stalled} streamed response(s) whose client took nothing for {:?} (--send-timeout)", cfg.send_timeout);
                }
                if drain_deadline.is_some() || Instant::now() < next_check {
                    continue;
                }
                // Checked again and again, not once: a replacement that failed to start
                // left this worker in its slot, still due for recycling.
                next_check = Instant::now() + RECHECK;
                let why = if retiring {
                    Some("it retires (asking again)".to_string())
                } else if exhausted {
                    Some(format!("it was given its {} requests (asking again)", channel.dispatched()))
                } else {
                    match (cfg.max_memory, cfg.max_memory.and_then(|_| rss_of(pid))) {
                        (Some(max), Some(rss)) if rss > max => Some(format!("its RSS of {} MiB exceeds --max-memory", rss >> 20)),
                        _ => None,
                    }
                };
                if let Some(why) = why {
                    let _ = recycle.send(RecycleMe { why });
                }
            }
        }
    };

    // One way out, whatever ended it: out of the pool, requests failed (or retried
    // elsewhere), the whole process group killed, the process reaped, one log line.
    ctx.pool.remove(&channel);
    channel.set_state(channel::State::Stopping);
    let held = channel.describe_in_flight();
    channel.fail_all();
    if let End::Stuck(why) = &end {
        tracing::error!(
            worker = index,
            pid,
            "worker is stuck: {why}; it held {} request(s) {held:?}; sending SIGTERM",
            held.len()
        );
        process.signal(libc::SIGTERM);
        if tokio::time::timeout(cfg.kill_timeout, process.exited())
            .await
            .is_err()
        {
            tracing::error!(
                worker = index,
                pid,
                "worker ignored SIGTERM for {:?}; sending SIGKILL",
                cfg.kill_timeout
            );
        }
    }
    if let End::ChannelClosed = end {
        // A worker closes its channel as it exits (after a drain's Goodbye, or as it
        // dies): give it the chance to finish exiting before its group is killed, so
        // a clean exit is reported as one.
        let _ = tokio::time::timeout(cfg.kill_timeout, process.exited()).await;
    }
    // The group goes before the leader is reaped: until then its id is still ours.
    let status = process.kill_and_reap().await.ok();
    writer.abort();
    ctx.forget_pid(pid);
    let status = status.map_or_else(
        || "unknown status".to_string(),
        |s| ExitDescription(s).to_string(),
    );
    let uptime = started.elapsed();
    let served = channel.served();
    ctx.stats.worker_gone(&channel);
    // It may have exited before this loop saw its Goodbye.
    let retiring = retiring || channel.goodbye().is_some();
    let reason = match &end {
        End::Violation(_) => "violation",
        End::WriterFailed => "channel_broken",
        End::DrainTimeout => "drain_timeout",
        End::Stuck(_) => "stuck",
        _ if drain_deadline.is_some() => "drained",
        _ if retiring => "retired",
        _ => "exited",
    };
    ctx.events.emit(|| Event::WorkerExited {
        slot: index,
        pid,
        reason,
        status: status.clone(),
        uptime_seconds: uptime.as_secs_f64(),
        served,
        held: held.clone(),
    });
    match end {
        End::Violation(v) => tracing::error!(
            worker = index,
            pid,
            ?uptime,
            served,
            "worker killed for a protocol violation: {v}; it held {} request(s) {held:?}; {status}",
            held.len()
        ),
        End::WriterFailed => tracing::error!(
            worker = index,
            pid,
            ?uptime,
            served,
            "worker killed: a write to its channel failed; it held {} request(s) {held:?}",
            held.len()
        ),
        End::DrainTimeout => tracing::warn!(
            worker = index,
            pid,
            ?uptime,
            served,
            "worker killed: still busy {:?} after Drain; it held {} request(s) {held:?}",
            cfg.graceful_timeout,
            held.len()
        ),
        _ if drain_deadline.is_some() || retiring => tracing::info!(
            worker = index,
            pid,
            ?uptime,
            served,
            "worker drained: {status}"
        ),
        _ => tracing::warn!(
            worker = index,
            pid,
            ?uptime,
            served,
            "worker exited: {status}; it held {} request(s) {held:?}",
            held.len()
        ),
    }
    Ended { uptime, served }
}

/// How often a worker's requests are checked against `--request-timeout`: a
/// twentieth of it, between 10 ms and 1 s, so a 504 comes at most 5 % (or 1 s) late.
fn expiry_period(request_timeout: Duration) -> Duration {
    (request_timeout / 20).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// After the worker has exited: handles the frames it wrote before it went, up to
/// EOF. Bounded in time, since a process the worker started may have inherited the
/// channel and hold it open (the SDK prevents that; other workers may not).
async fn read_what_is_left(
    channel: &Channel,
    reader: &mut FramedRead<ReadHalf, MasterCodec>,
) -> Result<(), Violation> {
    let rest = async {
        while route(channel, reader.next().await)? {}
        Ok(())
    };
    tokio::time::timeout(LEFTOVER_WAIT, rest)
        .await
        .unwrap_or(Ok(()))
}

/// What one read from a worker's channel means: a message is routed (`Ok(true)`: the
/// channel is still open); EOF or an I/O error closes it (`Ok(false)`); a frame that
/// does not decode, or a message that breaks the protocol, is a violation.
fn route(
    channel: &Channel,
    frame: Option<Result<WorkerMsg, ProtocolError>>,
) -> Result<bool, Violation> {
    match frame {
        Some(Ok(msg)) => channel.handle(msg).map(|()| true),
        Some(Err(ProtocolError::Io(_))) | None => Ok(false),
        Some(Err(e)) => Err(Violation(e.to_string())),
    }
}

/// How long [`read_what_is_left`] waits for EOF.
const LEFTOVER_WAIT: Duration = Duration::from_millis(500);

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn request_timeouts_are_checked_often_enough_and_not_too_often() {
        let ms = Duration::from_millis;
        assert_eq!(
            super::expiry_period(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(super::expiry_period(ms(500)), ms(25));
        assert_eq!(super::expiry_period(ms(50)), ms(10));
    }
}
