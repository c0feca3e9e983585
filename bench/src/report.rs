//! Statistics over rounds and the Markdown report (stdout and bench/RESULTS.md).

use crate::profile::{Bucket, Role};
use crate::strace::{Counts, Dir, Fd, Side};
use crate::{Mode, Sys, Workload, CONNS};
use std::fmt::Write as _;

/// One wrk measurement.
#[derive(Debug, Clone)]
pub struct Run {
    pub mode: Mode,
    pub workload: Workload,
    pub conns: u32,
    pub round: usize,
    pub sys: Sys,
    pub out: crate::wrk::Outcome,
    /// Share of the machine's CPU time taken by niced processes during the run (%).
    pub nice_pct: f64,
    /// Share of the machine's CPU time stolen by the hypervisor during the run (%).
    pub steal_pct: f64,
    /// CPU time of the server's whole process tree per request, in µs (schedstat).
    pub cpu_us: Option<f64>,
    /// Context switches of the server's whole process tree per request.
    pub switches: Option<f64>,
}

/// Context switches and CPU of a server's process tree during one untraced wrk run.
pub struct CtxRow {
    pub sys: Sys,
    pub procs: usize,
    pub threads: usize,
    pub requests: u64,
    pub rps: f64,
    pub ctx_switches: u64,
    pub cpu_secs: f64,
}

/// Syscalls seen by strace during one wrk run.
pub struct TraceRow {
    pub sys: Sys,
    pub workers: usize,
    pub requests: u64,
    pub rps: f64,
    pub window_secs: f64,
    pub counts: Counts,
    pub file: String,
}

#[derive(Default)]
pub struct Ipc {
    pub secs: u64,
    pub ctx: Vec<CtxRow>,
    pub traces: Vec<TraceRow>,
    pub notes: Vec<String>,
    /// The perf profile of direct and ferry (pinned, hello, c=64).
    pub profile: Vec<ProfileRow>,
}

/// One system's perf profile: the shares of its samples, and the schedstat CPU per
/// request of the same run that scales them.
pub struct ProfileRow {
    pub sys: Sys,
    pub conns: u32,
    pub requests: u64,
    pub cpu_us: f64,
    pub switches: f64,
    pub counts: crate::profile::Counts,
}

impl ProfileRow {
    /// µs per request spent by `roles` in the buckets `keep` accepts.
    fn us(&self, roles: &[Role], keep: impl Fn(Bucket) -> bool) -> f64 {
        let ns: u64 = Bucket::ALL
            .iter()
            .filter(|&&b| keep(b))
            .flat_map(|&b| roles.iter().map(move |&r| self.counts.get(r, b)))
            .sum();
        self.cpu_us * ns as f64 / self.counts.total.max(1) as f64
    }
}

pub struct Meta {
    pub date: String,
    pub commit: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub wrk: String,
    pub node: Option<String>,
    pub strace: Option<String>,
    pub command: String,
    pub rounds: usize,
    pub secs: u64,
    pub modes: Vec<Mode>,
    pub loadavg: String,
    /// Other work seen on the machine around the measurements (fuzzers, compilers).
    pub busy: Vec<String>,
    /// Niced CPU share during wrk runs (%), median and max; steal share, max.
    pub nice_median: f64,
    pub nice_max: f64,
    pub steal_max: f64,
    pub elapsed_secs: u64,
    /// The median raw socketpair round trip between two processes, per mode (µs).
    pub floor: Vec<(Mode, f64)>,
}

impl Meta {
    /// Whether these numbers should not be quoted.
    pub fn smoke(&self) -> bool {
        self.rounds < 3 || self.secs < 5
    }

    /// Whether other work competed with the measurements.
    pub fn noisy(&self) -> bool {
        !self.busy.is_empty() || self.nice_max > 2.0 || self.steal_max > 2.0
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Median with min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// Median, min and max of `v` (None if it is empty).
pub fn spread(v: Vec<f64>) -> Option<Spread> {
    let min = v.iter().copied().reduce(f64::min)?;
    let max = v.iter().copied().reduce(f64::max)?;
    let n = v.len();
    Some(Spread {
        median: median(v)?,
        min,
        max,
        n,
    })
}

pub struct Stats<'a> {
    runs: &'a [Run],
}

/// Medians over rounds for one system in one (mode, workload, c).
pub struct Cell {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
}

impl<'a> Stats<'a> {
    pub fn new(runs: &'a [Run]) -> Self {
        Stats { runs }
    }

