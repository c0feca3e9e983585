//! `ferry-bench`: the side-by-side benchmark of ferry against its ceiling (the same
//! handler served directly by hyper), nginx in front of a pool and Node's cluster
//! module, and (`sdks`) of ferry's Python and Node workers against Gunicorn, Granian,
//! Uvicorn and node:cluster.
//!
//! Run it through `bash bench/run.sh [--quick] [--rounds N] [--duration SECS]`, which
//! installs wrk/strace/taskset if needed and builds the release binaries first; see
//! bench/README.md for what is measured and how to read the results.

mod floor;
mod profile;
mod report;
mod sdks;
mod server;
mod strace;
mod wrk;

use report::{CtxRow, Ipc, Meta, ProfileRow, Run, TraceRow};
use server::Server;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sys {
    Direct,
    Ferry,
    Node,
    Nginx,
}

impl Sys {
    /// Also the order in which each round runs them.
    pub const ALL: [Sys; 4] = [Sys::Direct, Sys::Ferry, Sys::Node, Sys::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            Sys::Direct => "direct",
            Sys::Ferry => "ferry",
            Sys::Node => "node",
            Sys::Nginx => "nginx",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Pinned,
    Shared,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pinned => "pinned",
            Mode::Shared => "shared",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    Hello,
    Echo,
    /// A 1 MiB response the worker streams in 64 KiB chunks (`GET /stream`).
    Stream,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Hello, Workload::Echo, Workload::Stream];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Hello => "hello",
            Workload::Echo => "echo 4KiB",
            Workload::Stream => "stream 1MiB",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Workload::Hello => "/",
            Workload::Echo => "/echo",
            Workload::Stream => "/stream?bytes=1048576",
        }
    }

    fn runs_on(self, sys: Sys) -> bool {
        self == Workload::Hello || sys != Sys::Node
    }

    /// 256 connections of 1 MiB each measure the same transport as 64 with
    /// four times the memory and time: the stream stops at 64.
    pub fn conns(self) -> &'static [u32] {
        match self {
            Workload::Stream => &CONNS[..2],
            _ => &CONNS,
        }
    }
}

/// Keep-alive connections wrk holds open.
pub const CONNS: [u32; 3] = [1, 64, 256];
/// Worker processes for ferry and node, threads for direct.
const WORKERS: usize = 2;
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const WARMUP_SECS: u64 = 1;
const IPC_SECS: u64 = 3;
/// Length of the profiled wrk run of each system.
const PROFILE_SECS: u64 = 5;

const USAGE: &str = "\
usage: ferry-bench [--quick] [--rounds N] [--duration SECS] [--mode pinned|shared|both]
                   [--no-ipc] [--no-sdks | --sdks-only] [--results PATH]

Normally run as `bash bench/run.sh [options]`, which installs wrk, strace and taskset
if missing and builds the release binaries first.

  --quick           smoke test: 1 round of 2 s (unless --rounds/--duration say otherwise)
  --rounds N        interleaved rounds per (mode, workload, c) [default 3]
  --duration SECS   length of each wrk run [default 5]
  --mode M          pinned, shared or both [default both]
  --no-ipc          skip the context-switch and strace counters and the perf profile
  --no-sdks         skip the Python and Node SDK rows (Gunicorn, Granian, Uvicorn, cluster)
  --sdks-only       run only those rows (with --results PATH, not to overwrite RESULTS.md)
  --results PATH    where to write the Markdown report [default bench/RESULTS.md]";

