//! Command-line options and their `FERRY_*` environment equivalents.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

/// Ferry: an HTTP server whose handlers run in a pool of long-lived worker processes.
///
/// The master parses HTTP and sends each request as a message over a private channel
/// to one worker; it owns timeouts, crashes, restarts, overload and shutdown. Workers
/// are written with the ferry-worker SDK or against protocol/SPEC.md in any language.
///
/// Example: ferry --workers 2 -- ./target/release/ferry-testbed
#[derive(Debug, Clone, Parser)]
#[command(name = "ferry", version, about, long_about)]
pub struct Config {
    /// Where to accept HTTP connections: HOST:PORT, [V6]:PORT, unix:/PATH (a Unix
    /// socket, as nginx reaches PHP-FPM or Gunicorn) or fd:N (an inherited listening
    /// socket). Repeat it to serve several at once. Without it: the sockets systemd
    /// passes (LISTEN_FDS), else 127.0.0.1:8080.
    #[arg(long, env = "FERRY_LISTEN", value_delimiter = ',')]
    pub listen: Vec<crate::listen::Spec>,

    /// The backlog of each socket ferry binds: connections the kernel queues before
    /// they are accepted.
    #[arg(long, env = "FERRY_BACKLOG", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub backlog: i32,

    /// The mode of a unix: listener's socket file, in octal: who may connect.
    #[arg(long, env = "FERRY_LISTEN_MODE", default_value = "0660", value_parser = octal_mode)]
    pub listen_mode: u32,

    /// Address of the admin endpoint: GET /status (JSON) and /metrics (Prometheus
    /// text) show every worker, the queue and response counts. Off unless set; it
    /// has no authentication, so keep it on loopback or a private network.
    #[arg(long, env = "FERRY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Number of worker processes [default: the number of CPUs].
    #[arg(long, env = "FERRY_WORKERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,

    /// A pool that sizes itself: with --max-workers, the pool grows by one worker
    /// when a request has waited --scale-up-after for one, up to this many, and
    /// shrinks by one when a worker has been idle --idle-timeout, down to
    /// --min-workers. It starts at --workers if given, else at --min-workers.
    #[arg(long, env = "FERRY_MAX_WORKERS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_workers: Option<u32>,

    /// The fewest workers a self-sizing pool (--max-workers) keeps.
    #[arg(long, env = "FERRY_MIN_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub min_workers: u32,

    /// With --max-workers: how long a request may wait in the queue before the
    /// pool grows by a worker (at most one worker per this interval).
    #[arg(long, env = "FERRY_SCALE_UP_AFTER", default_value = "10ms", value_parser = duration)]
    pub scale_up_after: Duration,

    /// With --max-workers: a worker idle this long makes the pool shrink by one
    /// (checked every quarter of it, at most once a second).
    #[arg(long, env = "FERRY_IDLE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Threads of the master's own runtime (HTTP parsing and dispatch) [default: 1].
    /// Workers do the application's work; one master thread serves tens of
    /// thousands of requests a second, and more threads add cross-thread wake-ups.
    #[arg(long, env = "FERRY_THREADS", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,

    /// Most requests in flight on one worker at a time. 1 gives the classic
    /// one-request-per-process model of PHP-FPM or Gunicorn's sync workers. A worker
    /// may announce a lower limit of its own.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// How a request picks its worker: least-outstanding (fewest requests in flight,
    /// ties broken round-robin) or round-robin (each worker in turn, as Node's cluster).
    #[arg(long, env = "FERRY_BALANCE", value_enum, default_value_t = Balance::LeastOutstanding)]
    pub balance: Balance,

    /// Requests that may wait in the master for a free worker slot; beyond it
    /// requests get 503 with Retry-After.
    #[arg(long, env = "FERRY_QUEUE_SIZE", default_value_t = 1024)]
    pub queue_size: usize,

    /// How long a request may wait in the queue for a worker before it gets 503.
    #[arg(long, env = "FERRY_QUEUE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub queue_timeout: Duration,

