//! The master's top level: bind (or inherit) the listeners, start the pool's slots,
//! fail loudly if the first workers cannot start, then serve until a signal says
//! otherwise.
//!
//! Signals: SIGTERM or SIGINT stop gracefully (stop accepting, let in-flight
//! requests finish, drain the workers, exit 0; all within `--graceful-timeout`).
//! A second one, or SIGQUIT, stops at once (workers killed, exit 1). SIGHUP replaces
//! every worker, one at a time, each replacement ready before its predecessor drains.
//! SIGTTIN adds a worker, SIGTTOU drains one away (`slots.rs`). SIGUSR1 reopens the
//! access log (after logrotate moved it). SIGUSR2 upgrades the master binary: a new
//! master takes the listeners over, and this one drains once it serves (`upgrade.rs`).

use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing_appender::non_blocking::ErrorCounter;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::control::{Ask, Stop};
use crate::ctx::Ctx;
use crate::listen::{Listener, Spec};
use crate::privilege::Launch;
use crate::slots::Slots;
use crate::sockfile::Owned;
use crate::spawn::Spawner;
use crate::upgrade::Inherited;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// Runs the master until it stops. `log_dropped` counts log lines lost to a slow
/// stderr, for `/status`.
pub async fn run(config: Config, log_dropped: Option<ErrorCounter>) -> ExitCode {
    if let Err(e) = config.check() {
        eprintln!("ferry: {e}");
        return ExitCode::FAILURE;
    }
    // Taken first, before anything could replace the file: SIGUSR2 runs this path.
    let exe = std::env::current_exe().ok();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let launch = match Launch::from_config(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut inherited = match crate::upgrade::inherited() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ferry: the sockets handed over by the old master: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match open_listeners(&config, &launch, inherited.as_mut()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferry: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Files to remove at exit, each only if still ours; an upgrade hands them over.
    // Handed to us by an upgrade, they become ours only once we serve: a new master
    // that fails to start must leave the old one's socket files in place.
    let listener_files: Vec<Owned> = listeners
        .iter()
        .filter_map(|l| l.owned().cloned())
        .collect();
    let mut files = Files(match inherited {
        Some(_) => Vec::new(),
        None => listener_files.clone(),
    });
    let admin = match (
        inherited.as_mut().and_then(|i| i.admin.take()),
        config.admin_listen,
    ) {
        (Some(l), _) => match TcpListener::from_std(l) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("ferry: the admin endpoint handed over: {e}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => None,
        (None, Some(at)) => match TcpListener::bind(at).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("ferry: cannot listen on {at} for the admin endpoint: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let (mut term, mut int, mut quit, mut hup, mut ttin, mut ttou, mut usr1, mut usr2) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
        signal(SignalKind::from_raw(libc::SIGTTIN)),
        signal(SignalKind::from_raw(libc::SIGTTOU)),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e), Ok(f), Ok(g), Ok(h)) => (a, b, c, d, e, f, g, h),
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
    let control = match config.control_socket.as_deref() {
        Some("off") => None,
        chosen => {
            let path = chosen.map_or_else(
                || crate::control::default_path(&control_name(&listeners)),
                PathBuf::from,
            );
            // A new master (an upgrade) binds beside the old one's socket, and renames
            // its own over it once it serves.
            let bound_at = match inherited {
                Some(_) => crate::upgrade::staging_path(&path, std::process::id()),
                None => path.clone(),
            };
            match crate::control::bind(&bound_at) {
                Ok((l, owned)) => {
                    files.0.push(owned);
                    Some((l, path, bound_at))
                }
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
        Spawner::start(tokio::runtime::Handle::current(), launch),
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

    let addr = listeners
        .iter()
        .map(|l| match l.is_tcp() {
            true => format!("http://{}", l.label()),
            false => l.label().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" and ");
    // What an upgrade hands over: each listener, and whether its file is ours.
    let handed: Vec<(RawFd, bool)> = listeners
        .iter()
        .map(|l| (l.as_raw_fd(), l.owned().is_some()))
        .collect();
    let admin_fd = admin.as_ref().map(|a| a.as_raw_fd());
    let shutdown = CancellationToken::new();
    let front = tokio::spawn(crate::front::serve(
        listeners,
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
        "ferry listening on {addr} with {workers} worker(s): {}",
        ctx.command.join(" ")
    );

    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel();
    // A new master's socket replaces the old master's only now that it serves; if it
    // cannot, it stays where it was bound, and that is where the next upgrade looks.
    let control = control.map(|(listener, path, bound_at)| {
        if bound_at == path {
            return (listener, path);
        }
        match std::fs::rename(&bound_at, &path) {
            Ok(()) => {
                files.moved(&bound_at, &path);
                (listener, path)
            }
            Err(e) => {
                tracing::warn!(
                    "upgrade: cannot move the control socket to {}: {e}; it stays at {}",
                    path.display(),
                    bound_at.display()
                );
                (listener, bound_at)
            }
        }
    });
    let control_path = control.as_ref().map(|(_, path)| path.clone());
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
    if let Some(i) = inherited.take() {
        tracing::info!("upgrade: serving; telling the old master to stop accepting and drain");
        crate::upgrade::say_ready(i.ready);
        files.0.extend(listener_files);
    }
    let (mut upgrader, mut upgrades) =
        crate::upgrade::Upgrader::new(exe.map(|exe| crate::upgrade::Handover {
            exe,
            args,
            listeners: handed,
            admin: admin_fd,
            control: control_path,
            within: ctx.config.start_timeout,
        }));
    if sizes_itself {
        tokio::spawn(crate::scaler::run(ctx.clone(), slots.clone()));
    }

    let mut handed_over = false;
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
            _ = usr2.recv() => upgrader.start("SIGUSR2", None),
            Some(outcome) = upgrades.recv() => {
                upgrader.finished(&outcome);
                match outcome {
                    Ok(pid) => {
                        tracing::info!("upgrade: the new master ({pid}) is ready; this master ({}) stops accepting and drains", std::process::id());
                        crate::notify::say(crate::notify::Say::MainPid(pid), format!("upgraded to master {pid}"));
                        // The sockets and their files are the new master's now.
                        files.0.clear();
                        handed_over = true;
                        break true;
                    }
                    Err(e) => tracing::warn!("upgrade failed: {e}; this master keeps serving"),
                }
            }
            _ = term.recv() => break true,
            _ = int.recv() => break true,
            _ = quit.recv() => break false,
            Some(ask) = stop_rx.recv() => match ask {
                Ask::Stop(how) => {
                    tracing::info!("control socket: stop ({how:?})");
                    break how == Stop::Graceful;
                }
                Ask::Upgrade(reply) => upgrader.start("ferry ctl upgrade", Some(reply)),
            },
        }
    };
    if !graceful {
        tracing::warn!("SIGQUIT: stopping now; killing every worker");
        ctx.kill_all();
        return ExitCode::FAILURE;
    }

    ctx.stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // After an upgrade the listeners stay open in the new master: no lame duck, and
    // systemd hears from the new main process.
    let delay = match handed_over {
        true => std::time::Duration::ZERO,
        false => {
            crate::notify::say(crate::notify::Say::Stopping, "stopping gracefully".into());
            ctx.config.drain_delay
        }
    };
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

/// The public listeners: handed over by an upgrade, else `--listen`, else systemd's
/// (`LISTEN_FDS`), else 127.0.0.1:8080.
fn open_listeners(
    config: &Config,
    launch: &Launch,
    inherited: Option<&mut Inherited>,
) -> Result<Vec<Listener>, String> {
    if let Some(i) = inherited {
        return Ok(std::mem::take(&mut i.listeners));
    }
    let opts = crate::listen::Options {
        backlog: config.backlog,
        mode: config.listen_mode,
        owner: launch.socket_owner(),
    };
    let passed = crate::listen::from_systemd()?;
    if config.listen.is_empty() && !passed.is_empty() {
        return Ok(passed);
    }
    if !passed.is_empty() {
        tracing::info!(
            "--listen is given: not using the {} socket(s) systemd passed (LISTEN_FDS)",
            passed.len()
        );
    }
    let default = [Spec::Tcp(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        8080,
    )))];
    let specs = match config.listen.is_empty() {
        true => &default[..],
        false => &config.listen[..],
    };
    let mut listeners = Vec::new();
    for spec in specs {
        match crate::listen::open(spec, opts) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                // Those already made go, files and all.
                for l in &listeners {
                    if let Some(f) = l.owned() {
                        f.remove();
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(listeners)
}

/// The default control socket's name: the first TCP port, else the first Unix
/// socket's file name.
fn control_name(listeners: &[Listener]) -> String {
    if let Some(port) = listeners.iter().find_map(Listener::port) {
        return port.to_string();
    }
    listeners
        .first()
        .and_then(|l| l.label().strip_prefix("unix:").map(Path::new))
        .and_then(|p| p.file_stem())
        .map_or_else(|| "ferry".into(), |s| s.to_string_lossy().into_owned())
}

/// Socket files this master made, removed when it exits (each only if still ours).
struct Files(Vec<Owned>);

impl Files {
    /// One of them was renamed.
    fn moved(&mut self, from: &Path, to: &Path) {
        for f in &mut self.0 {
            if f.path() == from {
                if let Ok(now) = Owned::at(to) {
                    *f = now;
                }
            }
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            f.remove();
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
/// spawner's pipes, and per worker its channel (two descriptors, three while it is
/// full: `ferry_channel`), two output pipes and a pidfd (with
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