struct Opts {
    rounds: usize,
    secs: u64,
    modes: Vec<Mode>,
    ipc: bool,
    /// Run the SDK rows; run only them.
    sdks: bool,
    sdks_only: bool,
    results: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let (mut quick, mut rounds, mut secs) = (false, None, None);
    let mut opts = Opts {
        rounds: 3,
        secs: 5,
        modes: vec![Mode::Pinned, Mode::Shared],
        ipc: true,
        sdks: true,
        sdks_only: false,
        results: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--quick" => quick = true,
            "--rounds" => {
                let v = value("--rounds")?;
                rounds = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("--rounds: expected a positive integer, got {v:?}"))?,
                );
            }
            "--duration" => {
                let v = value("--duration")?;
                secs = Some(
                    v.trim_end_matches('s')
                        .parse::<u64>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("--duration: expected whole seconds, got {v:?}"))?,
                );
            }
            "--mode" => {
                opts.modes = match value("--mode")?.as_str() {
                    "pinned" => vec![Mode::Pinned],
                    "shared" => vec![Mode::Shared],
                    "both" => vec![Mode::Pinned, Mode::Shared],
                    other => return Err(format!("--mode: pinned, shared or both, not {other:?}")),
                }
            }
            "--no-ipc" => opts.ipc = false,
            "--no-sdks" => opts.sdks = false,
            "--sdks-only" => opts.sdks_only = true,
            "--results" => opts.results = Some(PathBuf::from(value("--results")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if opts.sdks_only && !opts.sdks {
        return Err("--sdks-only and --no-sdks contradict each other".into());
    }
    opts.rounds = rounds.unwrap_or(if quick { 1 } else { 3 });
    opts.secs = secs.unwrap_or(if quick { 2 } else { 5 });
    Ok(opts)
}

struct Env {
    root: PathBuf,
    bin_dir: PathBuf,
    /// target/ferry-bench: server logs and strace output.
    work: PathBuf,
    node: Option<String>,
    /// nginx is installed (the reverse-proxy peer).
    nginx: bool,
    taskset: bool,
    strace: Option<String>,
    /// `perf` is installed (the profile of where the time goes).
    perf: bool,
}

fn in_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .any(|d| std::fs::metadata(d.join(name)).is_ok_and(|m| m.is_file()))
    })
}

/// First line of a command's output (stdout, else stderr), whatever its exit status.
fn first_line(cmd: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()?
        .trim()
        .to_string();
    (!line.is_empty()).then_some(line)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("ferry-bench: {}", msg.as_ref());
}

fn warn(warnings: &mut Vec<String>, msg: String) {
    say(format!("WARNING: {msg}"));
    warnings.push(msg);
}

/// A system under test, started once per mode.
struct Running {
    sys: Sys,
    server: Server,
    echo_ok: bool,
    dead: bool,
}

fn argv(env: &Env, sys: Sys, port: u16) -> Vec<OsString> {
    let addr = format!("127.0.0.1:{port}");
    let testbed = env.bin_dir.join("ferry-testbed").into_os_string();
    match sys {
        Sys::Direct => vec![
            testbed,
            "--direct".into(),
            addr.into(),
            "--threads".into(),
            WORKERS.to_string().into(),
        ],
        Sys::Ferry => vec![
            env.bin_dir.join("ferry").into_os_string(),
            "--listen".into(),
            addr.into(),
            "--workers".into(),
            WORKERS.to_string().into(),
            "--".into(),
            testbed,
        ],
        Sys::Node => vec![
            "node".into(),
            env.root.join("bench/node-cluster.js").into_os_string(),
            port.to_string().into(),
        ],
        Sys::Nginx => vec![
            "bash".into(),
            env.root.join("bench/nginx-uds.sh").into_os_string(),
            port.to_string().into(),
            env.work.join(format!("nginx-{port}")).into_os_string(),
            testbed,
        ],
    }
}

fn start(env: &Env, sys: Sys, pinned: bool, label: &str) -> Result<Running, String> {
    let log = env.work.join(format!("{}-{label}.log", sys.name()));
    let mut attempt = 0;
    let server = loop {
        attempt += 1;
        let port = server::free_port().map_err(|e| e.to_string())?;
        match Server::start(
            &argv(env, sys, port),
            &[("RUST_LOG", "warn")],
            pinned,
            port,
            &log,
            READY_TIMEOUT,
        ) {
            Ok(s) => break s,
            Err(e) if attempt < 3 && e.contains("in use") => {
                say(format!("{}: port {port} was taken, retrying", sys.name()));
            }
            Err(e) => return Err(e),
        }
    };
    match server::http_request(server.port, "GET", "/", b"") {
        Ok((200, body)) if body == b"Hello, world!\n" => {}
        Ok((status, body)) => {
            return Err(format!(
                "GET / answered {status} {:?}, expected 200 \"Hello, world!\\n\"",
                String::from_utf8_lossy(&body)
            ))
        }
        Err(e) => return Err(format!("GET / failed after start: {e}")),
    }
    let echo_ok = match sys {
        Sys::Node => false,
        _ => matches!(
            server::http_request(server.port, "POST", "/echo", b"ferry-bench echo check"),
            Ok((200, body)) if body == b"ferry-bench echo check"
        ),
    };
    Ok(Running {
        sys,
        server,
        echo_ok,
        dead: false,
    })
}

