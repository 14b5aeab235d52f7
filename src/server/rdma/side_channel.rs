//! The side channel's server end (the exchange is in
//! [`crate::rdma_wire::handshake`]): a thread accepting TCP connections, a
//! thread per connection. `U` gets every worker's UD endpoint; `R` gets an RC
//! QP built on one worker's CQs (round robin), handed to that worker, and held
//! open until the client hangs up.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::rc::{Admission, Inbox, RcBudget, RcConn};
use crate::error::{Context as _, Result};
use crate::rdma::connect::{barrier, exchange};
use crate::rdma::{CompletionQueue, PreparedRcMessenger, ProtectionDomain, RcEndpointInfo, UdEndpointInfo};
use crate::rdma_wire::handshake::{encode_ud_endpoints, read_greeting, write_capacity, Command, RC_READY};

/// Bound on every side-channel read and write during the handshake.
const SIDE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the side channel needs of one worker.
#[derive(Clone)]
pub(super) struct WorkerHandle {
    pub(super) ud: UdEndpointInfo,
    /// The worker's CQs: its RC QPs complete there, so the worker polls them.
    pub(super) scq: CompletionQueue,
    pub(super) rcq: CompletionQueue,
    pub(super) inbox: Arc<Inbox>,
}

/// Start the accepting thread on `listener` (bound by the caller, so a bad
/// address was an error at start).
pub(super) fn spawn(
    listener: TcpListener,
    workers: Vec<WorkerHandle>,
    pd: ProtectionDomain,
    budget: Arc<RcBudget>,
    verbose: bool,
) -> Result<()> {
    let workers = Arc::new(workers);
    let next = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("rdma-side-channel".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(s) = conn else { continue };
                let (workers, pd, next, budget) = (workers.clone(), pd.clone(), next.clone(), budget.clone());
                // Control path: a thread per side-channel connection.
                let _ = std::thread::Builder::new().name("rdma-client".into()).spawn(move || {
                    if let Err(e) = serve(s, &workers, &pd, &budget, &next) {
                        if verbose {
                            crate::log_warn!("rdma side channel: {e}");
                        }
                    }
                });
            }
        })
        .context("starting the rdma side-channel thread")?;
    Ok(())
}

fn serve(
    mut s: TcpStream,
    workers: &[WorkerHandle],
    pd: &ProtectionDomain,
    budget: &Arc<RcBudget>,
    next: &AtomicUsize,
) -> Result<()> {
    s.set_read_timeout(Some(SIDE_TIMEOUT))?;
    s.set_write_timeout(Some(SIDE_TIMEOUT))?;
    let _ = s.set_nodelay(true);
    match read_greeting(&mut s)? {
        Command::Ud => {
            let eps: Vec<UdEndpointInfo> = workers.iter().map(|w| w.ud).collect();
            std::io::Write::write_all(&mut s, &encode_ud_endpoints(&eps)).context("sending the UD endpoints")?;
            Ok(())
        }
        Command::Rc => {
            let w = &workers[next.fetch_add(1, Ordering::Relaxed) % workers.len()];
            // Within the RC buffer budget, or refused (capacity 0) holding nothing.
            let admission = match budget.admit(&w.inbox) {
                Ok(a) => a,
                Err(why) => {
                    write_capacity(&mut s, None)?;
                    crate::bail!("refusing an RC connection: {why}");
                }
            };
            serve_rc(&mut s, w, pd, budget.capacity(), admission)
        }
    }
}

/// One RC client: set the QP up, hand it to its worker, hold the side
/// channel until the client closes it.
fn serve_rc(
    s: &mut TcpStream,
    w: &WorkerHandle,
    pd: &ProtectionDomain,
    capacity: usize,
    admission: Admission,
) -> Result<()> {
    write_capacity(s, Some(capacity))?;
    let prepared = PreparedRcMessenger::new(pd, &w.scq, &w.rcq, capacity)?;
    let qp = prepared.connect_with(|qp| {
        let remote: RcEndpointInfo = exchange(s, &qp.endpoint())?;
        qp.connect(&remote)
    })?;
    let dead = Arc::new(AtomicBool::new(false));
    // Hand the QP to its worker before the barrier: the client's first
    // SEND may come right after, and the worker must know the QPN.
    w.inbox.hand_over(RcConn { qp, dead: dead.clone(), _admission: admission });
    let r = barrier(s, RC_READY);
    if r.is_ok() {
        // Block until the client hangs up (EOF, error): then the QP goes.
        s.set_read_timeout(None)?;
        let mut b = [0u8; 64];
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    }
    dead.store(true, Ordering::Release);
    w.inbox.changed();
    r
}
