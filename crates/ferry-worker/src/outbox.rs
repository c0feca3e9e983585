//! The table of requests in flight on this worker, and the handle ([`Outbox`]) that
//! request tasks and bodies use to send frames about them.
//!
//! The table is the arbiter of the protocol's one rule for a worker: every request
//! id gets exactly one terminal message, and nothing after it. Frames for an id are
//! queued only while the id is in the table (checked under the table's lock), and
//! whoever removes the id, the request's own task finishing or a `Cancel` arriving,
//! queues the terminal message in the same critical section.

use bytes::Bytes;
use ferry_protocol::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::AbortHandle;

use crate::body::Piece;

pub(crate) struct Active {
    /// Where request-body chunks for this id go, while the body is still arriving.
    pub(crate) body: Option<mpsc::UnboundedSender<Piece>>,
    /// Response-body bytes we may still send before the master grants more.
    pub(crate) window: Arc<Semaphore>,
    pub(crate) abort: Option<AbortHandle>,
    /// Whether the response head went out: after it, a failure can only be `Failed`.
    pub(crate) head_sent: bool,
}

pub(crate) struct Shared {
    pub(crate) requests: Mutex<HashMap<u64, Active>>,
    pub(crate) queue: mpsc::UnboundedSender<WorkerMsg>,
    /// Signalled when the table empties, so a drain can finish.
    pub(crate) idle: Notify,
}

/// The handle request tasks and bodies use to send frames.
#[derive(Clone)]
pub(crate) struct Outbox(pub(crate) Arc<Shared>);

impl Outbox {
    /// Queues `msg` for `id` only if `id` is still in flight.
    pub(crate) fn send_if_active(&self, id: u64, msg: WorkerMsg) -> bool {
        let table = self.0.requests.lock().unwrap();
        table.contains_key(&id) && self.0.queue.send(msg).is_ok()
    }

    /// Ends `id` with its terminal message, unless something else already ended it.
    pub(crate) fn finish(&self, id: u64, terminal: WorkerMsg) -> bool {
        let mut table = self.0.requests.lock().unwrap();
        let Some(active) = table.remove(&id) else {
            return false;
        };
        drop(active);
        let _ = self.0.queue.send(terminal);
        if table.is_empty() {
            self.0.idle.notify_one();
        }
        true
    }

    /// Queues the streamed response head of `id`, remembering that it went out.
    pub(crate) fn send_head(&self, id: u64, head: WorkerMsg) -> bool {
        let mut table = self.0.requests.lock().unwrap();
        match table.get_mut(&id) {
            Some(a) => {
                a.head_sent = true;
                self.0.queue.send(head).is_ok()
            }
            None => false,
        }
    }

    /// Ends `id` after its handler panicked: a 500 if no head went out yet, else `Failed`.
    pub(crate) fn finish_after_panic(&self, id: u64) {
        let head_sent = self
            .0
            .requests
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|a| a.head_sent);
        let terminal = if head_sent {
            WorkerMsg::Failed(RequestFailed {
                id,
                reason: "handler panicked".into(),
            })
        } else {
            inline_response(id, 500, "Internal Server Error\n")
        };
        self.finish(id, terminal);
    }

    /// Grants the master `n` more request-body bytes for `id`.
    pub(crate) fn credit(&self, id: u64, n: usize) {
        if n > 0 {
            self.send_if_active(
                id,
                WorkerMsg::Credit(Credit {
                    id,
                    bytes: n as u32,
                }),
            );
        }
    }

    pub(crate) fn send(&self, msg: WorkerMsg) {
        let _ = self.0.queue.send(msg);
    }
}

/// A complete response whose body is a short text: the SDK's own 400s and 500s.
pub(crate) fn inline_response(id: u64, status: u16, body: &'static str) -> WorkerMsg {
    WorkerMsg::ResponseHead(ResponseHead {
        id,
        status,
        headers: vec![Header::new(
            Bytes::from_static(b"content-type"),
            Bytes::from_static(b"text/plain"),
        )],
        body: BodyKind::Inline(Bytes::from_static(body.as_bytes())),
    })
}