    fn of(&self, m: Mode, w: Workload, c: u32, s: Sys) -> impl Iterator<Item = &'a Run> + 'a {
        self.runs
            .iter()
            .filter(move |r| r.mode == m && r.workload == w && r.conns == c && r.sys == s)
    }

    pub fn cell(&self, m: Mode, w: Workload, c: u32, s: Sys) -> Option<Cell> {
        let runs: Vec<&Run> = self.of(m, w, c, s).collect();
        Some(Cell {
            rps: median(runs.iter().map(|r| r.out.rps).collect())?,
            p50: median(runs.iter().map(|r| r.out.p50_us).collect())?,
            p99: median(runs.iter().map(|r| r.out.p99_us).collect())?,
        })
    }

    /// `f(a's run, b's run)` for every round in which both systems were measured.
    fn per_round(
        &self,
        m: Mode,
        w: Workload,
        c: u32,
        a: Sys,
        b: Sys,
        f: impl Fn(&Run, &Run) -> f64,
    ) -> Vec<f64> {
        self.of(m, w, c, a)
            .filter_map(|ra| {
                let rb = self.of(m, w, c, b).find(|rb| rb.round == ra.round)?;
                Some(f(ra, rb))
            })
            .collect()
    }

    /// Median (and range) of the per-round throughput ratios a/b.
    pub fn ratio(&self, m: Mode, w: Workload, c: u32, a: Sys, b: Sys) -> Option<Spread> {
        spread(self.per_round(m, w, c, a, b, |ra, rb| ra.out.rps / rb.out.rps))
    }

    /// Median CPU µs per request, and context switches per request.
    pub fn cpu(&self, m: Mode, w: Workload, c: u32, s: Sys) -> (Option<f64>, Option<f64>) {
        let runs: Vec<&Run> = self.of(m, w, c, s).collect();
        (
            median(runs.iter().filter_map(|r| r.cpu_us).collect()),
            median(runs.iter().filter_map(|r| r.switches).collect()),
        )
    }

    /// Median (and range) of the per-round ratios of CPU per request, a/b.
    pub fn cpu_ratio(&self, m: Mode, w: Workload, c: u32, a: Sys, b: Sys) -> Option<Spread> {
        let v = self.per_round(m, w, c, a, b, |ra, rb| match (ra.cpu_us, rb.cpu_us) {
            (Some(x), Some(y)) if y > 0.0 => x / y,
            _ => f64::NAN,
        });
        spread(v.into_iter().filter(|x| x.is_finite()).collect())
    }

    /// Median (and range) of the per-round p50 differences a − b, in µs.
    pub fn p50_delta(&self, m: Mode, w: Workload, c: u32, a: Sys, b: Sys) -> Option<Spread> {
        spread(self.per_round(m, w, c, a, b, |ra, rb| ra.out.p50_us - rb.out.p50_us))
    }
}

fn fmt_rps(v: f64) -> String {
    let digits = (v.round() as u64).to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut rest = digits.as_str();
    while rest.len() > 3 {
        let (head, tail) = rest.split_at(rest.len() - 3);
        groups.push(tail);
        rest = head;
    }
    groups.push(rest);
    groups.reverse();
    groups.join(",")
}

fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_ratio(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!("**{:.2}×** ({:.2}–{:.2})", s.median, s.min, s.max),
        None => "–".into(),
    }
}

fn fmt_delta(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!("{:+.0} µs ({:+.0}…{:+.0})", s.median, s.min, s.max),
        None => "–".into(),
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "–".into(), f)
}

/// Channel syscalls (reads + writes, any result) per request on the master's side.
pub fn master_channel_calls_per_request(t: &TraceRow) -> f64 {
    let c = &t.counts;
    let calls = c.get(Side::Master, Fd::Unix, Dir::Read).calls
        + c.get(Side::Master, Fd::Unix, Dir::Write).calls;
    calls as f64 / t.requests.max(1) as f64
}

struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

/// A target on a ratio (median and range over rounds), met when `met(median)`.
fn ratio_target(what: String, r: Option<Spread>, met: impl Fn(f64) -> bool) -> Target {
    Target {
        what,
        measured: r.map_or("not measured".into(), |s| {
            format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max)
        }),
        met: r.map(|s| met(s.median)),
    }
}