fn start_all(env: &Env, mode: Mode, label: &str, warnings: &mut Vec<String>) -> Vec<Running> {
    let mut out = Vec::new();
    for sys in Sys::ALL {
        if sys == Sys::Node && env.node.is_none() {
            continue;
        }
        if sys == Sys::Nginx && !env.nginx {
            warn(
                warnings,
                "nginx is not installed: skipping the nginx → 2 direct row".into(),
            );
            continue;
        }
        let bin = match sys {
            Sys::Node => None,
            Sys::Nginx => Some(env.bin_dir.join("ferry-testbed")),
            Sys::Direct => Some(env.bin_dir.join("ferry-testbed")),
            Sys::Ferry => Some(env.bin_dir.join("ferry")),
        };
        if let Some(bin) = bin.filter(|b| !b.is_file()) {
            warn(
                warnings,
                format!("{}: {} not built; skipping it", sys.name(), bin.display()),
            );
            continue;
        }
        match start(env, sys, mode == Mode::Pinned, label) {
            Ok(r) => {
                say(format!(
                    "{} ({} mode) ready on 127.0.0.1:{} (pid {})",
                    sys.name(),
                    mode.name(),
                    r.server.port,
                    r.server.pid()
                ));
                if sys != Sys::Node && !r.echo_ok {
                    warn(
                        warnings,
                        format!(
                            "{}: POST /echo did not echo its body; skipping echo for it",
                            sys.name()
                        ),
                    );
                }
                out.push(r);
            }
            Err(e) => warn(
                warnings,
                format!(
                    "{} failed to start in {} mode, skipping it: {e}",
                    sys.name(),
                    mode.name()
                ),
            ),
        }
    }
    out
}

fn spec<'a>(
    echo: &'a Path,
    port: u16,
    w: Workload,
    c: u32,
    secs: u64,
    pinned: bool,
) -> wrk::Spec<'a> {
    wrk::Spec {
        url: format!("http://127.0.0.1:{port}{}", w.path()),
        conns: c,
        threads: if pinned || c == 1 { 1 } else { 2 },
        secs,
        pinned,
        script: (w == Workload::Echo).then_some(echo),
    }
}

fn progress(tag: &str, sys: Sys, o: &wrk::Outcome, nice_pct: f64, cpu_us: Option<f64>) {
    say(format!(
        "[{tag}] {:<6} {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>9.1} µs  CPU {:>5} µs/req{}{}",
        sys.name(),
        o.rps,
        o.p50_us,
        o.p99_us,
        cpu_us.map_or("?".into(), |v| format!("{v:.1}")),
        if o.socket_errors + o.non_2xx > 0 {
            format!(
                "  ({} socket errors, {} non-2xx)",
                o.socket_errors, o.non_2xx
            )
        } else {
            String::new()
        },
        if nice_pct > 2.0 {
            format!("  [niced processes took {nice_pct:.0}% of the CPU]")
        } else {
            String::new()
        }
    ));
}

