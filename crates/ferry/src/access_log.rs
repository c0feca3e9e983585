//! The access log (`--access-log`): one line per response, written when its last
//! byte went to the client (or the client went away), in Apache/nginx `combined`
//! format followed by the request time in seconds, or as one JSON object.
//!
//! Lines go through a bounded queue to a thread of their own (tracing-appender's
//! non-blocking writer), so a slow disk drops and counts lines (`/status`) instead of
//! stalling requests. SIGUSR1 reopens the file (logrotate's convention): the writer
//! thread reopens it before its next line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines that may wait for a slow disk before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `peer - - [time] "request" status bytes "referer" "user-agent" seconds`
    Combined,
    /// One JSON object per line.
    Json,
}

/// What the proxy tells the log about a request it dispatched (a response
/// extension, set only while the access log is on).
#[derive(Debug, Clone, Copy)]
pub struct Dispatched {
    pub slot: usize,
    pub pid: u32,
    /// The request's id on its worker's channel.
    pub id: u64,
    /// How long it waited for a worker slot.
    pub waited: Duration,
}

/// One request, from its arrival until its response is done.
pub struct Record {
    pub started: Instant,
    pub at: SystemTime,
    pub method: http::Method,
    pub target: String,
    pub version: http::Version,
    pub peer: Arc<str>,
    pub referer: Option<http::HeaderValue>,
    pub user_agent: Option<http::HeaderValue>,
    pub status: u16,
    pub dispatched: Option<Dispatched>,
    /// Body bytes sent to the client.
    pub bytes: u64,
}

pub struct AccessLog {
    out: NonBlocking,
    format: Format,
    reopen: Arc<AtomicBool>,
    dropped: ErrorCounter,
    _flush_on_exit: WorkerGuard,
}

impl AccessLog {
    /// Opens `target`: `-` for stdout, else a file appended to (created if missing).
    pub fn open(target: &str, format: Format) -> io::Result<Self> {
        let reopen = Arc::new(AtomicBool::new(false));
        let builder = NonBlockingBuilder::default()
            .buffered_lines_limit(QUEUE_LINES)
            .lossy(true)
            .thread_name("ferry-access-log");
        let (out, guard) = if target == "-" {
            builder.finish(Box::new(io::stdout()) as Box<dyn Write + Send>)
        } else {
            let file = Reopening::open(PathBuf::from(target), reopen.clone())?;
            builder.finish(Box::new(file) as Box<dyn Write + Send>)
        };
        let dropped = out.error_counter();
        Ok(AccessLog {
            out,
            format,
            reopen,
            dropped,
            _flush_on_exit: guard,
        })
    }

    /// The file is reopened before the next line (SIGUSR1).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Lines dropped because the disk did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }

    /// Queues the line for `record`; never waits.
    pub fn write(&self, record: &Record) {
        let line = match self.format {
            Format::Combined => combined(record),
            Format::Json => json(record),
        };
        // One write is one line for the writer thread; a full queue drops it.
        let _ = self.out.clone().write_all(line.as_bytes());
    }
}

/// The client's address without its port, as `combined` logs it.
fn client_ip(peer: &str) -> &str {
    match peer.rsplit_once(':') {
        Some((ip, _)) => ip.trim_start_matches('[').trim_end_matches(']'),
        None => peer,
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn header(v: &Option<http::HeaderValue>) -> String {
    match v {
        // Quotes and backslashes escaped as nginx does, so a line always parses.
        Some(v) => String::from_utf8_lossy(v.as_bytes())
            .replace('\\', "\\\\")
            .replace('"', "\\\""),
        None => "-".into(),
    }
}

fn combined(r: &Record) -> String {
    let t = time::OffsetDateTime::from(r.at);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let target = r.target.replace('"', "%22");
    format!(
        "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"{} {target} {}\" {} {} \"{}\" \"{}\" {:.3}\n",
        client_ip(&r.peer),
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        r.method,
        version(r.version),
        r.status,
        r.bytes,
        header(&r.referer),
        header(&r.user_agent),
        r.started.elapsed().as_secs_f64(),
    )
}

fn json(r: &Record) -> String {
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let value = serde_json::json!({
        "time": humantime::format_rfc3339_millis(r.at).to_string(),
        "method": r.method.as_str(),
        "target": r.target,
        "protocol": version(r.version),
        "status": r.status,
        "bytes": r.bytes,
        "duration_ms": ms(r.started.elapsed()),
        "wait_ms": r.dispatched.map(|d| ms(d.waited)),
        "worker_slot": r.dispatched.map(|d| d.slot),
        "worker_pid": r.dispatched.map(|d| d.pid),
        "request_id": r.dispatched.map(|d| d.id),
        "peer": &*r.peer,
        "referer": r.referer.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        "user_agent": r.user_agent.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    });
    value.to_string() + "\n"
}

/// A log file that the writer thread reopens when asked, before its next write.
struct Reopening {
    path: PathBuf,
    file: File,
    reopen: Arc<AtomicBool>,
}

impl Reopening {
    fn open(path: PathBuf, reopen: Arc<AtomicBool>) -> io::Result<Self> {
        let file = Self::append(&path)?;
        Ok(Reopening { path, file, reopen })
    }

    fn append(path: &PathBuf) -> io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }
}

impl Write for Reopening {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.reopen.swap(false, Ordering::Relaxed) {
            // A file that cannot be opened again keeps the old one: lines still land.
            if let Ok(file) = Self::append(&self.path) {
                self.file = file;
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            started: Instant::now(),
            // 2026-12-02 07:55:01 UTC
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_198_101),
            method: http::Method::GET,
            target: "/a?b=\"c\"".into(),
            version: http::Version::HTTP_11,
            peer: "127.0.0.1:5555".into(),
            referer: None,
            user_agent: Some(http::HeaderValue::from_static("curl/8 \"x\"")),
            status: 200,
            dispatched: Some(Dispatched {
                slot: 1,
                pid: 42,
                id: 7,
                waited: Duration::from_micros(1500),
            }),
            bytes: 13,
        }
    }

    #[test]
    fn combined_lines_are_what_log_tools_parse() {
        let line = combined(&record());
        let (head, secs) = line.trim_end().rsplit_once(' ').unwrap();
        assert_eq!(
            head,
            "127.0.0.1 - - [02/Dec/2026:07:55:01 +0000] \"GET /a?b=%22c%22 HTTP/1.1\" 200 13 \"-\" \"curl/8 \\\"x\\\"\""
        );
        assert!(secs.parse::<f64>().unwrap() < 1.0);
        assert_eq!(client_ip("[::1]:80"), "::1");
    }

    #[test]
    fn json_lines_carry_the_dispatch() {
        let v: serde_json::Value = serde_json::from_str(&json(&record())).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["worker_pid"], 42);
        assert_eq!(v["worker_slot"], 1);
        assert_eq!(v["request_id"], 7);
        assert_eq!(v["wait_ms"], 1.5);
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["time"], "2026-12-02T07:55:01.000Z");
    }
}
