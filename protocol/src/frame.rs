//! Framing: a `u32` big-endian length prefix, then the payload. Plain functions over
//! `BytesMut`, for callers with or without tokio (the codecs in [`crate::codec`] call these).
//!
//! The length is checked against the caller's maximum before any buffer is grown, so a
//! hostile prefix costs nothing. A whole payload is split off the read buffer without
//! copying, and decoding hands body bytes out as slices of it.

use bytes::{Buf, Bytes, BytesMut};

use crate::message::{BytesRef, MasterMsg, RequestHead, RequestHeadRef, ResponseHead, WorkerMsg};
use crate::{wire, ProtocolError, LENGTH_PREFIX};

/// Spare room kept in a read buffer that waits for the rest of a frame.
const READ_AHEAD: usize = 64 * 1024;

/// Splits one whole frame's payload off the front of `src`.
///
/// `Ok(None)` means more bytes are needed (and `src` has been given room for the rest
/// of this frame). An over-long or zero length is an error before anything is allocated.
pub fn split_frame(
    src: &mut BytesMut,
    max_frame_size: usize,
) -> Result<Option<Bytes>, ProtocolError> {
    let Some(prefix) = src.get(..LENGTH_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("four bytes")) as usize;
    if len > max_frame_size {
        return Err(ProtocolError::FrameTooLong {
            len,
            max: max_frame_size,
        });
    }
    if len == 0 {
        return Err(ProtocolError::EmptyFrame);
    }
    if src.len() < LENGTH_PREFIX + len {
        // Room for the rest of this frame and then some: reserving only the missing
        // bytes would make the next read stop exactly at this frame's end, one read
        // per frame, and lose the batching of many frames per read.
        src.reserve((LENGTH_PREFIX + len - src.len()).max(READ_AHEAD));
        return Ok(None);
    }
    src.advance(LENGTH_PREFIX);
    Ok(Some(src.split_to(len).freeze()))
}

/// Appends one framed worker message to `dst`. A message whose payload would exceed
/// `max_frame_size` is refused (and nothing is left in `dst`), since the peer would
/// refuse it too.
pub fn encode_worker(
    msg: &WorkerMsg,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    framed(dst, max_frame_size, |dst| wire::put_worker(msg, dst))
}

/// Appends the first part of a worker's `BodyChunk` frame, everything but its `len`
/// data bytes, which the caller then sends as they are (a vectored write, no copy):
/// the prefix followed by the data is exactly what [`encode_worker`] would append.
pub fn encode_worker_chunk_prefix(
    id: u64,
    len: usize,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    chunk_prefix(id, len, dst, max_frame_size, wire::put_worker_chunk_prefix)
}

/// The master's twin of [`encode_worker_chunk_prefix`]: a `BodyChunk` of a request
/// body, everything but its data, which is exactly what [`encode_master`] would
/// append before the data.
pub fn encode_master_chunk_prefix(
    id: u64,
    len: usize,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    chunk_prefix(id, len, dst, max_frame_size, wire::put_master_chunk_prefix)
}

fn chunk_prefix(
    id: u64,
    len: usize,
    dst: &mut BytesMut,
    max_frame_size: usize,
    put: fn(u64, &mut BytesMut),
) -> Result<(), ProtocolError> {
    framed_with_tail(dst, max_frame_size, len, |dst| put(id, dst))
}

/// Appends one framed `RequestHead` whose byte fields are borrowed (for instance from
/// an `http::HeaderMap`), producing exactly the bytes [`encode_master`] would for the
/// owned message. The master's hot path uses it to go from HTTP to a frame in one copy.
///
/// ```
/// use bytes::BytesMut;
/// use ferry_protocol::{frame, BodyKind, BytesRef, Header, HttpVersion, RequestHead};
/// let head = RequestHead {
///     id: 1,
///     method: "GET".into(),
///     target: "/".into(),
///     version: HttpVersion::Http11,
///     headers: vec![Header { name: BytesRef(b"host"), value: BytesRef(b"x") }],
///     peer: "127.0.0.1:1".into(),
///     body: BodyKind::Empty,
/// };
/// let mut buf = BytesMut::new();
/// frame::encode_request_head(&head, &mut buf, 1 << 20).unwrap();
/// ```
pub fn encode_request_head(
    head: &RequestHead<BytesRef<'_>>,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    framed(dst, max_frame_size, |dst| wire::put_request_head(head, dst))
}

