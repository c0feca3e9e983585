//! The deployment examples in `deploy/`, run as written (only ports, folders and
//! binary paths changed): the Kubernetes container's command and probes, the
//! systemd units through socket activation, and two ferry instances behind a real
//! nginx that each stop and restart in turn under load with no request failing.
//! `FERRY_FLEET_ROUNDS` sets how many times each instance restarts (`bench/fleet.sh`
//! runs the long form).

mod harness;

use harness::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example's binaries, as built here.
fn local(arg: &str) -> String {
    match arg {
        "/usr/local/bin/ferry-testbed" => testbed(),
        other => other.to_owned(),
    }
}

/// The value after `--flag` in an argument list, as seconds.
fn seconds_of(args: &[String], flag: &str) -> u64 {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag}"));
    humantime_secs(&args[at + 1])
}

fn humantime_secs(s: &str) -> u64 {
    s.trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("`{s}` in whole seconds"))
}

/// The Kubernetes container's `command:` list.
fn container_command(yaml: &str) -> Vec<String> {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "command:").skip(1);
    let mut out = Vec::new();
    for l in lines.by_ref() {
        let Some(item) = l.trim().strip_prefix("- ") else {
            break;
        };
        out.push(item.trim_matches('"').to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_example_serves_its_probes_and_fits_its_grace_period() {
    let yaml = deploy("kubernetes/ferry.yaml");
    let command = container_command(&yaml);
    assert_eq!(command[0], "/usr/local/bin/ferry");
    let dash = command
        .iter()
        .position(|a| a == "--")
        .expect("a worker command");
    let mut args: Vec<String> = command[1..dash].to_vec();
    // Loopback and free ports here; the rest as written.
    for a in &mut args {
        if a == "0.0.0.0:8080" || a == "0.0.0.0:9090" {
            *a = "127.0.0.1:0".into();
        }
    }
    let worker: Vec<String> = command[dash + 1..].iter().map(|a| local(a)).collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let worker_refs: Vec<&str> = worker.iter().map(String::as_str).collect();
    let ferry = Ferry::builder(&arg_refs, &worker_refs).start();
    let admin = ferry.admin_addr();

    let probe = |kind: &str| {
        let block: Vec<&str> = yaml
            .lines()
            .skip_while(|l| l.trim() != format!("{kind}:"))
            .take(5)
            .collect();
        let path = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("path: "))
            .unwrap()
            .to_owned();
        let port = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("port: "))
            .unwrap()
            .to_owned();
        (path, port)
    };
    for kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let (path, port) = probe(kind);
        assert_eq!(port, "admin", "{kind} probes the admin port");
        assert_eq!(
            get(admin, &path).await.status,
            StatusCode::OK,
            "{kind} {path}"
        );
    }
    assert!(yaml.contains("name: admin\n              containerPort: 9090"));
    assert!(yaml.contains("name: http\n              containerPort: 8080"));

    // The grace period covers the lame duck and the graceful stop together.
    let grace: u64 = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .unwrap()
        .parse()
        .unwrap();
    let (drain, graceful) = (
        seconds_of(&args, "--drain-delay"),
        seconds_of(&args, "--graceful-timeout"),
    );
    assert!(grace > drain + graceful, "{grace} <= {drain} + {graceful}");

    // SIGTERM, as the kubelet sends it: unready at once, still serving.
    ferry.signal(libc::SIGTERM);
    let (ready, _) = probe("readinessProbe");
    let deadline = Instant::now() + WAIT;
    while get(admin, &ready).await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(ferry.addr, "/").await.text(), "Hello, world!\n");
    assert_eq!(
        get(admin, &probe("livenessProbe").0).await.status,
        StatusCode::OK
    );
}

