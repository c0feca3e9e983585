//! Framing: a `u32` big-endian length prefix, then the payload. Plain functions over
//! `BytesMut`, for callers with or without tokio (the codecs in [`crate::codec`] call these).
//!
//! The length is checked against the caller's maximum before any buffer is grown, so a
//! hostile prefix costs nothing. A whole payload is split off the read buffer without
//! copying, and decoding hands body bytes out as slices of it.

use bytes::{Buf, Bytes, BytesMut};

use crate::message::{BytesRef, MasterMsg, RequestHead, RequestHeadRef, WorkerMsg};
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
    let payload = checked_len(crate::BODY_CHUNK_OVERHEAD + len, max_frame_size)?;
    dst.extend_from_slice(&payload.to_be_bytes());
    put(id, dst);
    Ok(())
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
    let start = dst.len();
    dst.extend_from_slice(&[0; LENGTH_PREFIX]);
    put_payload(dst);
    let len = match checked_len(dst.len() - start - LENGTH_PREFIX, max_frame_size) {
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
    use crate::BodyChunk;

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
