//! The messages of each direction and the values inside them.
//!
//! Byte fields are generic over `B` so that one set of types serves both ends of the
//! pipeline: encoding takes the owned form (`B = Bytes`, the default), and decoding
//! first reads a borrowed form (`B = &[u8]`) and then turns each field into a `Bytes`
//! slice of the frame. The wire layout of every type is described in `SPEC.md`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One HTTP header field. Names and values are bytes: values need not be UTF-8, and
/// the receiving side validates names as it builds its own header map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header<B = Bytes> {
    pub name: B,
    pub value: B,
}

impl Header {
    /// A header from anything that converts to `Bytes`.
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A borrowed byte string that serializes as one byte string. (serde serializes a
/// plain `&[u8]` as a sequence of `u8`: the same bytes on the wire, but one write call
/// per byte.) The byte type of a borrowed [`RequestHead`] for
/// [`frame::encode_request_head`](crate::frame::encode_request_head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BytesRef<'a>(pub &'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl AsRef<[u8]> for BytesRef<'_> {
    fn as_ref(&self) -> &[u8] {
        self.0
    }
}

/// How a message's body travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyKind<B = Bytes> {
    /// No body: the head is the whole message.
    Empty,
    /// The whole body rides in the head frame.
    Inline(B),
    /// The body follows as `BodyChunk` frames closed by `BodyEnd`, under flow control.
    /// `length` is the total when known in advance (it becomes `Content-Length`).
    Streamed { length: Option<u64> },
}

/// The HTTP version the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpVersion {
    Http09,
    Http10,
    Http11,
    Http2,
    Http3,
}

// ---------------------------------------------------------------- worker -> master

/// First message a worker sends: who it is and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field forever: it is read before anything else is trusted.
    pub protocol_version: u32,
    pub pid: u32,
    /// Most requests the worker accepts in flight at once (at least 1).
    pub max_in_flight: u32,
    /// Request-body bytes the master may send per request before the worker grants more.
    pub initial_window: u32,
    #[serde(deserialize_with = "crate::wire::text")]
    pub sdk_name: String,
    #[serde(deserialize_with = "crate::wire::text")]
    pub sdk_version: String,
}

/// The start of a worker's response to request `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct ResponseHead<B = Bytes> {
    pub id: u64,
    pub status: u16,
    #[serde(deserialize_with = "crate::wire::headers")]
    pub headers: Vec<Header<B>>,
    pub body: BodyKind<B>,
}

/// A worker gave up on request `id` (handler error, cancellation confirmed, body refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFailed {
    pub id: u64,
    #[serde(deserialize_with = "crate::wire::text")]
    pub reason: String,
}

/// Answer to a `Ping`, with the worker's own count of requests in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub nonce: u64,
    pub in_flight: u32,
}

/// The worker is exiting on its own, and says why. With `last_id` (the long form,
/// sent before any `Drain`) it *retires*: it runs the requests it was sent up to
/// that id, and none after it, which the master gives to other workers; then it
/// exits. Without it (the short form: after `Drain`, or from a worker that
/// predates retiring) it sends nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    pub reason: String,
    /// The last request the worker accepted.
    pub last_id: Option<u64>,
}

// ---------------------------------------------------------------- master -> worker

/// The master's answer to `Hello`: the worker may now receive requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Must stay the first field forever, as in `Hello`.
    pub protocol_version: u32,
    /// The worker's slot in the pool (0-based), stable across restarts of that slot.
    pub worker_index: u32,
    /// Largest frame payload the master accepts.
    pub max_frame_size: u32,
    /// Most requests the master will put in flight on this worker at once.
    pub max_in_flight: u32,
    /// Response-body bytes the worker may send per request before the master grants more.
    pub initial_window: u32,
}

