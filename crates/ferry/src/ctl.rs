//! `ferry ctl`: the client of the control socket (`control.rs`). It sends one
//! request, prints the answer for a person (or the JSON with `--json`), and exits 0
//! only if the master says it worked: a reload whose replacement failed exits 1.

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

/// Ask a running ferry master, over its control socket.
#[derive(Debug, Parser)]
#[command(name = "ferry ctl", about)]
pub struct Ctl {
    /// The control socket [default: the one of the master listening on --port].
    #[arg(long, env = "FERRY_CONTROL_SOCKET")]
    socket: Option<PathBuf>,

    /// The port the master listens on, to find its default control socket.
    #[arg(long, default_value_t = 8080)]
    port: u16,

    /// Print the master's JSON answer as it is.
    #[arg(long)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole status document: workers, queue, responses, log counters.
    Status,
    /// One line per worker: slot, pid, state, uptime, served, in flight, RSS, CPU.
    Workers,
    /// Replace every worker, one at a time; reports each slot, exit 1 if any
    /// replacement failed to start (the old worker then keeps serving).
    Reload,
    /// Replace one worker (its replacement ready first), by pid.
    Retire { pid: u32 },
    /// Print every lifecycle event as a JSON line, as it happens, until interrupted:
    /// workers started and exited (with why and what they held), recycling, failed
    /// starts, timeouts, a full queue.
    Events,
    /// Set the pool's size: N, +N or -N.
    Scale {
        #[arg(allow_hyphen_values = true)]
        workers: String,
    },
    /// Upgrade the master binary in place, as SIGUSR2: a new master from the same
    /// path takes the sockets over. Reports the new master's pid, or exit 1 if it
    /// failed (this master then keeps serving).
    Upgrade,
    /// Stop gracefully (in-flight requests finish), or at once with --now.
    Stop {
        #[arg(long)]
        now: bool,
    },
}

