//! Sending one handler's response: inline in its head frame when it is small and
//! complete, else as a streamed head and body chunks under the master's window,
//! holding the body to the length it declared.

use bytes::Bytes;
use ferry_protocol::*;
use http::Response;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::body::BoxError;
use crate::outbox::{inline_response, Outbox};

/// Largest body a response may carry inline in its head frame.
const INLINE_MAX: usize = 64 * 1024;

/// The frame sizes a response is cut to.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    /// Largest data per body chunk we send.
    pub chunk: usize,
    /// Largest frame either side accepts.
    pub max_frame: usize,
}

pub(crate) async fn send_response<B>(
    id: u64,
    resp: Response<B>,
    out: &Outbox,
    window: &Semaphore,
    sizes: Sizes,
) where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let headers = headers_from_map(&parts.headers);
    let mut body = std::pin::pin!(body);
    let head = |headers, body| {
        WorkerMsg::ResponseHead(ResponseHead {
            id,
            status,
            headers,
            body,
        })
    };

    if body.is_end_stream() {
        out.finish(id, head(headers, BodyKind::Empty));
        return;
    }
    let length = body.size_hint().exact();
    // Peek at the first frame: a body that is complete after it rides inline.
    let first = match body.frame().await {
        None => {
            out.finish(id, head(headers, BodyKind::Empty));
            return;
        }
        Some(Err(e)) => {
            tracing::error!(
                id,
                "response body failed before its first byte: {}",
                e.into()
            );
            out.finish(id, inline_response(id, 500, "Internal Server Error\n"));
            return;
        }
        Some(Ok(frame)) => frame,
    };
    if let Some(data) = first.data_ref() {
        // Inline only what surely fits in one frame with the head (16 bytes of lengths
        // per header, and room for the fixed fields).
        let head_size = 64
            + headers
                .iter()
                .map(|h| 16 + h.name.len() + h.value.len())
                .sum::<usize>();
        if body.is_end_stream()
            && data.len() <= INLINE_MAX
            && head_size + data.len() <= sizes.max_frame
        {
            let data = first.into_data().unwrap_or_default();
            out.finish(id, head(headers, BodyKind::Inline(data)));
            return;
        }
    }
    if !out.send_head(id, head(headers, BodyKind::Streamed { length })) {
        return;
    }
    // The declared length is the client's Content-Length, and the master treats a
    // body that breaks it as a protocol violation (it kills the worker). A body whose
    // size hint was wrong fails only its own request.
    let mut left = length;
    let broken = |reason: String| {
        tracing::error!(id, "{reason}");
        out.finish(id, WorkerMsg::Failed(RequestFailed { id, reason }));
    };
    let short = |left: Option<u64>| match left {
        Some(n) if n > 0 => Some(format!(
            "the response body ended {n} bytes short of its declared length {}",
            length.unwrap_or_default()
        )),
        _ => None,
    };
    let mut next: Option<Result<http_body::Frame<Bytes>, BoxError>> = Some(Ok(first));
    loop {
        match next {
            None => {
                match short(left) {
                    Some(reason) => broken(reason),
                    None => {
                        out.finish(
                            id,
                            WorkerMsg::BodyEnd(BodyEnd {
                                id,
                                trailers: vec![],
                            }),
                        );
                    }
                }
                return;
            }
            Some(Err(e)) => {
                tracing::error!(id, "response body failed: {e}");
                out.finish(
                    id,
                    WorkerMsg::Failed(RequestFailed {
                        id,
                        reason: format!("response body failed: {e}"),
                    }),
                );
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    if let Some(l) = &mut left {
                        match l.checked_sub(data.len() as u64) {
                            Some(rest) => *l = rest,
                            None => {
                                broken(format!(
                                    "the response body ran past its declared length {}",
                                    length.unwrap_or_default()
                                ));
                                return;
                            }
                        }
                    }
                    while !data.is_empty() {
                        let piece = data.split_to(data.len().min(sizes.chunk));
                        match window.acquire_many(piece.len() as u32).await {
                            Ok(permit) => permit.forget(),
                            Err(_) => return,
                        }
                        if !out
                            .send_if_active(id, WorkerMsg::BodyChunk(BodyChunk { id, data: piece }))
                        {
                            return;
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        if let Some(reason) = short(left) {
                            broken(reason);
                            return;
                        }
                        out.finish(
                            id,
                            WorkerMsg::BodyEnd(BodyEnd {
                                id,
                                trailers: headers_from_map(&trailers),
                            }),
                        );
                        return;
                    }
                }
            },
        }
        next = body.frame().await.map(|r| r.map_err(Into::into));
    }
}
