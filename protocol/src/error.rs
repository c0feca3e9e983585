//! The one error type of the protocol: every way a frame can be refused, each naming what was wrong.

use std::fmt;

/// Why a frame or message was refused.
#[derive(Debug)]
pub enum ProtocolError {
    /// The length prefix announced more than the configured maximum; nothing was allocated.
    FrameTooLong { len: usize, max: usize },
    /// A frame with a zero length prefix: every message has at least its type byte.
    EmptyFrame,
    /// The type byte names no message of this direction.
    UnknownMessage { tag: u8 },
    /// The payload ended before the message did, or held an out-of-range value.
    Malformed {
        message: &'static str,
        detail: String,
    },
    /// The message decoded but the frame had bytes left over.
    TrailingBytes { message: &'static str, extra: usize },
    /// A text field (method, target, reason...) was not UTF-8.
    InvalidUtf8 { message: &'static str },
    /// An enum inside the message had a variant index this version does not know.
    UnknownVariant { message: &'static str, found: u32 },
    /// `Hello` or `Welcome` carried another protocol version.
    VersionMismatch { ours: u32, theirs: u32 },
    /// The underlying stream failed (codec use only).
    Io(std::io::Error),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FrameTooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            Self::EmptyFrame => f.write_str("zero-length frame"),
            Self::UnknownMessage { tag } => write!(f, "unknown message type 0x{tag:02x}"),
            Self::Malformed { message, detail } => write!(f, "malformed {message}: {detail}"),
            Self::TrailingBytes { message, extra } => {
                write!(f, "{extra} trailing bytes after {message}")
            }
            Self::InvalidUtf8 { message } => write!(f, "invalid UTF-8 in a text field of {message}"),
            Self::UnknownVariant { message, found } => {
                write!(f, "unknown enum variant {found} in {message}")
            }
            Self::VersionMismatch { ours, theirs } => write!(
                f,
                "protocol version mismatch: this side speaks version {ours}, the peer speaks version {theirs}"
            ),
            Self::Io(e) => write!(f, "channel I/O error: {e}"),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}
