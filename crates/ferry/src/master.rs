//! The master's top level: bind, start the pool's workers, fail loudly if they
//! cannot start, then serve until told to stop.

use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::pool::Pool;
use crate::spawn::Spawner;

/// What every part of the master shares.
pub struct Ctx {
    pub config: Config,
    pub command: Arc<Vec<String>>,
    pub pool: Arc<Pool>,
    pub spawner: Spawner,
}

pub async fn run(config: Config) -> ExitCode {
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferry: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let workers = config.workers();
    let ctx = Arc::new(Ctx {
        command: Arc::new(config.command.clone()),
        pool: Pool::new(config.balance, config.queue_size, config.queue_timeout),
        spawner: Spawner::start(tokio::runtime::Handle::current()),
        config,
    });

    let mut boots = Vec::with_capacity(workers);
    for index in 0..workers {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(crate::worker::run_slot(ctx.clone(), index, tx));
        boots.push(rx);
    }
    for boot in boots {
        match boot.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!(
                    "ferry: worker command `{}` failed to start: {e}",
                    ctx.command.join(" ")
                );
                return ExitCode::FAILURE;
            }
            Err(_) => {
                eprintln!(
                    "ferry: worker command `{}` failed to start",
                    ctx.command.join(" ")
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let addr = listener
        .local_addr()
        .map_or_else(|_| ctx.config.listen.to_string(), |a| a.to_string());
    tracing::info!(
        "ferry listening on http://{addr} with {workers} worker(s): {}",
        ctx.command.join(" ")
    );

    tokio::select! {
        _ = crate::front::accept_loop(listener, ctx.clone()) => ExitCode::FAILURE,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            ExitCode::SUCCESS
        }
    }
}