fn targets(stats: &Stats, ipc: &Ipc, modes: &[Mode], floor: &[(Mode, f64)]) -> Vec<Target> {
    let mut out = Vec::new();
    let h = Workload::Hello;
    for &m in modes {
        let r = stats.cpu_ratio(m, h, 64, Sys::Ferry, Sys::Direct);
        out.push(ratio_target(
            format!(
                "hello c=64: ferry's CPU per request ≤ 1.3× direct's ({})",
                m.name()
            ),
            r,
            |v| v <= 1.3,
        ));
        let cs = stats.cpu(m, h, 64, Sys::Ferry).1;
        out.push(Target {
            what: format!(
                "hello c=64: ≤ 0.05 context switches per request, whole tree ({})",
                m.name()
            ),
            measured: cs.map_or("not measured".into(), |v| format!("{v:.3}")),
            met: cs.map(|v| v <= 0.05),
        });
    }
    for &m in modes {
        // The hop's cost should not grow with the body: the same CPU ratio to
        // direct as hello's, within 0.05.
        let hello = stats.cpu_ratio(m, h, 64, Sys::Ferry, Sys::Direct);
        for wl in [Workload::Echo, Workload::Stream] {
            let r = stats.cpu_ratio(m, wl, 64, Sys::Ferry, Sys::Direct);
            out.push(Target {
                what: format!(
                    "{} c=64: ferry's CPU per request ratio to direct within hello's ± 0.05 ({})",
                    wl.name(),
                    m.name()
                ),
                measured: match (r, hello) {
                    (Some(r), Some(hl)) => format!(
                        "{:.2}× ({:.2}–{:.2}) against hello's {:.2}×",
                        r.median, r.min, r.max, hl.median
                    ),
                    _ => "not measured".into(),
                },
                met: r
                    .zip(hello)
                    .map(|(r, hl)| (r.median - hl.median).abs() <= 0.05),
            });
        }
    }
    for &m in modes {
        let r = stats.ratio(m, h, 64, Sys::Ferry, Sys::Direct);
        let stretch = match r {
            Some(s) if s.median >= 0.85 => "; stretch 0.85×: met",
            Some(_) => "; stretch 0.85×: not met",
            None => "",
        };
        out.push(Target {
            what: format!(
                "hello c=64 ferry/direct ≥ 0.75× ({}, stretch 0.85×)",
                m.name()
            ),
            measured: r.map_or("not measured".into(), |s| {
                format!("{:.2}× ({:.2}–{:.2}){stretch}", s.median, s.min, s.max)
            }),
            met: r.map(|s| s.median >= 0.75),
        });
    }
    for &m in modes {
        let r = stats.ratio(m, h, 64, Sys::Ferry, Sys::Node);
        out.push(ratio_target(
            format!("hello c=64 ferry/node ≥ 2× ({})", m.name()),
            r,
            |v| v >= 2.0,
        ));
    }
    for &m in modes {
        let r = stats.ratio(m, h, 64, Sys::Ferry, Sys::Nginx);
        out.push(ratio_target(
            format!(
                "hello c=64 ferry/nginx→2 direct (UDS) ≥ 1.5× req/s ({})",
                m.name()
            ),
            r,
            |v| v >= 1.5,
        ));
        let r = stats.cpu_ratio(m, h, 64, Sys::Ferry, Sys::Nginx);
        out.push(ratio_target(
            format!(
                "hello c=64 ferry's CPU per request ≤ 0.7× nginx→2 direct's ({})",
                m.name()
            ),
            r,
            |v| v <= 0.7,
        ));
    }
    for &m in modes {
        let d = stats.p50_delta(m, h, 1, Sys::Ferry, Sys::Direct);
        out.push(Target {
            what: format!(
                "hello c=1: ferry adds ≤ 15 µs to p50 over direct ({})",
                m.name()
            ),
            measured: d.map_or("not measured".into(), |s| {
                format!("{:+.0} µs ({:+.0}…{:+.0})", s.median, s.min, s.max)
            }),
            met: d.map(|s| s.median <= 15.0),
        });
        if let Some(&(_, rtt)) = floor.iter().find(|(fm, _)| *fm == m) {
            out.push(Target {
                what: format!(
                    "hello c=1: ferry adds ≤ one raw socketpair round trip ({rtt:.1} µs) + 5 µs to p50 over direct ({})",
                    m.name()
                ),
                measured: d.map_or("not measured".into(), |s| {
                    format!("{:+.0} µs: {:.1}× the round trip", s.median, s.median / rtt)
                }),
                met: d.map(|s| s.median <= rtt + 5.0),
            });
        }
    }
    let t = ipc.traces.iter().find(|t| t.sys == Sys::Ferry);
    out.push(Target {
        what: "≤ 1 channel syscall per request at c=64 (master side, reads + writes)".into(),
        measured: t.map_or("not measured".into(), |t| {
            let c = &t.counts;
            let both: u64 = [Side::Master, Side::Worker]
                .iter()
                .flat_map(|&s| [Dir::Read, Dir::Write].map(|d| c.get(s, Fd::Unix, d).calls))
                .sum();
            format!(
                "{:.2} per request (both sides: {:.2})",
                master_channel_calls_per_request(t),
                both as f64 / t.requests.max(1) as f64
            )
        }),
        met: t.map(|t| master_channel_calls_per_request(t) <= 1.0),
    });
    out
}

