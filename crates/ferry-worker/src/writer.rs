//! The writer task: takes every frame queued for the master and coalesces what is
//! already queued into one write. It also keeps a refused response from leaving the
//! master waiting: a head too large for a frame becomes a `RequestFailed`.
//!
//! Small frames are encoded into one buffer; the data of a large body chunk or inline
//! response body is not copied into it but written from its own `Bytes` in the same
//! `writev` (a streamed 1 MiB response was a 1 MiB `memmove` in the worker, 8 % of its
//! CPU). The buffer and the writes are `ferry_channel::WriteQueue`'s, shared with the
//! master's writer.

use ferry_channel::{WriteHalf, WriteQueue};
use ferry_protocol::*;
use std::io;
use tokio::sync::mpsc;

/// The channel's write side: frames queued in order, written with one `writev`.
pub(crate) struct Writer {
    sock: WriteHalf,
    max_frame: usize,
    out: WriteQueue,
}

impl Writer {
    pub(crate) fn new(sock: WriteHalf) -> Self {
        Writer {
            sock,
            max_frame: DEFAULT_MAX_FRAME_SIZE,
            out: WriteQueue::new(),
        }
    }

    pub(crate) fn set_max_frame_size(&mut self, max: usize) {
        self.max_frame = max;
    }

    /// Queues one frame; writes what is queued first if that passed the backpressure
    /// bound. A frame too large for the channel is refused (`FrameTooLong`) and
    /// nothing of it is queued.
    pub(crate) async fn feed(&mut self, msg: WorkerMsg) -> Result<(), ProtocolError> {
        if self.out.is_full() {
            self.flush().await?;
        }
        let max = self.max_frame;
        match msg {
            // Data goes to the queue as it is: it copies a small piece and writes a
            // large one from its own `Bytes`.
            WorkerMsg::BodyChunk(c) => {
                self.out
                    .append(|b| frame::encode_worker_chunk_prefix(c.id, c.data.len(), b, max))?;
                self.out.push_bytes(c.data);
            }
            // A whole response: its body is the frame's last field, and goes to the
            // queue the same way (a page of 4 KiB to 64 KiB is not copied).
            WorkerMsg::ResponseHead(h) => match &h.body {
                BodyKind::Inline(data) => {
                    let data = data.clone();
                    self.out
                        .append(|b| frame::encode_response_head_prefix(&h, data.len(), b, max))?;
                    self.out.push_bytes(data);
                }
                _ => {
                    let msg = WorkerMsg::ResponseHead(h);
                    self.out.append(|b| frame::encode_worker(&msg, b, max))?
                }
            },
            msg => self.out.append(|b| frame::encode_worker(&msg, b, max))?,
        }
        Ok(())
    }

    /// Queues one frame and writes everything queued.
    pub(crate) async fn send(&mut self, msg: WorkerMsg) -> Result<(), ProtocolError> {
        self.feed(msg).await?;
        self.flush().await.map_err(ProtocolError::Io)
    }

    /// Writes everything queued, in order.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.out.flush(&mut self.sock).await
    }
}

/// Drains every frame already queued into the buffer, then flushes once: under load
/// one write carries many frames.
pub(crate) async fn write_loop(mut rx: mpsc::UnboundedReceiver<WorkerMsg>, mut sink: Writer) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_channel::ZERO_COPY_MIN;

    fn chunk(id: u64, len: usize) -> WorkerMsg {
        WorkerMsg::BodyChunk(BodyChunk {
            id,
            data: (0..len)
                .map(|i| (i as u64 * 31 + id) as u8)
                .collect::<Vec<u8>>()
                .into(),
        })
    }

    /// Frames of every kind and size, big chunks (written from their own buffers) among
    /// small frames, arrive whole and in order, through partial writes of a full socket.
    #[tokio::test]
    async fn frames_arrive_whole_and_in_order_whatever_their_size() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_read, write) = ferry_channel::split(ours).unwrap();
        let mut w = Writer::new(write);
        let mut sent = Vec::new();
        for i in 0..40u64 {
            sent.push(chunk(
                i,
                [10, ZERO_COPY_MIN - 1, ZERO_COPY_MIN, 70_000, 300_000][i as usize % 5],
            ));
            sent.push(WorkerMsg::Credit(Credit { id: i, bytes: 7 }));
            let WorkerMsg::BodyChunk(c) = chunk(i, [0, 100, ZERO_COPY_MIN, 50_000][i as usize % 4])
            else {
                unreachable!()
            };
            sent.push(WorkerMsg::ResponseHead(ResponseHead {
                id: i,
                status: 200,
                headers: vec![Header::new(
                    bytes::Bytes::from_static(b"content-type"),
                    bytes::Bytes::from_static(b"text/html"),
                )],
                body: BodyKind::Inline(c.data),
            }));
            if i % 3 == 0 {
                sent.push(WorkerMsg::BodyEnd(BodyEnd {
                    id: i,
                    trailers: Vec::new(),
                }));
            }
        }
        // A long run of copied chunks: one buffer larger than the socket holds, so a
        // write also ends inside it.
        let copied_from = sent.len();
        for i in 0..100u64 {
            sent.push(chunk(1000 + i, ZERO_COPY_MIN - 1));
        }
        let total: usize = sent.len();
        let reader = ferry_channel::testing::read_frames(theirs, total, 3000);
        for (i, m) in sent.iter().cloned().enumerate() {
            w.feed(m).await.unwrap();
            if i % 7 == 0 && i < copied_from {
                w.flush().await.unwrap();
            }
        }
        w.flush().await.unwrap();
        assert_eq!(w.out.queued(), 0);
        assert_eq!(w.out.pieces(), 0);
        let got: Vec<WorkerMsg> = (reader.join().unwrap().into_iter())
            .map(|p| frame::decode_worker(p).unwrap())
            .collect();
        assert_eq!(got.len(), sent.len());
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(format!("{g:?}"), format!("{s:?}"));
        }
    }

    #[tokio::test]
    async fn a_chunk_too_large_for_a_frame_is_refused_and_queues_nothing() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (_read, write) = ferry_channel::split(ours).unwrap();
        let mut w = Writer::new(write);
        w.set_max_frame_size(10_000);
        assert!(matches!(
            w.feed(chunk(1, 10_000)).await,
            Err(ProtocolError::FrameTooLong { .. })
        ));
        assert!(matches!(
            w.feed(WorkerMsg::BodyChunk(BodyChunk {
                id: 1,
                data: vec![0u8; 5000].into()
            }))
            .await,
            Ok(())
        ));
        assert_eq!(w.out.queued(), 4 + BODY_CHUNK_OVERHEAD + 5000);
        assert_eq!(w.out.pieces(), 2, "one prefix, one zero-copy chunk");
    }
}
