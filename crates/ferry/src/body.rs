//! [`ResponseBody`]: what hyper writes back to the client. A streamed body credits
//! the worker as hyper takes each chunk, so a slow client slows the worker instead
//! of filling the master's memory, and records the client's [`Progress`] so a
//! client that stops taking it can be found; dropping it before the worker finished
//! cancels the request (but not once it has delivered every byte it declared).

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

use crate::activity::{Busy, Progress};
use crate::dispatch::channel::Channel;
use crate::dispatch::table::Piece;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(Stream),
}

pub struct Stream {
    pub rx: mpsc::UnboundedReceiver<Piece>,
    pub guard: CancelGuard,
    pub length: Option<u64>,
    /// Of a declared length, the bytes not yet handed to hyper.
    pub remaining: Option<u64>,
    pub progress: Arc<Progress>,
    /// Keeps its HTTP/2 connection counted busy until the body is done.
    pub busy: Option<Busy>,
    /// Bytes handed to hyper but not yet credited back to the worker.
    pub uncredited: u32,
    pub credit_every: u32,
}

impl ResponseBody {
    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(b.into()))
    }
}

/// Cancels its request on the worker if dropped while armed: the client left, or
/// the request timed out, before the worker finished.
pub struct CancelGuard {
    pub channel: Arc<Channel>,
    pub id: u64,
    pub armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.channel.cancel(self.id);
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ResponseBody::Stream(s) => {
                if !s.guard.armed {
                    return Poll::Ready(None);
                }
                let piece = match s.rx.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(p) => p,
                };
                match piece {
                    Some(Piece::Data(data)) => {
                        s.progress.took(data.len());
                        if let Some(left) = &mut s.remaining {
                            *left = left.saturating_sub(data.len() as u64);
                            if *left == 0 {
                                // Every declared byte is out: hyper may drop the body
                                // now, and that is no cancellation.
                                s.guard.armed = false;
                            }
                        }
                        s.uncredited += data.len() as u32;
                        if s.uncredited >= s.credit_every {
                            s.guard.channel.credit(s.guard.id, s.uncredited);
                            s.uncredited = 0;
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Some(Piece::End(trailers)) => {
                        s.guard.armed = false;
                        if trailers.is_empty() {
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Some(Ok(Frame::trailers(ferry_protocol::map_from_headers(
                            trailers,
                        )))))
                    }
                    Some(Piece::Failed(reason)) => {
                        s.guard.armed = false;
                        Poll::Ready(Some(Err(format!(
                            "the worker failed mid-response: {reason}"
                        )
                        .into())))
                    }
                    None => {
                        s.guard.armed = false;
                        Poll::Ready(Some(Err("the worker went away mid-response".into())))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            ResponseBody::Stream(s) => !s.guard.armed,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Stream(s) => s
                .length
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}