    /// How long a worker may take to send a response head; then the client gets 504
    /// and the worker is told to cancel the request. Checked every twentieth of the
    /// timeout (10 ms to 1 s), so the 504 may come that much later.
    #[arg(long, env = "FERRY_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,

    /// How long a client may pause while sending a request body: the gap allowed
    /// between two reads, not the whole upload. A client that pauses longer gets 408
    /// and its request is cancelled on the worker. (The upload's own length does not
    /// count against --request-timeout, which starts once the body is in.)
    #[arg(long, env = "FERRY_BODY_READ_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_read_timeout: Duration,

    /// How long a client may go without taking any of the response it is sent (a
    /// write to its socket that makes no progress, or, over HTTP/2, a stream whose
    /// flow-control window stays closed while the worker has bytes for it). Then the
    /// connection (HTTP/1.1) or the stream's request is cut, and the worker's slot
    /// freed.
    #[arg(long, env = "FERRY_SEND_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub send_timeout: Duration,

    /// Most requests one client connection may have in flight at once (HTTP/2
    /// streams; an HTTP/1.1 connection has one at a time). HTTP/2 clients are told
    /// this as SETTINGS_MAX_CONCURRENT_STREAMS and further streams are refused, so no
    /// one connection can hold the whole pool [default: a quarter of the pool's
    /// slots (workers x concurrency), between 1 and 100].
    #[arg(long, env = "FERRY_MAX_STREAMS_PER_CONNECTION", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: Option<u32>,

    /// Most client connections open at once; at the cap the master stops accepting
    /// until one closes (the kernel's backlog holds the rest) [default: the
    /// descriptor limit, raised to its hard maximum at start, less room for the
    /// workers' channels and pipes].
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// The control socket for `ferry ctl`: a path, or `off` [default:
    /// $XDG_RUNTIME_DIR/ferry/<port>.sock, or /run/ferry/<port>.sock for root]. Mode
    /// 0600: only this user (and root) may connect.
    #[arg(long, env = "FERRY_CONTROL_SOCKET")]
    pub control_socket: Option<String>,

    /// Where to write the access log, one line per response: a file path (appended
    /// to; reopened on SIGUSR1, for logrotate), `-` for stdout, or `off`.
    #[arg(long, env = "FERRY_ACCESS_LOG", default_value = "off")]
    pub access_log: String,

    /// The access log's format: combined (Apache/nginx combined, then the request
    /// time in seconds) or json (method, target, status, bytes, duration, time
    /// waiting for a worker, worker pid and slot, request id, peer, protocol).
    #[arg(long, env = "FERRY_ACCESS_LOG_FORMAT", value_enum, default_value_t = crate::access_log::Format::Combined)]
    pub access_log_format: crate::access_log::Format,

    /// Log (as a warning, target `ferry::slow`) each request still without a response
    /// head this long after it reached its worker, once, with the worker's pid and its
    /// other requests in flight: PHP-FPM's request_slowlog_timeout. Off unless set.
    #[arg(long, env = "FERRY_SLOW_REQUEST_THRESHOLD", value_parser = duration)]
    pub slow_request_threshold: Option<Duration>,

    /// After a request times out or its client leaves, how long the worker has to
    /// confirm the cancellation before it is treated as stuck and killed.
    #[arg(long, env = "FERRY_CANCEL_GRACE", default_value = "5s", value_parser = duration)]
    pub cancel_grace: Duration,

    /// How often the master pings each worker on its channel.
    #[arg(long, env = "FERRY_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = duration)]
    pub heartbeat_interval: Duration,

    /// A worker that answers no ping for this long is stuck (e.g. a handler blocking
    /// its only thread): it is sent SIGTERM, then SIGKILL, and replaced.
    #[arg(long, env = "FERRY_HEARTBEAT_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub heartbeat_timeout: Duration,

    /// How long a worker sent SIGTERM has to exit before SIGKILL.
    #[arg(long, env = "FERRY_KILL_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub kill_timeout: Duration,