fn run_modes(env: &Env, opts: &Opts, warnings: &mut Vec<String>, noise: &mut Noise) -> Vec<Run> {
    let echo = env.root.join("bench/echo.lua");
    let mut runs = Vec::new();
    for &mode in &opts.modes {
        let pinned = mode == Mode::Pinned;
        if pinned && !env.taskset {
            warn(warnings, "taskset not found: skipping pinned mode".into());
            continue;
        }
        say(format!("== {} mode: starting servers", mode.name()));
        let mut running = start_all(env, mode, mode.name(), warnings);
        for r in &mut running {
            let s = spec(
                &echo,
                r.server.port,
                Workload::Hello,
                64,
                WARMUP_SECS,
                pinned,
            );
            if let Err(e) = wrk::run(&s) {
                warn(warnings, format!("{} warm-up failed: {e}", r.sys.name()));
            }
            if pinned {
                // Every process of the tree (ferry's workers included) must be on CPU 1.
                for pid in server::tree(r.server.pid()) {
                    let cpus = server::cpus_allowed(pid).unwrap_or_default();
                    if cpus != "1" {
                        warn(
                            warnings,
                            format!(
                                "{}: pid {pid} may run on CPUs {cpus:?}, not just 1",
                                r.sys.name()
                            ),
                        );
                    }
                }
            }
        }
        for w in Workload::ALL {
            if w == Workload::Echo && !echo.is_file() {
                warn(
                    warnings,
                    format!("{} missing: skipping echo", echo.display()),
                );
                continue;
            }
            for &c in w.conns() {
                for round in 1..=opts.rounds {
                    let tag = format!("{} {} c={c} {round}/{}", mode.name(), w.name(), opts.rounds);
                    for r in &mut running {
                        if !w.runs_on(r.sys) || r.dead || (w == Workload::Echo && !r.echo_ok) {
                            continue;
                        }
                        if !r.server.alive() {
                            r.dead = true;
                            warn(
                                warnings,
                                format!(
                                    "{} ({} mode) died; skipping it from now on. Log tail:\n{}",
                                    r.sys.name(),
                                    mode.name(),
                                    r.server.log_tail(8)
                                ),
                            );
                            continue;
                        }
                        let s = spec(&echo, r.server.port, w, c, opts.secs, pinned);
                        let tree = server::tree(r.server.pid());
                        match measured_run(&s, noise, &tree) {
                            Ok(Measured {
                                out,
                                nice_pct,
                                steal_pct,
                                cpu_us,
                                switches,
                                ..
                            }) => {
                                progress(&tag, r.sys, &out, nice_pct, cpu_us);
                                if out.socket_errors + out.non_2xx > 0 {
                                    warn(
                                        warnings,
                                        format!(
                                            "[{tag}] {}: {} socket errors, {} non-2xx responses",
                                            r.sys.name(),
                                            out.socket_errors,
                                            out.non_2xx
                                        ),
                                    );
                                }
                                runs.push(Run {
                                    mode,
                                    workload: w,
                                    conns: c,
                                    round,
                                    sys: r.sys,
                                    out,
                                    nice_pct,
                                    steal_pct,
                                    cpu_us,
                                    switches,
                                });
                            }
                            Err(e) => warn(warnings, format!("[{tag}] {}: {e}", r.sys.name())),
                        }
                    }
                }
            }
        }
        say(format!("== {} mode: stopping servers", mode.name()));
        drop(running);
    }
    runs
}

/// strace, detached (SIGINT) or killed when dropped.
struct Tracer(Child);

impl Tracer {
    fn detach(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the strace process this benchmark started.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.detach();
    }
}

