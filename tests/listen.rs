//! Where ferry listens and who its workers run as: Unix-socket listeners, inherited
//! descriptors (`fd:N`, systemd socket activation), the errors for each bad form,
//! and the privilege drop (`--user`, `--group`, `--chdir`, `--umask`).

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// The `key=value` line of a `/whoami` answer.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_listener_serves_beside_tcp_and_its_peer_is_unix() {
    let dir = fresh_dir("unix-listen");
    let sock = dir.join("app.sock");
    let spec = format!("unix:{}", sock.display());
    let mut ferry = Ferry::testbed(&[
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &spec,
        "--backlog",
        "7",
    ]);
    // ss shows a listening socket's backlog as its Send-Q.
    match std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", ferry.addr.port())])
        .output()
    {
        Ok(out) => {
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            let send_q = line.split_whitespace().nth(2);
            assert_eq!(send_q, Some("7"), "--backlog 7: {line}");
        }
        Err(_) => eprintln!("ss is not installed: --backlog not checked"),
    }
    assert!(
        ferry.log.text().contains(&format!("and {spec}")),
        "{}",
        ferry.log.text()
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660, "--listen-mode's default");

    let answer = get_unix(&sock, "/whoami");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(field(&answer, "peer"), "unix");
    // The TCP listener serves too, with a real peer address.
    let tcp = get(ferry.addr, "/whoami").await.text();
    assert!(field(&tcp, "peer").starts_with("127.0.0.1:"), "{tcp}");

    // curl, as an operator would check it.
    if let Ok(out) = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&sock)
        .arg("http://localhost/")
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!\n");
    } else {
        eprintln!("curl is not installed: checked with a plain socket only");
    }

    // A graceful stop removes the socket file it made.
    ferry.signal(libc::SIGTERM);
    assert!(ferry.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert!(!sock.exists(), "the socket file outlived its master");
}

