//! What systemd hears from the master (`sd_notify`, through the `NOTIFY_SOCKET` it
//! sets for `Type=notify` services): `READY=1` once the first workers are in the
//! pool, `RELOADING=1` then `READY=1` around a reload, `STOPPING=1` when a stop
//! begins, and every few seconds `STATUS=` (workers and queue) with `WATCHDOG=1`
//! when systemd's watchdog asks for it (`WATCHDOG_USEC`). Without `NOTIFY_SOCKET`
//! it does nothing, and starts no timer.
//!
//! Each message is sent from the blocking pool: a datagram to a service manager
//! that does not read must not hold up the runtime's thread.

use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;

use crate::ctx::Ctx;

/// How often `STATUS=` is refreshed (more often when the watchdog wants it).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// What the master tells systemd.
#[derive(Debug, Clone, Copy)]
pub enum Say {
    Ready,
    Reloading,
    Stopping,
    /// A new master (an upgrade) takes over as the service's main process.
    MainPid(u32),
}

/// Whether systemd listens.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `say` with a status line, off the runtime's thread.
pub fn say(say: Say, status: String) {
    if !enabled() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let mut states = vec![NotifyState::Status(&status)];
        match say {
            Say::Ready => states.push(NotifyState::Ready),
            Say::Stopping => states.push(NotifyState::Stopping),
            Say::MainPid(pid) => states.push(NotifyState::MainPid(pid)),
            Say::Reloading => {
                states.push(NotifyState::Reloading);
                // `Type=notify-reload` wants the time the reload began.
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    states.push(now);
                }
            }
        }
        if let Err(e) = sd_notify::notify(&states) {
            tracing::warn!("cannot notify systemd ({say:?}): {e}");
        }
    });
}

/// The pool in a line, for `STATUS=` (what `systemctl status` shows).
pub fn status_line(ctx: &Ctx) -> String {
    format!(
        "{} worker(s) ready, {} request(s) waiting",
        ctx.pool.ready(),
        ctx.pool.waiting()
    )
}

/// Refreshes `STATUS=`, and pets the watchdog if systemd set one, until the master
/// exits (the task goes with the runtime).
pub async fn keep_up(ctx: Arc<Ctx>) {
    if !enabled() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    // Twice per watchdog period, as sd_watchdog_enabled(3) advises.
    let every = watchdog.map_or(STATUS_EVERY, |w| {
        (w / 2).clamp(Duration::from_millis(10), STATUS_EVERY)
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let status = status_line(&ctx);
        let pet = watchdog.is_some();
        tokio::task::spawn_blocking(move || {
            let mut states = vec![NotifyState::Status(&status)];
            if pet {
                states.push(NotifyState::Watchdog);
            }
            let _ = sd_notify::notify(&states);
        });
    }
}
