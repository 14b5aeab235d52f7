//! SIGTERM, SIGINT and SIGUSR1 (memcached's graceful stop for `-e`) become
//! an orderly shutdown: the signals are blocked in
//! every thread and one thread waits for them synchronously (no async-signal
//! handler code at all).

use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

use super::Shared;
use crate::error::{Context, Result};

/// Block SIGTERM/SIGINT/SIGUSR1 in this thread (and so in every thread spawned after)
/// and start the thread that turns them into `Shared::request_shutdown`.
/// Call before starting workers.
pub fn install_shutdown_signals(shared: Arc<Shared>) -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGUSR1);
    set.thread_block().context("blocking SIGTERM/SIGINT/SIGUSR1")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            match set.wait() {
                Ok(sig) => {
                    if shared.rt.verbosity() > 0 {
                        crate::log_info!("{sig} received, shutting down");
                    }
                    shared.request_shutdown();
                }
                Err(_) => continue,
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
