//! One pool slot's life: keep a worker running in it, restart it with backoff
//! when it dies, and replace it without a gap when it is recycled or reloaded.
//!
//! Restart policy: a worker that served at least one request and then died is
//! replaced at once, however short its life: under a crash storm (workers killed
//! one after another while serving) the pool refills as fast as workers can start.
//! Only a worker that could not start (no handshake), or died before serving
//! anything, makes its slot back off: the delay doubles from 100 ms to
//! [`MAX_DELAY`], and resets once a worker serves. A broken deploy so costs one
//! attempt every couple of seconds per slot, not a fork storm, and a slot recovers
//! within that delay once starting works again (say, after a descriptor flood).
//!
//! Replacement (recycling, SIGHUP): the new worker is started and ready, and in the
//! pool, before the old one is told to drain, so capacity never dips. The
//! master-wide recycle lock covers starting the replacement: one start at a time,
//! pool-wide, while old workers drain side by side without it.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::events::Event;
use crate::worker::{self, Control, Ended, Instance, Live, RecycleMe, Role, StartError};

const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest a slot waits before it tries again to start a worker.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// What a slot can be asked to do.
pub enum Trigger {
    /// Replace the worker with a fresh one (SIGHUP, `ferry ctl reload`); answered
    /// when the old one is gone, or the replacement failed.
    Reload(oneshot::Sender<Reloaded>),
    /// Replace the worker if its pid is `pid` (`ferry ctl retire`); answered with
    /// the outcome, or `None` if this slot's worker is another.
    Retire {
        pid: u32,
        ack: oneshot::Sender<Option<Reloaded>>,
    },
    /// Drain the worker and stop for good (shutdown); acknowledged when it is gone.
    Stop(oneshot::Sender<()>),
}

/// How one slot's reload went.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Reloaded {
    /// A fresh worker serves; the old one drained.
    Replaced { old: u32, new: u32 },
    /// The replacement failed to start: the old worker keeps serving.
    Kept { pid: u32, error: String },
    /// No worker was running (the slot is waiting to restart one, which will be new).
    Restarting,
}

/// The next restart delay.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: FIRST_DELAY }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        d
    }

    fn reset(&mut self) {
        self.next = FIRST_DELAY;
    }
}

/// What happened to a watched worker.
enum Happened {
    Ended(Ended),
    Recycle(RecycleMe),
}

/// Waits for the worker in `inst` to end or ask to be recycled; forever if none.
async fn watch(inst: &mut Option<Instance>) -> Happened {
    let Some(inst) = inst else {
        return std::future::pending().await;
    };
    tokio::select! {
        ended = &mut inst.done => Happened::Ended(ended.unwrap_or_default()),
        Some(ask) = inst.recycle.recv() => Happened::Recycle(ask),
    }
}

/// The start under way, in `starting`, finished; forever if none is.
async fn started(
    starting: &mut Option<JoinHandle<Result<Live, StartError>>>,
) -> Result<Live, StartError> {
    let Some(task) = starting.as_mut() else {
        return std::future::pending().await;
    };
    let r = task.await;
    *starting = None;
    r.unwrap_or_else(|e| {
        Err(StartError {
            cause: format!("its start failed: {e}"),
            stderr_tail: Vec::new(),
        })
    })
}

