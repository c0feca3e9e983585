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

use crate::ctx::Ctx;
use crate::events::Event;
use crate::worker::{self, Control, Ended, Instance, RecycleMe, StartError};

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

/// Runs slot `index` until it is stopped. `boot` receives the outcome of the first
/// start; if that fails the slot gives up, since a broken deploy must fail loudly.
pub async fn run_slot(
    ctx: Arc<Ctx>,
    index: usize,
    boot: oneshot::Sender<Result<(), StartError>>,
    mut triggers: mpsc::UnboundedReceiver<Trigger>,
) {
    let mut boot = Some(boot);
    let mut backoff = Backoff::new();
    let mut current: Option<Instance> = None;
    loop {
        let Some(inst) = current.as_mut() else {
            match worker::start(&ctx, index).await {
                Ok(live) => {
                    if let Some(b) = boot.take() {
                        let _ = b.send(Ok(()));
                    }
                    current = Some(worker::launch(ctx.clone(), index, live));
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
                        return;
                    }
                }
            }
            continue;
        };
        tokio::select! {
            ended = &mut inst.done => {
                current = None;
                let Ended { uptime, served } = ended.unwrap_or_default();
                if served > 0 {
                    backoff.reset();
                } else {
                    let delay = backoff.next();
                    tracing::warn!(worker = index, "worker died after {uptime:.1?} without serving a request; restarting in {delay:?}");
                    if wait_or_stop(delay, &mut triggers).await {
                        return;
                    }
                }
            }
            // The worker's own request: only this instance's, so never a stale one.
            Some(RecycleMe { why }) = inst.recycle.recv() => {
                let outcome = replace(&ctx, index, &mut current, &format!("recycling worker: {why}")).await;
                // A failed replacement kept this worker: forget the asks that queued up
                // meanwhile, its supervisor asks again in a while.
                if let (Reloaded::Kept { .. }, Some(kept)) = (outcome, current.as_mut()) {
                    while kept.recycle.try_recv().is_ok() {}
                }
            }
            Some(trigger) = triggers.recv() => match trigger {
                Trigger::Reload(ack) => {
                    let _ = ack.send(replace(&ctx, index, &mut current, "reloading worker").await);
                }
                Trigger::Retire { pid, ack } if pid == inst.pid => {
                    let why = "retiring worker (ferry ctl retire)";
                    let _ = ack.send(Some(replace(&ctx, index, &mut current, why).await));
                }
                Trigger::Retire { ack, .. } => {
                    let _ = ack.send(None);
                }
                Trigger::Stop(ack) => {
                    let _ = inst.control.send(Control::Drain);
                    let _ = (&mut inst.done).await;
                    let _ = ack.send(());
                    return;
                }
            },
        }
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
        Ok(live) => worker::launch(ctx.clone(), index, live),
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
    if let Some(mut old) = old {
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