fn trace(env: &Env, r: &Running, ipc: &mut Ipc) -> Result<TraceRow, String> {
    let master = r.server.pid();
    let workers = server::children(master);
    let pids: Vec<i32> = std::iter::once(master)
        .chain(workers.iter().copied())
        .collect();
    let file = env.work.join(format!("strace-{}.txt", r.sys.name()));
    let errfile = env.work.join(format!("strace-{}.err", r.sys.name()));
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-yy", "-qq"])
        .arg("-e")
        .arg("trace=read,write,readv,writev,recvfrom,sendto,recvmsg,sendmsg")
        .arg("-o")
        .arg(&file);
    for p in &pids {
        cmd.arg("-p").arg(p.to_string());
    }
    let err = std::fs::File::create(&errfile).map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("could not run strace: {e}"))?;
    let mut tracer = Tracer(child);
    let tracer_pid = tracer.0.id() as i32;
    let side_map = |map: &mut HashMap<i32, strace::Side>| {
        for &p in &pids {
            let side = if p == master {
                strace::Side::Master
            } else {
                strace::Side::Worker
            };
            for t in server::tasks(p) {
                map.insert(t, side);
            }
        }
    };
    let mut sides = HashMap::new();
    side_map(&mut sides);
    // Wait until strace has attached to every thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = tracer.0.try_wait() {
            return Err(format!(
                "strace exited ({status}): {}",
                std::fs::read_to_string(&errfile).unwrap_or_default().trim()
            ));
        }
        let attached = pids.iter().all(|&p| {
            server::tasks(p)
                .iter()
                .all(|&t| server::tracer_of(p, t) == Some(tracer_pid))
        });
        if attached {
            break;
        }
        if Instant::now() > deadline {
            return Err("strace did not attach to every thread within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let echo = env.root.join("bench/echo.lua");
    let out = wrk::run(&spec(
        &echo,
        r.server.port,
        Workload::Hello,
        64,
        IPC_SECS,
        false,
    ));
    side_map(&mut sides);
    tracer.detach();
    let window_secs = t0.elapsed().as_secs_f64();
    let out = out?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let counts = strace::count(&text, master, |tid| {
        sides.get(&tid).copied().unwrap_or(strace::Side::Other)
    });
    let other: u64 = counts
        .by
        .iter()
        .filter(|((s, _, _), _)| *s == strace::Side::Other)
        .map(|(_, t)| t.calls)
        .sum();
    if other > 0 {
        ipc.notes.push(format!(
            "{}: {other} traced calls came from threads not seen in /proc (short-lived threads); not counted.",
            r.sys.name()
        ));
    }
    let file = file
        .strip_prefix(&env.root)
        .unwrap_or(&file)
        .display()
        .to_string();
    Ok(TraceRow {
        sys: r.sys,
        workers: workers.len(),
        requests: out.requests,
        rps: out.rps,
        window_secs,
        counts,
        file,
    })
}

fn run_ipc(env: &Env, warnings: &mut Vec<String>) -> Ipc {
    let mut ipc = Ipc {
        secs: IPC_SECS,
        ..Ipc::default()
    };
    say("== IPC counters (shared mode, hello, c=64)");
    let running = start_all(env, Mode::Shared, "ipc", warnings);
    let echo = env.root.join("bench/echo.lua");
    let tck = server::clock_ticks_per_sec() as f64;
    for r in &running {
        let warm = spec(
            &echo,
            r.server.port,
            Workload::Hello,
            64,
            WARMUP_SECS,
            false,
        );
        if let Err(e) = wrk::run(&warm) {
            warn(warnings, format!("{} warm-up failed: {e}", r.sys.name()));
            continue;
        }
        let pids = server::tree(r.server.pid());
        let before = server::counters(&pids);
        let res = wrk::run(&spec(
            &echo,
            r.server.port,
            Workload::Hello,
            64,
            IPC_SECS,
            false,
        ));
        let after = server::counters(&pids);
        match res {
            Ok(out) => {
                say(format!(
                    "[ipc] {:<6} ctx switches/req {:.3}, CPU µs/req {:.1}",
                    r.sys.name(),
                    (after.ctx_switches - before.ctx_switches) as f64 / out.requests as f64,
                    (after.cpu_ticks - before.cpu_ticks) as f64 / tck * 1e6 / out.requests as f64
                ));
                ipc.ctx.push(CtxRow {
                    sys: r.sys,
                    procs: pids.len(),
                    threads: after.threads,
                    requests: out.requests,
                    rps: out.rps,
                    ctx_switches: after.ctx_switches.saturating_sub(before.ctx_switches),
                    cpu_secs: after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / tck,
                })
            }
            Err(e) => warn(warnings, format!("[ipc] {}: {e}", r.sys.name())),
        }
    }
    if env.strace.is_none() {
        warn(warnings, "strace not found: skipping syscall counts".into());
        return ipc;
    }
    for sys in [Sys::Ferry, Sys::Direct] {
        let Some(r) = running.iter().find(|r| r.sys == sys) else {
            continue;
        };
        match trace(env, r, &mut ipc) {
            Ok(t) => {
                say(format!(
                    "[strace] {}: {} requests traced ({:.0} req/s under strace)",
                    sys.name(),
                    t.requests,
                    t.rps
                ));
                ipc.traces.push(t);
            }
            Err(e) => warn(warnings, format!("[strace] {}: {e}", sys.name())),
        }
    }
    ipc
}

/// Connection counts the profile is taken at: one request at a time (the latency
/// target) and the c=64 load of the CPU target.
const PROFILE_CONNS: [u32; 2] = [1, 64];

/// Profiles direct and ferry, pinned, hello at each of [`PROFILE_CONNS`]: `perf record`
/// of CPU 1 (every server process runs there; wrk is on CPU 0) over one measured wrk
/// run each.
fn run_profile(env: &Env, warnings: &mut Vec<String>, noise: &mut Noise) -> Vec<ProfileRow> {
    if !env.perf || !env.taskset {
        warn(
            warnings,
            "perf or taskset not found: skipping the profile (apt-get install linux-perf)".into(),
        );
        return Vec::new();
    }
    say("== profile (pinned, hello, c=1 and c=64, perf record of CPU 1)");
    let echo = env.root.join("bench/echo.lua");
    let mut rows = Vec::new();
    for sys in [Sys::Direct, Sys::Ferry] {
        let r = match start(env, sys, true, "profile") {
            Ok(r) => r,
            Err(e) => {
                warn(
                    warnings,
                    format!("[profile] {} did not start: {e}", sys.name()),
                );
                continue;
            }
        };
        let warm = spec(&echo, r.server.port, Workload::Hello, 64, WARMUP_SECS, true);
        if let Err(e) = wrk::run(&warm) {
            warn(
                warnings,
                format!("[profile] {} warm-up failed: {e}", sys.name()),
            );
            continue;
        }
        for c in PROFILE_CONNS {
            match profile_one(env, &r, c, noise) {
                Ok(row) => {
                    say(format!(
                        "[profile] {} c={c}: {:.1} ms sampled, CPU {:.1} µs/req",
                        sys.name(),
                        row.counts.total as f64 / 1e6,
                        row.cpu_us
                    ));
                    rows.push(row);
                }
                Err(e) => warn(warnings, format!("[profile] {} c={c}: {e}", sys.name())),
            }
        }
    }
    rows
}

fn profile_one(
    env: &Env,
    r: &Running,
    conns: u32,
    noise: &mut Noise,
) -> Result<ProfileRow, String> {
    let master = r.server.pid();
    let tree = server::tree(master);
    let file = env
        .work
        .join(format!("perf-{}-c{conns}.data", r.sys.name()));
    let _ = std::fs::remove_file(&file);
    // perf outlives the wrk run by a second on each side; only the shares of the
    // server's samples are used, so the idle edges do not matter.
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "2000",
            "-C",
            "1",
            "-g",
            "-o",
        ])
        .arg(&file)
        .args(["--", "sleep", &(PROFILE_SECS + 2).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not run perf: {e}"))?;
    // perf writes its file's header once its events are open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&file).map_or(true, |m| m.len() == 0) {
        if let Ok(Some(status)) = perf.try_wait() {
            return Err(format!("perf record exited at once ({status})"));
        }
        if Instant::now() > deadline {
            let _ = perf.kill();
            let _ = perf.wait();
            return Err("perf record did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let echo = env.root.join("bench/echo.lua");
    let m = measured_run(
        &spec(
            &echo,
            r.server.port,
            Workload::Hello,
            conns,
            PROFILE_SECS,
            true,
        ),
        noise,
        &tree,
    );
    let status = perf.wait().map_err(|e| e.to_string())?;
    let m = m?;
    if !status.success() {
        return Err(format!("perf record failed ({status})"));
    }
    let out = Command::new("perf")
        .args(["script", "-F", "pid,period,ip,sym", "-i"])
        .arg(&file)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("could not run perf script: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let counts = profile::count(&text, |pid| {
        if pid == master {
            Some(profile::Role::Master)
        } else if tree.contains(&pid) {
            Some(profile::Role::Worker)
        } else {
            None
        }
    });
    if counts.total == 0 {
        return Err("perf recorded no samples of the server".into());
    }
    Ok(ProfileRow {
        sys: r.sys,
        conns,
        requests: m.out.requests,
        cpu_us: m.cpu_us.ok_or("no schedstat CPU time for the tree")?,
        switches: m.switches.unwrap_or(0.0),
        counts,
    })
}

/// Fuzzers and compilers running right now (the benchmark wants an idle machine).
fn busy() -> Vec<&'static str> {
    let me = std::process::id().to_string();
    let (mut fuzz, mut rustc) = (false, false);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let argv0 = cmdline.split_whitespace().next().unwrap_or("");
        if argv0.rsplit('/').next() == Some("rustc") {
            rustc = true;
        } else if cmdline.contains("fuzz") {
            fuzz = true;
        }
    }
    let mut out = Vec::new();
    if fuzz {
        out.push("a fuzzer was running");
    }
    if rustc {
        out.push("rustc was compiling");
    }
    out
}

