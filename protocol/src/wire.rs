//! The payload format: the one place that knows about bincode.
//!
//! A payload is a one-byte message type followed by that message's fields. Body
//! chunks are laid out by hand (id, then raw data) so their data is never copied;
//! every other message's fields are bincode 2 with big-endian fixed-width integers,
//! the layout `SPEC.md` spells out. Swapping the payload format means changing this
//! file only.
//!
//! Decoding always borrows from the frame (`borrow_decode_from_slice`), so a length
//! inside a payload can never make us allocate more than the frame actually holds:
//! a claimed length beyond the end is `UnexpectedEnd`, not a huge `Vec`. The bincode
//! limit is still set, as a second fence, to the largest frame a `u32` prefix allows.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

use crate::message::*;
use crate::ProtocolError;

/// Message type bytes. Worker-to-master types have the high bit clear, master-to-worker
/// types have it set, so a channel wired backwards fails on its first frame.
pub mod tag {
    pub const HELLO: u8 = 0x01;
    pub const RESPONSE_HEAD: u8 = 0x02;
    pub const W_BODY_CHUNK: u8 = 0x03;
    pub const W_BODY_END: u8 = 0x04;
    pub const W_CREDIT: u8 = 0x05;
    pub const FAILED: u8 = 0x06;
    pub const PONG: u8 = 0x07;
    pub const GOODBYE: u8 = 0x08;

    pub const WELCOME: u8 = 0x81;
    pub const REQUEST_HEAD: u8 = 0x82;
    pub const M_BODY_CHUNK: u8 = 0x83;
    pub const M_BODY_END: u8 = 0x84;
    pub const M_CREDIT: u8 = 0x85;
    pub const CANCEL: u8 = 0x86;
    pub const PING: u8 = 0x87;
    pub const DRAIN: u8 = 0x88;
}

type Config = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
    bincode::config::Limit<{ u32::MAX as usize }>,
>;

const CONFIG: Config = bincode::config::standard()
    .with_big_endian()
    .with_fixed_int_encoding()
    .with_limit::<{ u32::MAX as usize }>();

/// bincode's writer over our output buffer: appends, never fails.
struct Append<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for Append<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

fn put<T: Serialize>(dst: &mut BytesMut, tag: u8, value: &T) {
    dst.put_u8(tag);
    // Serializing our own plain structs into a growable buffer cannot fail: every
    // sequence has a known length and the writer never refuses.
    bincode::serde::encode_into_writer(value, Append(dst), CONFIG)
        .expect("encoding a protocol message into a buffer cannot fail");
}

fn put_chunk(dst: &mut BytesMut, tag: u8, id: u64, data: &[u8]) {
    dst.reserve(crate::BODY_CHUNK_OVERHEAD + data.len());
    put_chunk_prefix(dst, tag, id);
    dst.extend_from_slice(data);
}

/// The type byte and request id that open a body chunk's payload, before its data.
fn put_chunk_prefix(dst: &mut BytesMut, tag: u8, id: u64) {
    dst.put_u8(tag);
    dst.put_u64(id);
}

/// The type byte and request id that open a worker's `BodyChunk` payload.
pub(crate) fn put_worker_chunk_prefix(id: u64, dst: &mut BytesMut) {
    put_chunk_prefix(dst, tag::W_BODY_CHUNK, id);
}

/// A `ResponseHead` payload whose body is `Inline` with no bytes, whatever `head`'s
/// body is: the fields in order, as the struct itself serializes.
pub(crate) fn put_response_head_empty_inline(head: &ResponseHead, dst: &mut BytesMut) {
    let empty = BodyKind::<Bytes>::Inline(Bytes::new());
    put(
        dst,
        tag::RESPONSE_HEAD,
        &(head.id, head.status, &head.headers, &empty),
    );
}

