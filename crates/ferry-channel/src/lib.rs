//! The two halves of a channel socket, for tokio: the read half is registered with
//! epoll for readability only; the write half writes straight to the socket and
//! registers for writability only while the socket is full.
//!
//! Why not `tokio::net::UnixStream::into_split`: tokio registers a stream for both
//! directions, edge-triggered, and a Unix stream socket reports "writable" again
//! each time its peer reads (`unix_write_space` wakes on every freed buffer, unlike
//! TCP, which wakes a writer only after it found the socket full). So each frame the
//! other side read woke this process once more for nothing: at c=1, one extra
//! context switch per request on each side of the channel.

#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod write_queue;
pub use write_queue::{WriteQueue, BACKPRESSURE, ZERO_COPY_MIN};

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Splits a connected stream socket (set non-blocking here) into its halves.
/// Must be called within a tokio runtime with I/O enabled.
pub fn split(stream: UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    stream.set_nonblocking(true)?;
    let write = stream.try_clone()?;
    let read = register(stream, Interest::READABLE)?;
    Ok((
        ReadHalf(read),
        WriteHalf {
            sock: write,
            room: None,
        },
    ))
}

fn register(sock: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `UnixStream` owns its descriptor, which stays open and the same for
    // as long as the `AsyncFd` holds it.
    unsafe { AsyncFd::register_with_interest(sock, interest) }.map_err(|e| e.into_parts().1)
}

/// Reads from the channel socket, woken by epoll only when there is data (or EOF).
pub struct ReadHalf(AsyncFd<UnixStream>);

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            // Read into the buffer's uninitialised tail as it is: `initialize_unfilled`
            // would zero all of it (8 KiB from a fresh FramedRead) on every read.
            // SAFETY: read(2) only writes to the memory, and `assume_init` below covers
            // exactly the bytes it reports written.
            let dst = unsafe { buf.unfilled_mut() };
            let read = guard.try_io(|s| {
                let n = unsafe { libc::read(s.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => {
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Would block: readiness cleared, poll again to register the waker.
                Err(_) => continue,
            }
        }
    }
}

/// Writes to the channel socket directly; only a write that finds the socket full
/// registers (a second descriptor of the same socket) for writability, and the
/// registration is dropped again by the next write that goes through at once.
pub struct WriteHalf {
    sock: UnixStream,
    /// Registered for writability while the socket is (or just was) full.
    room: Option<AsyncFd<UnixStream>>,
}

impl WriteHalf {
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let mut waited = false;
        loop {
            match op(&self.sock) {
                Ok(n) => {
                    if !waited {
                        // Room again without waiting: stop being told about room.
                        self.room = None;
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let room = match &mut self.room {
                        Some(r) => r,
                        // Added while full: epoll reports room as soon as there is some,
                        // even if it was freed between the write and this registration.
                        slot => slot.insert(register(self.sock.try_clone()?, Interest::WRITABLE)?),
                    };
                    let mut guard = ready!(room.poll_write_ready(cx))?;
                    guard.clear_ready();
                    waited = true;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(cx, |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(cx, |mut s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.sock.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The epoll event masks registered for descriptor `fd` of this process, from
    /// /proc/self/fdinfo of every epoll descriptor (each test runtime has its own
    /// instance, which mio holds open twice: a line seen twice is counted once).
    fn registrations(fd: i32) -> Vec<u32> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let is_epoll = std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("eventpoll"));
            if !is_epoll {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            for line in info.lines() {
                if !seen.insert(line.to_owned()) {
                    continue;
                }
                let mut f = line.split_whitespace();
                if f.next() != Some("tfd:") || f.next() != Some(fd.to_string().as_str()) {
                    continue;
                }
                if let (Some("events:"), Some(mask)) = (f.next(), f.next()) {
                    out.push(u32::from_str_radix(mask, 16).unwrap());
                }
            }
        }
        out
    }

    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;

    #[tokio::test]
    async fn the_read_half_waits_for_data_only_and_the_write_half_for_nothing() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (mut read, mut write) = split(ours).unwrap();
        let (rfd, wfd) = (read.0.get_ref().as_raw_fd(), write.sock.as_raw_fd());
        assert_eq!(registrations(rfd).len(), 1, "the read half is registered");
        let mask = registrations(rfd)[0];
        assert!(mask & EPOLLIN != 0, "{mask:#x}");
        assert!(
            mask & EPOLLOUT == 0,
            "a read half told about room would wake each time the peer reads: {mask:#x}"
        );
        assert!(
            registrations(wfd).is_empty(),
            "no write registration while there is room"
        );
        write.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        theirs.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        theirs.write_all(b"pong").unwrap();
        read.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
        assert!(registrations(wfd).is_empty());
        assert!(write.room.is_none());
    }

    #[tokio::test]
    async fn a_full_socket_is_waited_for_then_unregistered_once_there_is_room() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_read, mut write) = split(ours).unwrap();
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let want = big.clone();
        let writer = tokio::spawn(async move {
            write.write_all(&big).await.unwrap();
            (write, big.len())
        });
        // The socket holds far less than 4 MiB: the writer must be waiting for room.
        let mut tries = 0;
        let room_fd = loop {
            tokio::task::yield_now().await;
            let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            if let Some(&fd) = fds.iter().find(|&&fd| {
                registrations(fd)
                    .iter()
                    .any(|m| m & EPOLLOUT != 0 && m & EPOLLIN == 0)
            }) {
                break fd;
            }
            tries += 1;
            assert!(tries < 10_000, "the full writer never registered for room");
        };
        let reader = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut got = vec![0u8; 4 << 20];
            theirs.read_exact(&mut got).unwrap();
            (theirs, got)
        });
        let (mut write, n) = writer.await.unwrap();
        let (mut theirs, got) = reader.join().unwrap();
        assert_eq!(n, want.len());
        assert!(got == want, "the bytes arrive whole and in order");
        // The next write that goes through at once drops the registration.
        write.write_all(b"x").await.unwrap();
        assert!(write.room.is_none());
        assert!(
            registrations(room_fd).iter().all(|m| m & EPOLLOUT == 0),
            "still registered for room: {:?}",
            registrations(room_fd)
        );
        let mut b = [0u8; 1];
        theirs.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }

    #[tokio::test]
    async fn shutdown_ends_the_peers_reads_and_eof_ends_ours() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (mut read, mut write) = split(ours).unwrap();
        write.write_all(b"last").await.unwrap();
        write.shutdown().await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last");
        drop(theirs);
        let mut rest = Vec::new();
        assert_eq!(read.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
