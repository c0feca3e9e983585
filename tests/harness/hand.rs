//! The test as the master, by hand: a worker started on one end of a socketpair (as
//! fd 3, in its own process group), and the frames it sends read one by one. For what
//! the real master never does, such as sending a request id that is still in flight.

use ferry_protocol::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const MAX: usize = 1 << 20;

pub struct HandMaster {
    pub channel: Option<UnixStream>,
    pub worker: Child,
    buf: bytes::BytesMut,
    reaped: bool,
}

impl HandMaster {
    /// Starts `program args` as a worker, its stderr piped (or dropped: `stderr_open`
    /// false, so its next log line meets a broken pipe).
    pub fn spawn(program: &str, args: &[&str], stderr_open: bool) -> HandMaster {
        let (master, child_end) = UnixStream::pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&child_end);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("FERRY_FD", "3")
            .env("RUST_LOG", "info")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        unsafe {
            cmd.pre_exec(move || {
                // dup2 clears close-on-exec on the copy, unless the two numbers are equal.
                if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut worker = cmd.spawn().unwrap();
        drop(child_end);
        if !stderr_open {
            drop(worker.stderr.take());
        }
        HandMaster {
            channel: Some(master),
            worker,
            buf: bytes::BytesMut::new(),
            reaped: false,
        }
    }

    /// The next message from the worker; None on EOF.
    pub fn recv(&mut self) -> Option<WorkerMsg> {
        let channel = self.channel.as_mut().expect("the channel is open");
        loop {
            if let Some(payload) = frame::split_frame(&mut self.buf, MAX).unwrap() {
                return Some(frame::decode_worker(payload).unwrap());
            }
            let mut chunk = [0u8; 4096];
            let n = channel.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn send(&mut self, msg: MasterMsg) {
        let mut out = bytes::BytesMut::new();
        frame::encode_master(&msg, &mut out, MAX).unwrap();
        let channel = self.channel.as_mut().expect("the channel is open");
        channel.write_all(&out).unwrap();
    }

    /// Reads Hello and answers Welcome.
    pub fn handshake(&mut self, max_in_flight: u32) {
        assert!(matches!(self.recv(), Some(WorkerMsg::Hello(_))));
        self.send(MasterMsg::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            worker_index: 0,
            max_frame_size: MAX as u32,
            max_in_flight,
            initial_window: 1 << 20,
        }));
    }

    pub fn get(&mut self, id: u64, target: &str) {
        self.send(MasterMsg::RequestHead(RequestHead {
            id,
            method: "GET".into(),
            target: target.into(),
            version: HttpVersion::Http11,
            headers: vec![Header::new("host", "x")],
            peer: "127.0.0.1:1".into(),
            body: BodyKind::Empty,
        }));
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.worker.try_wait().unwrap() {
                self.reaped = true;
                return s;
            }
            assert!(Instant::now() < deadline, "the worker did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the worker wrote to stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.worker.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for HandMaster {
    fn drop(&mut self) {
        // The group before the reaping: once reaped, its number may be another's.
        if !self.reaped {
            unsafe {
                libc::kill(-(self.worker.id() as i32), libc::SIGKILL);
            }
            let _ = self.worker.wait();
        }
    }
}