/// A `RequestHead` payload whose body is `Inline` with no bytes, whatever `head`'s is.
pub(crate) fn put_head_ref_empty_inline<H: Serialize>(
    head: &RequestHeadRef<'_, H>,
    dst: &mut BytesMut,
) {
    let empty = BodyKind::Inline(crate::BytesRef(&[]));
    put(
        dst,
        tag::REQUEST_HEAD,
        &(
            head.id,
            head.method,
            head.target,
            head.version,
            &head.headers,
            head.peer,
            &empty,
        ),
    );
}

/// The type byte and request id that open a master's `BodyChunk` payload.
pub(crate) fn put_master_chunk_prefix(id: u64, dst: &mut BytesMut) {
    put_chunk_prefix(dst, tag::M_BODY_CHUNK, id);
}

/// Appends the payload (type byte and fields, no length prefix) of a worker message.
pub(crate) fn put_worker(msg: &WorkerMsg, dst: &mut BytesMut) {
    match msg {
        WorkerMsg::Hello(m) => put(dst, tag::HELLO, m),
        WorkerMsg::ResponseHead(m) => put(dst, tag::RESPONSE_HEAD, m),
        WorkerMsg::BodyChunk(m) => put_chunk(dst, tag::W_BODY_CHUNK, m.id, &m.data),
        WorkerMsg::BodyEnd(m) => put(dst, tag::W_BODY_END, m),
        WorkerMsg::Credit(m) => put(dst, tag::W_CREDIT, m),
        WorkerMsg::Failed(m) => put(dst, tag::FAILED, m),
        WorkerMsg::Pong(m) => put(dst, tag::PONG, m),
        WorkerMsg::Goodbye(m) => {
            put(dst, tag::GOODBYE, &m.reason);
            if let Some(id) = m.last_id {
                dst.put_u64(id);
            }
        }
    }
}

/// Appends the payload of a `RequestHead` whose byte fields are borrowed (from an
/// `http::HeaderMap`, say): the same bytes as the owned form, without first copying
/// every header into its own buffer.
pub(crate) fn put_request_head(head: &RequestHead<BytesRef<'_>>, dst: &mut BytesMut) {
    put(dst, tag::REQUEST_HEAD, head);
}

pub(crate) fn put_head_ref<H: Serialize>(head: &RequestHeadRef<'_, H>, dst: &mut BytesMut) {
    put(dst, tag::REQUEST_HEAD, head);
}

/// Appends the payload (type byte and fields, no length prefix) of a master message.
pub(crate) fn put_master(msg: &MasterMsg, dst: &mut BytesMut) {
    match msg {
        MasterMsg::Welcome(m) => put(dst, tag::WELCOME, m),
        MasterMsg::RequestHead(m) => put(dst, tag::REQUEST_HEAD, m),
        MasterMsg::BodyChunk(m) => put_chunk(dst, tag::M_BODY_CHUNK, m.id, &m.data),
        MasterMsg::BodyEnd(m) => put(dst, tag::M_BODY_END, m),
        MasterMsg::Credit(m) => put(dst, tag::M_CREDIT, m),
        MasterMsg::Cancel(m) => put(dst, tag::CANCEL, m),
        MasterMsg::Ping(m) => put(dst, tag::PING, m),
        MasterMsg::Drain => dst.put_u8(tag::DRAIN),
    }
}

/// Decodes one worker message from a whole payload.
pub(crate) fn worker(payload: Bytes) -> Result<WorkerMsg, ProtocolError> {
    let (&t, fields) = payload.split_first().ok_or(ProtocolError::EmptyFrame)?;
    Ok(match t {
        tag::HELLO => {
            check_version(fields)?;
            WorkerMsg::Hello(fields_of(fields, "Hello")?)
        }
        tag::RESPONSE_HEAD => {
            let m: ResponseHead<&[u8]> = fields_of(fields, "ResponseHead")?;
            WorkerMsg::ResponseHead(ResponseHead {
                id: m.id,
                status: m.status,
                headers: rebase_headers(&payload, m.headers),
                body: rebase_body(&payload, m.body),
            })
        }
        tag::W_BODY_CHUNK => WorkerMsg::BodyChunk(chunk(&payload)?),
        tag::W_BODY_END => WorkerMsg::BodyEnd(body_end(&payload, fields)?),
        tag::W_CREDIT => WorkerMsg::Credit(fields_of(fields, "Credit")?),
        tag::FAILED => WorkerMsg::Failed(fields_of(fields, "RequestFailed")?),
        tag::PONG => WorkerMsg::Pong(fields_of(fields, "Pong")?),
        tag::GOODBYE => WorkerMsg::Goodbye(goodbye(fields)?),
        tag => return Err(ProtocolError::UnknownMessage { tag }),
    })
}

