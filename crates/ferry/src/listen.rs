//! The public listeners: what `--listen` names (`HOST:PORT`, `[V6]:PORT`,
//! `unix:/PATH`, `fd:N`), how each is bound (`--backlog`; a Unix socket's mode set
//! before it listens, its stale file replaced, a live one refused) or adopted (an
//! inherited descriptor is checked to be a listening stream socket before use:
//! systemd socket activation, `fd:N`, a master upgrade), and accepting on them.
//!
//! Every descriptor here is close-on-exec, so no worker inherits a listener; only a
//! master upgrade (`upgrade.rs`) passes them on, on purpose. A client of a Unix
//! socket has no address: its peer is `unix` (SPEC.md, `Request.peer`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::sockfile::Owned;

/// Where `--listen` asks to accept connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Fd(RawFd),
}

/// The accepted forms, for error messages.
pub const FORMS: &str = "HOST:PORT (127.0.0.1:8080), [V6]:PORT ([::1]:8080), unix:/PATH or fd:N";

impl FromStr for Spec {
    type Err = String;

    fn from_str(s: &str) -> Result<Spec, String> {
        let bad = || format!("`{s}` is not a listen address: use {FORMS}");
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad());
            }
            return Ok(Spec::Unix(PathBuf::from(path)));
        }
        if let Some(n) = s.strip_prefix("fd:") {
            return n
                .parse::<RawFd>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Spec::Fd)
                .ok_or_else(bad);
        }
        s.parse::<SocketAddr>().map(Spec::Tcp).map_err(|_| bad())
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spec::Tcp(a) => write!(f, "{a}"),
            Spec::Unix(p) => write!(f, "unix:{}", p.display()),
            Spec::Fd(n) => write!(f, "fd:{n}"),
        }
    }
}

/// How sockets this master binds itself are made.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `listen(2)`'s backlog (`--backlog`).
    pub backlog: i32,
    /// A Unix socket file's mode (`--listen-mode`).
    pub mode: u32,
    /// A Unix socket file's owner, when the master runs as root and workers as
    /// `--user`/`--group` (PHP-FPM's `listen.owner`/`listen.group` default).
    pub owner: Option<(Option<u32>, Option<u32>)>,
}

/// One listening socket.
pub struct Listener {
    kind: Kind,
    /// How the logs name it: `127.0.0.1:8080` or `unix:/run/app.sock`.
    label: String,
    /// The socket file this master made (removed at exit if still ours).
    owned: Option<Owned>,
}

enum Kind {
    Tcp(TcpListener),
    Unix(UnixListener, Arc<str>),
}

impl Listener {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn owned(&self) -> Option<&Owned> {
        self.owned.as_ref()
    }

    /// Takes over the removal of its socket file at exit (an inherited socket's,
    /// when the master that made it says so).
    pub fn own_file(&mut self) {
        if let Kind::Unix(l, _) = &self.kind {
            if let Some(path) = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_owned))
            {
                self.owned = Owned::at(&path).ok();
            }
        }
    }

    /// The port, for a TCP listener.
    pub fn port(&self) -> Option<u16> {
        match &self.kind {
            Kind::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Kind::Unix(..) => None,
        }
    }

    pub fn is_tcp(&self) -> bool {
        matches!(self.kind, Kind::Tcp(_))
    }

    /// The next connection and its peer as workers are told it.
    pub async fn accept(&self) -> io::Result<(Stream, Arc<str>)> {
        match &self.kind {
            Kind::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer.to_string().into()))
            }
            Kind::Unix(l, peer) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), peer.clone()))
            }
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match &self.kind {
            Kind::Tcp(l) => l.as_raw_fd(),
            Kind::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// Binds what `spec` names (an `fd:` is adopted). Errors say what to change.
pub fn open(spec: &Spec, opts: Options) -> Result<Listener, String> {
    match spec {
        Spec::Tcp(addr) => {
            bind_tcp(*addr, opts.backlog).map_err(|e| format!("cannot listen on {addr}: {e}"))
        }
        Spec::Unix(path) => bind_unix(path, opts),
        Spec::Fd(fd) => adopt(*fd, &format!("fd:{fd}")),
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restarted master may bind while the last one's connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    tcp(socket)
}

fn bind_unix(path: &Path, opts: Options) -> Result<Listener, String> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot listen on unix:{shown}: the folder {} does not exist",
            dir.display()
        ));
    }
    crate::sockfile::clear_stale(path, "another process", "stop it or choose another path")
        .map_err(|e| format!("cannot listen on unix:{shown}: {e}"))?;
    let made = (|| {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        Ok::<_, io::Error>(socket)
    })();
    let socket = made.map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "cannot listen on unix:{shown}: the folder {} is not writable for this user ({e})",
            dir.display()
        ),
        _ => format!("cannot listen on unix:{shown}: {e}"),
    })?;
    // Mode and owner are set before listen(2): until then no client can connect, so
    // none slips in under a wider mode.
    let settle = || {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.mode))?;
        if let Some((uid, gid)) = opts.owner {
            std::os::unix::fs::lchown(path, uid, gid)?;
        }
        socket.listen(opts.backlog)
    };
    let owned = settle().and_then(|()| Owned::at(path)).map_err(|e| {
        let _ = std::fs::remove_file(path);
        format!("cannot listen on unix:{shown}: {e}")
    })?;
    let mut l = unix(socket, format!("unix:{shown}")).map_err(|e| e.to_string())?;
    l.owned = Some(owned);
    Ok(l)
}

