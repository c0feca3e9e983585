//! Shared by the black-box tests: start the real `ferry` binary in front of real
//! workers on a free loopback port, talk HTTP to it, read its log, and kill every
//! process on drop.
#![allow(dead_code)]

pub mod hand;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

/// Where cargo put the binaries: next to this test executable's `deps/` folder.
/// `FERRY_MASTER` names another `ferry` to test instead (an older build, to measure
/// an attack before and after a fix: `tests/attacks.sh`).
pub fn bin(name: &str) -> PathBuf {
    if name == "ferry" {
        if let Some(other) = std::env::var_os("FERRY_MASTER") {
            return PathBuf::from(other);
        }
    }
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        // `cargo test` builds a package's own binaries only: make sure the others exist
        // (a no-op when they are fresh).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--workspace", "--bins", "--examples"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

pub fn testbed() -> String {
    bin("ferry-testbed").to_string_lossy().into_owned()
}

pub fn misbehave() -> String {
    bin("ferry-misbehave").to_string_lossy().into_owned()
}

#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Log {
    /// Waits until a line containing `needle` appears; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub fn wait_for_nth(&self, needle: &str, n: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// A running `ferry`, killed (with its workers) on drop.
pub struct Ferry {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Log>,
}

pub struct Builder {
    args: Vec<String>,
    worker: Vec<String>,
    env: Vec<(String, String)>,
    /// RLIMIT_NOFILE (soft and hard) for ferry and so its workers.
    fds: Option<u64>,
    /// The master binary, if not the one built.
    binary: Option<PathBuf>,
    /// A command that runs ferry (`systemd-socket-activate -l ADDR`).
    wrapper: Vec<String>,
    /// Descriptors ferry inherits: (ours, the number it gets).
    pass: Vec<(Arc<std::os::fd::OwnedFd>, i32)>,
    /// No `--listen 127.0.0.1:0` of the harness's own.
    no_listen: bool,
}

impl Ferry {
    /// `ferry ARGS -- ferry-testbed`
    pub fn testbed(args: &[&str]) -> Ferry {
        Ferry::builder(args, &[&testbed()]).start()
    }

    pub fn builder(args: &[&str], worker: &[&str]) -> Builder {
        Builder {
            args: args.iter().map(|s| s.to_string()).collect(),
            worker: worker.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            fds: None,
            binary: None,
            wrapper: vec![],
            pass: vec![],
            no_listen: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the master to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pids of the master's direct children (its workers), from /proc.
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.child.id())
    }
}

impl Builder {
    /// Runs ferry with at most `n` open descriptors (its hard limit too).
    pub fn limit_fds(mut self, n: u64) -> Self {
        self.fds = Some(n);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Runs this master binary instead of the built one.
    pub fn binary(mut self, path: &std::path::Path) -> Self {
        self.binary = Some(path.to_owned());
        self
    }

    /// Runs ferry through `wrapper` (its program and arguments, then ferry's).
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Ferry inherits `fd` as descriptor number `at`.
    pub fn pass_fd(mut self, fd: std::os::fd::OwnedFd, at: i32) -> Self {
        self.pass.push((Arc::new(fd), at));
        self
    }

    /// Leaves out the harness's `--listen 127.0.0.1:0`.
    pub fn no_listen(mut self) -> Self {
        self.no_listen = true;
        self
    }

    fn command(&self) -> Command {
        let master = self.binary.clone().unwrap_or_else(|| bin("ferry"));
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&master);
                c
            }
            None => Command::new(&master),
        };
        if !self.no_listen && !self.args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        // Tests kill ferry with SIGKILL: no default control socket files left behind
        // (the tests of the control socket name one of their own).
        let own_socket = self.args.iter().any(|a| a == "--control-socket")
            || self.env.iter().any(|(k, _)| k == "XDG_RUNTIME_DIR");
        if !own_socket {
            cmd.args(["--control-socket", "off"]);
        }
        cmd.args(&self.args).arg("--").args(&self.worker);
        cmd.env("RUST_LOG", "info").env_remove("RUST_BACKTRACE");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !self.pass.is_empty() {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let pass: Vec<(i32, i32)> = self
                .pass
                .iter()
                .map(|(fd, at)| (fd.as_raw_fd(), *at))
                .collect();
            // Only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    for (fd, at) in &pass {
                        let ok = if fd == at {
                            libc::fcntl(*fd, libc::F_SETFD, 0)
                        } else {
                            libc::dup2(*fd, *at)
                        };
                        if ok == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        if let Some(n) = self.fds {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // Only an async-signal-safe call between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd
    }

    /// Starts ferry and waits for its "listening" line (the readiness signal).
    pub fn start(self) -> Ferry {
        let mut child = self.command().spawn().expect("start ferry");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("FERRY_TEST_ECHO").is_some() {
                    eprintln!("ferry| {line}");
                }
                sink.lines.lock().unwrap().push(line);
                sink.grew.notify_all();
            }
        });
        let mut ferry = Ferry {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let line = ferry
            .log
            .wait_for("listening on http://", Duration::from_secs(30));
        let Some(line) = line else {
            let status = ferry.child.try_wait().unwrap();
            panic!(
                "ferry did not become ready (exit: {status:?}); log:\n{}",
                ferry.log.text()
            );
        };
        let addr = line
            .split("listening on http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        ferry.addr = addr.parse().unwrap();
        ferry
    }

    /// Runs ferry expecting it to exit by itself; returns (status, all stderr).
    pub fn run_to_exit(self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.command().spawn().expect("start ferry");
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ferry did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, reader.join().unwrap())
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let workers = self.worker_pids();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Workers die with the master (parent-death signal); make sure of it anyway,
        // with their process groups (grandchildren included).
        for pid in workers {
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

impl Ferry {
    /// The admin endpoint's address, from its log line (`--admin-listen`).
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self
            .log
            .wait_for("admin endpoint on http://", Duration::from_secs(10))
            .expect("the admin endpoint is announced");
        let rest = &line[line.find("http://").unwrap() + 7..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }
}

/// A free loopback port (bound and released), for a listener made by someone else.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET over a Unix socket, `Connection: close`; the whole response as text.
pub fn get_unix(path: &std::path::Path, target: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect to the unix socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Direct children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let mut all = Vec::new();
    // Children may hang off any of the process's threads.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let p = t.path().join("children");
            if let Ok(s) = std::fs::read_to_string(p) {
                all.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    } else if let Ok(s) = std::fs::read_to_string(path) {
        all.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Peak resident memory of a process in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb * 1024
}

/// A response, collected.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive HTTP/1.1 client connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        Conn { sender, addr }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        self.try_send(req).await.expect("request")
    }

    pub async fn try_send(&mut self, mut req: Request<Full<Bytes>>) -> Result<Resp, hyper::Error> {
        req.headers_mut()
            .entry(http::header::HOST)
            .or_insert_with(|| self.addr.to_string().parse().unwrap());
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(Request::get(path).body(Full::default()).unwrap())
            .await
    }
}

/// GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    Conn::open(addr).await.get(path).await
}