/// Watches for other work on the machine around each measurement.
#[derive(Default)]
struct Noise {
    seen: Vec<&'static str>,
}

impl Noise {
    fn check(&mut self) {
        for b in busy() {
            if !self.seen.contains(&b) {
                self.seen.push(b);
            }
        }
    }
}

/// Runs wrk, noting what else the machine did meanwhile: the share of all CPU time
/// taken by niced processes (a fuzzer or build at nice 19) and stolen by the host.
/// One wrk run with what the machine and the server did meanwhile.
struct Measured {
    out: wrk::Outcome,
    nice_pct: f64,
    steal_pct: f64,
    cpu_us: Option<f64>,
    /// Of `cpu_us`, the root process's own (ferry's master).
    root_cpu_us: Option<f64>,
    switches: Option<f64>,
}

/// Runs wrk against the server whose process tree is `tree`, counting the tree's CPU
/// time and context switches over the run.
fn measured_run(spec: &wrk::Spec, noise: &mut Noise, tree: &[i32]) -> Result<Measured, String> {
    noise.check();
    let before = server::cpu_times();
    let root = &tree[..tree.len().min(1)];
    let (cpu0, root0, cs0) = (
        server::cpu_ns(tree),
        server::cpu_ns(root),
        server::counters(tree).ctx_switches,
    );
    let out = wrk::run(spec)?;
    let (cpu1, root1, cs1) = (
        server::cpu_ns(tree),
        server::cpu_ns(root),
        server::counters(tree).ctx_switches,
    );
    let after = server::cpu_times();
    noise.check();
    let (nice_pct, steal_pct) = match (before, after) {
        (Some(b), Some(a)) if a.total > b.total => {
            let total = (a.total - b.total) as f64;
            (
                (a.nice - b.nice) as f64 * 100.0 / total,
                (a.steal - b.steal) as f64 * 100.0 / total,
            )
        }
        _ => (0.0, 0.0),
    };
    let per = |d: u64| (out.requests > 0).then(|| d as f64 / out.requests as f64);
    Ok(Measured {
        cpu_us: per(cpu1.saturating_sub(cpu0)).map(|ns| ns / 1000.0),
        root_cpu_us: per(root1.saturating_sub(root0)).map(|ns| ns / 1000.0),
        switches: per(cs1.saturating_sub(cs0)),
        out,
        nice_pct,
        steal_pct,
    })
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60
    )
}