/// A unit file's `Key=` values (continuation lines joined).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_units_run_through_socket_activation() {
    if std::process::Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-socket-activate is not installed (apt-get install systemd)");
        return;
    }
    let (socket, service) = (
        deploy("systemd/ferry.socket"),
        deploy("systemd/ferry.service"),
    );
    let dir = fresh_dir("systemd-units");
    let port = free_port();
    let mut wrapper = vec!["systemd-socket-activate".to_owned()];
    let mut unix = None;
    for listen in unit_values(&socket, "ListenStream") {
        let listen = match listen.strip_prefix("/run/ferry/") {
            Some(name) => {
                let at = dir.join(name);
                unix = Some(at.clone());
                at.to_string_lossy().into_owned()
            }
            None => {
                assert_eq!(listen, "127.0.0.1:8080");
                format!("127.0.0.1:{port}")
            }
        };
        wrapper.extend(["-l".to_owned(), listen]);
    }
    let unix = unix.expect("the example has a Unix socket");
    let exec = unit_values(&service, "ExecStart").remove(0);
    let words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[0], "/usr/local/bin/ferry");
    let dash = words.iter().position(|a| a == "--").unwrap();
    let mut args: Vec<String> = words[1..dash].to_vec();
    let root = unsafe { libc::geteuid() } == 0;
    for (i, a) in args.clone().iter().enumerate() {
        if a.starts_with("/var/log/ferry/") {
            args[i] = dir.join("access.log").to_string_lossy().into_owned();
        }
        // Without root there is no one to drop to.
        if !root && (a == "--user" || a == "--group") {
            args[i] = String::new();
            args[i + 1] = String::new();
        }
    }
    args.retain(|a| !a.is_empty());
    assert!(
        !args.iter().any(|a| a == "--listen"),
        "the sockets come from systemd"
    );
    let (drain, graceful) = (
        seconds_of(&args, "--drain-delay"),
        seconds_of(&args, "--graceful-timeout"),
    );
    let stop = humantime_secs(&unit_values(&service, "TimeoutStopSec")[0]);
    assert!(
        stop > drain + graceful,
        "TimeoutStopSec={stop}s cuts a drain short"
    );
    assert_eq!(unit_values(&service, "Type"), ["notify"]);

    let worker: Vec<String> = words[dash + 1..].iter().map(|a| local(a)).collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let worker_refs: Vec<&str> = worker.iter().map(String::as_str).collect();
    let wrapper_refs: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    // systemd-socket-activate starts ferry at the first connection.
    let first = std::thread::spawn(move || {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                return s;
            }
            assert!(Instant::now() < deadline, "never listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let ferry = Ferry::builder(&arg_refs, &worker_refs)
        .wrapper(&wrapper_refs)
        .no_listen()
        .start();
    drop(first.join().unwrap());
    assert_eq!(ferry.addr.port(), port);
    assert!(
        ferry
            .log
            .text()
            .contains(&format!("and unix:{}", unix.display())),
        "{}",
        ferry.log.text()
    );
    assert_eq!(get(ferry.addr, "/").await.text(), "Hello, world!\n");
    let answer = get_unix(&unix, "/whoami");
    assert!(answer.contains("peer=unix"), "{answer}");
    if root {
        let uid = std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("www-data:"))
            .map(|l| l.split(':').nth(2).unwrap().to_owned())
            .expect("www-data exists");
        assert!(answer.contains(&format!("uid={uid} ")), "{answer}");
    }
}

/// nginx, from a main configuration around `deploy/nginx/ferry.conf`.
struct Nginx {
    child: std::process::Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Its own process group: the master and its workers go together (a killed
        // nginx master leaves its workers running).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// One instance of the example's pair: where it listens.
fn instance(at: &str) -> Ferry {
    // A loopback port first, for the harness to find it ready.
    let args = [
        "--workers",
        "2",
        "--drain-delay",
        "1s",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        at,
    ];
    Ferry::builder(&args, &[&testbed()]).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_nginx_restart_in_turn_with_nothing_failing() {
    let Ok(nginx_bin) = which("nginx") else {
        eprintln!(
            "skipped: nginx is not installed (test.sh installs it with apt-get where it can)"
        );
        return;
    };
    let rounds: usize = std::env::var("FERRY_FLEET_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let dir = fresh_dir("fleet");
    let (front, b_port) = (free_port(), free_port());
    let sock = dir.join("a.sock");
    let a_at = format!("unix:{}", sock.display());
    let b_at = format!("127.0.0.1:{b_port}");
    let site = deploy("nginx/ferry.conf")
        .replace("/run/ferry/", &format!("{}/", dir.display()))
        .replace("127.0.0.1:8081", &b_at)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{front}"));
    std::fs::write(dir.join("ferry.conf"), site).unwrap();
    let d = dir.display();
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "{user}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             include {d}/ferry.conf; }}\n"
        ),
    )
    .unwrap();
    let mut a = instance(&a_at);
    let mut b = instance(&b_at);
    let nginx = Nginx {
        child: std::process::Command::new(nginx_bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start nginx"),
    };
    let addr: SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    // Ready when nginx accepts.
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx never listened; see {d}/error.log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                let mut conn = Conn::open(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    match conn
                        .try_send(http::Request::get("/").body(Default::default()).unwrap())
                        .await
                    {
                        Ok(r) if r.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{} {}", r.status, r.text()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(e.to_string());
                            conn = Conn::open(addr).await;
                        }
                    }
                }
                errors
            })
        })
        .collect();
    let served = |n: u64| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            let deadline = Instant::now() + WAIT;
            while ok.load(Ordering::Relaxed) < target {
                assert!(Instant::now() < deadline, "the load through nginx stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    served(200).await;
    for _ in 0..rounds {
        for (which, at) in [(0, &a_at), (1, &b_at)] {
            let f = if which == 0 { &mut a } else { &mut b };
            f.signal(libc::SIGTERM);
            assert!(
                f.wait_exit(WAIT).is_some_and(|s| s.success()),
                "{}",
                f.log.text()
            );
            // The other one carries everything meanwhile.
            served(200).await;
            *f = instance(at);
            served(200).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for c in clients {
        errors.extend(c.await.unwrap());
    }
    eprintln!(
        "{} answered through nginx over {rounds} round(s)",
        ok.load(Ordering::Relaxed)
    );
    assert!(
        errors.is_empty(),
        "{} failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    drop(nginx);
}

fn which(program: &str) -> Result<PathBuf, ()> {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(())
}