/// `Goodbye`'s one required field.
#[derive(Deserialize)]
struct Reason {
    #[serde(deserialize_with = "text")]
    reason: String,
}

/// `Goodbye` is its reason, then, in the long form, the last accepted id. The two
/// cannot be confused: the reason's length prefix says where it ends.
fn goodbye(fields: &[u8]) -> Result<Goodbye, ProtocolError> {
    if let Some(at) = fields.len().checked_sub(8) {
        let (reason, id) = fields.split_at(at);
        if let Ok(Reason { reason }) = fields_of(reason, "Goodbye") {
            let id = u64::from_be_bytes(id.try_into().expect("eight bytes"));
            return Ok(Goodbye {
                reason,
                last_id: Some(id),
            });
        }
    }
    let Reason { reason } = fields_of(fields, "Goodbye")?;
    Ok(Goodbye {
        reason,
        last_id: None,
    })
}

/// Decodes one master message from a whole payload.
pub(crate) fn master(payload: Bytes) -> Result<MasterMsg, ProtocolError> {
    let (&t, fields) = payload.split_first().ok_or(ProtocolError::EmptyFrame)?;
    Ok(match t {
        tag::WELCOME => {
            check_version(fields)?;
            MasterMsg::Welcome(fields_of(fields, "Welcome")?)
        }
        tag::REQUEST_HEAD => {
            let m: RequestHead<&[u8]> = fields_of(fields, "RequestHead")?;
            MasterMsg::RequestHead(RequestHead {
                id: m.id,
                method: m.method,
                target: m.target,
                version: m.version,
                headers: rebase_headers(&payload, m.headers),
                peer: m.peer,
                body: rebase_body(&payload, m.body),
            })
        }
        tag::M_BODY_CHUNK => MasterMsg::BodyChunk(chunk(&payload)?),
        tag::M_BODY_END => MasterMsg::BodyEnd(body_end(&payload, fields)?),
        tag::M_CREDIT => MasterMsg::Credit(fields_of(fields, "Credit")?),
        tag::CANCEL => MasterMsg::Cancel(fields_of(fields, "Cancel")?),
        tag::PING => MasterMsg::Ping(fields_of(fields, "Ping")?),
        tag::DRAIN => {
            if !fields.is_empty() {
                return Err(ProtocolError::TrailingBytes {
                    message: "Drain",
                    extra: fields.len(),
                });
            }
            MasterMsg::Drain
        }
        tag => return Err(ProtocolError::UnknownMessage { tag }),
    })
}

/// `Hello` and `Welcome` start with the version; refuse a mismatch before trusting
/// any other field, whose layout may differ in another version.
fn check_version(fields: &[u8]) -> Result<(), ProtocolError> {
    if let Some(v) = fields.get(..4) {
        let theirs = u32::from_be_bytes(v.try_into().expect("four bytes"));
        if theirs != crate::PROTOCOL_VERSION {
            return Err(ProtocolError::VersionMismatch {
                ours: crate::PROTOCOL_VERSION,
                theirs,
            });
        }
    }
    Ok(())
}