fn tcp(socket: Socket) -> io::Result<Listener> {
    socket.set_nonblocking(true)?;
    let l = TcpListener::from_std(socket.into())?;
    let label = l.local_addr()?.to_string();
    Ok(Listener {
        kind: Kind::Tcp(l),
        label,
        owned: None,
    })
}

fn unix(socket: Socket, label: String) -> io::Result<Listener> {
    socket.set_nonblocking(true)?;
    let l = UnixListener::from_std(socket.into())?;
    Ok(Listener {
        kind: Kind::Unix(l, "unix".into()),
        label,
        owned: None,
    })
}

/// Takes over an inherited descriptor, if it is a listening stream socket (TCP or
/// Unix); anything else is refused before it is used. `what` names it in errors.
pub fn adopt(fd: RawFd, what: &str) -> Result<Listener, String> {
    // Open at all? (Checked first: taking ownership of a closed number would later
    // close whatever gets that number.)
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!("{what}: descriptor {fd} is not open"));
    }
    // Not ours to close until it passes: a refused descriptor is left as we found it.
    let socket = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    let refused = |why: String| Err(format!("{what}: descriptor {fd} is {why}"));
    let domain = match (socket.r#type(), socket.is_listener(), socket.domain()) {
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            return refused(format!("not a socket ({e})"))
        }
        (Ok(t), ..) if t != Type::STREAM => return refused("not a stream socket".into()),
        (_, Ok(false), _) => return refused("not listening (listen(2) was never called)".into()),
        (.., Ok(d)) if ![Domain::UNIX, Domain::IPV4, Domain::IPV6].contains(&d) => {
            return refused("neither a TCP nor a Unix socket".into())
        }
        (Ok(_), Ok(_), Ok(d)) => d,
    };
    let socket = std::mem::ManuallyDrop::into_inner(socket);
    // Inherited descriptors are not close-on-exec; workers must not get them.
    socket
        .set_cloexec(true)
        .map_err(|e| format!("{what}: {e}"))?;
    if domain == Domain::UNIX {
        let name = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
            .unwrap_or_else(|| format!("unix:({what})"));
        unix(socket, name).map_err(|e| format!("{what}: {e}"))
    } else {
        tcp(socket).map_err(|e| format!("{what}: {e}"))
    }
}

/// Sockets passed by systemd socket activation (`LISTEN_FDS`, for this process by
/// `LISTEN_PID`). `LISTEN_PID` naming another process means they are not ours: said
/// in the log, and none are used.
pub fn from_systemd() -> Result<Vec<Listener>, String> {
    if let Some(pid) = std::env::var_os("LISTEN_PID") {
        let ours = std::process::id().to_string();
        if pid != ours.as_str() {
            tracing::info!(
                "LISTEN_PID is {}, not this process ({ours}): ignoring LISTEN_FDS",
                pid.to_string_lossy()
            );
            return Ok(Vec::new());
        }
    }
    let fds = sd_notify::listen_fds().map_err(|e| format!("LISTEN_FDS: {e}"))?;
    fds.map(|fd| adopt(fd, &format!("LISTEN_FDS (fd {fd})")))
        .collect()
}

/// An accepted client connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_name_the_forms() {
        assert_eq!(
            "127.0.0.1:8080".parse::<Spec>(),
            Ok(Spec::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:80".parse::<Spec>(),
            Ok(Spec::Tcp("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/a.sock".parse::<Spec>(),
            Ok(Spec::Unix("/run/a.sock".into()))
        );
        assert_eq!("fd:3".parse::<Spec>(), Ok(Spec::Fd(3)));
        for bad in [
            "8080",
            "localhost:80",
            "unix:",
            "fd:-1",
            "fd:x",
            "::1:80",
            "",
        ] {
            let e = bad.parse::<Spec>().unwrap_err();
            assert!(e.contains("unix:/PATH") && e.contains(bad), "{bad}: {e}");
        }
    }

    fn opts() -> Options {
        Options {
            backlog: 16,
            mode: 0o660,
            owner: None,
        }
    }

    #[tokio::test]
    async fn a_unix_listener_has_its_mode_and_reports_unix_peers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ferry-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let l = open(&Spec::Unix(path.clone()), opts()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert_eq!(l.label(), format!("unix:{}", path.display()));
        let _c = UnixStream::connect(&path).await.unwrap();
        let (_, peer) = l.accept().await.unwrap();
        assert_eq!(&*peer, "unix");
        // A live socket is refused, not replaced.
        let e = open(&Spec::Unix(path.clone()), opts()).err().unwrap();
        assert!(e.contains("answering"), "{e}");
        l.owned().unwrap().remove();
        assert!(!path.exists());
        let e = open(&Spec::Unix(dir.join("no/such/a.sock")), opts())
            .err()
            .unwrap();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[tokio::test]
    async fn only_listening_stream_sockets_are_adopted() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = adopt(file.as_raw_fd(), "fd:N").err().unwrap();
        assert!(e.contains("not a socket"), "{e}");
        // Still open: a refused descriptor is left alone.
        assert_ne!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFD) }, -1);

        let bound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        bound
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let e = adopt(bound.as_raw_fd(), "fd:N").err().unwrap();
        assert!(e.contains("not listening"), "{e}");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = adopt(udp.as_raw_fd(), "fd:N").err().unwrap();
        assert!(e.contains("not a stream socket"), "{e}");

        let e = adopt(9999, "fd:9999").err().unwrap();
        assert!(e.contains("not open"), "{e}");

        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(std);
        let l = adopt(fd, "fd:N").unwrap();
        assert_eq!(l.label(), addr.to_string());
        assert_eq!(l.port(), Some(addr.port()));
        let _c = TcpStream::connect(addr).await.unwrap();
        let (_, peer) = l.accept().await.unwrap();
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    }
}
