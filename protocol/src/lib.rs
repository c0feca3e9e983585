//! `ferry-protocol`: the contract between the `ferry` master and its workers.
//!
//! This crate owns the message types exchanged on a worker's channel, their byte
//! layout, and the frame codec. It does no I/O and needs no runtime: the plain
//! functions in [`frame`] work on a `BytesMut`, and with the default `tokio-codec`
//! feature [`codec`] wraps them as `tokio_util` `Encoder`/`Decoder` pairs.
//!
//! Every byte a worker sends is untrusted input to the master, so decoding is built
//! never to crash and never to let a peer choose how much we allocate: a frame's
//! length is checked against the limit before anything is allocated, and decoding
//! borrows from the frame (byte fields become `Bytes` slices of the read buffer), so
//! no allocation is ever sized by a length the peer merely claimed. Memory stays
//! proportional to the bytes really received: at worst a frame of nothing but empty
//! headers briefly costs 6 to 8 times its size (a borrowed and an owned header list). `SPEC.md` beside this crate describes the wire
//! format for workers written in other languages; `vectors/` pins it byte by byte.
//!
//! ```
//! use bytes::BytesMut;
//! use ferry_protocol::{frame, MasterMsg, Ping, DEFAULT_MAX_FRAME_SIZE};
//!
//! let mut buf = BytesMut::new();
//! frame::encode_master(&MasterMsg::Ping(Ping { nonce: 7 }), &mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap();
//! let payload = frame::split_frame(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
//! assert_eq!(frame::decode_master(payload).unwrap(), MasterMsg::Ping(Ping { nonce: 7 }));
//! ```

#[cfg(feature = "tokio-codec")]
pub mod codec;
mod error;
pub mod frame;
#[cfg(feature = "http")]
mod http_types;
mod message;
mod wire;

pub use error::ProtocolError;
#[cfg(feature = "http")]
pub use http_types::{headers_from_map, map_from_headers};
pub use message::*;

/// The protocol version this crate speaks. Carried first in `Hello` and `Welcome`;
/// peers with different versions refuse each other with [`ProtocolError::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Default largest frame payload, in bytes (1 MiB). Either side may be configured lower or higher.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;

/// Default per-request flow-control window, in body bytes (256 KiB).
pub const DEFAULT_INITIAL_WINDOW: u32 = 256 * 1024;

/// The environment variable through which the master tells a worker which file
/// descriptor is its channel.
pub const CHANNEL_FD_ENV: &str = "FERRY_FD";

/// The file descriptor the master places a worker's channel on.
pub const CHANNEL_FD: i32 = 3;

/// Bytes a body-chunk frame spends before its data: tag (1) + request id (8).
pub const BODY_CHUNK_OVERHEAD: usize = 9;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;
