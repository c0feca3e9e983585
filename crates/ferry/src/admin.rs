//! The admin endpoint (`--admin-listen`): a second, small HTTP server in the master
//! that shows the pool's live state, like PHP-FPM's status page.
//!
//! - `GET /status`: JSON, for people and scripts: every worker (slot, pid, state,
//!   uptime, requests in flight and served, resident memory), the queue, response
//!   counts by class, worker starts and exits.
//! - `GET /metrics`: the same numbers in the OpenMetrics text format, for Prometheus.
//! - `GET /healthz`: 200 while the master runs (a liveness probe).
//! - `GET /readyz`: 200 while at least one worker takes requests and the master is
//!   not stopping; 503 otherwise, from the first moment of a graceful stop, while
//!   in-flight requests finish (a readiness probe). The listener closes at the same
//!   moment: there is no delay for a load balancer to notice first.
//!
//! It is read-only and has no authentication: bind it to loopback or a private
//! network. It runs on the master's runtime, apart from the public listener, so it
//! answers even when every worker is busy.

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::ctx::Ctx;

/// Serves admin requests until the process exits.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(false);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("admin endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(answer(&req, &ctx)) }
            }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn answer(req: &Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/status" => {
            let body = serde_json::to_string_pretty(&status(ctx)).expect("plain data") + "\n";
            reply(StatusCode::OK, "application/json", body)
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics(&status(ctx)),
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness(ctx) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "ferry admin endpoint: GET /status, /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Whether a load balancer should send requests here.
fn readiness(ctx: &Ctx) -> Result<(), &'static str> {
    if ctx.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("stopping");
    }
    if ctx.pool.ready() == 0 {
        return Err("no worker is ready");
    }
    Ok(())
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// A snapshot of the master's state: the `/status` document.
#[derive(Serialize)]
pub struct Status {
    pub pid: u32,
    pub uptime_seconds: f64,
    pub command: Vec<String>,
    pub workers: Vec<WorkerStatus>,
    pub queue: QueueStatus,
    /// Responses the master sent, by status class ("1xx" … "5xx"). Malformed
    /// requests hyper rejects before they reach the proxy are not counted.
    pub responses: std::collections::BTreeMap<&'static str, u64>,
    pub worker_starts: u64,
    pub worker_exits: u64,
    pub log: LogStatus,
}

#[derive(Serialize)]
pub struct LogStatus {
    /// Log lines dropped because stderr did not keep up.
    pub lines_dropped: u64,
    /// Lines of worker output split because they were longer than 16 KiB.
    pub lines_split: u64,
    /// Access log lines dropped because the disk did not keep up.
    pub access_lines_dropped: u64,
}

#[derive(Serialize)]
pub struct WorkerStatus {
    pub slot: usize,
    pub pid: u32,
    pub state: &'static str,
    pub uptime_seconds: f64,
    pub in_flight: usize,
    /// Requests finished: answered, failed or cancelled.
    pub served: u64,
    /// Resident memory, when `/proc` shows it.
    pub rss_bytes: Option<u64>,
    /// CPU time the worker process has used (user + system), when `/proc` shows it.
    pub cpu_seconds: Option<f64>,
}

