//! The language SDKs against what their users run today: the same hello app under
//! ferry with Python workers (`ferry_worker.wsgi`, `ferry_worker.asgi`) and Node.js
//! workers (fetch-style, `node:http`-style), and under Gunicorn (sync, gthread),
//! Granian, Uvicorn and `node:cluster`, two worker processes each. This module owns
//! those command lines, their interleaved rounds (hello, c = 64, pinned and shared)
//! and the report section with the SDKs' targets; it reuses the orchestrator's
//! process, wrk and counter helpers.

use crate::report::Spread;
use crate::server::{self, Server};
use crate::{measured_run, say, warn, wrk, Env, Measured, Mode, Noise, Opts, READY_TIMEOUT};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    FerryWsgi,
    /// The same with 16 threads a worker: deeper batches on the channel (reported).
    FerryWsgi16,
    GunicornSync,
    GunicornGthread,
    Granian,
    FerryAsgi,
    Uvicorn,
    FerryFetch,
    FerryNodeHttp,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Node,
}

impl Peer {
    /// Also the order in which each round runs them.
    pub const ALL: [Peer; 10] = [
        Peer::FerryWsgi,
        Peer::FerryWsgi16,
        Peer::GunicornSync,
        Peer::GunicornGthread,
        Peer::Granian,
        Peer::FerryAsgi,
        Peer::Uvicorn,
        Peer::FerryFetch,
        Peer::FerryNodeHttp,
        Peer::Cluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Peer::FerryWsgi => "ferry + ferry_worker.wsgi (4 threads)",
            Peer::FerryWsgi16 => "ferry + ferry_worker.wsgi (16 threads)",
            Peer::GunicornSync => "gunicorn sync",
            Peer::GunicornGthread => "gunicorn gthread (4 threads)",
            Peer::Granian => "granian wsgi",
            Peer::FerryAsgi => "ferry + ferry_worker.asgi (uvloop)",
            Peer::Uvicorn => "uvicorn (httptools, uvloop)",
            Peer::FerryFetch => "ferry + ferry-worker fetch",
            Peer::FerryNodeHttp => "ferry + ferry-worker node:http",
            Peer::Cluster => "node:cluster",
        }
    }

    fn lang(self) -> Lang {
        match self {
            Peer::FerryFetch | Peer::FerryNodeHttp | Peer::Cluster => Lang::Node,
            _ => Lang::Python,
        }
    }

    /// A ferry master in front of SDK workers (its own CPU is reported apart).
    fn is_ferry(self) -> bool {
        matches!(
            self,
            Peer::FerryWsgi
                | Peer::FerryWsgi16
                | Peer::FerryAsgi
                | Peer::FerryFetch
                | Peer::FerryNodeHttp
        )
    }

    /// The program that must exist for this peer to run, given the Python interpreter.
    fn program(self, py: &std::path::Path) -> PathBuf {
        let bin = py.parent().unwrap_or(py);
        match self {
            Peer::GunicornSync | Peer::GunicornGthread => bin.join("gunicorn"),
            Peer::Granian => bin.join("granian"),
            Peer::Uvicorn => bin.join("uvicorn"),
            _ => py.to_path_buf(),
        }
    }
}

