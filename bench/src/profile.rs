//! Where the CPU time goes: a `perf record` of CPU 1 (where every server process
//! runs in pinned mode) while wrk drives hello at c=64, each sample put in one bucket
//! by who took it (the master or a worker) and what it was doing, then scaled to µs
//! per request by the tree's schedstat CPU over the same run (so perf's own window
//! and overhead do not skew the figures: only the shares come from perf).
//!
//! This module parses and classifies (pure, tested below); main.rs runs perf and wrk.

use std::collections::HashMap;

/// Which process of the server tree a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// ferry's master, or the one process of `direct`.
    Master,
    Worker,
}

/// What a sample was doing: the kernel by the transport on its stack, user space
/// by the crate of the function it landed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    KernelTcp,
    KernelUnix,
    KernelWake,
    KernelOther,
    UserHttp,
    UserRuntime,
    UserFerry,
    UserAlloc,
    UserCopy,
    UserOther,
}

impl Bucket {
    pub const ALL: [Bucket; 10] = [
        Bucket::KernelTcp,
        Bucket::KernelUnix,
        Bucket::KernelWake,
        Bucket::KernelOther,
        Bucket::UserHttp,
        Bucket::UserRuntime,
        Bucket::UserFerry,
        Bucket::UserAlloc,
        Bucket::UserCopy,
        Bucket::UserOther,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::KernelTcp => "kernel: TCP to the client (loopback, both directions)",
            Bucket::KernelUnix => "kernel: Unix socket (ferry's channel)",
            Bucket::KernelWake => "kernel: waiting and waking (epoll, futex, scheduler)",
            Bucket::KernelOther => "kernel: other (syscall entry, timers, memory)",
            Bucket::UserHttp => "user: HTTP (hyper, httparse, http)",
            Bucket::UserRuntime => "user: tokio, mio, futures",
            Bucket::UserFerry => "user: ferry, its codec (bincode, serde), the SDK",
            Bucket::UserAlloc => "user: allocator",
            Bucket::UserCopy => "user: memcpy/memmove",
            Bucket::UserOther => "user: other (std, bytes, libc)",
        }
    }

    pub fn kernel(self) -> bool {
        matches!(
            self,
            Bucket::KernelTcp | Bucket::KernelUnix | Bucket::KernelWake | Bucket::KernelOther
        )
    }
}

/// A kernel sample by its stack (innermost first): the transport it is on, else
/// whether it is sleeping or waking, else other.
pub fn kernel_bucket(stack: &[&str]) -> Bucket {
    let has = |f: &dyn Fn(&str) -> bool| stack.iter().any(|s| f(s));
    if has(&|s| s.starts_with("unix_")) {
        Bucket::KernelUnix
    } else if has(&|s| s.starts_with("tcp_") || s.starts_with("inet_") || s.starts_with("ip_")) {
        Bucket::KernelTcp
    } else if has(&|s| {
        s.contains("epoll")
            || s.contains("futex")
            || s.contains("schedule")
            || s.contains("switch_to")
            || s.contains("wake_up")
    }) {
        Bucket::KernelWake
    } else {
        Bucket::KernelOther
    }
}

/// A user-space sample by the function it landed in.
pub fn user_bucket(sym: &str) -> Bucket {
    let s = sym.trim_start_matches(['<', '&']);
    let starts = |p: &[&str]| p.iter().any(|p| s.starts_with(p));
    if starts(&["hyper", "httparse", "http::", "h2::"]) {
        Bucket::UserHttp
    } else if starts(&["tokio", "mio::", "futures", "parking_lot", "lock_api"]) {
        Bucket::UserRuntime
    } else if starts(&["ferry", "bincode", "serde"]) {
        Bucket::UserFerry
    } else if s.contains("memcpy") || s.contains("memmove") || s.contains("memset") {
        Bucket::UserCopy
    } else if starts(&[
        "mi_",
        "_mi_",
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
    ]) || s.contains("malloc")
        || s == "free"
        || s == "cfree"
    {
        Bucket::UserAlloc
    } else {
        Bucket::UserOther
    }
}

/// perf samples of the server tree, counted by (role, bucket), in sampled ns.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub by: HashMap<(Role, Bucket), u64>,
    pub total: u64,
}

impl Counts {
    pub fn get(&self, r: Role, b: Bucket) -> u64 {
        self.by.get(&(r, b)).copied().unwrap_or(0)
    }
}

