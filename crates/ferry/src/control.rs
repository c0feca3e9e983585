//! The control socket: a named local socket (Unix domain, mode 0600, only the
//! master's own user may connect) on which `ferry ctl` asks and the master answers,
//! one JSON object per line each way, as many requests per connection as the
//! client likes. What a signal cannot do, it can: say whether a reload worked.
//!
//! Requests: `{"cmd":"status"}` (the `/status` document), `{"cmd":"workers"}`,
//! `{"cmd":"reload"}` (answers once every slot is done, with each slot's outcome;
//! `ok` is false if any replacement failed to start), `{"cmd":"scale","to":N}` or
//! `{"cmd":"scale","by":1}` / `-1`, `{"cmd":"retire","pid":P}` (replace that worker,
//! its replacement ready first), `{"cmd":"upgrade"}` (as SIGUSR2; answers once the new
//! master serves, with its pid, or with why it failed), `{"cmd":"stop"}` or
//! `{"cmd":"stop","now":true}`, and
//! `{"cmd":"events"}`, after whose answer the connection carries every lifecycle event
//! (`events.rs`) as a line, until the client closes it.
//! Every answer has `ok`; a failed one has `error`, naming what was wrong (an unknown
//! command lists the known ones), and the connection stays usable.
//!
//! The socket file is created with its mode before `bind` (no umask race). A file
//! left by a dead master is detected (nothing accepts on it) and replaced; a live
//! one is refused, and never unlinked.

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::ctx::Ctx;
use crate::slots::Slots;
use crate::sockfile::Owned;

/// Longest request line read; a longer one is an error, and the connection closes.
const MAX_REQUEST: usize = 64 * 1024;

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Graceful,
    Now,
}

/// What the control socket asks of the master's top level.
#[derive(Debug)]
pub enum Ask {
    Stop(Stop),
    /// Upgrade the master (as SIGUSR2); the new master's pid, or why not.
    Upgrade(tokio::sync::oneshot::Sender<Result<u32, String>>),
}

/// Where the control socket lives by default, for the master listening on `port`:
/// `$XDG_RUNTIME_DIR/ferry/<port>.sock`, or `/run/ferry/<port>.sock` for root, or
/// under the temporary directory when neither is there.
pub fn default_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("ferry"),
        _ if unsafe { libc::geteuid() } == 0 => PathBuf::from("/run/ferry"),
        _ => std::env::temp_dir().join(format!("ferry-{}", unsafe { libc::geteuid() })),
    };
    dir.join(format!("{name}.sock"))
}

/// Binds the control socket at `path`: its folder made (0700) if missing, a stale
/// socket file from a dead master replaced, a live one refused. The file is removed
/// at exit by the caller, through the [`Owned`] returned, only if it is still ours
/// (after an upgrade the new master's has replaced it).
pub fn bind(path: &Path) -> io::Result<(Listener, Owned)> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    crate::sockfile::clear_stale(
        path,
        "another ferry",
        "choose another with --control-socket",
    )?;
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .reclaim_name(false)
        .create_tokio()?;
    Ok((listener, Owned::at(path)?))
}

/// Answers control requests until the process exits.
pub async fn serve(
    listener: Listener,
    ctx: Arc<Ctx>,
    slots: Slots,
    stop: mpsc::UnboundedSender<Ask>,
) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // The file's mode already keeps others out; the peer's uid says so again.
        let owner = unsafe { libc::geteuid() };
        match conn.peer_creds().map(|c| c.euid()) {
            Ok(Some(uid)) if uid == owner || uid == 0 => {}
            other => {
                tracing::warn!("control socket: refused a connection from {other:?}");
                continue;
            }
        }
        let (ctx, slots, stop) = (ctx.clone(), slots.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = converse(conn, &ctx, &slots, &stop).await {
                tracing::debug!("control connection ended: {e}");
            }
        });
    }
}

#[derive(Deserialize)]
struct Request {
    cmd: String,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    to: Option<usize>,
    #[serde(default)]
    by: Option<i64>,
    #[serde(default)]
    now: bool,
}

async fn converse(
    conn: Stream,
    ctx: &Ctx,
    slots: &Slots,
    stop: &mpsc::UnboundedSender<Ask>,
) -> io::Result<()> {
    // `&Stream` reads and writes: one reader, one writer, no split needed.
    let mut lines = BufReader::new(&conn);
    let mut send = &conn;
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut lines)
            .take(MAX_REQUEST as u64)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let answer = if !line.ends_with('\n') && n == MAX_REQUEST {
            json!({"ok": false, "error": format!("a request is one line of at most {MAX_REQUEST} bytes")})
        } else {
            match serde_json::from_str::<Request>(line.trim()) {
                Ok(req) if req.cmd == "events" => {
                    send.write_all(b"{\"ok\":true,\"streaming\":\"events\"}\n")
                        .await?;
                    return stream_events(&mut lines, send, ctx).await;
                }
                Ok(req) => answer(req, ctx, slots, stop).await,
                Err(e) => {
                    json!({"ok": false, "error": format!("not a control request ({e}): send one JSON object per line, such as {{\"cmd\":\"status\"}}")})
                }
            }
        };
        let mut out = answer.to_string();
        out.push('\n');
        send.write_all(out.as_bytes()).await?;
        if n == MAX_REQUEST && !line.ends_with('\n') {
            return Ok(());
        }
    }
}