/// Runs `ferry ctl ARGS` (the arguments after `ctl`).
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let ctl = match Ctl::try_parse_from(std::iter::once("ferry ctl".to_string()).chain(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let path = ctl
        .socket
        .clone()
        .unwrap_or_else(|| crate::control::default_path(&ctl.port.to_string()));
    let request = match &ctl.command {
        Command::Status => json!({"cmd": "status"}),
        Command::Workers => json!({"cmd": "workers"}),
        Command::Reload => json!({"cmd": "reload"}),
        Command::Retire { pid } => json!({"cmd": "retire", "pid": pid}),
        Command::Events => return follow(&path),
        Command::Scale { workers } => {
            let parsed = if workers.starts_with('+') || workers.starts_with('-') {
                workers
                    .parse::<i64>()
                    .map(|by| json!({"cmd": "scale", "by": by}))
            } else {
                workers
                    .parse::<u64>()
                    .map(|to| json!({"cmd": "scale", "to": to}))
            };
            match parsed {
                Ok(r) => r,
                Err(_) => {
                    eprintln!("ferry ctl: scale takes N, +N or -N, not {workers:?}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Stop { now } => json!({"cmd": "stop", "now": now}),
        Command::Upgrade => json!({"cmd": "upgrade"}),
    };
    let answer = match ask(&path, &request) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "ferry ctl: cannot reach the control socket at {}: {e} (is ferry running? --socket or --port chooses another)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let ok = answer["ok"].as_bool().unwrap_or(false);
    if ctl.json {
        println!("{answer}");
    } else if let Some(error) = answer["error"].as_str() {
        eprintln!("ferry ctl: {error}");
    } else {
        print!("{}", show(&ctl.command, &answer));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `ferry ctl events`: prints the event lines as they come, until the master goes.
fn follow(path: &PathBuf) -> ExitCode {
    let stream = UnixStream::connect(path).and_then(|mut conn| {
        conn.write_all(b"{\"cmd\":\"events\"}\n")?;
        Ok(conn)
    });
    let conn = match stream {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "ferry ctl: cannot reach the control socket at {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut lines = BufReader::new(conn).lines();
    // The first line acknowledges the request; every later one is an event.
    let _ack = lines.next();
    let mut out = std::io::stdout().lock();
    for line in lines {
        let Ok(line) = line else { break };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // The reader of our output went away (`| head`).
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::SUCCESS
}

/// Sends one request line and reads one answer line.
fn ask(path: &PathBuf, request: &Value) -> std::io::Result<Value> {
    let mut conn = UnixStream::connect(path)?;
    let mut line = request.to_string();
    line.push('\n');
    conn.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a garbled answer: {e}"),
        )
    })
}

/// An answer as a person reads it.
fn show(command: &Command, answer: &Value) -> String {
    match command {
        Command::Status => status_text(&answer["status"]),
        Command::Workers => workers_table(&answer["workers"]),
        Command::Reload | Command::Retire { .. } => {
            let mut out = String::new();
            for s in answer["slots"].as_array().into_iter().flatten() {
                out += &match s["outcome"].as_str() {
                    Some("replaced") => format!(
                        "slot {}: replaced {} with {}\n",
                        s["slot"], s["old"], s["new"]
                    ),
                    Some("kept") => format!(
                        "slot {}: KEPT {}: its replacement failed to start: {}\n",
                        s["slot"],
                        s["pid"],
                        s["error"].as_str().unwrap_or("")
                    ),
                    _ => format!(
                        "slot {}: no worker was running; the next one starts new\n",
                        s["slot"]
                    ),
                };
            }
            out
        }
        Command::Events => String::new(),
        Command::Scale { .. } => {
            format!("{} worker(s), was {}\n", answer["workers"], answer["was"])
        }
        Command::Stop { .. } => format!("stopping {}\n", answer["stopping"].as_str().unwrap_or("")),
        Command::Upgrade => format!(
            "upgraded: master {} serves; master {} drains and exits\n",
            answer["new_master"], answer["old_master"]
        ),
    }
}

/// The workers, one line each.
fn workers_table(workers: &Value) -> String {
    let mut out = format!(
        "{:>4} {:>8} {:<9} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
        "SLOT", "PID", "STATE", "UPTIME", "SERVED", "IN FLIGHT", "RSS MiB", "CPU s"
    );
    for w in workers.as_array().into_iter().flatten() {
        out += &format!(
            "{:>4} {:>8} {:<9} {:>9.0}s {:>9} {:>9} {:>9} {:>9}\n",
            w["slot"].to_string(),
            w["pid"].to_string(),
            w["state"].as_str().unwrap_or("?"),
            w["uptime_seconds"].as_f64().unwrap_or(0.0),
            w["served"].to_string(),
            w["in_flight"].to_string(),
            w["rss_bytes"]
                .as_u64()
                .map_or("-".into(), |b| (b >> 20).to_string()),
            w["cpu_seconds"]
                .as_f64()
                .map_or("-".into(), |c| format!("{c:.2}")),
        );
    }
    out
}

/// `/status` as a person reads it: the master, its pool and counters, then the
/// workers' table.
fn status_text(s: &Value) -> String {
    let workers = s["workers"].as_array().map_or(&[][..], Vec::as_slice);
    let count = |state: &str| workers.iter().filter(|w| w["state"] == state).count();
    let command: Vec<&str> = s["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let up = s["uptime_seconds"].as_f64().unwrap_or(0.0);
    let r = &s["responses"];
    format!(
        "ferry     pid {}, up {}, running {}\n\
         workers   {} ready, {} spare, {} draining ({} started, {} exited so far)\n\
         queue     {} waiting (limit {})\n\
         responses 1xx {}  2xx {}  3xx {}  4xx {}  5xx {}\n\
         log       {} line(s) dropped, {} split, {} access line(s) dropped\n\n{}",
        s["pid"],
        humantime::format_duration(std::time::Duration::from_secs(up as u64)),
        command.join(" "),
        count("ready"),
        count("spare"),
        count("draining"),
        s["worker_starts"],
        s["worker_exits"],
        s["queue"]["waiting"],
        s["queue"]["limit"],
        r["1xx"],
        r["2xx"],
        r["3xx"],
        r["4xx"],
        r["5xx"],
        s["log"]["lines_dropped"],
        s["log"]["lines_split"],
        s["log"]["access_lines_dropped"],
        workers_table(&s["workers"]),
    )
}
