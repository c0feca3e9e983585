//! The floor any inter-process hop pays on this machine: a one-byte ping-pong over a
//! Unix socketpair between two processes, measured in the same run as the servers.
//! A request through ferry crosses the channel once each way (one round trip), so at
//! c=1 ferry's added latency over `direct` is compared with this round trip.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Round trips timed, after as many again to warm up.
const ROUNDS: usize = 20_000;

/// The median round trip in µs, both processes on CPU 1 when `pinned` (as ferry's
/// master and workers are in pinned mode), or unpinned.
pub fn socketpair_rtt_us(pinned: bool) -> Result<f64, String> {
    let (mut ours, mut theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
    if pinned {
        pin_to_cpu1()?;
    }
    // The child only reads and writes one byte until EOF: system calls, nothing that
    // a fork of a multi-threaded process must not do.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if pid == 0 {
        drop(ours);
        let mut b = [0u8; 1];
        while let Ok(1) = theirs.read(&mut b) {
            if theirs.write_all(&b).is_err() {
                break;
            }
        }
        unsafe { libc::_exit(0) };
    }
    drop(theirs);
    let mut times = Vec::with_capacity(ROUNDS);
    let mut b = [7u8; 1];
    let mut failed = None;
    for i in 0..2 * ROUNDS {
        let t = Instant::now();
        if let Err(e) = ours.write_all(&b).and_then(|()| ours.read_exact(&mut b)) {
            failed = Some(e.to_string());
            break;
        }
        if i >= ROUNDS {
            times.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
    }
    drop(ours);
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    if pinned {
        unpin();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    crate::report::median(times).ok_or_else(|| "no round trip".into())
}

fn pin_to_cpu1() -> Result<(), String> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(1, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

fn unpin() {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_round_trip_is_measured() {
        let rtt = super::socketpair_rtt_us(false).unwrap();
        assert!(rtt > 0.0 && rtt < 10_000.0, "{rtt}");
    }
}