/// Where the Python peers come from: a venv with `ferry_worker`, Gunicorn, Granian and
/// Uvicorn (`bench/run.sh` makes it in target/ferry-bench/venv).
pub fn python(env: &Env) -> Option<PathBuf> {
    std::env::var_os("FERRY_BENCH_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(env.work.join("venv/bin/python")))
        .filter(|p| p.is_file())
}

/// The Python peers' versions, for the report ("" without the venv).
pub fn versions(env: &Env) -> String {
    const CODE: &str = "import importlib.metadata as m\n\
        print(', '.join(n + ' ' + m.version(n) for n in ('gunicorn', 'granian', 'uvicorn')))";
    python(env)
        .and_then(|py| crate::first_line(&py.to_string_lossy(), &["-c", CODE], &env.root))
        .unwrap_or_default()
}

fn argv(env: &Env, py: &std::path::Path, peer: Peer, port: u16) -> Vec<OsString> {
    let listen = format!("127.0.0.1:{port}");
    let s = |v: &str| OsString::from(v);
    let ferry = |rest: Vec<OsString>| {
        let mut v = vec![
            env.bin_dir.join("ferry").into_os_string(),
            s("--listen"),
            s(&listen),
            s("--workers"),
            s("2"),
            s("--control-socket"),
            s("off"),
            s("--"),
        ];
        v.extend(rest);
        v
    };
    let py = py.as_os_str().to_owned();
    let node_sdk = env.root.join("sdk/node");
    match peer {
        Peer::FerryWsgi | Peer::FerryWsgi16 => {
            let mut v = vec![py, s("-m"), s("ferry_worker.wsgi"), s("hello_wsgi:app")];
            if peer == Peer::FerryWsgi16 {
                v.extend([s("--threads"), s("16")]);
            }
            ferry(v)
        }
        Peer::FerryAsgi => ferry(vec![
            py,
            s("-m"),
            s("ferry_worker.asgi"),
            s("hello_asgi:app"),
            s("--lifespan"),
            s("off"),
            // Uvicorn's loop, as the label says (auto would fall back to asyncio).
            s("--loop"),
            s("uvloop"),
        ]),
        Peer::GunicornSync | Peer::GunicornGthread => {
            let mut v = vec![
                peer.program(std::path::Path::new(&py)).into_os_string(),
                s("-w"),
                s("2"),
                s("-b"),
                s(&listen),
                s("--log-level"),
                s("warning"),
            ];
            if peer == Peer::GunicornSync {
                v.extend([s("-k"), s("sync")]);
            } else {
                v.extend([s("-k"), s("gthread"), s("--threads"), s("4")]);
            }
            v.push(s("hello_wsgi:app"));
            v
        }
        // Granian and Uvicorn take the same options for workers, address and logging.
        Peer::Granian | Peer::Uvicorn => {
            let mut v = vec![peer.program(std::path::Path::new(&py)).into_os_string()];
            let own: &[&str] = if peer == Peer::Granian {
                &["--interface", "wsgi"]
            } else {
                &["--no-access-log", "--lifespan", "off"]
            };
            v.extend(own.iter().map(|a| s(a)));
            let port = port.to_string();
            v.extend(
                [
                    "--workers",
                    "2",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--log-level",
                    "warning",
                ]
                .map(s),
            );
            v.push(s(if peer == Peer::Granian {
                "hello_wsgi:app"
            } else {
                "hello_asgi:app"
            }));
            v
        }
        Peer::FerryFetch | Peer::FerryNodeHttp => ferry(vec![
            s("node"),
            node_sdk.join("bin/ferry-node.js").into_os_string(),
            node_sdk
                .join(if peer == Peer::FerryFetch {
                    "bench/hello-fetch.mjs"
                } else {
                    "bench/hello-http.mjs"
                })
                .into_os_string(),
        ]),
        Peer::Cluster => vec![
            s("node"),
            env.root.join("bench/node-cluster.js").into_os_string(),
            s(&port.to_string()),
        ],
    }
}

/// One wrk run of one peer.
#[derive(Debug, Clone)]
pub struct SdkRun {
    pub mode: Mode,
    pub peer: Peer,
    pub round: usize,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU of the whole process tree per request (µs).
    pub cpu_us: Option<f64>,
    /// Of it, the root process's own (ferry's master), for the ferry peers.
    pub master_us: Option<f64>,
    /// Other work on the machine during the run (%), as for the main runs: niced
    /// processes' share of all CPU time, and steal.
    pub nice_pct: f64,
    pub steal_pct: f64,
}

fn start(env: &Env, py: &std::path::Path, peer: Peer, mode: Mode) -> Result<Server, String> {
    let port = server::free_port().map_err(|e| e.to_string())?;
    let log = env
        .work
        .join(format!("sdk-{}-{}.log", mode.name(), slug(peer)));
    let apps = env.root.join("sdk/python/bench");
    let server = Server::start(
        &argv(env, py, peer, port),
        &[
            ("RUST_LOG", "warn"),
            ("PYTHONPATH", &apps.to_string_lossy()),
            ("NODE_ENV", "production"),
        ],
        mode == Mode::Pinned,
        port,
        &log,
        READY_TIMEOUT,
    )?;
    match server::http_request(server.port, "GET", "/", b"") {
        Ok((200, body)) if body == b"Hello, world!\n" => Ok(server),
        Ok((status, body)) => Err(format!(
            "GET / answered {status} {:?}, expected 200 \"Hello, world!\\n\"",
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(format!("GET / failed after start: {e}")),
    }
}

fn slug(peer: Peer) -> String {
    peer.name()
        .split(' ')
        .filter(|w| !w.starts_with('(') && *w != "+")
        .collect::<Vec<_>>()
        .join("-")
        .replace([':', '.'], "-")
}

/// Runs every peer that can run here: hello at c = 64, `opts.rounds` interleaved
/// rounds per mode.
pub fn run(env: &Env, opts: &Opts, warnings: &mut Vec<String>, noise: &mut Noise) -> Vec<SdkRun> {
    let py = python(env);
    if py.is_none() {
        warn(
            warnings,
            "no Python venv with the peers (bench/run.sh makes target/ferry-bench/venv): \
             skipping the Python SDK rows"
                .into(),
        );
    }
    if env.node.is_none() {
        warn(
            warnings,
            "node not found: skipping the Node SDK rows".into(),
        );
    }
    let mut runs = Vec::new();
    for &mode in &opts.modes {
        let pinned = mode == Mode::Pinned;
        if pinned && !env.taskset {
            continue;
        }
        say(format!("== SDKs, {} mode", mode.name()));
        let mut peers = Vec::new();
        for peer in Peer::ALL {
            let py = match (peer.lang(), &py) {
                (Lang::Python, None) => continue,
                (Lang::Node, _) if env.node.is_none() => continue,
                (_, Some(py)) => py.clone(),
                (_, None) => PathBuf::from("python3"),
            };
            if peer.lang() == Lang::Python && !peer.program(&py).is_file() {
                warn(
                    warnings,
                    format!(
                        "{}: {} is not installed; skipping it",
                        peer.name(),
                        peer.program(&py).display()
                    ),
                );
                continue;
            }
            peers.push((peer, py));
        }
        for round in 1..=opts.rounds {
            // Each peer runs alone, started for its own measurement: idle servers beside
            // it on the same CPU (timers, heartbeats) would tax whichever is measured.
            let mut failed = Vec::new();
            for (i, (peer, py)) in peers.iter().enumerate() {
                let peer = *peer;
                let mut up = match start(env, py, peer, mode) {
                    Ok(up) => up,
                    Err(e) => {
                        warn(
                            warnings,
                            format!(
                                "{} failed to start in {} mode, skipping it: {e}",
                                peer.name(),
                                mode.name()
                            ),
                        );
                        failed.push(i);
                        continue;
                    }
                };
                let _ = wrk::run(&spec(up.port, crate::WARMUP_SECS, pinned));
                let tree = server::tree(up.pid());
                match measured_run(&spec(up.port, opts.secs, pinned), noise, &tree) {
                    Ok(Measured {
                        out,
                        cpu_us,
                        root_cpu_us,
                        nice_pct,
                        steal_pct,
                        ..
                    }) => {
                        say(format!(
                            "[SDKs {} {round}/{}] {:<30} {:>8.0} req/s  CPU {} µs/req",
                            mode.name(),
                            opts.rounds,
                            peer.name(),
                            out.rps,
                            cpu_us.map_or("?".into(), |v| format!("{v:.1}"))
                        ));
                        if out.socket_errors + out.non_2xx > 0 {
                            warn(
                                warnings,
                                format!(
                                    "[SDKs {} {round}] {}: {} socket errors, {} non-2xx",
                                    mode.name(),
                                    peer.name(),
                                    out.socket_errors,
                                    out.non_2xx
                                ),
                            );
                        }
                        runs.push(SdkRun {
                            mode,
                            peer,
                            round,
                            rps: out.rps,
                            p50_us: out.p50_us,
                            p99_us: out.p99_us,
                            cpu_us,
                            master_us: root_cpu_us.filter(|_| peer.is_ferry()),
                            nice_pct,
                            steal_pct,
                        });
                    }
                    Err(e) => warn(warnings, format!("[SDKs] {}: {e}", peer.name())),
                }
                if !up.alive() {
                    warn(
                        warnings,
                        format!(
                            "{} ({} mode) died under load; skipping it. Log tail:\n{}",
                            peer.name(),
                            mode.name(),
                            up.log_tail(8)
                        ),
                    );
                    failed.push(i);
                }
            }
            for i in failed.into_iter().rev() {
                peers.remove(i);
            }
        }
    }
    runs
}

fn spec(port: u16, secs: u64, pinned: bool) -> wrk::Spec<'static> {
    wrk::Spec {
        url: format!("http://127.0.0.1:{port}/"),
        conns: 64,
        threads: if pinned { 1 } else { 2 },
        secs,
        pinned,
        script: None,
    }
}

/// Medians over one peer's rounds in one mode.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cell {
    rps: f64,
    cpu_us: Option<f64>,
    master_us: Option<f64>,
    p50_us: f64,
    p99_us: f64,
}

fn cell(runs: &[SdkRun], mode: Mode, peer: Peer) -> Option<Cell> {
    let of = || runs.iter().filter(|r| r.mode == mode && r.peer == peer);
    let med =
        |f: &dyn Fn(&SdkRun) -> Option<f64>| crate::report::median(of().filter_map(f).collect());
    Some(Cell {
        rps: med(&|r| Some(r.rps))?,
        cpu_us: med(&|r| r.cpu_us),
        master_us: med(&|r| r.master_us),
        p50_us: med(&|r| Some(r.p50_us))?,
        p99_us: med(&|r| Some(r.p99_us))?,
    })
}

/// Median (and range) over rounds of the per-round ratio `f(a) / f(b)`.
fn ratio(
    runs: &[SdkRun],
    mode: Mode,
    a: Peer,
    b: Peer,
    f: fn(&SdkRun) -> Option<f64>,
) -> Option<Spread> {
    let v = runs
        .iter()
        .filter(|r| r.mode == mode && r.peer == a)
        .filter_map(|ra| {
            let rb = runs
                .iter()
                .find(|rb| rb.mode == mode && rb.peer == b && rb.round == ra.round)?;
            Some(f(ra)? / f(rb)?)
        })
        .filter(|x| x.is_finite())
        .collect();
    crate::report::spread(v)
}

/// The peer each row is compared with.
fn baseline(peer: Peer) -> Peer {
    match peer {
        Peer::FerryAsgi | Peer::Uvicorn => Peer::Uvicorn,
        Peer::FerryFetch | Peer::FerryNodeHttp | Peer::Cluster => Peer::Cluster,
        _ => Peer::GunicornSync,
    }
}

fn rps(r: &SdkRun) -> Option<f64> {
    Some(r.rps)
}

fn cpu(r: &SdkRun) -> Option<f64> {
    r.cpu_us
}

/// One SDK target: `ferry`'s req/s at least `times` the `base`'s, or (`on_cpu`) its
/// CPU per request at most `times` the base's.
struct Target {
    what: &'static str,
    ferry: Peer,
    base: Peer,
    on_cpu: bool,
    times: f64,
}

impl Target {
    fn met(&self, ratio: f64) -> bool {
        if self.on_cpu {
            ratio <= self.times
        } else {
            ratio >= self.times
        }
    }

    /// Reported, not judged (Granian: the stretch goal).
    fn reported_only(&self) -> bool {
        self.base == Peer::Granian
    }

    fn of(&self) -> fn(&SdkRun) -> Option<f64> {
        if self.on_cpu {
            cpu
        } else {
            rps
        }
    }
}

const TARGETS: [Target; 6] = [
    Target {
        what: "WSGI: ferry ≥ 3× Gunicorn sync's req/s",
        ferry: Peer::FerryWsgi,
        base: Peer::GunicornSync,
        on_cpu: false,
        times: 3.0,
    },
    Target {
        what: "WSGI: ferry's req/s against Granian's (reported; stretch: 1×)",
        ferry: Peer::FerryWsgi,
        base: Peer::Granian,
        on_cpu: false,
        times: 1.0,
    },
    Target {
        what: "WSGI, 16 threads: ferry's req/s against Granian's (reported)",
        ferry: Peer::FerryWsgi16,
        base: Peer::Granian,
        on_cpu: false,
        times: 1.0,
    },
    Target {
        what: "ASGI: ferry ≥ 1.5× Uvicorn's req/s",
        ferry: Peer::FerryAsgi,
        base: Peer::Uvicorn,
        on_cpu: false,
        times: 1.5,
    },
    Target {
        what: "Node: ferry (fetch) ≥ 1.3× node:cluster's req/s",
        ferry: Peer::FerryFetch,
        base: Peer::Cluster,
        on_cpu: false,
        times: 1.3,
    },
    Target {
        what: "Node: ferry (fetch) ≤ 0.75× node:cluster's CPU per request",
        ferry: Peer::FerryFetch,
        base: Peer::Cluster,
        on_cpu: true,
        times: 0.75,
    },
];

/// The report section (empty when nothing ran).
pub fn render(runs: &[SdkRun], modes: &[Mode], versions: &str) -> String {
    let mut w = String::new();
    if runs.is_empty() {
        return w;
    }
    let _ = writeln!(w, "## Language SDKs (hello, c=64, 2 workers each)\n");
    let _ = writeln!(
        w,
        "The same hello app (`sdk/python/bench/hello_wsgi.py`, `hello_asgi.py`, \
         `sdk/node/bench/hello-*.mjs`, `bench/node-cluster.js`) under ferry with the \
         SDKs' workers and under the servers their users run today; medians over rounds, \
         ratios are medians of per-round ratios against the row's baseline (in the targets \
         table with their range over rounds). *master* is \
         ferry's master process alone, *workers* the rest of its tree.{}\n",
        if versions.is_empty() {
            String::new()
        } else {
            format!(" Versions: {versions}.")
        }
    );
    let _ = writeln!(
        w,
        "| target | mode | measured | status |\n|---|---|---|---|"
    );
    for t in &TARGETS {
        for &m in modes {
            let r = ratio(runs, m, t.ferry, t.base, t.of());
            let (measured, status) = match r {
                // The range shows how far the rounds spread around the line.
                Some(Spread {
                    median: x,
                    min,
                    max,
                    n,
                }) => (
                    if n > 1 {
                        format!("{x:.2}× ({min:.2}–{max:.2})")
                    } else {
                        format!("{x:.2}×")
                    },
                    if t.reported_only() {
                        "reported"
                    } else if t.met(x) {
                        "MET"
                    } else {
                        "MISSED"
                    },
                ),
                None => ("not measured".into(), "–"),
            };
            let _ = writeln!(w, "| {} | {} | {measured} | {status} |", t.what, m.name());
        }
    }
    let _ = writeln!(
        w,
        "\n| mode | server | req/s | CPU µs/req | master | workers | req/s vs base | CPU vs base | p50 | p99 |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for &m in modes {
        for peer in Peer::ALL {
            let Some(c) = cell(runs, m, peer) else {
                continue;
            };
            let base = baseline(peer);
            let vs = |f: fn(&SdkRun) -> Option<f64>| {
                if peer == base {
                    "base".into()
                } else {
                    ratio(runs, m, peer, base, f)
                        .map_or("–".into(), |x| format!("{:.2}×", x.median))
                }
            };
            let us = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.0} µs | {:.0} µs |",
                m.name(),
                peer.name(),
                c.rps,
                us(c.cpu_us),
                us(c.master_us),
                us(c.cpu_us.zip(c.master_us).map(|(t, m)| t - m)),
                vs(rps),
                vs(cpu),
                c.p50_us,
                c.p99_us,
            );
        }
    }
    // For a missed target: the CPU it leaves for all of ferry, against the master's own.
    let mut floor = String::new();
    for t in &TARGETS {
        for &m in modes {
            let (Some(fa), Some(fb)) = (cell(runs, m, t.ferry), cell(runs, m, t.base)) else {
                continue;
            };
            let r = ratio(runs, m, t.ferry, t.base, t.of()).map(|r| r.median);
            let (Some(master), Some(total), Some(base), Some(r)) =
                (fa.master_us, fa.cpu_us, fb.cpu_us, r)
            else {
                continue;
            };
            if t.reported_only() || t.met(r) {
                continue;
            }
            // Pinned, the server has one CPU: req/s is its inverse CPU per request.
            let budget = if t.on_cpu {
                t.times * base
            } else {
                base / t.times
            };
            let _ = writeln!(
                floor,
                "- {} ({}): that leaves {budget:.1} µs of CPU per request for all of \
                 ferry, against {base:.1} µs for {}{}; ferry's master alone takes \
                 {master:.1} µs, its workers {:.1} µs.",
                t.what,
                m.name(),
                t.base.name(),
                if t.on_cpu {
                    ""
                } else {
                    " (on one CPU, req/s is the inverse of CPU per request)"
                },
                total - master
            );
        }
    }
    if !floor.is_empty() {
        let _ = writeln!(w, "\nWhat the missed targets leave for ferry:\n\n{floor}");
    }
    w.push('\n');
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        mode: Mode,
        peer: Peer,
        round: usize,
        rps: f64,
        cpu: f64,
        master: Option<f64>,
    ) -> SdkRun {
        SdkRun {
            mode,
            peer,
            round,
            rps,
            p50_us: 100.0,
            p99_us: 900.0,
            cpu_us: Some(cpu),
            master_us: master,
            nice_pct: 0.0,
            steal_pct: 0.0,
        }
    }

    #[test]
    fn ratios_pair_rounds_and_targets_are_judged() {
        let runs = vec![
            run(Mode::Pinned, Peer::FerryFetch, 1, 130.0, 15.0, Some(10.0)),
            run(Mode::Pinned, Peer::Cluster, 1, 100.0, 20.0, None),
            run(Mode::Pinned, Peer::FerryFetch, 2, 100.0, 20.0, Some(12.0)),
            run(Mode::Pinned, Peer::Cluster, 2, 100.0, 20.0, None),
            run(Mode::Pinned, Peer::FerryFetch, 3, 140.0, 14.0, Some(10.0)),
            run(Mode::Pinned, Peer::Cluster, 3, 100.0, 20.0, None),
        ];
        assert_eq!(
            ratio(&runs, Mode::Pinned, Peer::FerryFetch, Peer::Cluster, rps),
            Some(Spread {
                median: 1.3,
                min: 1.0,
                max: 1.4,
                n: 3
            })
        );
        assert_eq!(
            ratio(&runs, Mode::Pinned, Peer::FerryFetch, Peer::Cluster, cpu).map(|r| r.median),
            Some(0.75)
        );
        assert_eq!(
            ratio(&runs, Mode::Shared, Peer::FerryFetch, Peer::Cluster, rps),
            None
        );
        let out = render(&runs, &[Mode::Pinned], "");
        assert!(
            out.contains(
                "| Node: ferry (fetch) ≥ 1.3× node:cluster's req/s | pinned | 1.30× (1.00–1.40) | MET |"
            ),
            "{out}"
        );
        assert!(
            out.contains("| ASGI: ferry ≥ 1.5× Uvicorn's req/s | pinned | not measured | – |"),
            "{out}"
        );
        // master 10 of 15 µs: workers 5.
        assert!(
            out.contains(
                "| pinned | ferry + ferry-worker fetch | 130 | 15.0 | 10.0 | 5.0 | 1.30× | 0.75× |"
            ),
            "{out}"
        );
        assert!(
            out.contains("| pinned | node:cluster | 100 | 20.0 | – | – | base | base |"),
            "{out}"
        );
        // Both Node targets are met: nothing to explain.
        assert!(!out.contains("What the missed targets leave"), "{out}");
    }

    #[test]
    fn a_missed_target_says_so() {
        let runs = vec![
            run(Mode::Shared, Peer::FerryAsgi, 1, 120.0, 30.0, Some(12.0)),
            run(Mode::Shared, Peer::Uvicorn, 1, 100.0, 30.0, None),
        ];
        let out = render(&runs, &[Mode::Shared], "gunicorn 23");
        assert!(
            out.contains("| ASGI: ferry ≥ 1.5× Uvicorn's req/s | shared | 1.20× | MISSED |"),
            "{out}"
        );
        assert!(out.contains("Versions: gunicorn 23."), "{out}");
        // 1.5× Uvicorn's req/s at its 30 µs leaves 20 µs; the master took 12 of 30.
        assert!(
            out.contains("(shared): that leaves 20.0 µs of CPU per request for all of ferry, against 30.0 µs for uvicorn"),
            "{out}"
        );
        assert!(
            out.contains("master alone takes 12.0 µs, its workers 18.0 µs"),
            "{out}"
        );
        assert_eq!(render(&[], &[Mode::Shared], ""), "");
    }

    #[test]
    fn commands_name_two_workers_and_the_apps() {
        let env = Env {
            root: PathBuf::from("/repo"),
            bin_dir: PathBuf::from("/repo/target/release"),
            work: PathBuf::from("/repo/target/ferry-bench"),
            node: None,
            nginx: false,
            taskset: false,
            strace: None,
            perf: false,
        };
        let py = PathBuf::from("/v/bin/python");
        let line = |p| {
            argv(&env, &py, p, 8080)
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            line(Peer::FerryWsgi),
            "/repo/target/release/ferry --listen 127.0.0.1:8080 --workers 2 --control-socket off -- /v/bin/python -m ferry_worker.wsgi hello_wsgi:app"
        );
        assert!(
            line(Peer::FerryWsgi16).ends_with("-m ferry_worker.wsgi hello_wsgi:app --threads 16")
        );
        assert!(line(Peer::GunicornSync).starts_with("/v/bin/gunicorn -w 2 -b 127.0.0.1:8080"));
        assert!(
            line(Peer::Uvicorn).contains("--workers 2")
                && line(Peer::Uvicorn).ends_with("hello_asgi:app")
        );
        assert_eq!(
            line(Peer::Granian),
            "/v/bin/granian --interface wsgi --workers 2 --host 127.0.0.1 --port 8080 --log-level warning hello_wsgi:app"
        );
        assert_eq!(
            line(Peer::Uvicorn),
            "/v/bin/uvicorn --no-access-log --lifespan off --workers 2 --host 127.0.0.1 --port 8080 --log-level warning hello_asgi:app"
        );
        assert!(line(Peer::FerryAsgi)
            .ends_with("ferry_worker.asgi hello_asgi:app --lifespan off --loop uvloop"));
        assert!(line(Peer::FerryFetch).ends_with("/repo/sdk/node/bench/hello-fetch.mjs"));
        assert_eq!(slug(Peer::FerryNodeHttp), "ferry-ferry-worker-node-http");
    }
}
