//! What one side of a channel has queued to write: small frames encoded into one
//! buffer, large pieces (a body chunk's data, a request head that carries its body)
//! kept in their own `Bytes`, and all of it written in order by `writev`, so large
//! data is never copied in user space on its way to the socket.
//!
//! The master's writer and the Rust SDK's both write through it. It knows nothing of
//! the protocol: the caller encodes frames into [`WriteQueue::append`] and hands over
//! data with [`WriteQueue::push_bytes`] at the place in the stream it belongs.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Buffers handed to one `writev` (Linux takes up to 1024).
const MAX_IOVECS: usize = 64;

/// A writer that has this much queued writes it out before it queues more, so what
/// one `flush` hands to the socket passes it by at most one frame.
pub const BACKPRESSURE: usize = 256 * 1024;

/// Data at least this large is better written from its own buffer than copied: below
/// it, one more iovec costs more than the copy.
pub const ZERO_COPY_MIN: usize = 4096;

/// Bytes queued for one socket, in write order.
pub struct WriteQueue {
    /// Encoded frames (and the prefixes of data kept apart), from `own_start` on.
    buf: BytesMut,
    /// Where the unwritten part of `buf` starts.
    own_start: usize,
    /// In write order: `Own(end)` is `buf` up to offset `end`; `Ext` data of its own.
    segs: VecDeque<Seg>,
    /// The end of the last `Own` segment in `segs` (bytes past it are not in one yet).
    own_end: usize,
    /// Bytes queued, in `buf` and in `Ext` segments, not yet written.
    queued: usize,
}

enum Seg {
    Own(usize),
    Ext(Bytes),
}