/// Counts the output of `perf script -F pid,period,ip,sym` (kernel call chains,
/// innermost first); samples from pids `role` does not know (the idle task, other
/// processes that ran on the CPU) are left out.
pub fn count(script: &str, role: impl Fn(i32) -> Option<Role>) -> Counts {
    let mut c = Counts::default();
    for sample in script.split("\n\n") {
        let mut lines = sample.lines().filter(|l| !l.trim().is_empty());
        let Some(head) = lines.next() else { continue };
        let mut f = head.split_whitespace();
        let (Some(pid), Some(period)) = (
            f.next().and_then(|p| p.parse::<i32>().ok()),
            f.next().and_then(|p| p.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let Some(r) = role(pid) else { continue };
        // Each frame: "ADDRESS SYMBOL"; kernel addresses have the top bits set.
        let frames: Vec<(bool, &str)> = lines
            .filter_map(|l| {
                let (addr, sym) = l.trim().split_once(' ')?;
                let kernel = addr.len() == 16 && addr.starts_with("ffff");
                Some((kernel, sym.trim()))
            })
            .collect();
        let Some(&(kernel, leaf)) = frames.first() else {
            continue;
        };
        let b = if kernel {
            let stack: Vec<&str> = frames.iter().filter(|f| f.0).map(|f| f.1).collect();
            kernel_bucket(&stack)
        } else {
            user_bucket(leaf)
        };
        *c.by.entry((r, b)).or_default() += period;
        c.total += period;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_samples_go_by_the_transport_on_their_stack() {
        assert_eq!(
            kernel_bucket(&["_copy_to_iter", "tcp_recvmsg_locked", "sock_recvmsg"]),
            Bucket::KernelTcp
        );
        // A channel write that wakes the reader is the channel's cost.
        assert_eq!(
            kernel_bucket(&["try_to_wake_up", "sock_def_readable", "unix_stream_sendmsg"]),
            Bucket::KernelUnix
        );
        assert_eq!(
            kernel_bucket(&["finish_task_switch", "schedule", "do_epoll_wait"]),
            Bucket::KernelWake
        );
        assert_eq!(
            kernel_bucket(&["clear_page_erms", "do_anonymous_page"]),
            Bucket::KernelOther
        );
    }

    #[test]
    fn user_samples_go_by_crate() {
        let cases = [
            ("hyper::proto::h1::role::parse_headers", Bucket::UserHttp),
            (
                "<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse",
                Bucket::UserHttp,
            ),
            ("httparse::parse_headers_iter_uninit", Bucket::UserHttp),
            ("tokio::runtime::task::raw::poll", Bucket::UserRuntime),
            (
                "<&mio::net::tcp::stream::TcpStream as std::io::Write>::write",
                Bucket::UserRuntime,
            ),
            ("ferry::proxy::answer::{{closure}}", Bucket::UserFerry),
            (
                "<ferry_protocol::wire::Append as bincode::enc::write::Writer>::write",
                Bucket::UserFerry,
            ),
            ("_mi_page_malloc_zero", Bucket::UserAlloc),
            ("mi_free", Bucket::UserAlloc),
            ("__memmove_avx512_unaligned_erms", Bucket::UserCopy),
            ("__GI___writev", Bucket::UserOther),
            (
                "bytes::bytes_mut::BytesMut::reserve_inner",
                Bucket::UserOther,
            ),
            ("[unknown]", Bucket::UserOther),
        ];
        for (sym, want) in cases {
            assert_eq!(user_bucket(sym), want, "{sym}");
        }
    }

    #[test]
    fn perf_script_output_is_counted_by_role_and_bucket() {
        let script = "\
   100     250000 
	ffffffff81bad832 _copy_to_iter
	ffffffff820707d0 tcp_recvmsg_locked
	          10a974 __libc_recv

   101     250000 
	          46802c _mi_page_malloc_zero

   100     500000 
	          25339e hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch
	               3 [unknown]

     0     250000 
	ffffffff81000000 default_idle

   garbage line
";
        let c = count(script, |pid| match pid {
            100 => Some(Role::Master),
            101 => Some(Role::Worker),
            _ => None,
        });
        assert_eq!(c.total, 1_000_000, "the idle task and garbage are left out");
        assert_eq!(c.get(Role::Master, Bucket::KernelTcp), 250_000);
        assert_eq!(c.get(Role::Master, Bucket::UserHttp), 500_000);
        assert_eq!(c.get(Role::Worker, Bucket::UserAlloc), 250_000);
        assert_eq!(c.get(Role::Worker, Bucket::KernelTcp), 0);
    }
}