const COMMANDS: &str = "status, workers, reload, retire, scale, upgrade, stop, events";

/// Writes every lifecycle event as a line until the client goes away.
async fn stream_events(
    from_client: &mut BufReader<&Stream>,
    mut to_client: &Stream,
    ctx: &Ctx,
) -> io::Result<()> {
    let mut events = ctx.events.subscribe();
    let mut ignored = [0u8; 256];
    loop {
        let line = tokio::select! {
            // Anything the client sends now is ignored; its EOF ends the stream.
            n = from_client.read(&mut ignored) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
            e = events.recv() => match e {
                Ok(event) => serde_json::to_string(&*event).unwrap_or_default(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    json!({"event": "lagged", "missed": n}).to_string()
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        };
        to_client.write_all((line + "\n").as_bytes()).await?;
    }
}

async fn answer(
    req: Request,
    ctx: &Ctx,
    slots: &Slots,
    stop: &mpsc::UnboundedSender<Ask>,
) -> Value {
    match req.cmd.as_str() {
        "status" => json!({"ok": true, "status": crate::admin::status(ctx)}),
        "retire" => {
            let Some(pid) = req.pid else {
                return json!({"ok": false, "error": "retire takes \"pid\": the worker to replace"});
            };
            match slots.retire(pid).await {
                Some((slot, outcome)) => {
                    let ok = !matches!(outcome, crate::slot::Reloaded::Kept { .. });
                    let mut v = serde_json::to_value(outcome).unwrap_or(Value::Null);
                    v["slot"] = json!(slot);
                    json!({"ok": ok, "slots": [v]})
                }
                None => json!({"ok": false, "error": format!("no worker has pid {pid}")}),
            }
        }
        "workers" => json!({"ok": true, "workers": crate::admin::status(ctx).workers}),
        "reload" => {
            tracing::info!("control socket: reloading every worker, one at a time");
            let outcomes = slots.reload_all().await;
            let ok = outcomes
                .iter()
                .all(|(_, o)| !matches!(o, crate::slot::Reloaded::Kept { .. }));
            let slots: Vec<Value> = outcomes
                .into_iter()
                .map(|(slot, outcome)| {
                    let mut v = serde_json::to_value(outcome).unwrap_or(Value::Null);
                    v["slot"] = json!(slot);
                    v
                })
                .collect();
            json!({"ok": ok, "slots": slots})
        }
        "scale" => {
            let now = slots.len();
            let target = match (req.to, req.by) {
                (Some(n), None) => n as i64,
                (None, Some(d)) => now as i64 + d,
                _ => {
                    return json!({"ok": false, "error": "scale takes one of \"to\": N or \"by\": +N/-N"})
                }
            };
            let (min, max) = slots.bounds();
            let (min, max) = (min as i64, max as i64);
            if !(min..=max).contains(&target) {
                return json!({"ok": false, "error": format!("the pool must have between {min} and {max} workers; asked for {target}")});
            }
            let target = target as usize;
            tracing::info!("control socket: scaling from {now} to {target} worker(s)");
            for _ in now..target {
                slots.grow("ferry ctl scale");
            }
            for _ in target..now {
                slots.shrink("ferry ctl scale");
            }
            json!({"ok": true, "workers": target, "was": now})
        }
        "upgrade" => {
            let (reply, outcome) = tokio::sync::oneshot::channel();
            let _ = stop.send(Ask::Upgrade(reply));
            match outcome.await {
                Ok(Ok(pid)) => {
                    json!({"ok": true, "new_master": pid, "old_master": std::process::id()})
                }
                Ok(Err(e)) => {
                    json!({"ok": false, "error": format!("upgrade failed: {e}; this master keeps serving")})
                }
                Err(_) => json!({"ok": false, "error": "the master ended before the upgrade did"}),
            }
        }
        "stop" => {
            let how = if req.now { Stop::Now } else { Stop::Graceful };
            let _ = stop.send(Ask::Stop(how));
            json!({"ok": true, "stopping": if req.now { "now" } else { "gracefully" }})
        }
        other => {
            json!({"ok": false, "error": format!("unknown command {other:?}; the commands are: {COMMANDS}")})
        }
    }
}