/// The whole report; `more` is further sections in Markdown (the SDKs'), placed after
/// the IPC counters.
pub fn render(
    meta: &Meta,
    runs: &[Run],
    ipc: &Ipc,
    more: &str,
    warnings: &[String],
    full: bool,
) -> String {
    let stats = Stats::new(runs);
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# Ferry benchmark results\n");
    if meta.smoke() {
        let _ = writeln!(
            w,
            "> **Quick smoke run, not for quoting**: {} round(s) × {} s. Run `bash bench/run.sh` (3 rounds × 5 s) on an idle machine for real numbers.\n",
            meta.rounds, meta.secs
        );
    }
    if meta.noisy() {
        let mut what = meta.busy.clone();
        what.push(format!(
            "niced processes took median {:.1}%, max {:.1}% of all CPU time during the wrk runs",
            meta.nice_median, meta.nice_max
        ));
        if meta.steal_max > 2.0 {
            what.push(format!("up to {:.1}% steal", meta.steal_max));
        }
        let _ = writeln!(
            w,
            "> **Other work ran on the machine during this run** ({}): numbers are noisy, not for quoting.\n",
            what.join("; ")
        );
    }
    let _ = writeln!(w, "- Date: {}", meta.date);
    let _ = writeln!(w, "- Commit: {}", meta.commit);
    let _ = writeln!(w, "- CPU: {} ({} cores)", meta.cpu, meta.cores);
    let _ = writeln!(w, "- Kernel: {}", meta.kernel);
    let _ = writeln!(w, "- rustc: {}", meta.rustc);
    let _ = writeln!(w, "- wrk: {}", meta.wrk);
    let _ = writeln!(
        w,
        "- node: {}",
        meta.node
            .as_deref()
            .unwrap_or("not installed (node rows skipped)")
    );
    let _ = writeln!(
        w,
        "- strace: {}",
        meta.strace
            .as_deref()
            .unwrap_or("not installed (syscall counts skipped)")
    );
    let _ = writeln!(w, "- Command: `{}`", meta.command);
    let _ = writeln!(
        w,
        "- Settings: {} round(s) × {} s per system, modes: {}; load average at start: {}; total time {} s",
        meta.rounds,
        meta.secs,
        meta.modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        meta.loadavg,
        meta.elapsed_secs
    );
    let _ = writeln!(
        w,
        "- Other work during the wrk runs: niced processes (e.g. a fuzzer or build at nice 19) took median {:.1}%, max {:.1}% of all CPU time; steal max {:.1}%{}",
        meta.nice_median,
        meta.nice_max,
        meta.steal_max,
        if meta.busy.is_empty() {
            String::new()
        } else {
            format!("; seen: {}", meta.busy.join(", "))
        }
    );
    let _ = writeln!(
        w,
        "- Systems: **direct** = `ferry-testbed --direct --threads 2` (hyper, no master: the ceiling); \
         **ferry** = `ferry --workers 2 -- ferry-testbed`; **node** = `node bench/node-cluster.js` (node:cluster, 2 workers, hello only); \
         **nginx** = `bench/nginx-uds.sh` (nginx, 1 worker process, upstream keep-alive over Unix sockets to 2 `ferry-testbed --direct --threads 1`: the classic reverse proxy in front of a process pool, the same handler)."
    );
    let _ = writeln!(
        w,
        "- Modes: **pinned** = wrk on CPU 0 (`taskset -c 0`), every server process on CPU 1 (`taskset -c 1`); **shared** = no pinning, wrk and server share both CPUs."
    );
    let _ = writeln!(
        w,
        "- Ratios are the median of per-round ratios (rounds interleave the systems: direct, ferry, node, direct, …), with min–max over rounds.\n"
    );

    // An SDK-only run (--sdks-only) has no runs of the main systems: their sections
    // would be all "not measured".
    if !runs.is_empty() {
        render_main(w, meta, &stats, ipc);
    }
    if !more.is_empty() {
        w.push('\n');
        w.push_str(more);
    }

    if !warnings.is_empty() {
        let _ = writeln!(w, "\n## Warnings\n");
        for warn in warnings {
            let _ = writeln!(w, "- {}", warn.replace('\n', " "));
        }
    }

    if full {
        let _ = writeln!(w, "\n<details><summary>Every wrk run</summary>\n");
        let _ = writeln!(
            w,
            "| mode | workload | c | round | system | req/s | p50 | p99 | requests | socket errors | non-2xx | niced CPU % | steal % |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for r in runs {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |",
                r.mode.name(),
                r.workload.name(),
                r.conns,
                r.round,
                r.sys.name(),
                fmt_rps(r.out.rps),
                fmt_us(r.out.p50_us),
                fmt_us(r.out.p99_us),
                r.out.requests,
                r.out.socket_errors,
                r.out.non_2xx,
                r.nice_pct,
                r.steal_pct
            );
        }
        let _ = writeln!(w, "\n</details>");
    }
    o
}