#[test]
fn unix_listener_files_stale_live_missing_folder_and_mode() {
    let dir = fresh_dir("unix-files");
    // A stale file (nobody accepts on it) is replaced.
    let sock = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let spec = format!("unix:{}", sock.display());
    let ferry = Ferry::testbed(&[
        "--workers",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &spec,
        "--listen-mode",
        "0600",
    ]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert!(get_unix(&sock, "/").ends_with("Hello, world!\n"));

    // A live one (that ferry's) is refused, and left alone.
    let (status, log) =
        Ferry::builder(&["--workers", "1", "--listen", &spec], &[&testbed()]).run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("is answering on"), "{log}");
    assert!(get_unix(&sock, "/").ends_with("Hello, world!\n"));
    drop(ferry);

    // A folder that does not exist, or is not writable, says so.
    let missing = format!("unix:{}", dir.join("no/such/a.sock").display());
    let (status, log) = Ferry::builder(&["--listen", &missing], &[&testbed()]).run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("does not exist"), "{log}");
    // Not writable for this user: ferry run as nobody, a folder only root may write.
    if is_root()
        && std::process::Command::new("setpriv")
            .arg("--help")
            .output()
            .is_ok()
    {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let locked = format!("unix:{}", dir.join("locked.sock").display());
        let (status, log) = Ferry::builder(&["--listen", &locked], &[&testbed()])
            .wrapper(&[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .run_to_exit(WAIT);
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(log.contains("is not writable for this user"), "{log}");
    } else {
        eprintln!("not checked: an unwritable folder (needs root and setpriv)");
    }

    // A form that does not parse names the accepted ones.
    let (status, log) =
        Ferry::builder(&["--listen", "localhost:80"], &[&testbed()]).run_to_exit(WAIT);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("unix:/PATH") && log.contains("fd:N"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_listener_is_served_and_anything_else_refused() {
    // fd:N: a listening socket bound by someone else.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ferry = Ferry::builder(&["--workers", "1", "--listen", "fd:7"], &[&testbed()])
        .pass_fd(listener.into(), 7)
        .start();
    assert_eq!(ferry.addr, addr);
    assert_eq!(get(addr, "/").await.text(), "Hello, world!\n");
    drop(ferry);

    // A descriptor that is not a listening socket is refused at start.
    let file = std::fs::File::open("/dev/null").unwrap();
    refused(pass_7(file.into()), "fd:7: descriptor 7 is not a socket");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    refused(pass_7(udp.into()), "not a stream socket");
    refused(
        Ferry::builder(&["--listen", "fd:9"], &[&testbed()]),
        "descriptor 9 is not open",
    );
}

/// `ferry --listen fd:7` with `fd` as its descriptor 7.
fn pass_7(fd: std::os::fd::OwnedFd) -> Builder {
    Ferry::builder(&["--listen", "fd:7"], &[&testbed()]).pass_fd(fd, 7)
}

/// Ferry refuses to start (exit 1), saying `why`.
fn refused(ferry: Builder, why: &str) {
    let (status, log) = ferry.run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(why), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_hands_ferry_its_listener() {
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    // systemd's own tool where installed; else what it does: the socket on fd 3,
    // LISTEN_FDS=1 and LISTEN_PID set to the process that execs ferry.
    let builder = if std::process::Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_ok()
    {
        Ferry::builder(&["--workers", "1"], &[&testbed()]).wrapper(&[
            "systemd-socket-activate",
            "-l",
            &at,
        ])
    } else {
        eprintln!("systemd-socket-activate is not installed: passing LISTEN_FDS by hand");
        let listener = std::net::TcpListener::bind(&at).unwrap();
        Ferry::builder(&["--workers", "1"], &[&testbed()])
            .pass_fd(listener.into(), 3)
            .env("LISTEN_FDS", "1")
            .wrapper(&["sh", "-c", "LISTEN_PID=$$ exec \"$@\"", "sh"])
    };
    // systemd-socket-activate starts ferry at the first connection: this one, which
    // waits in the socket's queue meanwhile and must be answered.
    let first = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(WAIT)).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                return out;
            }
            assert!(std::time::Instant::now() < deadline, "never listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let ferry = builder.no_listen().start();
    assert_eq!(ferry.addr.port(), port, "{}", ferry.log.text());
    let answer = first.join().unwrap();
    assert!(answer.ends_with("Hello, world!\n"), "{answer}");
    assert_eq!(get(ferry.addr, "/").await.text(), "Hello, world!\n");
    // The worker inherits neither the socket nor the variables.
    let worker = ferry.worker_pids()[0];
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("LISTEN_FDS"));
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    // Socket activation puts the listener on fd 3 of the master.
    let listener = std::fs::read_link(format!("/proc/{}/fd/3", ferry.pid())).unwrap();
    assert!(listener.to_string_lossy().starts_with("socket:"));
    assert!(
        !fds.contains(&listener),
        "the worker holds the listener: {fds:?}"
    );
    drop(ferry);

    // LISTEN_PID naming another process: its LISTEN_FDS are not ours.
    let ferry = Ferry::builder(&["--workers", "1"], &[&testbed()])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .start();
    assert!(
        ferry
            .log
            .text()
            .contains("LISTEN_PID is 1, not this process"),
        "{}",
        ferry.log.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_as_the_user_asked_and_the_master_stays_root() {
    if !is_root() {
        eprintln!("skipped: dropping privileges needs the tests to run as root (CI does)");
        return;
    }
    let dir = fresh_dir("privilege");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("app.sock");
    let spec = format!("unix:{}", sock.display());
    let ferry = Ferry::testbed(&[
        "--workers",
        "2",
        "--user",
        "nobody",
        "--umask",
        "027",
        "--chdir",
        "/tmp",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &spec,
    ]);
    let nobody = nix_like_uid("nobody");
    for _ in 0..4 {
        let me = get(ferry.addr, "/whoami").await.text();
        let uids = field(&me, "uid");
        assert!(uids.split(' ').all(|u| u == nobody.to_string()), "{me}");
        assert_eq!(
            field(&me, "groups"),
            "",
            "supplementary groups dropped: {me}"
        );
        assert_eq!(field(&me, "umask"), "0027");
        assert_eq!(field(&me, "cwd"), "/tmp");
        assert_eq!(field(&me, "home"), "/nonexistent");
        assert_eq!(field(&me, "ppid"), ferry.pid().to_string());
    }
    let master = std::fs::read_to_string(format!("/proc/{}/status", ferry.pid())).unwrap();
    assert!(
        master.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "{master}"
    );
    // The socket file belongs to the workers' user, as PHP-FPM's listen.owner.
    assert_eq!(std::fs::metadata(&sock).unwrap().uid(), nobody);
    drop(ferry);

    let (status, log) =
        Ferry::builder(&["--user", "no-such-user-here"], &[&testbed()]).run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("--user no-such-user-here: no such user"),
        "{log}"
    );
    let (status, log) = Ferry::builder(&["--user", "root"], &[&testbed()]).run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("--allow-root-workers"), "{log}");
}

/// A user's uid, from /etc/passwd.
fn nix_like_uid(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name).then(|| f[2].parse().unwrap())
        })
        .expect("the user exists")
}