impl Default for WriteQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteQueue {
    pub fn new() -> Self {
        WriteQueue {
            buf: BytesMut::with_capacity(8 * 1024),
            own_start: 0,
            segs: VecDeque::new(),
            own_end: 0,
            queued: 0,
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether the writer should write out what is queued before it queues more
    /// ([`BACKPRESSURE`]).
    pub fn is_full(&self) -> bool {
        self.queued >= BACKPRESSURE
    }

    /// How many pieces the next write would hand to `writev` (for tests and metrics).
    pub fn pieces(&self) -> usize {
        self.segs.len() + usize::from(self.buf.len() > self.own_end)
    }

    /// Queues what `encode` appends to the buffer. If it fails, whatever it appended
    /// is taken back and nothing is queued.
    pub fn append<E>(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        let before = self.buf.len();
        match encode(&mut self.buf) {
            Ok(()) => {
                self.queued += self.buf.len() - before;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(before);
                Err(e)
            }
        }
    }

    /// Queues `data` after everything appended so far, without copying it if it is
    /// at least [`ZERO_COPY_MIN`] bytes.
    pub fn push_bytes(&mut self, data: Bytes) {
        if data.len() < ZERO_COPY_MIN {
            self.buf.extend_from_slice(&data);
            self.queued += data.len();
            return;
        }
        self.close_own();
        self.queued += data.len();
        self.segs.push_back(Seg::Ext(data));
    }

    fn close_own(&mut self) {
        if self.buf.len() > self.own_end {
            self.own_end = self.buf.len();
            self.segs.push_back(Seg::Own(self.own_end));
        }
    }

    /// Writes everything queued, in order, to `sock`. On an error what was not
    /// written stays queued.
    pub async fn flush<W: AsyncWrite + Unpin>(&mut self, sock: &mut W) -> io::Result<()> {
        self.close_own();
        while self.queued > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            let mut start = self.own_start;
            for (slot, seg) in slices.iter_mut().zip(self.segs.iter()) {
                *slot = match seg {
                    Seg::Own(end) => {
                        let s = IoSlice::new(&self.buf[start..*end]);
                        start = *end;
                        s
                    }
                    Seg::Ext(b) => IoSlice::new(b),
                };
                count += 1;
            }
            let n = sock.write_vectored(&slices[..count]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(n);
        }
        self.segs.clear();
        self.buf.clear();
        self.own_start = 0;
        self.own_end = 0;
        Ok(())
    }

    /// Drops `n` written bytes: whole segments, then the front of a partial one.
    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            match self.segs.front_mut() {
                Some(Seg::Own(end)) => {
                    let len = *end - self.own_start;
                    if n >= len {
                        self.own_start = *end;
                        self.segs.pop_front();
                        n -= len;
                    } else {
                        self.own_start += n;
                        n = 0;
                    }
                }
                Some(Seg::Ext(b)) => {
                    if n >= b.len() {
                        n -= b.len();
                        self.segs.pop_front();
                    } else {
                        b.advance(n);
                        n = 0;
                    }
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A socket that takes at most `step` bytes per write, and says "not now" to every
    /// third call, as a full socket does.
    struct Stingy {
        got: Vec<u8>,
        step: usize,
        calls: usize,
        slices_seen: usize,
    }

    impl AsyncWrite for Stingy {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.slices_seen = self.slices_seen.max(bufs.len());
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(left);
                self.got.extend_from_slice(&b[..k]);
                n += k;
                left -= k;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn data(seed: u8, len: usize) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    /// Appended bytes and data of every size, interleaved, arrive in order and whole
    /// through writes cut anywhere (inside the buffer, inside data, between them), more
    /// than `MAX_IOVECS` pieces at once, and the queue is empty after.
    #[tokio::test]
    async fn everything_arrives_in_order_through_partial_writes() {
        for step in [1000, 4095, 7001, 1 << 20] {
            let mut out = WriteQueue::new();
            let mut sock = Stingy {
                got: Vec::new(),
                step,
                calls: 0,
                slices_seen: 0,
            };
            let mut want = Vec::new();
            for round in 0..3u8 {
                for i in 0..150u8 {
                    let small = data(i, 1 + i as usize % 40);
                    out.append(|b| {
                        b.extend_from_slice(&small);
                        Ok::<_, ()>(())
                    })
                    .unwrap();
                    want.extend_from_slice(&small);
                    let len = [0, 10, ZERO_COPY_MIN - 1, ZERO_COPY_MIN, 70_000][i as usize % 5];
                    let big = data(i ^ round, len);
                    out.push_bytes(big.clone());
                    want.extend_from_slice(&big);
                }
                assert_eq!(out.queued(), want.len() - sock.got.len());
                out.flush(&mut sock).await.unwrap();
                assert_eq!(out.queued(), 0);
                assert_eq!(out.pieces(), 0);
                assert!(out.buf.is_empty() && out.segs.is_empty());
            }
            assert!(sock.got == want, "step {step}: the bytes differ");
            assert!(sock.slices_seen <= MAX_IOVECS);
        }
    }

    #[test]
    fn large_data_is_kept_apart_and_small_data_copied() {
        let mut out = WriteQueue::new();
        out.push_bytes(data(1, ZERO_COPY_MIN - 1));
        assert_eq!(out.pieces(), 1, "copied into the buffer");
        out.push_bytes(data(2, ZERO_COPY_MIN));
        assert_eq!(out.pieces(), 2, "the buffer so far, then the data");
        out.push_bytes(data(3, ZERO_COPY_MIN));
        assert_eq!(out.pieces(), 3);
        out.push_bytes(data(4, 5));
        assert_eq!(out.pieces(), 4);
        assert_eq!(out.queued(), 3 * ZERO_COPY_MIN - 1 + 5);
    }

    #[test]
    fn it_is_full_at_the_backpressure_bound() {
        let mut out = WriteQueue::new();
        out.push_bytes(Bytes::from(vec![0u8; BACKPRESSURE - 1]));
        assert!(!out.is_full());
        out.push_bytes(Bytes::from_static(b"x"));
        assert!(out.is_full());
    }

    #[test]
    fn a_failed_encoding_queues_nothing() {
        let mut out = WriteQueue::new();
        out.append(|b| {
            b.extend_from_slice(b"kept");
            Ok::<_, ()>(())
        })
        .unwrap();
        let r = out.append(|b| {
            b.extend_from_slice(b"half a frame");
            Err("too long")
        });
        assert_eq!(r, Err("too long"));
        assert_eq!(out.queued(), 4);
        assert_eq!(&out.buf[..], b"kept");
    }
}