    /// Recycle a worker after it has served this many requests (0: never). Its
    /// replacement is started and ready before it drains, one worker at a time.
    #[arg(long, env = "FERRY_MAX_REQUESTS", default_value_t = 0)]
    pub max_requests: u64,

    /// Started and ready processes kept beside the pool, at most one per worker: a
    /// worker that is recycled (or dies) is replaced by its spare at once, so the
    /// start is off the requests' path. With `--max-requests 1` every request runs
    /// in a fresh process. Each spare costs a process's memory
    /// [default: the number of workers with --max-requests, else 0].
    #[arg(long, env = "FERRY_SPARE_WORKERS")]
    pub spare_workers: Option<u32>,

    /// Each worker draws its own limit in [max-requests, max-requests + jitter], so
    /// workers started together do not all recycle together.
    #[arg(long, env = "FERRY_MAX_REQUESTS_JITTER", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Recycle a worker whose resident memory (RSS, read from /proc every few
    /// seconds) exceeds this (e.g. 512MiB). Off by default.
    #[arg(long, env = "FERRY_MAX_MEMORY", value_parser = bytes)]
    pub max_memory: Option<u64>,

    /// Lame-duck time before a graceful stop (the Kubernetes readiness pattern): on
    /// SIGTERM or SIGINT, /readyz answers 503 at once while the listener stays open
    /// and serves for this long, so load balancers see the change before connections
    /// are refused; then the graceful stop begins. 0: stop at once.
    #[arg(long, env = "FERRY_DRAIN_DELAY", default_value = "0s", value_parser = duration)]
    pub drain_delay: Duration,

    /// On SIGTERM or SIGINT, how long in-flight requests and draining workers get
    /// to finish before they are killed.
    #[arg(long, env = "FERRY_GRACEFUL_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub graceful_timeout: Duration,

    /// Largest request body accepted; larger ones get 413 (e.g. 10MiB, 512KiB, 1000).
    #[arg(long, env = "FERRY_MAX_BODY_SIZE", default_value = "10MiB", value_parser = bytes)]
    pub max_body_size: u64,

    /// Largest request head (request line and headers; for HTTP/2, the header list
    /// size: names and values plus 32 bytes per field); larger ones get 431.
    #[arg(long, env = "FERRY_MAX_HEADER_SIZE", default_value = "64KiB", value_parser = bytes)]
    pub max_header_size: u64,

    /// Most header fields in one HTTP/1.1 request; more get 431 (HTTP/2 is bounded by
    /// --max-header-size).
    #[arg(long, env = "FERRY_MAX_HEADERS", default_value_t = HYPER_MAX_HEADERS)]
    pub max_headers: usize,

    /// How long a client may take to send a request head (slowloris protection). It
    /// also bounds the wait for the HTTP/2 preface, and an HTTP/2 connection with no
    /// request in flight for this long is closed, as an idle HTTP/1.1 one is.
    #[arg(long, env = "FERRY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,

    /// Largest frame on a worker channel, either direction. Must hold any request head
    /// the header limits allow plus a 64 KiB inline body.
    #[arg(long, env = "FERRY_MAX_FRAME_SIZE", default_value = "1MiB", value_parser = bytes)]
    pub max_frame_size: u64,

    /// How long a new worker may take to complete its handshake.
    #[arg(long, env = "FERRY_START_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub start_timeout: Duration,

    /// Retry once on another worker an idempotent request (GET, HEAD, OPTIONS, PUT,
    /// DELETE) whose worker died before sending any response bytes and whose body was
    /// not streamed.
    #[arg(long, env = "FERRY_RETRY_IDEMPOTENT", default_value_t = true, action = clap::ArgAction::Set)]
    pub retry_idempotent: bool,

    /// Run workers as this user (a name or a uid): when the master runs as root it
    /// binds its sockets first, then starts each worker as this user, with its
    /// primary group (unless --group), no supplementary groups, and HOME, USER and
    /// LOGNAME set to it. The master itself stays root, to keep its sockets and to
    /// re-execute itself on SIGUSR2.
    #[arg(long, env = "FERRY_USER")]
    pub user: Option<String>,

