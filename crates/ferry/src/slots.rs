//! The set of slots, and so the pool's size: start the first ones, grow and shrink
//! it while serving, within its bounds (SIGTTIN adds a worker, SIGTTOU drains the
//! last slot's worker away, as in Gunicorn; `ferry ctl scale` and `scaler.rs` do
//! the same), reload every slot in turn (SIGHUP) and stop them all
//! (shutdown, which also waits for workers still draining after a SIGTTOU).
//!
//! Slot indexes stay dense, `0..len`: a slot added takes the first index free (that
//! of a slot whose first start failed, or the next one), and the one removed is
//! always the last, so a worker's index keeps naming the same slot in logs.

use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ctx::Ctx;
use crate::events::Event;
use crate::slot::{Reloaded, Trigger};
use crate::sync::lock;
use crate::worker::StartError;

#[derive(Clone)]
pub struct Slots {
    ctx: Arc<Ctx>,
    list: Arc<Mutex<Vec<mpsc::UnboundedSender<Trigger>>>>,
    /// Slots removed by SIGTTOU whose worker may still be draining.
    removing: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Slots {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Slots {
            ctx,
            list: Arc::default(),
            removing: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.list).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a slot at the next index; the receiver says whether its first worker
    /// started. A slot whose first worker fails has already ended.
    pub fn add(&self) -> (usize, oneshot::Receiver<Result<(), StartError>>) {
        let (index, _, booted) = self.add_slot();
        (index, booted)
    }

    fn add_slot(
        &self,
    ) -> (
        usize,
        mpsc::UnboundedSender<Trigger>,
        oneshot::Receiver<Result<(), StartError>>,
    ) {
        let (boot, booted) = oneshot::channel();
        let (to_slot, triggers) = mpsc::unbounded_channel();
        let mut list = lock(&self.list);
        // A slot whose first start failed has ended: its index is free again.
        let index = list
            .iter()
            .position(|s| s.is_closed())
            .unwrap_or(list.len());
        tokio::spawn(crate::slot::run_slot(
            self.ctx.clone(),
            index,
            boot,
            triggers,
        ));
        if index == list.len() {
            list.push(to_slot.clone());
        } else {
            list[index] = to_slot.clone();
        }
        (index, to_slot, booted)
    }

    /// The fewest and the most slots there may be (`Config::pool_bounds`).
    pub fn bounds(&self) -> (usize, usize) {
        let (min, max, _) = self.ctx.config.pool_bounds();
        (min, max)
    }

    /// One more worker, ready before it takes requests like any other, unless the
    /// pool is at its maximum; `why` is for the log (SIGTTIN, ctl, the queue).
    pub fn grow(&self, why: &str) -> bool {
        let max = self.bounds().1;
        if self.len() >= max {
            tracing::warn!("{why}: the pool is at its maximum of {max} worker(s)");
            return false;
        }
        let from = self.len();
        let (index, slot, booted) = self.add_slot();
        tracing::info!(worker = index, "{why}: adding a worker");
        self.ctx.events.emit(|| Event::Scaled {
            from,
            to: from + 1,
            why: why.to_string(),
        });
        let slots = self.clone();
        tokio::spawn(async move {
            let failure = match booted.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "its slot ended unexpectedly".into(),
            };
            tracing::error!(worker = index, "could not add a worker: {failure}");
            slots.forget(index, &slot);
        });
        true
    }

    /// The last slot's worker drains and goes, unless the pool is at its minimum;
    /// `why` is for the log (SIGTTOU, ctl, idleness).
    pub fn shrink(&self, why: &str) -> bool {
        let min = self.bounds().0;
        let (index, slot) = {
            let mut list = lock(&self.list);
            // Slots whose first start failed have ended already.
            while list.last().is_some_and(|s| s.is_closed()) {
                list.pop();
            }
            if list.len() <= min {
                tracing::warn!("{why}: the pool is at its minimum of {min} worker(s)");
                return false;
            }
            let slot = list.pop().expect("more than the minimum");
            (list.len(), slot)
        };
        tracing::info!(worker = index, "{why}: draining and removing a worker");
        self.ctx.events.emit(|| Event::Scaled {
            from: index + 1,
            to: index,
            why: why.to_string(),
        });
        let (ack, acked) = oneshot::channel();
        if slot.send(Trigger::Stop(ack)).is_ok() {
            let gone = tokio::spawn(async move {
                let _ = acked.await;
                tracing::info!(worker = index, "worker removed");
            });
            let mut removing = lock(&self.removing);
            removing.retain(|r| !r.is_finished());
            removing.push(gone);
        }
        true
    }

    /// Drops `slot`, whose first start failed (so it has ended), from the list if it
    /// is the last one there. (One in the middle stays until a SIGTTIN reuses it.)
    fn forget(&self, index: usize, slot: &mpsc::UnboundedSender<Trigger>) {
        let mut list = lock(&self.list);
        if list.len() == index + 1 && list[index].same_channel(slot) {
            list.pop();
        }
    }

    /// Sends a trigger made by `make` to every slot in turn, each time waiting for
    /// its acknowledgement before going on to the next.
    /// Replaces the worker whose pid is `pid` (its replacement ready first); `None`
    /// if no slot runs that worker.
    pub async fn retire(&self, pid: u32) -> Option<(usize, Reloaded)> {
        let list = lock(&self.list).clone();
        for (index, slot) in list.into_iter().enumerate() {
            let (ack, acked) = oneshot::channel();
            if slot.send(Trigger::Retire { pid, ack }).is_ok() {
                if let Ok(Some(outcome)) = acked.await {
                    return Some((index, outcome));
                }
            }
        }
        None
    }

    /// Reloads every slot in turn, each replacement ready before the next begins;
    /// how each went, by slot index.
    pub async fn reload_all(&self) -> Vec<(usize, Reloaded)> {
        let list = lock(&self.list).clone();
        let mut outcomes = Vec::with_capacity(list.len());
        for (index, slot) in list.into_iter().enumerate() {
            let (ack, acked) = oneshot::channel();
            if slot.send(Trigger::Reload(ack)).is_ok() {
                if let Ok(outcome) = acked.await {
                    outcomes.push((index, outcome));
                }
            }
        }
        let kept = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Reloaded::Kept { .. }))
            .count();
        if kept == 0 {
            tracing::info!("reload complete: {} worker(s) replaced", outcomes.len());
        } else {
            tracing::error!(
                "reload failed for {kept} of {} worker(s): their replacements did not start, the old ones keep serving",
                outcomes.len()
            );
        }
        outcomes
    }

    /// Stops every slot at once (each drains its worker); resolves when all have,
    /// and when every worker removed by SIGTTOU has finished draining too.
    pub async fn stop_all(&self) {
        let list = lock(&self.list).clone();
        let mut acks = Vec::with_capacity(list.len());
        for slot in list {
            let (ack, acked) = oneshot::channel();
            if slot.send(Trigger::Stop(ack)).is_ok() {
                acks.push(acked);
            }
        }
        for acked in acks {
            let _ = acked.await;
        }
        let removing = std::mem::take(&mut *lock(&self.removing));
        for gone in removing {
            let _ = gone.await;
        }
        // Workers replaced shortly before the stop may still be draining.
        self.ctx.drains.close();
        self.ctx.drains.wait().await;
    }
}