/// The main systems' sections: targets, CPU per request, req/s, latency, the
/// profiles and the IPC counters.
fn render_main(w: &mut String, meta: &Meta, stats: &Stats, ipc: &Ipc) {
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured | status |");
    let _ = writeln!(w, "|---|---|---|");
    for t in targets(stats, ipc, &meta.modes, &meta.floor) {
        let status = match t.met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "n/a",
        };
        let _ = writeln!(w, "| {} | {} | {status} |", t.what, t.measured);
    }
    if meta.smoke() || meta.noisy() {
        let _ = writeln!(
            w,
            "\n(Smoke/noisy run: the statuses above are indicative only.)"
        );
    }

    let _ = writeln!(
        w,
        "\n## CPU per request (the headline)\n\nCPU time of the server's whole process tree (every thread of the master and its workers, from /proc/PID/task/TID/schedstat) per request, in µs, median over rounds; ratios are medians of per-round ratios (min–max). Unlike req/s, this barely moves with steal or a noisy neighbour. Context switches per request (voluntary + involuntary, whole tree) beside it.\n"
    );
    let _ = writeln!(
        w,
        "| mode | workload | c | direct | ferry | node | nginx | ferry/direct | ferry/node | ferry/nginx | switches/req direct | ferry | node | nginx |"
    );
    let _ = writeln!(
        w,
        "|---|---|--:|--:|--:|--:|--:|---|---|---|--:|--:|--:|--:|"
    );
    for &m in &meta.modes {
        for wl in Workload::ALL {
            for c in CONNS {
                let cpu = Sys::ALL.map(|s| stats.cpu(m, wl, c, s));
                if cpu.iter().all(|(u, _)| u.is_none()) {
                    continue;
                }
                let _ = writeln!(
                    w,
                    "| {} | {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    m.name(),
                    wl.name(),
                    opt(cpu[0].0, |v| format!("{v:.1}")),
                    opt(cpu[1].0, |v| format!("{v:.1}")),
                    opt(cpu[2].0, |v| format!("{v:.1}")),
                    opt(cpu[3].0, |v| format!("{v:.1}")),
                    fmt_ratio(stats.cpu_ratio(m, wl, c, Sys::Ferry, Sys::Direct)),
                    fmt_ratio(stats.cpu_ratio(m, wl, c, Sys::Ferry, Sys::Node)),
                    fmt_ratio(stats.cpu_ratio(m, wl, c, Sys::Ferry, Sys::Nginx)),
                    opt(cpu[0].1, |v| format!("{v:.3}")),
                    opt(cpu[1].1, |v| format!("{v:.3}")),
                    opt(cpu[2].1, |v| format!("{v:.3}")),
                    opt(cpu[3].1, |v| format!("{v:.3}")),
                );
            }
        }
    }

    let _ = writeln!(w, "\n## Throughput (median req/s over rounds)\n");
    let _ = writeln!(
        w,
        "| mode | workload | c | direct | ferry | node | nginx | ferry/direct | ferry/node | ferry/nginx |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|---|---|---|");
    let mut latency = String::new();
    let _ = writeln!(
        latency,
        "| mode | workload | c | p50 direct | p50 ferry | p50 node | p50 nginx | p99 direct | p99 ferry | p99 node | p99 nginx | p50 ferry − direct |"
    );
    let _ = writeln!(latency, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    for &m in &meta.modes {
        for wl in Workload::ALL {
            for c in CONNS {
                let cells = Sys::ALL.map(|s| stats.cell(m, wl, c, s));
                if cells.iter().all(Option::is_none) {
                    continue;
                }
                let _ = writeln!(
                    w,
                    "| {} | {} | {c} | {} | {} | {} | {} | {} | {} | {} |",
                    m.name(),
                    wl.name(),
                    opt(cells[0].as_ref(), |x| fmt_rps(x.rps)),
                    opt(cells[1].as_ref(), |x| fmt_rps(x.rps)),
                    opt(cells[2].as_ref(), |x| fmt_rps(x.rps)),
                    opt(cells[3].as_ref(), |x| fmt_rps(x.rps)),
                    fmt_ratio(stats.ratio(m, wl, c, Sys::Ferry, Sys::Direct)),
                    fmt_ratio(stats.ratio(m, wl, c, Sys::Ferry, Sys::Node)),
                    fmt_ratio(stats.ratio(m, wl, c, Sys::Ferry, Sys::Nginx)),
                );
                let delta = if c == 1 {
                    fmt_delta(stats.p50_delta(m, wl, c, Sys::Ferry, Sys::Direct))
                } else {
                    "".into()
                };
                let _ = writeln!(
                    latency,
                    "| {} | {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {delta} |",
                    m.name(),
                    wl.name(),
                    opt(cells[0].as_ref(), |x| fmt_us(x.p50)),
                    opt(cells[1].as_ref(), |x| fmt_us(x.p50)),
                    opt(cells[2].as_ref(), |x| fmt_us(x.p50)),
                    opt(cells[3].as_ref(), |x| fmt_us(x.p50)),
                    opt(cells[0].as_ref(), |x| fmt_us(x.p99)),
                    opt(cells[1].as_ref(), |x| fmt_us(x.p99)),
                    opt(cells[2].as_ref(), |x| fmt_us(x.p99)),
                    opt(cells[3].as_ref(), |x| fmt_us(x.p99)),
                );
            }
        }
    }
    let _ = writeln!(
        w,
        "\n## Latency (median over rounds of wrk's p50 and p99)\n\nThe last column (c=1 only) is the median of per-round differences, with min…max.\n"
    );
    for (m, rtt) in &meta.floor {
        let _ = writeln!(
            w,
            "The floor, measured in the same run ({} mode): a one-byte ping-pong over a Unix socketpair between two processes takes {rtt:.1} µs at p50 (`bench/src/floor.rs`); a request through ferry crosses its channel once each way.\n",
            m.name()
        );
    }
    w.push_str(&latency);

    for c in [1, 64] {
        render_profile(w, &ipc.profile, c, &meta.floor);
    }
    render_ipc(w, ipc);
}