    /// Run workers with this group (a name or a gid).
    #[arg(long, env = "FERRY_GROUP")]
    pub group: Option<String>,

    /// Workers start in this folder.
    #[arg(long, env = "FERRY_CHDIR")]
    pub chdir: Option<std::path::PathBuf>,

    /// Workers start with this umask, in octal (022, 077).
    #[arg(long, env = "FERRY_UMASK", value_parser = octal_mode)]
    pub umask: Option<u32>,

    /// Allow --user root (or uid 0): workers that run as root can undo every
    /// bound the master sets.
    #[arg(long, env = "FERRY_ALLOW_ROOT_WORKERS")]
    pub allow_root_workers: bool,

    /// The worker command and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "WORKER_CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Balance {
    LeastOutstanding,
    RoundRobin,
}

/// Request bodies up to this size (with a known length) ride inline in the head frame.
pub const INLINE_BODY_MAX: u64 = 64 * 1024;

/// hyper's own header-count limit when it is told none (its `DEFAULT_MAX_HEADERS`),
/// and so the default of `--max-headers`: the front leaves this value to hyper, whose
/// parser then uses a stack array instead of filling a vector of slots per request.
pub const HYPER_MAX_HEADERS: usize = 100;

impl Config {
    /// Options that are each valid but do not fit together, or make no sense.
    pub fn check(&self) -> Result<(), String> {
        let must_not_be_zero = [
            ("--request-timeout", self.request_timeout),
            ("--queue-timeout", self.queue_timeout),
            ("--cancel-grace", self.cancel_grace),
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--heartbeat-timeout", self.heartbeat_timeout),
            ("--header-read-timeout", self.header_read_timeout),
            ("--body-read-timeout", self.body_read_timeout),
            ("--send-timeout", self.send_timeout),
            ("--start-timeout", self.start_timeout),
            ("--scale-up-after", self.scale_up_after),
            ("--idle-timeout", self.idle_timeout),
        ];
        if let Some((name, _)) = must_not_be_zero.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be longer than 0"));
        }
        if let Some(max) = self.max_workers {
            if self.min_workers > max {
                return Err(format!(
                    "--min-workers ({}) must not be above --max-workers ({max})",
                    self.min_workers
                ));
            }
            if let Some(n) = self
                .workers
                .filter(|n| !(self.min_workers..=max).contains(n))
            {
                return Err(format!(
                    "--workers {n} is outside --min-workers {} and --max-workers {max}",
                    self.min_workers
                ));
            }
        }
        if self.heartbeat_interval >= self.heartbeat_timeout {
            return Err(format!(
                "--heartbeat-interval ({:?}) must be shorter than --heartbeat-timeout ({:?}): otherwise every worker misses a heartbeat between two pings and is killed",
                self.heartbeat_interval, self.heartbeat_timeout
            ));
        }
        // A request head is its headers (each field costs 16 bytes of lengths on the
        // channel) plus an inline body: it must fit in one frame.
        let need = self.max_header_size + 16 * self.max_headers as u64 + INLINE_BODY_MAX + 4096;
        if self.max_frame_size < need {
            return Err(format!(
                "--max-frame-size {} is too small for --max-header-size {} with {} headers: it must be at least {need}",
                self.max_frame_size, self.max_header_size, self.max_headers
            ));
        }
        if self.max_frame_size > u32::MAX as u64 {
            return Err("--max-frame-size must be below 4GiB".into());
        }
        Ok(())
    }

    /// The HTTP/2 stream limit: as set, or a quarter of the first pool's slots.
    pub fn streams_per_connection(&self) -> u32 {
        self.max_streams_per_connection.unwrap_or_else(|| {
            let slots = self.workers() as u64 * self.concurrency as u64;
            (slots / 4).clamp(1, 100) as u32
        })
    }

    /// How many slots, from the first, keep a spare worker.
    pub fn spare_workers(&self) -> usize {
        match self.spare_workers {
            Some(n) => n as usize,
            None if self.max_requests > 0 => self.pool_bounds().1.min(self.workers().max(1)),
            None => 0,
        }
    }

    /// The pool's size at start.
    pub fn workers(&self) -> usize {
        match (self.workers, self.max_workers) {
            (Some(n), _) => n as usize,
            (None, Some(_)) => self.min_workers as usize,
            (None, None) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The pool's size bounds, and whether it sizes itself (`--max-workers`): a
    /// fixed pool may still be scaled by hand (`ferry ctl scale`, SIGTTIN/SIGTTOU)
    /// between 1 and 1024.
    pub fn pool_bounds(&self) -> (usize, usize, bool) {
        match self.max_workers {
            Some(max) => (self.min_workers as usize, max as usize, true),
            None => (1, 1024, false),
        }
    }
}

fn octal_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("`{s}` is not an octal mode (examples: 0660, 0600, 022)"))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)"))
}