/// Appends a framed `RequestHead` whose fields are all borrowed
/// ([`RequestHeadRef`]): the same bytes as [`encode_request_head`] of the same head.
pub fn encode_head_ref<H: serde::Serialize>(
    head: &RequestHeadRef<'_, H>,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    framed(dst, max_frame_size, |dst| wire::put_head_ref(head, dst))
}

/// Appends one framed master message to `dst`; see [`encode_worker`].
pub fn encode_master(
    msg: &MasterMsg,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    framed(dst, max_frame_size, |dst| wire::put_master(msg, dst))
}

fn framed(
    dst: &mut BytesMut,
    max_frame_size: usize,
    put_payload: impl FnOnce(&mut BytesMut),
) -> Result<(), ProtocolError> {
    framed_with_tail(dst, max_frame_size, 0, put_payload)
}

/// Appends a frame's length prefix and the start of its payload, `put_payload`'s; the
/// caller sends the payload's last `tail` bytes itself, and the prefix counts them. A
/// frame over `max_frame_size` is refused, and nothing is left in `dst`.
fn framed_with_tail(
    dst: &mut BytesMut,
    max_frame_size: usize,
    tail: usize,
    put_payload: impl FnOnce(&mut BytesMut),
) -> Result<(), ProtocolError> {
    let start = dst.len();
    dst.extend_from_slice(&[0; LENGTH_PREFIX]);
    put_payload(dst);
    let payload = (dst.len() - start - LENGTH_PREFIX).saturating_add(tail);
    let len = match checked_len(payload, max_frame_size) {
        Ok(len) => len,
        Err(e) => {
            dst.truncate(start);
            return Err(e);
        }
    };
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A payload length as its length prefix, if a frame may carry it.
fn checked_len(len: usize, max_frame_size: usize) -> Result<u32, ProtocolError> {
    match u32::try_from(len) {
        Ok(prefix) if len <= max_frame_size => Ok(prefix),
        _ => Err(ProtocolError::FrameTooLong {
            len,
            max: max_frame_size,
        }),
    }
}

/// Appends a framed `ResponseHead` with an `Inline` body of `data_len` bytes, all but
/// those bytes (`head.body` itself is not looked at), which the caller then sends as
/// they are: the prefix followed by the data is exactly what [`encode_worker`] appends
/// for the head with that body. An inline body is the last field of a head and ends
/// with its bytes, so a large one need not be copied into the frame buffer.
pub fn encode_response_head_prefix(
    head: &ResponseHead,
    data_len: usize,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    framed_but_inline_data(dst, max_frame_size, data_len, |dst| {
        wire::put_response_head_empty_inline(head, dst)
    })
}

/// The request side of [`encode_response_head_prefix`]: a framed `RequestHead` (fields
/// borrowed, as in [`encode_head_ref`]) with an `Inline` body of `data_len` bytes, all
/// but those bytes (`head.body` itself is not looked at).
pub fn encode_head_ref_prefix<H: serde::Serialize>(
    head: &RequestHeadRef<'_, H>,
    data_len: usize,
    dst: &mut BytesMut,
    max_frame_size: usize,
) -> Result<(), ProtocolError> {
    framed_but_inline_data(dst, max_frame_size, data_len, |dst| {
        wire::put_head_ref_empty_inline(head, dst)
    })
}

/// `framed_with_tail` for a payload that `put_payload` ends with an empty inline body
/// (its u64 length, zero): that length becomes `data_len`, the data the caller sends
/// after it.
fn framed_but_inline_data(
    dst: &mut BytesMut,
    max_frame_size: usize,
    data_len: usize,
    put_payload: impl FnOnce(&mut BytesMut),
) -> Result<(), ProtocolError> {
    framed_with_tail(dst, max_frame_size, data_len, |dst| {
        put_payload(dst);
        let end = dst.len();
        dst[end - 8..end].copy_from_slice(&(data_len as u64).to_be_bytes());
    })
}

/// Decodes a worker message from one frame's payload (as returned by [`split_frame`]).
pub fn decode_worker(payload: Bytes) -> Result<WorkerMsg, ProtocolError> {
    wire::worker(payload)
}

/// Decodes a master message from one frame's payload (as returned by [`split_frame`]).
pub fn decode_master(payload: Bytes) -> Result<MasterMsg, ProtocolError> {
    wire::master(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BodyChunk, BodyKind};

    #[test]
    fn a_chunk_prefix_then_its_data_is_the_whole_frame() {
        let data = Bytes::from(vec![7u8; 5000]);
        let mut whole = BytesMut::new();
        let msg = WorkerMsg::BodyChunk(BodyChunk {
            id: 42,
            data: data.clone(),
        });
        encode_worker(&msg, &mut whole, 1 << 20).unwrap();
        let mut split = BytesMut::new();
        encode_worker_chunk_prefix(42, data.len(), &mut split, 1 << 20).unwrap();
        split.extend_from_slice(&data);
        assert_eq!(split, whole);

        let mut whole = BytesMut::new();
        let msg = MasterMsg::BodyChunk(BodyChunk {
            id: 43,
            data: data.clone(),
        });
        encode_master(&msg, &mut whole, 1 << 20).unwrap();
        let mut split = BytesMut::new();
        encode_master_chunk_prefix(43, data.len(), &mut split, 1 << 20).unwrap();
        split.extend_from_slice(&data);
        assert_eq!(split, whole);
    }

    #[test]
    fn a_head_prefix_then_its_inline_body_is_the_whole_frame() {
        for len in [0, 1, 4096, 70_000] {
            let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let head = ResponseHead {
                id: 9,
                status: 201,
                headers: vec![crate::Header::new(
                    Bytes::from_static(b"content-type"),
                    Bytes::from_static(b"text/html"),
                )],
                body: BodyKind::Inline(data.clone()),
            };
            let mut whole = BytesMut::new();
            encode_worker(&WorkerMsg::ResponseHead(head.clone()), &mut whole, 1 << 20).unwrap();
            let mut split = BytesMut::new();
            // Its own body is not looked at.
            let bodiless = ResponseHead {
                body: BodyKind::Empty,
                ..head
            };
            encode_response_head_prefix(&bodiless, len, &mut split, 1 << 20).unwrap();
            split.extend_from_slice(&data);
            assert_eq!(split, whole, "response, {len} bytes");

            let request = crate::RequestHead {
                id: 10,
                method: "POST".into(),
                target: "/form?x=1".into(),
                version: crate::HttpVersion::Http11,
                headers: vec![crate::Header::new(
                    Bytes::from_static(b"host"),
                    Bytes::from_static(b"example.com"),
                )],
                peer: "127.0.0.1:9".into(),
                body: BodyKind::Inline(data.clone()),
            };
            let mut whole = BytesMut::new();
            encode_master(
                &MasterMsg::RequestHead(request.clone()),
                &mut whole,
                1 << 20,
            )
            .unwrap();
            let borrowed = RequestHeadRef {
                id: request.id,
                method: &request.method,
                target: &request.target,
                version: request.version,
                headers: &request.headers,
                peer: &request.peer,
                body: BodyKind::Empty,
            };
            let mut split = BytesMut::new();
            encode_head_ref_prefix(&borrowed, len, &mut split, 1 << 20).unwrap();
            split.extend_from_slice(&data);
            assert_eq!(split, whole, "request, {len} bytes");
        }
    }

    #[test]
    fn a_head_prefix_whose_body_would_pass_the_frame_limit_is_refused_and_appends_nothing() {
        let head = ResponseHead {
            id: 1,
            status: 200,
            headers: Vec::new(),
            body: BodyKind::Empty,
        };
        let mut dst = BytesMut::from(&b"before"[..]);
        assert!(matches!(
            encode_response_head_prefix(&head, 1000, &mut dst, 1000),
            Err(ProtocolError::FrameTooLong { .. })
        ));
        assert!(encode_response_head_prefix(&head, usize::MAX, &mut dst, 1000).is_err());
        assert_eq!(&dst[..], b"before");
        encode_response_head_prefix(&head, 900, &mut dst, 1000).unwrap();
    }

    #[test]
    fn a_chunk_prefix_over_the_frame_limit_is_refused_and_appends_nothing() {
        let mut dst = BytesMut::new();
        let max = 1000;
        assert!(matches!(
            encode_worker_chunk_prefix(1, max - crate::BODY_CHUNK_OVERHEAD + 1, &mut dst, max),
            Err(ProtocolError::FrameTooLong {
                len: 1001,
                max: 1000
            })
        ));
        assert!(dst.is_empty());
        encode_worker_chunk_prefix(1, max - crate::BODY_CHUNK_OVERHEAD, &mut dst, max).unwrap();
        assert_eq!(dst.len(), LENGTH_PREFIX + crate::BODY_CHUNK_OVERHEAD);
        dst.clear();
        assert!(encode_master_chunk_prefix(1, max, &mut dst, max).is_err());
        assert!(dst.is_empty());
    }
}