fn render_profile(w: &mut String, rows: &[ProfileRow], conns: u32, floor: &[(Mode, f64)]) {
    let (Some(d), Some(f)) = (
        rows.iter()
            .find(|r| r.sys == Sys::Direct && r.conns == conns),
        rows.iter()
            .find(|r| r.sys == Sys::Ferry && r.conns == conns),
    ) else {
        return;
    };
    let _ = writeln!(
        w,
        "\n## Where the time goes (pinned, hello, c={conns}: `perf record` of CPU 1)\n\n\
         Every server process runs on CPU 1, wrk on CPU 0; perf samples CPU 1 (cpu-clock, \
         kernel call chains) during one wrk run per system. A kernel sample is put under the \
         transport on its stack, a user-space one under the crate of the function it landed in; \
         the shares are scaled by the tree's schedstat CPU per request of the same run \
         (direct {:.1} µs over {} requests, ferry {:.1} µs over {}; {:.3} and {:.3} context \
         switches per request). µs per request; files in `target/ferry-bench/perf-*.data`.\n",
        d.cpu_us, d.requests, f.cpu_us, f.requests, d.switches, f.switches
    );
    let _ = writeln!(
        w,
        "| where | direct | ferry master | ferry workers | ferry | ferry − direct |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|");
    let all = [Role::Master, Role::Worker];
    let mut line = |name: &str, keep: &dyn Fn(Bucket) -> bool| {
        let dv = d.us(&all, keep);
        let (m, wk) = (f.us(&[Role::Master], keep), f.us(&[Role::Worker], keep));
        let _ = writeln!(
            w,
            "| {name} | {dv:.2} | {m:.2} | {wk:.2} | {:.2} | {:+.2} |",
            m + wk,
            m + wk - dv
        );
    };
    for b in Bucket::ALL {
        line(b.name(), &|x| x == b);
    }
    line("**kernel**", &|x: Bucket| x.kernel());
    line("**user space**", &|x: Bucket| !x.kernel());
    line("**total**", &|_| true);
    let hop = f.cpu_us - d.cpu_us;
    let channel = f.us(&all, |b| {
        matches!(b, Bucket::KernelUnix | Bucket::KernelWake)
    }) - d.us(&all, |b| b == Bucket::KernelWake);
    let workers = f.us(&[Role::Worker], |_| true);
    let master_user = f.us(&[Role::Master], |b| !b.kernel());
    let _ = writeln!(
        w,
        "\nThe hop costs {hop:.1} µs per request here. Of it, the channel's kernel work (Unix socket \
         and waking, beyond direct's own waking) is {channel:.1} µs; the workers take {workers:.1} µs \
         in all (the handler's work, which direct also does, and the codec); the master's user \
         space is {master_user:.1} µs, against {:.1} µs for all of direct's.",
        d.us(&all, |b| !b.kernel())
    );
    if let Some((_, rtt)) = floor.iter().find(|(m, _)| *m == Mode::Pinned) {
        let _ = writeln!(
            w,
            "For scale: one raw socketpair round trip between two processes on this CPU is \
             {rtt:.1} µs; {}",
            if conns == 1 {
                "at c=1 each request crosses the channel once each way, so this is the floor of \
                 what the hop adds to latency."
            } else {
                "at c=64 the channel batches, so a request pays far less than one."
            }
        );
    }
}