fn meta(env: &Env, opts: &Opts, args: &[String]) -> Meta {
    let root = &env.root;
    let mut commit = first_line("git", &["rev-parse", "--short", "HEAD"], root)
        .unwrap_or_else(|| "unknown".into());
    if Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
    {
        commit.push_str(" (working tree has uncommitted changes)");
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    Meta {
        date: utc_now(),
        commit,
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: first_line("uname", &["-r"], root).unwrap_or_default(),
        rustc: first_line("rustc", &["--version"], root).unwrap_or_else(|| "unknown".into()),
        wrk: first_line("wrk", &["-v"], root).unwrap_or_else(|| "unknown".into()),
        node: env.node.clone(),
        strace: env.strace.clone(),
        command: std::env::var("FERRY_BENCH_COMMAND").unwrap_or_else(|_| {
            format!("target/release/ferry-bench {}", args.join(" "))
                .trim()
                .to_string()
        }),
        rounds: opts.rounds,
        secs: opts.secs,
        modes: opts.modes.clone(),
        loadavg,
        busy: Vec::new(),
        nice_median: 0.0,
        nice_max: 0.0,
        steal_max: 0.0,
        elapsed_secs: 0,
        floor: Vec::new(),
    }
}

fn find_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("bench/echo.lua").is_file() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or(cwd, Path::to_path_buf)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferry-bench: {e}");
            std::process::exit(2);
        }
    };
    if !in_path("wrk") {
        eprintln!(
            "ferry-bench: wrk not found in PATH. Run `bash bench/run.sh`, which installs it, \
             or `apt-get install -y wrk`."
        );
        std::process::exit(2);
    }
    server::install_signal_handlers();
    let root = find_root();
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| root.join("target/release"));
    let work = bin_dir.parent().map_or_else(
        || root.join("target/ferry-bench"),
        |t| t.join("ferry-bench"),
    );
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("ferry-bench: cannot create {}: {e}", work.display());
        std::process::exit(2);
    }
    let node = if in_path("node") {
        first_line("node", &["--version"], &root)
    } else {
        say("node not found: the node rows are skipped (install Node.js to include them)");
        None
    };
    let env = Env {
        node,
        nginx: in_path("nginx") || Path::new("/usr/sbin/nginx").is_file(),
        taskset: in_path("taskset"),
        perf: in_path("perf"),
        strace: in_path("strace")
            .then(|| first_line("strace", &["-V"], &root))
            .flatten(),
        root,
        bin_dir,
        work,
    };
    let mut meta = meta(&env, &opts, &args);
    let now = busy();
    if !now.is_empty() {
        say(format!(
            "the machine is busy ({}): numbers will be noisy",
            now.join("; ")
        ));
    }
    let per_mode = Workload::ALL
        .iter()
        .map(|w| w.conns().len() * Sys::ALL.iter().filter(|&&s| w.runs_on(s)).count())
        .sum::<usize>()
        * opts.rounds;
    say(format!(
        "{} round(s) × {} s; about {} s of load in total; logs in {}",
        opts.rounds,
        opts.secs,
        opts.modes.len() * per_mode * opts.secs as usize * usize::from(!opts.sdks_only)
            + opts.modes.len()
                * sdks::Peer::ALL.len()
                * opts.rounds
                * opts.secs as usize
                * usize::from(opts.sdks)
            + if opts.ipc && !opts.sdks_only {
                5 * IPC_SECS as usize + 4 * PROFILE_SECS as usize
            } else {
                0
            },
        env.work.display()
    ));
    let started = Instant::now();
    let mut warnings = Vec::new();
    let mut noise = Noise::default();
    let runs = if opts.sdks_only {
        Vec::new()
    } else {
        run_modes(&env, &opts, &mut warnings, &mut noise)
    };
    let sdk_runs = if opts.sdks {
        sdks::run(&env, &opts, &mut warnings, &mut noise)
    } else {
        Vec::new()
    };
    let more = sdks::render(&sdk_runs, &opts.modes, &sdks::versions(&env));
    for &mode in &opts.modes {
        let pinned = mode == Mode::Pinned;
        if pinned && !env.taskset {
            continue;
        }
        match floor::socketpair_rtt_us(pinned) {
            Ok(us) => {
                say(format!(
                    "{} mode: raw socketpair round trip p50 {us:.1} µs",
                    mode.name()
                ));
                meta.floor.push((mode, us));
            }
            Err(e) => warn(&mut warnings, format!("socketpair round trip: {e}")),
        }
    }
    let mut ipc = if opts.ipc && !opts.sdks_only {
        run_ipc(&env, &mut warnings)
    } else {
        Ipc::default()
    };
    if opts.ipc && !opts.sdks_only && opts.modes.contains(&Mode::Pinned) {
        ipc.profile = run_profile(&env, &mut warnings, &mut noise);
    }
    meta.elapsed_secs = started.elapsed().as_secs();
    noise.check();
    meta.busy = noise.seen.iter().map(|s| s.to_string()).collect();
    // The SDK rows' runs count as much as the main ones (an --sdks-only report has
    // only them).
    let (nice, steal): (Vec<f64>, Vec<f64>) = runs
        .iter()
        .map(|r| (r.nice_pct, r.steal_pct))
        .chain(sdk_runs.iter().map(|r| (r.nice_pct, r.steal_pct)))
        .unzip();
    meta.nice_median = report::median(nice.clone()).unwrap_or(0.0);
    meta.nice_max = nice.iter().copied().fold(0.0, f64::max);
    meta.steal_max = steal.iter().copied().fold(0.0, f64::max);
    println!(
        "{}",
        report::render(&meta, &runs, &ipc, &more, &warnings, false)
    );
    let path = opts
        .results
        .clone()
        .unwrap_or_else(|| env.root.join("bench/RESULTS.md"));
    match std::fs::write(
        &path,
        report::render(&meta, &runs, &ipc, &more, &warnings, true),
    ) {
        Ok(()) => say(format!("wrote {}", path.display())),
        Err(e) => say(format!("could not write {}: {e}", path.display())),
    }
    if runs.is_empty() && sdk_runs.is_empty() {
        say("no measurement succeeded");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_quick() {
        let o = parse_args(&[]).unwrap();
        assert_eq!((o.rounds, o.secs, o.modes.len(), o.ipc), (3, 5, 2, true));
        let o = parse_args(&args("--quick")).unwrap();
        assert_eq!((o.rounds, o.secs), (1, 2));
        let o = parse_args(&args("--quick --rounds 2 --duration 7s --mode shared")).unwrap();
        assert_eq!(
            (o.rounds, o.secs, o.modes.clone()),
            (2, 7, vec![Mode::Shared])
        );
        assert!(parse_args(&args("--rounds 0")).is_err());
        assert!(parse_args(&args("--bogus")).is_err());
    }

    #[test]
    fn dates_are_formatted() {
        let d = utc_now();
        assert!(d.starts_with("20") && d.ends_with(" UTC"), "{d}");
    }
}
