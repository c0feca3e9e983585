//! [`Body`]: the streaming body type of requests handed to handlers and of the
//! responses they return.

use bytes::Bytes;
use ferry_protocol::Header;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

use crate::outbox::Outbox;

/// Any error a body or a service can produce.
///
/// ```
/// let e: ferry_worker::BoxError = "the database is down".into();
/// assert_eq!(e.to_string(), "the database is down");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body: empty, a single buffer, or a stream.
///
/// Request bodies stream in from the master under flow control: reading a chunk is
/// what lets the master send more, so a handler that never reads a large upload
/// holds at most one window of it in memory.
///
/// ```
/// use ferry_worker::Body;
/// let a = Body::from("Hello, world!\n");
/// let b = Body::empty();
/// # let _ = (a, b);
/// ```
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A body with no bytes.
    ///
    /// ```
    /// use http_body::Body as _;
    /// assert!(ferry_worker::Body::empty().is_end_stream());
    /// ```
    pub fn empty() -> Self {
        Body { kind: Kind::Empty }
    }

    /// Wraps any `http_body::Body` (a stream, an axum body, ...).
    ///
    /// ```
    /// use ferry_worker::Body;
    /// let body = Body::new(http_body_util::Full::new(bytes::Bytes::from_static(b"hi")));
    /// # let _ = body;
    /// ```
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body {
            kind: Kind::Boxed(body.map_err(Into::into).boxed_unsync()),
        }
    }

    /// Collects the whole body into one buffer.
    ///
    /// ```no_run
    /// # async fn f(req: http::Request<ferry_worker::Body>) -> Result<(), ferry_worker::BoxError> {
    /// let bytes = req.into_body().collect_bytes().await?;
    /// # Ok(()) }
    /// ```
    pub async fn collect_bytes(self) -> Result<Bytes, BoxError> {
        Ok(BodyExt::collect(self).await?.to_bytes())
    }

    pub(crate) fn incoming(
        id: u64,
        length: Option<u64>,
        rx: mpsc::UnboundedReceiver<Piece>,
        outbox: Outbox,
        credit_every: usize,
    ) -> Self {
        Body {
            kind: Kind::Incoming(Incoming {
                id,
                length,
                rx,
                outbox,
                done: false,
                uncredited: 0,
                credit_every,
            }),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Incoming(_) => "incoming",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

macro_rules! from_full {
    ($($t:ty),*) => {$(
        impl From<$t> for Body {
            fn from(v: $t) -> Self {
                Body { kind: Kind::Full(Some(Bytes::from(v))) }
            }
        }
    )*};
}
from_full!(Bytes, Vec<u8>, String, &'static str, &'static [u8]);

/// What the session hands an incoming request body.
pub(crate) enum Piece {
    Data(Bytes),
    End(Vec<Header>),
}

/// A request body arriving from the master. What the reader takes is credited back
/// (in batches), so the master may send that many more bytes.
struct Incoming {
    id: u64,
    length: Option<u64>,
    rx: mpsc::UnboundedReceiver<Piece>,
    outbox: Outbox,
    done: bool,
    /// Bytes handed to the reader but not yet credited back.
    uncredited: usize,
    credit_every: usize,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
            Kind::Incoming(inc) => {
                if inc.done {
                    return Poll::Ready(None);
                }
                match inc.rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Piece::Data(data))) => {
                        // What is left to read, so a partly read body reports its size
                        // truly (the master checks a declared response length).
                        if let Some(left) = &mut inc.length {
                            *left = left.saturating_sub(data.len() as u64);
                        }
                        // Credits are batched: one per `credit_every` bytes read.
                        inc.uncredited += data.len();
                        if inc.uncredited >= inc.credit_every {
                            inc.outbox.credit(inc.id, inc.uncredited);
                            inc.uncredited = 0;
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(Some(Piece::End(trailers))) => {
                        inc.done = true;
                        if trailers.is_empty() {
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Some(Ok(Frame::trailers(ferry_protocol::map_from_headers(
                            trailers,
                        )))))
                    }
                    Poll::Ready(None) => {
                        inc.done = true;
                        Poll::Ready(Some(Err("the request body was cut off".into())))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            Kind::Boxed(b) => b.is_end_stream(),
            Kind::Incoming(inc) => inc.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Boxed(b) => b.size_hint(),
            Kind::Incoming(inc) => inc
                .length
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}
