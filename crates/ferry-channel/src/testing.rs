//! For the writers' tests on both sides of the channel (feature `testing`): the far
//! end of a socketpair, read on its own thread in small pieces (so the writer under
//! test meets a full socket and partial writes), split into frames by the length
//! prefix alone, an oracle independent of the protocol crate's splitter.

use bytes::{Buf, Bytes, BytesMut};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

/// Reads `count` whole frames' payloads from `sock`, `piece` bytes at a time at most.
/// The thread panics (failing the join) on EOF before `count` frames or on a frame
/// that is empty or longer than 16 MiB.
pub fn read_frames(sock: UnixStream, count: usize, piece: usize) -> JoinHandle<Vec<Bytes>> {
    std::thread::spawn(move || {
        let mut sock = sock;
        let mut buf = BytesMut::new();
        let mut got = Vec::with_capacity(count);
        let mut piece = vec![0u8; piece];
        loop {
            while buf.len() >= 4 {
                let len = u32::from_be_bytes(buf[..4].try_into().expect("four bytes")) as usize;
                assert!(len > 0 && len <= 16 << 20, "frame length {len}");
                if buf.len() < 4 + len {
                    break;
                }
                buf.advance(4);
                got.push(buf.split_to(len).freeze());
            }
            if got.len() >= count {
                return got;
            }
            let n = sock.read(&mut piece).expect("read");
            assert!(n > 0, "EOF after {} frames", got.len());
            buf.extend_from_slice(&piece[..n]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn frames_split_across_and_within_reads_come_back_whole() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let reader = read_frames(theirs, 3, 3);
        ours.write_all(b"\0\0\0\x01a\0\0\0\x05hello\0\0\0\x02xy")
            .unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got, [&b"a"[..], b"hello", b"xy"]);
    }

    #[test]
    fn eof_before_the_last_frame_fails_the_reader() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let reader = read_frames(theirs, 2, 64);
        ours.write_all(b"\0\0\0\x01a\0\0\0\x05hel").unwrap();
        drop(ours);
        assert!(reader.join().is_err());
    }
}