/// Sleeps until `at`; forever if `None`.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A slot's spare (`--spare-workers`): a worker started and ready beside the pool,
/// or the start of one under way, or the time the next try is due.
struct Spare {
    ready: Option<Instance>,
    starting: Option<JoinHandle<Result<Live, StartError>>>,
    /// The start under way began before a reload: what it brings runs old code.
    stale: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Spare {
    fn new() -> Self {
        Spare {
            ready: None,
            starting: None,
            stale: false,
            retry_at: None,
            backoff: Backoff::new(),
        }
    }

    /// Begins starting a spare, on a task of its own so the slot goes on serving.
    fn start(&mut self, ctx: &Arc<Ctx>, index: usize) {
        let ctx = ctx.clone();
        self.retry_at = None;
        self.stale = false;
        self.starting = Some(tokio::spawn(
            async move { worker::start(&ctx, index).await },
        ));
    }

    /// Tries again after the backoff delay.
    fn retry_later(&mut self) -> Duration {
        let delay = self.backoff.next();
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    /// Drains whatever spare there is, and waits for any start under way: its
    /// worker is drained too.
    async fn stop(&mut self, ctx: &Arc<Ctx>, index: usize) {
        if let Some(task) = self.starting.take() {
            if let Ok(Ok(live)) = task.await {
                self.ready = Some(worker::launch(ctx.clone(), index, live, Role::Spare));
            }
        }
        if let Some(mut spare) = self.ready.take() {
            let _ = spare.control.send(Control::Drain);
            let _ = (&mut spare.done).await;
        }
    }
}

/// Runs slot `index` until it is stopped. `boot` receives the outcome of the first
/// start; if that fails the slot gives up, since a broken deploy must fail loudly.
///
/// With a spare (`--spare-workers`), a worker that asks to be recycled, or dies,
/// is replaced by the spare at once, and a new spare is started behind it.
pub async fn run_slot(
    ctx: Arc<Ctx>,
    index: usize,
    boot: oneshot::Sender<Result<(), StartError>>,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
) {
    let mut boot = Some(boot);
    let mut backoff = Backoff::new();
    let mut current: Option<Instance> = None;
    let keeps_spare = index < ctx.config.spare_workers();
    let mut spare = Spare::new();
    // The worker asked to be recycled and waits, out of the pool, for the spare
    // on its way.
    let mut awaiting_spare = false;
    loop {
        if current.is_none() {
            if let Some(s) = spare.ready.take() {
                promote(&ctx, index, &mut current, &mut spare, s, "its worker ended");
                continue;
            }
            // A spare is on its way: it takes over when it is ready (below).
            if spare.starting.is_none() {
                match worker::start(&ctx, index).await {
                    Ok(live) => {
                        if let Some(b) = boot.take() {
                            let _ = b.send(Ok(()));
                            if keeps_spare {
                                spare.start(&ctx, index);
                            }
                        }
                        current = Some(worker::launch(ctx.clone(), index, live, Role::Serve));
                    }
                    Err(e) => {
                        if let Some(b) = boot.take() {
                            let _ = b.send(Err(e));
                            return;
                        }
                        let delay = backoff.next();
                        tracing::error!(
                            worker = index,
                            "worker failed to start (next attempt in {delay:?}): {e}"
                        );
                        ctx.events.emit(|| Event::StartFailed {
                            slot: index,
                            error: e.to_string(),
                        });
                        if wait_or_stop(delay, &mut triggers).await {
                            spare.stop(&ctx, index).await;
                            return;
                        }
                    }
                }
                continue;
            }
        }
        let retry_at = spare.retry_at.filter(|_| spare.starting.is_none());
        tokio::select! {
            happened = watch(&mut current) => match happened {
                Happened::Ended(Ended { uptime, served }) => {
                    current = None;
                    if served > 0 {
                        backoff.reset();
                    } else if spare.ready.is_none() {
                        let delay = backoff.next();
                        tracing::warn!(worker = index, "worker died after {uptime:.1?} without serving a request; restarting in {delay:?}");
                        if wait_or_stop(delay, &mut triggers).await {
                            spare.stop(&ctx, index).await;
                            return;
                        }
                    }
                }
                // The worker's own request: only this instance's, so never a stale one.
                Happened::Recycle(RecycleMe { why }) => {
                    if let Some(s) = spare.ready.take() {
                        promote(&ctx, index, &mut current, &mut spare, s, &format!("recycling worker: {why}"));
                    } else if spare.starting.is_some() {
                        // The spare on its way takes over when it is ready; the worker
                        // takes nothing new meanwhile, and asks again later.
                        awaiting_spare = true;
                    } else {
                        let outcome = replace(&ctx, index, &mut current, &format!("recycling worker: {why}")).await;
                        // A failed replacement kept this worker: forget the asks that
                        // queued up meanwhile, its supervisor asks again in a while.
                        if let (Reloaded::Kept { .. }, Some(kept)) = (outcome, current.as_mut()) {
                            while kept.recycle.try_recv().is_ok() {}
                        }
                    }
                }
            },
            // The spare went while waiting (or outgrew --max-memory): start another.
            happened = watch(&mut spare.ready) => {
                let gone = spare.ready.take().expect("watched");
                if let Happened::Recycle(RecycleMe { why }) = happened {
                    tracing::info!(worker = index, pid = gone.pid, "replacing the spare worker: {why}");
                    drain_away(&ctx, gone);
                    spare.start(&ctx, index);
                } else {
                    let delay = spare.retry_later();
                    tracing::warn!(worker = index, pid = gone.pid, "the spare worker died; starting another in {delay:?}");
                }
            }
            started = started(&mut spare.starting) => match started {
                Ok(live) => {
                    spare.backoff.reset();
                    let fresh = worker::launch(ctx.clone(), index, live, Role::Spare);
                    let waiting = current.is_none() || awaiting_spare;
                    if spare.stale {
                        // Started before a reload: it runs the old code.
                        drain_away(&ctx, fresh);
                        spare.start(&ctx, index);
                    } else if waiting {
                        awaiting_spare = false;
                        promote(&ctx, index, &mut current, &mut spare, fresh, "its spare is ready");
                    } else {
                        spare.ready = Some(fresh);
                    }
                }
                Err(e) => {
                    let delay = spare.retry_later();
                    tracing::error!(worker = index, "spare worker failed to start (next attempt in {delay:?}): {e}");
                    ctx.events.emit(|| Event::StartFailed { slot: index, error: e.to_string() });
                }
            },
            () = until(retry_at) => spare.start(&ctx, index),
            Some(trigger) = triggers.recv() => match trigger {
                Trigger::Reload(ack) => {
                    let outcome = if current.is_some() {
                        replace(&ctx, index, &mut current, "reloading worker").await
                    } else {
                        Reloaded::Restarting
                    };
                    // The spare runs the old code too.
                    if let Some(old) = spare.ready.take() {
                        drain_away(&ctx, old);
                        spare.start(&ctx, index);
                    } else if spare.starting.is_some() {
                        spare.stale = true;
                    }
                    let _ = ack.send(outcome);
                }
                Trigger::Retire { pid, ack } if current.as_ref().is_some_and(|c| c.pid == pid) => {
                    let why = "retiring worker (ferry ctl retire)";
                    let outcome = match spare.ready.take() {
                        Some(s) => {
                            let new = s.pid;
                            promote(&ctx, index, &mut current, &mut spare, s, why);
                            Reloaded::Replaced { old: pid, new }
                        }
                        None => replace(&ctx, index, &mut current, why).await,
                    };
                    let _ = ack.send(Some(outcome));
                }
                Trigger::Retire { ack, .. } => {
                    let _ = ack.send(None);
                }
                Trigger::Stop(ack) => {
                    if let Some(inst) = current.as_mut() {
                        let _ = inst.control.send(Control::Drain);
                    }
                    spare.stop(&ctx, index).await;
                    if let Some(inst) = current.as_mut() {
                        let _ = (&mut inst.done).await;
                    }
                    let _ = ack.send(());
                    return;
                }
            },
        }
    }
}

/// Waits, on the drains tracker (which a graceful stop waits for), until `old`,
/// told to drain, is gone; then reports it replaced by `new_pid`.
fn watch_drain(ctx: &Arc<Ctx>, index: usize, mut old: Instance, new_pid: u32) {
    let ctx2 = ctx.clone();
    ctx.drains.spawn(async move {
        let _ = (&mut old.done).await;
        tracing::info!(
            worker = index,
            old = old.pid,
            new = new_pid,
            "worker replaced"
        );
        ctx2.events.emit(|| Event::Replaced {
            slot: index,
            old: old.pid,
            new: new_pid,
        });
    });
}

/// Drains a worker nobody needs (a spare), which a graceful stop waits for.
fn drain_away(ctx: &Ctx, inst: Instance) {
    let _ = inst.control.send(Control::Drain);
    ctx.drains.spawn(async move {
        let _ = inst.done.await;
    });
}

/// Puts `ready`, a spare, in the pool in place of the current worker (if any),
/// which drains, and starts the next spare behind it.
fn promote(
    ctx: &Arc<Ctx>,
    index: usize,
    current: &mut Option<Instance>,
    spare: &mut Spare,
    ready: Instance,
    why: &str,
) {
    spare.start(ctx, index);
    let new_pid = ready.pid;
    let _ = ready.control.send(Control::Serve);
    let old = current.replace(ready);
    if let Some(old) = old {
        let old_pid = old.pid;
        tracing::info!(
            worker = index,
            pid = old_pid,
            new = new_pid,
            "{why}; the spare takes over"
        );
        ctx.events.emit(|| Event::Recycling {
            slot: index,
            pid: old_pid,
            why: why.to_string(),
        });
        let _ = old.control.send(Control::Drain);
        watch_drain(ctx, index, old, new_pid);
    } else {
        tracing::info!(worker = index, pid = new_pid, "{why}; the spare takes over");
    }
}

/// Starts a replacement, puts it in service, then drains the old worker and waits
/// for it to go, all under the master-wide recycle lock.
async fn replace(
    ctx: &Arc<Ctx>,
    index: usize,
    current: &mut Option<Instance>,
    why: &str,
) -> Reloaded {
    let old_pid = current.as_ref().map_or(0, |i| i.pid);
    let one_at_a_time = ctx.recycle_lock.lock().await;
    tracing::info!(
        worker = index,
        pid = current.as_ref().map(|i| i.pid),
        "{why}"
    );
    ctx.events.emit(|| Event::Recycling {
        slot: index,
        pid: old_pid,
        why: why.to_string(),
    });
    let new = match worker::start(ctx, index).await {
        Ok(live) => worker::launch(ctx.clone(), index, live, Role::Serve),
        Err(e) => {
            // Keep the old worker serving: a bad deploy must not empty the pool.
            tracing::error!(
                worker = index,
                "replacement worker failed to start: {e}; keeping the current one"
            );
            ctx.events.emit(|| Event::ReplacementFailed {
                slot: index,
                kept: old_pid,
                error: e.to_string(),
            });
            return Reloaded::Kept {
                pid: old_pid,
                error: e.to_string(),
            };
        }
    };
    let new_pid = new.pid;
    let old = current.replace(new);
    if let Some(old) = &old {
        let _ = old.control.send(Control::Drain);
    }
    tracing::info!(worker = index, pid = new_pid, "replacement ready");
    // The lock orders starts, which cost the machine; old workers drain side by side,
    // on a task of their own, so this slot goes on watching its new worker meanwhile.
    drop(one_at_a_time);
    if let Some(old) = old {
        watch_drain(ctx, index, old, new_pid);
    }
    Reloaded::Replaced {
        old: old_pid,
        new: new_pid,
    }
}

/// Sleeps `delay`, answering triggers meanwhile; true if told to stop.
async fn wait_or_stop(delay: Duration, triggers: &mut mpsc::UnboundedReceiver<Trigger>) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return false,
            t = triggers.recv() => match t {
                Some(Trigger::Stop(ack)) => {
                    let _ = ack.send(());
                    return true;
                }
                // Nothing is running to reload; the restart that follows is one.
                Some(Trigger::Reload(ack)) => {
                    let _ = ack.send(Reloaded::Restarting);
                }
                Some(Trigger::Retire { ack, .. }) => {
                    let _ = ack.send(None);
                }
                None => return true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let seen: Vec<u64> = (0..12).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(&seen[..6], [100, 200, 400, 800, 1600, 2000]);
        assert_eq!(*seen.last().unwrap(), 2_000);
        b.reset();
        assert_eq!(b.next(), FIRST_DELAY);
    }
}
