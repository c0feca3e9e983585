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

use crate::activity::Progress;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;
    use crate::dispatch::pool::Pool;
    use crate::dispatch::writer::Outgoing;
    use ferry_protocol::MasterMsg;
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use std::time::Duration;

    /// A streamed response of declared `length` for a request in flight on a channel;
    /// the channel's queue shows what the body makes the master send.
    async fn streamed(
        length: Option<u64>,
    ) -> (
        ResponseBody,
        mpsc::UnboundedSender<Piece>,
        mpsc::UnboundedReceiver<Outgoing>,
        Arc<Pool<Channel>>,
    ) {
        let pool = Pool::new(Balance::LeastOutstanding, 4, Duration::from_secs(1));
        let (channel, mut out) = Channel::detached(4);
        pool.add(channel.clone(), 4);
        let lease = pool.acquire_avoiding(None).await.unwrap();
        let x = channel
            .register::<()>(
                lease,
                &http::Method::GET,
                &http::Uri::from_static("/"),
                false,
                |_| Ok(crate::dispatch::writer::Outgoing::Frame(Bytes::new())),
            )
            .unwrap();
        let _head_frame = out.try_recv();
        let (pieces, rx) = mpsc::unbounded_channel();
        let body = ResponseBody::Stream(Stream {
            rx,
            guard: CancelGuard {
                channel,
                id: x.id,
                armed: true,
            },
            length,
            remaining: length,
            progress: Arc::new(Progress::default()),
            uncredited: 0,
            credit_every: 1 << 20,
        });
        (body, pieces, out, pool)
    }

    fn cancels(out: &mut mpsc::UnboundedReceiver<Outgoing>) -> usize {
        std::iter::from_fn(|| out.try_recv().ok())
            .filter(|o| matches!(o, Outgoing::Msg(MasterMsg::Cancel(_))))
            .count()
    }

    #[tokio::test]
    async fn a_body_dropped_after_its_declared_length_is_no_cancellation() {
        let (mut body, pieces, mut out, _pool) = streamed(Some(5)).await;
        pieces
            .send(Piece::Data(Bytes::from_static(b"hello")))
            .unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_end_stream(), "all declared bytes are out");
        drop(body);
        assert_eq!(cancels(&mut out), 0);
    }

    #[tokio::test]
    async fn a_body_dropped_short_of_its_end_cancels_the_request() {
        let (mut body, pieces, mut out, _pool) = streamed(Some(10)).await;
        pieces
            .send(Piece::Data(Bytes::from_static(b"hello")))
            .unwrap();
        let _ = body.frame().await;
        drop(body);
        assert_eq!(cancels(&mut out), 1);
        let (body, _pieces, mut out, _pool) = streamed(None).await;
        drop(body);
        assert_eq!(cancels(&mut out), 1, "no length, no end: cancelled");
    }
}
