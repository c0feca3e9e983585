//! Running wrk and reading its text report.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// One wrk invocation.
pub struct Spec<'a> {
    pub url: String,
    pub conns: u32,
    pub threads: u32,
    pub secs: u64,
    /// Run wrk under `taskset -c 0`.
    pub pinned: bool,
    pub script: Option<&'a Path>,
}

/// What the benchmark keeps from wrk's report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    pub non_2xx: u64,
}

pub fn run(spec: &Spec) -> Result<Outcome, String> {
    let mut cmd = if spec.pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    cmd.arg("-c")
        .arg(spec.conns.to_string())
        .arg("-t")
        .arg(spec.threads.to_string())
        .arg("-d")
        .arg(format!("{}s", spec.secs))
        .arg("--latency");
    if let Some(script) = spec.script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(&spec.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("could not run wrk: {e}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let limit = Duration::from_secs(spec.secs + 30);
    let output = match rx.recv_timeout(limit) {
        Ok(r) => r.map_err(|e| format!("wrk: {e}"))?,
        Err(_) => {
            // SAFETY: kill(2) on the wrk process this function started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(format!("wrk did not finish within {limit:?}; killed it"));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        ));
    }
    parse(&stdout).map_err(|e| format!("{e}; wrk said:\n{stdout}"))
}

/// Parses wrk's `--latency` text report.
pub fn parse(text: &str) -> Result<Outcome, String> {
    let mut o = Outcome::default();
    let (mut rps, mut requests, mut p50, mut p99) = (None, None, None, None);
    let mut in_distribution = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            let mut it = t.split_whitespace();
            match (it.next(), it.next()) {
                (Some("50%"), Some(v)) => p50 = parse_time_us(v),
                (Some("99%"), Some(v)) => p99 = parse_time_us(v),
                (Some(p), Some(_)) if p.ends_with('%') => {}
                _ => in_distribution = false,
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if t.contains(" requests in ") {
            requests = t.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            o.socket_errors = v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            o.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    o.rps = rps.ok_or("no Requests/sec line")?;
    o.requests = requests.ok_or("no 'N requests in' line")?;
    o.p50_us = p50.ok_or("no 50% latency line (was --latency passed?)")?;
    o.p99_us = p99.ok_or("no 99% latency line")?;
    if o.requests == 0 {
        return Err("wrk completed no request".into());
    }
    Ok(o)
}

/// wrk's time format ("38.00us", "1.23ms", "2.00s", "1.00m", "1.00h") in µs.
fn parse_time_us(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 1s test @ http://127.0.0.1:18080/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   757.93us    2.41ms  23.33ms   93.62%
    Req/Sec    28.80k    13.66k   38.61k    70.00%
  Latency Distribution
     50%  100.00us
     75%  148.00us
     90%    1.37ms
     99%   13.32ms
  28568 requests in 1.00s, 3.73MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  28479.49
Transfer/sec:      3.72MB
";

    #[test]
    fn parses_a_real_report() {
        let o = parse(SAMPLE).unwrap();
        assert_eq!(o.rps, 28479.49);
        assert_eq!(o.requests, 28568);
        assert_eq!(o.p50_us, 100.0);
        assert!((o.p99_us - 13320.0).abs() < 1e-6);
        assert_eq!(o.socket_errors, 3);
        assert_eq!(o.non_2xx, 7);
    }

    #[test]
    fn time_units() {
        assert_eq!(parse_time_us("38.00us"), Some(38.0));
        assert_eq!(parse_time_us("2.00s"), Some(2e6));
        assert_eq!(parse_time_us("1.50m"), Some(90e6));
        assert_eq!(parse_time_us("12"), None);
    }

    #[test]
    fn a_report_without_latency_is_an_error() {
        assert!(parse("Requests/sec: 1.0\n  5 requests in 1.00s, 1KB read\n").is_err());
    }
}
