//! The pool that sizes itself (`--max-workers`): grow by one worker when a request
//! has waited `--scale-up-after` in the queue, shrink by one when a worker has been
//! idle `--idle-timeout`, within `--min-workers` and `--max-workers`.
//!
//! It decides only; `slots.rs` adds and removes. At most one change per look: a
//! grow waits another `--scale-up-after` before the next (the worker it added is
//! still starting, and counts already), a shrink waits for the next idle check. It
//! sleeps while nothing is queued, so an idle master is not woken for it more than
//! once a second.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::ctx::Ctx;
use crate::slots::Slots;

/// Runs until the master stops (the task is dropped with the runtime).
pub async fn run(ctx: Arc<Ctx>, slots: Slots) {
    let cfg = &ctx.config;
    let grow_after = cfg.scale_up_after;
    let idle_check = idle_check_period(cfg.idle_timeout);
    let mut next_idle_check = tokio::time::Instant::now() + idle_check;
    // A graceful stop drains the slots there are: none may be added or removed behind it.
    while !ctx.stopping.load(Ordering::Relaxed) {
        tokio::select! {
            () = ctx.pool.queued.notified() => {
                // Let the request wait its due; it may well be served meanwhile.
                tokio::time::sleep(grow_after).await;
                if ctx.pool.oldest_wait().is_some_and(|w| w >= grow_after) {
                    let why = format!("a request waited {grow_after:?} for a worker (--scale-up-after)");
                    if slots.grow(&why) {
                        // Still waiting at the next look: grow again.
                        ctx.pool.queued.notify_one();
                    }
                } else if ctx.pool.waiting() > 0 {
                    ctx.pool.queued.notify_one();
                }
            }
            () = tokio::time::sleep_until(next_idle_check) => {
                next_idle_check = tokio::time::Instant::now() + idle_check;
                let idle = ctx.pool.longest_idle();
                if idle.is_some_and(|i| i >= cfg.idle_timeout) && ctx.pool.waiting() == 0 {
                    slots.shrink(&format!("a worker was idle {:?} (--idle-timeout)", cfg.idle_timeout));
                }
            }
        }
    }
}

/// How often workers are checked for idleness: a quarter of the timeout, between
/// 10 ms and 1 s.
fn idle_check_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idleness_is_checked_often_enough_and_not_too_often() {
        let ms = Duration::from_millis;
        assert_eq!(
            idle_check_period(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(idle_check_period(ms(400)), ms(100));
        assert_eq!(idle_check_period(ms(8)), ms(10));
    }
}
