//! The master's top level: bind, start the pool's slots, fail loudly if the first
//! workers cannot start, then serve until a signal says otherwise.
//!
//! Signals: SIGTERM or SIGINT stop gracefully (stop accepting, let in-flight
//! requests finish, drain the workers, exit 0; all within `--graceful-timeout`).
//! A second one, or SIGQUIT, stops at once (workers killed, exit 1). SIGHUP replaces
//! every worker, one at a time, each replacement ready before its predecessor drains.
//! SIGTTIN adds a worker, SIGTTOU drains one away (`slots.rs`). SIGUSR1 reopens the
//! access log (after logrotate moved it).

use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing_appender::non_blocking::ErrorCounter;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::control::Stop;
use crate::ctx::Ctx;
use crate::slots::Slots;
use crate::spawn::Spawner;
use std::path::PathBuf;

/// Runs the master until it stops. `log_dropped` counts log lines lost to a slow
/// stderr, for `/status`.
pub async fn run(config: Config, log_dropped: Option<ErrorCounter>) -> ExitCode {
    if let Err(e) = config.check() {
        eprintln!("ferry: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferry: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let admin = match config.admin_listen {
        None => None,
        Some(at) => match TcpListener::bind(at).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("ferry: cannot listen on {at} for the admin endpoint: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let (mut term, mut int, mut quit, mut hup, mut ttin, mut ttou, mut usr1) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
        signal(SignalKind::from_raw(libc::SIGTTIN)),
        signal(SignalKind::from_raw(libc::SIGTTOU)),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e), Ok(f), Ok(g)) => (a, b, c, d, e, f, g),
        _ => {
            eprintln!("ferry: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let workers = config.workers();
    let access_log = match config.access_log.as_str() {
        "off" => None,
        target => match AccessLog::open(target, config.access_log_format) {
            Ok(log) => Some(log),
            Err(e) => {
                eprintln!("ferry: cannot open the access log {target}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let port = listener
        .local_addr()
        .map_or(config.listen.port(), |a| a.port());
    let control = match config.control_socket.as_deref() {
        Some("off") => None,
        chosen => {
            let path = chosen.map_or_else(|| crate::control::default_path(port), PathBuf::from);
            match crate::control::bind(&path) {
                Ok(l) => Some((l, path)),
                // A socket asked for by name must work; the default is a convenience.
                Err(e) if chosen.is_some() => {
                    eprintln!(
                        "ferry: cannot create the control socket {}: {e}",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    tracing::warn!(
                        "no control socket ({}: {e}); `ferry ctl` will not reach this master",
                        path.display()
                    );
                    None
                }
            }
        }
    };
    let ctx = Ctx::new(
        config,
        Spawner::start(tokio::runtime::Handle::current()),
        access_log,
    );
    if let Some(counter) = log_dropped {
        let _ = ctx.stats.log_dropped.set(counter);
    }

    // Raised before any worker starts, so that all of them start alike.
    // Each worker the pool may grow to, and each spare, holds descriptors too.
    let (_, most, sizes_itself) = ctx.config.pool_bounds();
    let processes = if sizes_itself { most } else { workers } + ctx.config.spare_workers();
    let max_connections = connection_cap(&ctx.config, processes);
    let slots = Slots::new(ctx.clone());
    let boots: Vec<_> = (0..workers).map(|_| slots.add().1).collect();
    for booted in boots {
        let failure = match booted.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "its slot ended unexpectedly".into(),
        };
        eprintln!(
            "ferry: worker command `{}` failed to start: {failure}",
            ctx.command.join(" ")
        );
        ctx.kill_all();
        return ExitCode::FAILURE;
    }

    let addr = listener
        .local_addr()
        .map_or_else(|_| ctx.config.listen.to_string(), |a| a.to_string());
    let shutdown = CancellationToken::new();
    let front = tokio::spawn(crate::front::serve(
        listener,
        ctx.clone(),
        shutdown.clone(),
        max_connections,
    ));
    if let Some(admin) = admin {
        if let Ok(at) = admin.local_addr() {
            tracing::info!("admin endpoint on http://{at} (/status, /metrics)");
        }
        tokio::spawn(crate::admin::serve(admin, ctx.clone()));
    }
    tracing::info!(
        "ferry listening on http://{addr} with {workers} worker(s): {}",
        ctx.command.join(" ")
    );

    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some((listener, path)) = control {
        tracing::info!(
            "control socket at {} (ferry ctl --socket {})",
            path.display(),
            path.display()
        );
        tokio::spawn(crate::control::serve(
            listener,
            ctx.clone(),
            slots.clone(),
            stop_tx,
        ));
    }
    let reload = Arc::new(Notify::new());
    tokio::spawn(reload_loop(reload.clone(), slots.clone(), ctx.clone()));
    // The listener is bound and the first workers are in the pool: systemd may
    // start what depends on us.
    crate::notify::say(crate::notify::Say::Ready, crate::notify::status_line(&ctx));
    tokio::spawn(crate::notify::keep_up(ctx.clone()));
    if sizes_itself {
        tokio::spawn(crate::scaler::run(ctx.clone(), slots.clone()));
    }

    let graceful = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading every worker, one at a time");
                // A reload already running is followed by exactly one more.
                reload.notify_one();
            }
            _ = ttin.recv() => { slots.grow("SIGTTIN"); }
            _ = usr1.recv() => {
                if let Some(log) = &ctx.access_log {
                    tracing::info!("SIGUSR1: reopening the access log");
                    log.reopen();
                }
            }
            _ = ttou.recv() => { slots.shrink("SIGTTOU"); }
            _ = term.recv() => break true,
            _ = int.recv() => break true,
            _ = quit.recv() => break false,
            Some(how) = stop_rx.recv() => {
                tracing::info!("control socket: stop ({how:?})");
                break how == Stop::Graceful;
            }
        }
    };
    if !graceful {
        tracing::warn!("SIGQUIT: stopping now; killing every worker");
        ctx.kill_all();
        return ExitCode::FAILURE;
    }

    ctx.stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    crate::notify::say(crate::notify::Say::Stopping, "stopping gracefully".into());
    let delay = ctx.config.drain_delay;
    if !delay.is_zero() {
        tracing::info!(
            "lame duck: /readyz answers 503; still serving for {delay:?} (--drain-delay) before the graceful stop"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = next_stop_signal(&mut term, &mut int, &mut quit) => {
                tracing::warn!("second signal: stopping now; killing every worker");
                ctx.kill_all();
                return ExitCode::FAILURE;
            }
        }
    }
    let limit = ctx.config.graceful_timeout;
    tracing::info!(
        "stopping gracefully: accepting no new connections; in-flight requests have {limit:?}"
    );
    shutdown.cancel();
    let stop_everything = async {
        let _ = front.await;
        slots.stop_all().await;
    };
    tokio::select! {
        _ = stop_everything => {
            tracing::info!("stopped gracefully");
            ExitCode::SUCCESS
        }
        _ = tokio::time::sleep(limit) => {
            tracing::warn!("graceful stop took longer than {limit:?}; killing every worker");
            ctx.kill_all();
            ExitCode::FAILURE
        }
        () = next_stop_signal(&mut term, &mut int, &mut quit) => {
            tracing::warn!("second signal: stopping now; killing every worker");
            ctx.kill_all();
            ExitCode::FAILURE
        }
    }
}

/// Resolves at the next SIGTERM, SIGINT or SIGQUIT: during a stop, the sign to stop now.
async fn next_stop_signal(term: &mut Signal, int: &mut Signal, quit: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = quit.recv() => {}
    }
}

/// Descriptors kept back from client connections: the listeners, the log, the
/// spawner's pipes, and per worker its channel, two output pipes and a pidfd (with
/// room for a replacement starting beside each, and for SIGTTIN).
fn reserved_fds(workers: usize) -> u64 {
    64 + 16 * workers as u64
}

/// `--max-connections`, or what the descriptor limit leaves once raised to its
/// hard maximum (logged, since it is the first thing to check at a cap).
fn connection_cap(config: &Config, workers: usize) -> usize {
    let limit = match crate::process::raise_fd_limit() {
        Ok((before, now)) => {
            if now > before {
                tracing::info!("raised the open-file limit from {before} to {now}");
                crate::spawn::keep_worker_fd_limit(before);
            }
            Some(now)
        }
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            None
        }
    };
    let derived = limit.map_or(1024, |l| l.saturating_sub(reserved_fds(workers)).max(16));
    let cap = config.max_connections.unwrap_or(derived);
    if limit.is_some_and(|l| cap + reserved_fds(workers) > l) {
        tracing::warn!(
            "--max-connections {cap} leaves fewer than {} of the {} descriptors for workers",
            reserved_fds(workers),
            limit.unwrap_or_default()
        );
    }
    cap.min(usize::MAX as u64 >> 4) as usize
}

/// Replaces the workers of every slot in turn, each time it is notified.
async fn reload_loop(reload: Arc<Notify>, slots: Slots, ctx: Arc<Ctx>) {
    use crate::notify::{say, status_line, Say};
    loop {
        reload.notified().await;
        say(Say::Reloading, "reloading every worker".into());
        slots.reload_all().await;
        say(Say::Ready, status_line(&ctx));
    }
}