/// POST with an empty body on a fresh connection.
pub async fn post(addr: SocketAddr, path: &str) -> Resp {
    Conn::open(addr)
        .await
        .send(Request::post(path).body(Full::new(Bytes::new())).unwrap())
        .await
}

/// Writes raw bytes on a new connection and reads until the server closes or
/// `until` appears in what was read.
pub fn raw(addr: SocketAddr, request: &[u8], until: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if !until.is_empty() && String::from_utf8_lossy(&out).contains(until) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pid in a testbed body such as `slept 100 ms in 1234 with 1 in flight` or `1234`.
pub fn pid_in(text: &str) -> u32 {
    let t = text.trim();
    t.parse()
        .ok()
        .or_else(|| {
            t.split(" in ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no pid in {t:?}"))
}

/// `ferry-testbed --direct 127.0.0.1:0`: the testbed served straight over HTTP,
/// killed on drop.
pub struct Direct {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Direct {
    pub fn start() -> Direct {
        let mut child = Command::new(bin("ferry-testbed"))
            .args(["--direct", "127.0.0.1:0", "--threads", "1"])
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry-testbed --direct");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("testbed said where it serves").unwrap();
            if let Some(rest) = line.split("serving directly on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Direct { child, addr }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/2 client that never opens its streams' flow-control windows (initial
/// window 0), and the task driving its connection (it ends when the server closes).
pub async fn closed_window_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    (client, tokio::spawn(conn))
}

/// A stream's task: its response head, kept (with its body unread) for as long as
/// the handle lives; dropping the response would reset the stream.
pub type HeldStream = tokio::task::JoinHandle<Option<http::Response<h2::RecvStream>>>;

/// Opens `n` streams of `GET path` on `client`, each holding its response.
pub fn open_streams(
    client: &h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    n: usize,
) -> Vec<HeldStream> {
    (0..n)
        .map(|_| {
            let req = Request::get(format!("http://{addr}{path}"))
                .body(())
                .unwrap();
            let c = client.clone();
            tokio::spawn(async move {
                let mut c = c.ready().await.ok()?;
                let (resp, _) = c.send_request(req, true).ok()?;
                resp.await.ok()
            })
        })
        .collect()
}

/// `ferry ctl ARGS` against the socket at `socket`: (exit code, stdout, stderr).
pub fn ctl(socket: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin("ferry"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run ferry ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A folder of this test's own, `ferry-NAME-PID` under the temp dir, emptied.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