fn fields_of<'a, T: Deserialize<'a>>(
    fields: &'a [u8],
    message: &'static str,
) -> Result<T, ProtocolError> {
    let (value, read) =
        bincode::serde::borrow_decode_from_slice::<T, _>(fields, CONFIG).map_err(|e| match e {
            bincode::error::DecodeError::Utf8 { .. } => ProtocolError::InvalidUtf8 { message },
            bincode::error::DecodeError::UnexpectedVariant { found, .. } => {
                ProtocolError::UnknownVariant { message, found }
            }
            other => {
                let detail = other.to_string();
                match serde_variant_index(&detail) {
                    Some(found) => ProtocolError::UnknownVariant { message, found },
                    None => ProtocolError::Malformed { message, detail },
                }
            }
        })?;
    if read != fields.len() {
        return Err(ProtocolError::TrailingBytes {
            message,
            extra: fields.len() - read,
        });
    }
    Ok(value)
}

/// serde reports an out-of-range enum index as text (``invalid value: integer `9`,
/// expected variant index 0 <= i < 3``); recover the index so the error stays typed.
fn serde_variant_index(detail: &str) -> Option<u32> {
    if !detail.contains("expected variant index") {
        return None;
    }
    let start = detail.find("integer `")? + "integer `".len();
    let len = detail[start..].find('`')?;
    detail[start..start + len].parse().ok()
}

fn chunk(payload: &Bytes) -> Result<BodyChunk, ProtocolError> {
    let id =
        payload
            .get(1..crate::BODY_CHUNK_OVERHEAD)
            .ok_or_else(|| ProtocolError::Malformed {
                message: "BodyChunk",
                detail: format!(
                    "{} bytes is shorter than the 9-byte chunk header",
                    payload.len()
                ),
            })?;
    Ok(BodyChunk {
        id: u64::from_be_bytes(id.try_into().expect("eight bytes")),
        data: payload.slice(crate::BODY_CHUNK_OVERHEAD..),
    })
}

fn body_end(payload: &Bytes, fields: &[u8]) -> Result<BodyEnd, ProtocolError> {
    let m: BodyEnd<&[u8]> = fields_of(fields, "BodyEnd")?;
    Ok(BodyEnd {
        id: m.id,
        trailers: rebase_headers(payload, m.trailers),
    })
}

/// A field borrowed from the payload, as a `Bytes` sharing the payload's buffer.
fn rebase(payload: &Bytes, field: &[u8]) -> Bytes {
    if field.is_empty() {
        Bytes::new()
    } else {
        payload.slice_ref(field)
    }
}

fn rebase_headers(payload: &Bytes, headers: Vec<Header<&[u8]>>) -> Vec<Header> {
    headers
        .into_iter()
        .map(|h| Header {
            name: rebase(payload, h.name),
            value: rebase(payload, h.value),
        })
        .collect()
}

fn rebase_body(payload: &Bytes, body: BodyKind<&[u8]>) -> BodyKind {
    match body {
        BodyKind::Empty => BodyKind::Empty,
        BodyKind::Inline(b) => BodyKind::Inline(rebase(payload, b)),
        BodyKind::Streamed { length } => BodyKind::Streamed { length },
    }
}

/// serde `deserialize_with` for text fields: reads a borrowed `str` (bounds-checked
/// against the frame, UTF-8 validated) and copies exactly that many bytes.
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a UTF-8 string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(Text)
}

/// serde `deserialize_with` for header lists: the claimed count only sizes a small
/// first allocation; the list grows with the entries the frame really holds.
pub(crate) fn headers<'de, D, B>(d: D) -> Result<Vec<Header<B>>, D::Error>
where
    D: Deserializer<'de>,
    B: Deserialize<'de>,
{
    struct List<B>(PhantomData<B>);
    impl<'de, B: Deserialize<'de>> Visitor<'de> for List<B> {
        type Value = Vec<Header<B>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of headers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(32));
            while let Some(h) = seq.next_element()? {
                list.push(h);
            }
            Ok(list)
        }
    }
    d.deserialize_seq(List(PhantomData))
}
