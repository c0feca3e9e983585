//! The writer task: takes every frame queued for the master and coalesces what is
//! already queued into one write. It also keeps a refused response from leaving the
//! master waiting: a head too large for a frame becomes a `RequestFailed`.

use ferry_channel::WriteHalf;
use ferry_protocol::codec::WorkerCodec;
use ferry_protocol::*;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

/// Drains every frame already queued into the buffer, then flushes once: under load
/// one write carries many frames.
pub(crate) async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<WorkerMsg>,
    mut sink: FramedWrite<WriteHalf, WorkerCodec>,
) {
    // Requests whose streamed head was refused: their later frames are dropped, since
    // the master never saw the head.
    let mut refused = std::collections::HashSet::new();
    while let Some(msg) = rx.recv().await {
        let mut next = Some(msg);
        while let Some(msg) = next {
            next = rx.try_recv().ok();
            let id = request_id(&msg);
            if let Some(id) = id.filter(|id| refused.contains(id)) {
                if matches!(msg, WorkerMsg::BodyEnd(_) | WorkerMsg::Failed(_)) {
                    refused.remove(&id);
                }
                continue;
            }
            let streamed = matches!(&msg, WorkerMsg::ResponseHead(h) if matches!(h.body, BodyKind::Streamed { .. }));
            match sink.feed(msg).await {
                Ok(()) => {}
                Err(ProtocolError::Io(e)) => {
                    tracing::debug!("channel write failed: {e}");
                    return;
                }
                // Too large for a frame: nothing was buffered. A refused response head
                // becomes a clean failure of its request, so the master is not left waiting.
                Err(e) => {
                    tracing::error!("a frame exceeds the channel's limit and was not sent: {e}");
                    if let Some(id) = id {
                        let reason = format!("the response could not be sent: {e}");
                        let _ = sink
                            .feed(WorkerMsg::Failed(RequestFailed { id, reason }))
                            .await;
                        if streamed {
                            refused.insert(id);
                        }
                    }
                }
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.flush().await;
}

/// The request a response-side frame belongs to.
fn request_id(msg: &WorkerMsg) -> Option<u64> {
    match msg {
        WorkerMsg::ResponseHead(m) => Some(m.id),
        WorkerMsg::BodyChunk(m) => Some(m.id),
        WorkerMsg::BodyEnd(m) => Some(m.id),
        WorkerMsg::Credit(m) => Some(m.id),
        WorkerMsg::Failed(m) => Some(m.id),
        _ => None,
    }
}
