//! A client's socket as hyper sees it (`ClientIo`): the bytes the front sniffed first,
//! then the socket; a write that makes no progress for `--send-timeout` fails, and a
//! small vectored write goes out as one buffer. Owns nothing but that one socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::listen::Stream;

/// Up to this many bytes in all, a vectored write is copied into one buffer and sent
/// with one plain write(2). hyper hands over a response as its head and its body in
/// separate slices; for the small response, the usual case, writev costs the kernel
/// more than the copy costs us (measured: about 0.3 µs a response on loopback). Larger
/// writes keep writev, so big bodies are not copied.
const COALESCE_MAX: usize = 1024;

/// The bytes `front::sniff` read, to be read again by hyper.
pub(crate) struct Prefix {
    pub(crate) buf: [u8; 24],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A client's socket as hyper sees it: the sniffed bytes first, then the socket;
/// and a write that makes no progress for `send_timeout` fails with `TimedOut`,
/// which ends the connection (nginx's `send_timeout`). The timer exists only while a
/// write is waiting, so the usual write that goes straight through costs nothing.
pub struct ClientIo {
    stream: Stream,
    prefix: Prefix,
    send_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl ClientIo {
    pub(crate) fn new(stream: Stream, prefix: Prefix, send_timeout: Duration) -> Self {
        ClientIo {
            stream,
            prefix,
            send_timeout,
            stalled: None,
        }
    }

    /// Passes a write's outcome through, timing how long it has been pending.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.send_timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client took nothing for {timeout:?} (--send-timeout)"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.prefix.start < me.prefix.end {
            let n = buf.remaining().min(me.prefix.end - me.prefix.start);
            buf.put_slice(&me.prefix.buf[me.prefix.start..me.prefix.start + n]);
            me.prefix.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.timed(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = match coalesce(bufs) {
            Some((one, n)) => Pin::new(&mut self.stream).poll_write(cx, &one[..n]),
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
        };
        self.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.timed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// `bufs` copied into one buffer, with its length, if there are several of them and
/// they come to at most [`COALESCE_MAX`] bytes.
fn coalesce(bufs: &[io::IoSlice<'_>]) -> Option<([u8; COALESCE_MAX], usize)> {
    // Sized first: a large write (a body chunk) is passed on without the buffer being
    // cleared or any of its head copied.
    let total = bufs
        .iter()
        .try_fold(0usize, |n, b| n.checked_add(b.len()))?;
    if bufs.len() < 2 || total > COALESCE_MAX {
        return None;
    }
    let mut one = [0u8; COALESCE_MAX];
    let mut n = 0;
    for b in bufs {
        one[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    }
    Some((one, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    fn slices<'a>(parts: &'a [&'a [u8]]) -> Vec<io::IoSlice<'a>> {
        parts.iter().map(|p| io::IoSlice::new(p)).collect()
    }

    #[test]
    fn small_vectored_writes_are_joined_in_order_and_large_or_single_ones_are_not() {
        let (one, n) = coalesce(&slices(&[b"HTTP/1.1 200 OK\r\n\r\n", b"", b"hello"])).unwrap();
        assert_eq!(&one[..n], b"HTTP/1.1 200 OK\r\n\r\nhello");
        let at_max = vec![7u8; COALESCE_MAX - 3];
        let (one, n) = coalesce(&slices(&[b"abc", &at_max])).unwrap();
        assert_eq!(n, COALESCE_MAX);
        assert_eq!(&one[..3], b"abc");
        assert!(one[3..].iter().all(|&b| b == 7));
        // One byte over, or a single slice (nothing to join): writev as it is.
        assert!(coalesce(&slices(&[b"abcd", &at_max])).is_none());
        assert!(coalesce(&slices(&[b"just one"])).is_none());
        assert!(coalesce(&[]).is_none());
    }

    #[tokio::test]
    async fn a_vectored_write_reaches_the_client_whole_joined_or_not() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            got
        });
        let prefix = Prefix {
            buf: [0; 24],
            start: 0,
            end: 0,
        };
        let mut io = ClientIo::new(Stream::Unix(ours), prefix, Duration::from_secs(5));
        let big = vec![b'x'; 64 * 1024];
        let mut expected = Vec::new();
        for parts in [
            &[&b"head\r\n\r\n"[..], b"body"][..],
            &[b"head2", &big, b"tail"],
        ] {
            let mut bufs = slices(parts);
            let mut bufs = &mut bufs[..];
            while !bufs.is_empty() {
                let n = io.write_vectored(bufs).await.unwrap();
                io::IoSlice::advance_slices(&mut bufs, n);
            }
            parts.iter().for_each(|p| expected.extend_from_slice(p));
        }
        drop(io);
        assert_eq!(reader.await.unwrap(), expected);
    }
}
