//! `tokio_util::codec` adapters, one type per side of the channel.
//!
//! [`MasterCodec`] is what the master puts on a worker's channel (it decodes
//! [`WorkerMsg`] and encodes [`MasterMsg`]); [`WorkerCodec`] is the mirror a worker
//! uses. Both are thin wrappers over [`crate::frame`], so there is one framing
//! implementation, and a concrete codec type keeps `flush()` free of the type
//! annotations that `LengthDelimitedCodec`'s generic `Encoder` needs.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame;
use crate::message::{MasterMsg, WorkerMsg};
use crate::{ProtocolError, DEFAULT_MAX_FRAME_SIZE};

macro_rules! codec {
    ($(#[$doc:meta])* $name:ident, decodes $in:ident via $dec:path, encodes $out:ident via $enc:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            max_frame_size: usize,
        }

        impl $name {
            /// A codec refusing frames whose payload exceeds `max_frame_size` bytes.
            pub fn new(max_frame_size: usize) -> Self {
                Self { max_frame_size }
            }

            /// Changes the limit, e.g. once the peer has announced its own.
            pub fn set_max_frame_size(&mut self, max_frame_size: usize) {
                self.max_frame_size = max_frame_size;
            }

            /// The largest payload this codec accepts and produces.
            pub fn max_frame_size(&self) -> usize {
                self.max_frame_size
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new(DEFAULT_MAX_FRAME_SIZE)
            }
        }

        impl Decoder for $name {
            type Item = $in;
            type Error = ProtocolError;

            fn decode(&mut self, src: &mut BytesMut) -> Result<Option<$in>, ProtocolError> {
                match frame::split_frame(src, self.max_frame_size)? {
                    Some(payload) => $dec(payload).map(Some),
                    None => Ok(None),
                }
            }
        }

        impl Encoder<$out> for $name {
            type Error = ProtocolError;

            fn encode(&mut self, msg: $out, dst: &mut BytesMut) -> Result<(), ProtocolError> {
                $enc(&msg, dst, self.max_frame_size)
            }
        }
    };
}

codec!(
    /// The master's side of a channel: reads what workers send, writes what the master sends.
    MasterCodec, decodes WorkerMsg via frame::decode_worker, encodes MasterMsg via frame::encode_master
);
codec!(
    /// A worker's side of its channel: reads what the master sends, writes what workers send.
    WorkerCodec, decodes MasterMsg via frame::decode_master, encodes WorkerMsg via frame::encode_worker
);