#[derive(Serialize)]
pub struct QueueStatus {
    pub waiting: usize,
    pub limit: usize,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn status(ctx: &Ctx) -> Status {
    let stats = &ctx.stats;
    let workers = stats
        .workers()
        .iter()
        .map(|c| WorkerStatus {
            slot: c.index,
            pid: c.pid,
            state: c.state().name(),
            uptime_seconds: seconds(c.started.elapsed()),
            in_flight: c.in_flight(),
            served: c.served(),
            rss_bytes: crate::process::rss_of(c.pid),
            cpu_seconds: crate::process::cpu_of(c.pid).map(|d| d.as_secs_f64()),
        })
        .collect();
    Status {
        pid: std::process::id(),
        uptime_seconds: seconds(stats.started.elapsed()),
        command: ctx.command.to_vec(),
        workers,
        queue: QueueStatus {
            waiting: ctx.pool.waiting(),
            limit: ctx.pool.queue_size(),
        },
        responses: CLASSES.into_iter().zip(stats.responses()).collect(),
        worker_starts: stats
            .worker_starts
            .load(std::sync::atomic::Ordering::Relaxed),
        worker_exits: stats
            .worker_exits
            .load(std::sync::atomic::Ordering::Relaxed),
        log: {
            let (lines_dropped, lines_split) = stats.log_lines();
            LogStatus {
                lines_dropped,
                lines_split,
                access_lines_dropped: ctx.access_log.as_ref().map_or(0, |l| l.dropped()),
            }
        },
    }
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    slot: u64,
    pid: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

/// The `/metrics` text. Built afresh from a snapshot at each scrape: a scrape
/// every few seconds costs less than keeping metric objects in step with the pool.
pub fn metrics(s: &Status) -> String {
    let mut registry = Registry::with_prefix("ferry");

    let responses = Family::<ClassLabel, Counter>::default();
    for (class, n) in &s.responses {
        responses.get_or_create(&ClassLabel { class }).inc_by(*n);
    }
    registry.register(
        "responses",
        "Responses sent to clients, by status class",
        responses,
    );

    let workers = Family::<StateLabel, Gauge>::default();
    for state in ["ready", "spare", "draining", "stopping"] {
        let n = s.workers.iter().filter(|w| w.state == state).count();
        workers.get_or_create(&StateLabel { state }).set(n as i64);
    }
    registry.register("workers", "Worker processes, by state", workers);

    let in_flight = Family::<WorkerLabels, Gauge>::default();
    let served = Family::<WorkerLabels, Counter>::default();
    let rss = Family::<WorkerLabels, Gauge>::default();
    for w in &s.workers {
        let labels = WorkerLabels {
            slot: w.slot as u64,
            pid: w.pid as u64,
        };
        in_flight.get_or_create(&labels).set(w.in_flight as i64);
        served.get_or_create(&labels).inc_by(w.served);
        if let Some(bytes) = w.rss_bytes {
            rss.get_or_create(&labels).set(bytes as i64);
        }
    }
    registry.register(
        "worker_in_flight",
        "Requests in flight on each worker",
        in_flight,
    );
    registry.register(
        "worker_served",
        "Requests each worker has finished (answered, failed or cancelled)",
        served,
    );
    registry.register(
        "worker_resident_memory_bytes",
        "Resident memory of each worker process",
        rss,
    );

    let gauge = |v: usize| {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        g
    };
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    registry.register(
        "queue_waiting",
        "Requests waiting in the master for a free worker",
        gauge(s.queue.waiting),
    );
    registry.register(
        "queue_limit",
        "Most requests that may wait (--queue-size)",
        gauge(s.queue.limit),
    );
    registry.register(
        "worker_starts",
        "Workers that completed their handshake",
        counter(s.worker_starts),
    );
    registry.register(
        "worker_exits",
        "Workers that ended: drained, crashed or killed",
        counter(s.worker_exits),
    );
    registry.register(
        "log_lines_dropped",
        "Log lines dropped because stderr did not keep up",
        counter(s.log.lines_dropped),
    );
    registry.register(
        "log_lines_split",
        "Lines of worker output split for being longer than 16 KiB",
        counter(s.log.lines_split),
    );
    registry.register(
        "access_log_lines_dropped",
        "Access log lines dropped because the disk did not keep up",
        counter(s.log.access_lines_dropped),
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            pid: 1,
            uptime_seconds: 2.5,
            command: vec!["w".into()],
            workers: vec![
                WorkerStatus {
                    slot: 0,
                    pid: 100,
                    state: "ready",
                    uptime_seconds: 1.0,
                    in_flight: 3,
                    served: 40,
                    rss_bytes: Some(4096),
                    cpu_seconds: Some(1.5),
                },
                WorkerStatus {
                    slot: 1,
                    pid: 101,
                    state: "draining",
                    uptime_seconds: 1.0,
                    in_flight: 1,
                    served: 2,
                    rss_bytes: None,
                    cpu_seconds: None,
                },
            ],
            queue: QueueStatus {
                waiting: 5,
                limit: 1024,
            },
            responses: CLASSES.into_iter().zip([0, 42, 0, 1, 2]).collect(),
            worker_starts: 3,
            worker_exits: 1,
            log: LogStatus {
                lines_dropped: 7,
                lines_split: 0,
                access_lines_dropped: 0,
            },
        }
    }

    #[test]
    fn metrics_carry_every_number_of_the_status() {
        let m = metrics(&sample());
        for line in [
            "# TYPE ferry_responses counter",
            "ferry_responses_total{class=\"2xx\"} 42",
            "ferry_responses_total{class=\"5xx\"} 2",
            "ferry_workers{state=\"ready\"} 1",
            "ferry_workers{state=\"draining\"} 1",
            "ferry_workers{state=\"stopping\"} 0",
            "ferry_workers{state=\"spare\"} 0",
            "ferry_worker_in_flight{slot=\"0\",pid=\"100\"} 3",
            "ferry_worker_served_total{slot=\"0\",pid=\"100\"} 40",
            "ferry_worker_resident_memory_bytes{slot=\"0\",pid=\"100\"} 4096",
            "ferry_queue_waiting 5",
            "ferry_queue_limit 1024",
            "ferry_worker_starts_total 3",
            "ferry_worker_exits_total 1",
            "ferry_log_lines_dropped_total 7",
            "ferry_access_log_lines_dropped_total 0",
            "# EOF",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
        // A worker whose memory is unknown gets no sample rather than a zero.
        assert!(!m.contains("resident_memory_bytes{slot=\"1\""), "{m}");
    }

    #[test]
    fn status_is_json_with_stable_field_names() {
        let v: serde_json::Value = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["workers"][1]["state"], "draining");
        assert_eq!(v["workers"][0]["rss_bytes"], 4096);
        assert_eq!(v["queue"]["waiting"], 5);
        assert_eq!(v["responses"]["2xx"], 42);
        assert_eq!(v["worker_exits"], 1);
        assert_eq!(v["log"]["lines_dropped"], 7);
    }
}
