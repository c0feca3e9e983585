//! `ferry`: the master process. Parses options, sets up logging and the runtime,
//! and hands over to `ferry::master::run`.

use clap::Parser;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

/// Log lines that may wait for a slow stderr before new ones are dropped.
const LOG_QUEUE_LINES: usize = 16 * 1024;

fn main() -> ExitCode {
    // `ferry ctl ...` talks to a running master; it starts nothing.
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("ctl") {
        return ferry::ctl::main(args);
    }
    let config = ferry::config::Config::parse();
    // The log goes through a bounded queue to a thread of its own: when stderr is slow
    // (a full pipe, a stuck terminal) lines are dropped and counted (`/status`), and
    // the runtime's thread never waits on it. The guard flushes what is queued at exit.
    let (log, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("ferry-log")
        .finish(std::io::stderr());
    let dropped = log.error_counter();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(log)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (`ferry ... 2>&1 | head`) must not panic whichever task logs
        // next: the default reports a failed write with `eprintln!`, which panics.
        .log_internal_errors(false)
        .init();
    let threads = config.threads.unwrap_or(1) as usize;
    let built = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(ferry::master::run(config, Some(dropped)));
    // Workers still running are killed as their handles drop with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}