fn render_ipc(w: &mut String, ipc: &Ipc) {
    let _ = writeln!(
        w,
        "\n## IPC counters (shared mode, hello, c=64, {} s runs)\n",
        ipc.secs
    );
    if !ipc.ctx.is_empty() {
        let _ = writeln!(
            w,
            "Context switches (voluntary + involuntary, summed over every thread of the server's \
             process tree: for ferry the master and its workers) and CPU time (utime + stime) \
             during an untraced wrk run, per request.\n"
        );
        let _ = writeln!(
            w,
            "| system | processes | threads | requests | req/s | ctx switches / req | CPU µs / req |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|");
        for r in &ipc.ctx {
            let req = r.requests.max(1) as f64;
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {:.3} | {:.1} |",
                r.sys.name(),
                r.procs,
                r.threads,
                r.requests,
                fmt_rps(r.rps),
                r.ctx_switches as f64 / req,
                r.cpu_secs * 1e6 / req
            );
        }
    }
    if !ipc.traces.is_empty() {
        let _ = writeln!(
            w,
            "\nSyscalls per request under `strace -f -yy` (read, write, readv, writev, recvfrom, sendto, \
             recvmsg, sendmsg), classified by the fd's annotation: *channel* = Unix socket \
             (`<UNIX-STREAM:…>`), *TCP* = client connections, *other* = eventfd, pipes, …. \
             **strace slows the traced processes a lot (see req/s): these are counts per request, \
             not rates.** Calls include those that failed with EAGAIN (shown separately). \
             Because every traced syscall is slow, more frames pile up between calls than at \
             full speed: the frames-per-write figures are an upper estimate of the batching \
             without strace (the untraced context-switch counts above are unbiased).\n"
        );
        let _ = writeln!(
            w,
            "| system | side | channel reads / req | channel writes / req | channel EAGAIN / req | bytes / channel write | TCP reads / req | TCP writes / req | TCP EAGAIN / req | other fds / req |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for t in &ipc.traces {
            let req = t.requests.max(1) as f64;
            let c = &t.counts;
            let sides: &[(Side, &str)] = if t.sys == Sys::Ferry {
                &[(Side::Master, "master"), (Side::Worker, "workers")]
            } else {
                &[(Side::Master, "process")]
            };
            for &(side, label) in sides {
                let ur = c.get(side, Fd::Unix, Dir::Read);
                let uw = c.get(side, Fd::Unix, Dir::Write);
                let tr = c.get(side, Fd::Tcp, Dir::Read);
                let tw = c.get(side, Fd::Tcp, Dir::Write);
                let other = c.get(side, Fd::Other, Dir::Read).calls
                    + c.get(side, Fd::Other, Dir::Write).calls;
                let bytes_per_write = if uw.ok > 0 {
                    format!("{:.0}", uw.bytes as f64 / uw.ok as f64)
                } else {
                    "–".into()
                };
                let _ = writeln!(
                    w,
                    "| {} | {label} | {:.3} | {:.3} | {:.3} | {bytes_per_write} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    t.sys.name(),
                    ur.calls as f64 / req,
                    uw.calls as f64 / req,
                    (ur.eagain + uw.eagain) as f64 / req,
                    tr.calls as f64 / req,
                    tw.calls as f64 / req,
                    (tr.eagain + tw.eagain) as f64 / req,
                    other as f64 / req,
                );
            }
        }
        let _ = writeln!(w);
        for t in &ipc.traces {
            let _ = writeln!(
                w,
                "- {}: {} requests at {} req/s under strace, traced for {:.1} s; trace in `{}`.",
                t.sys.name(),
                t.requests,
                fmt_rps(t.rps),
                t.window_secs,
                t.file
            );
            if t.sys != Sys::Ferry {
                continue;
            }
            let c = &t.counts;
            let mw = c.get(Side::Master, Fd::Unix, Dir::Write);
            let mr = c.get(Side::Master, Fd::Unix, Dir::Read);
            let ww = c.get(Side::Worker, Fd::Unix, Dir::Write);
            // Heartbeats: one ping per worker per second, one pong back.
            let beats = t.workers as f64 * t.window_secs;
            let per = |frames: f64, calls: u64| {
                if calls == 0 {
                    "–".to_string()
                } else {
                    format!("{:.2}", frames / calls as f64)
                }
            };
            let _ = writeln!(
                w,
                "- ferry frames per channel write (hello: one RequestHead frame master→worker and one \
                 ResponseHead frame worker→master per request, plus ≈{beats:.0} heartbeat pings and as many pongs): \
                 master→worker ≈ **{}** frames per write ({} writes moved data), \
                 worker→master ≈ **{}** frames per write ({} writes); \
                 master reads that returned data: ≈ {} responses per read.",
                per(t.requests as f64 + beats, mw.ok),
                mw.ok,
                per(t.requests as f64 + beats, ww.ok),
                ww.ok,
                per(t.requests as f64 + beats, mr.ok),
            );
        }
    }
    for n in &ipc.notes {
        let _ = writeln!(w, "- {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrk::Outcome;

    fn run(round: usize, sys: Sys, rps: f64, p50: f64) -> Run {
        Run {
            mode: Mode::Pinned,
            workload: Workload::Hello,
            conns: 1,
            round,
            sys,
            out: Outcome {
                rps,
                p50_us: p50,
                p99_us: p50 * 2.0,
                requests: 10,
                ..Outcome::default()
            },
            nice_pct: 0.0,
            steal_pct: 0.0,
            cpu_us: Some(1_000.0 / rps),
            switches: None,
        }
    }

    #[test]
    fn an_sdk_only_report_has_no_sections_of_the_main_systems() {
        let meta = Meta {
            date: "d".into(),
            commit: "c".into(),
            cpu: "cpu".into(),
            cores: 2,
            kernel: "k".into(),
            rustc: "r".into(),
            wrk: "w".into(),
            node: None,
            strace: None,
            command: "ferry-bench --sdks-only".into(),
            rounds: 3,
            secs: 5,
            modes: vec![Mode::Shared],
            loadavg: "0".into(),
            busy: vec![],
            nice_median: 0.0,
            nice_max: 0.0,
            steal_max: 0.0,
            elapsed_secs: 1,
            floor: vec![],
        };
        let sdk = "## Language SDKs\n";
        let out = render(&meta, &[], &Ipc::default(), sdk, &[], true);
        assert!(out.contains(sdk));
        for gone in [
            "## Targets",
            "## CPU per request",
            "## Latency",
            "not measured",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_are_medians_of_per_round_ratios() {
        let runs = vec![
            run(1, Sys::Direct, 100.0, 30.0),
            run(1, Sys::Ferry, 80.0, 40.0),
            run(2, Sys::Direct, 200.0, 30.0),
            run(2, Sys::Ferry, 100.0, 50.0),
            run(3, Sys::Direct, 100.0, 30.0),
            run(3, Sys::Ferry, 90.0, 35.0),
        ];
        let s = Stats::new(&runs);
        let r = s
            .ratio(Mode::Pinned, Workload::Hello, 1, Sys::Ferry, Sys::Direct)
            .unwrap();
        assert_eq!((r.median, r.min, r.max, r.n), (0.8, 0.5, 0.9, 3));
        let d = s
            .p50_delta(Mode::Pinned, Workload::Hello, 1, Sys::Ferry, Sys::Direct)
            .unwrap();
        assert_eq!((d.median, d.min, d.max), (10.0, 5.0, 20.0));
        assert!(s
            .ratio(Mode::Pinned, Workload::Hello, 1, Sys::Ferry, Sys::Node)
            .is_none());
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_rps(1234567.4), "1,234,567");
        assert_eq!(fmt_rps(999.0), "999");
        assert_eq!(fmt_us(38.0), "38 µs");
        assert_eq!(fmt_us(1500.0), "1.50 ms");
    }
}