fn bytes(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (examples: 10MiB, 512KiB, 4096)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!(bytes("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(bytes("4096").unwrap(), 4096);
        assert!(bytes("ten").is_err());
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(duration("5").is_err());
    }

    #[test]
    fn frame_limit_must_hold_a_full_request_head() {
        let ok = Config::try_parse_from(["ferry", "--", "w"]).unwrap();
        assert!(ok.check().is_ok(), "the defaults fit together");
        let small =
            Config::try_parse_from(["ferry", "--max-frame-size", "64KiB", "--", "w"]).unwrap();
        assert!(small
            .check()
            .unwrap_err()
            .contains("--max-frame-size 65536 is too small"));
    }

    #[test]
    fn nonsense_timings_are_refused_naming_the_option() {
        let check = |args: &[&str]| {
            let mut all = vec!["ferry"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["--", "w"]);
            Config::try_parse_from(all).unwrap().check()
        };
        let e = check(&["--heartbeat-interval", "10s", "--heartbeat-timeout", "5s"]).unwrap_err();
        assert!(
            e.contains("--heartbeat-interval") && e.contains("--heartbeat-timeout"),
            "{e}"
        );
        assert!(check(&["--heartbeat-interval", "5s", "--heartbeat-timeout", "5s"]).is_err());
        let e = check(&["--heartbeat-interval", "0s"]).unwrap_err();
        assert_eq!(e, "--heartbeat-interval must be longer than 0");
        let e = check(&["--send-timeout", "0s"]).unwrap_err();
        assert_eq!(e, "--send-timeout must be longer than 0");
        assert!(
            check(&["--graceful-timeout", "0s"]).is_ok(),
            "0 means at once"
        );
    }

    #[test]
    fn one_connection_gets_a_quarter_of_the_pool_by_default() {
        let c = |args: &[&str]| {
            let mut all = vec!["ferry"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["--", "w"]);
            Config::try_parse_from(all)
                .unwrap()
                .streams_per_connection()
        };
        assert_eq!(c(&["--workers", "2", "--concurrency", "64"]), 32);
        assert_eq!(c(&["--workers", "2", "--concurrency", "1"]), 1);
        assert_eq!(c(&["--workers", "64", "--concurrency", "64"]), 100);
        assert_eq!(
            c(&["--workers", "2", "--max-streams-per-connection", "7"]),
            7
        );
    }

    #[test]
    fn command_comes_after_the_double_dash() {
        let c =
            Config::try_parse_from(["ferry", "--workers", "2", "--", "worker", "--flag"]).unwrap();
        assert_eq!(c.command, ["worker", "--flag"]);
        assert_eq!(c.workers(), 2);
        assert!(
            Config::try_parse_from(["ferry"]).is_err(),
            "a worker command is required"
        );
        assert!(Config::try_parse_from(["ferry", "--workers", "0", "--", "w"]).is_err());
    }
}