/// The start of request `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct RequestHead<B = Bytes> {
    pub id: u64,
    #[serde(deserialize_with = "crate::wire::text")]
    pub method: String,
    /// The request target exactly as the client sent it (origin form: path and query).
    #[serde(deserialize_with = "crate::wire::text")]
    pub target: String,
    pub version: HttpVersion,
    /// In the order received; repeated names are kept as separate entries.
    #[serde(deserialize_with = "crate::wire::headers")]
    pub headers: Vec<Header<B>>,
    /// The client's address, `ip:port`.
    #[serde(deserialize_with = "crate::wire::text")]
    pub peer: String,
    pub body: BodyKind<B>,
}

/// A `RequestHead` to encode with every field borrowed, so the master builds it
/// straight from the parsed request without a copy: `headers` is anything that
/// serializes as a sequence of `Header<BytesRef>` (the master's walks hyper's header
/// map in place, so the frame buffer is the only allocation). It encodes to exactly
/// the bytes of the [`RequestHead`] with the same fields
/// ([`frame::encode_head_ref`](crate::frame::encode_head_ref)).
#[derive(Debug, Serialize)]
pub struct RequestHeadRef<'a, H: Serialize> {
    pub id: u64,
    pub method: &'a str,
    pub target: &'a str,
    pub version: HttpVersion,
    pub headers: H,
    pub peer: &'a str,
    pub body: BodyKind<BytesRef<'a>>,
}

impl RequestHead {
    /// The same head with its byte fields borrowed, for
    /// [`frame::encode_request_head`](crate::frame::encode_request_head).
    ///
    /// ```
    /// # use ferry_protocol::*;
    /// # let head = RequestHead { id: 1, method: "GET".into(), target: "/".into(), version: HttpVersion::Http11,
    /// #     headers: vec![Header::new("host", "x")], peer: String::new(), body: BodyKind::Empty };
    /// let borrowed: RequestHead<BytesRef> = head.borrowed();
    /// assert_eq!(borrowed.headers[0].name, BytesRef(b"host"));
    /// ```
    pub fn borrowed(&self) -> RequestHead<BytesRef<'_>> {
        RequestHead {
            id: self.id,
            method: self.method.clone(),
            target: self.target.clone(),
            version: self.version,
            headers: self
                .headers
                .iter()
                .map(|h| Header {
                    name: BytesRef(&h.name),
                    value: BytesRef(&h.value),
                })
                .collect(),
            peer: self.peer.clone(),
            body: match &self.body {
                BodyKind::Empty => BodyKind::Empty,
                BodyKind::Inline(b) => BodyKind::Inline(BytesRef(b)),
                BodyKind::Streamed { length } => BodyKind::Streamed { length: *length },
            },
        }
    }
}

/// Request `id` is no longer wanted: the client left or the request timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub id: u64,
}

/// A liveness probe; the worker answers with a `Pong` carrying the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub nonce: u64,
}

// ---------------------------------------------------------------- both directions

/// A piece of the body of message `id`. Encoded raw (not through serde) so that
/// decoding hands the data out as a slice of the read buffer, never a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyChunk<B = Bytes> {
    pub id: u64,
    pub data: B,
}

/// The body of message `id` is complete; optional trailers follow the last chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct BodyEnd<B = Bytes> {
    pub id: u64,
    #[serde(deserialize_with = "crate::wire::headers")]
    pub trailers: Vec<Header<B>>,
}

/// Flow control: the receiver of the body of `id` grants the sender `bytes` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    pub id: u64,
    pub bytes: u32,
}

/// Everything a worker sends to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerMsg<B = Bytes> {
    Hello(Hello),
    ResponseHead(ResponseHead<B>),
    BodyChunk(BodyChunk<B>),
    BodyEnd(BodyEnd<B>),
    Credit(Credit),
    Failed(RequestFailed),
    Pong(Pong),
    Goodbye(Goodbye),
}

/// Everything the master sends to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterMsg<B = Bytes> {
    Welcome(Welcome),
    RequestHead(RequestHead<B>),
    BodyChunk(BodyChunk<B>),
    BodyEnd(BodyEnd<B>),
    Credit(Credit),
    Cancel(Cancel),
    Ping(Ping),
    /// Finish what you have, take nothing new, then exit.
    Drain,
}
