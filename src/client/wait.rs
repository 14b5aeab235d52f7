//! Waiting for a completion: spin on the CQ for [`ClientOptions::spin`], then
//! block on its completion channel until the deadline. Used by the UD and RC
//! transports alike.
//!
//! The spin is bounded in time, not in steps, and polls the CQ on every
//! iteration: `crossbeam_utils::Backoff` was considered and not used, because
//! its budget is a step count (not the `spin` duration a caller sets) and its
//! growing pauses between polls would add microseconds to noticing a reply
//! that is itself only microseconds away.
//!
//! [`ClientOptions::spin`]: super::ClientOptions::spin

use std::time::Instant;

use crate::error::Result;
use crate::rdma::{CompletionQueue, Wc};

/// Completions into the front of `wcs`: polls until `spin_until`, then blocks
/// on `cq`'s channel; 0 once `deadline` passed with none.
pub(super) fn next_completions(
    cq: &CompletionQueue,
    wcs: &mut [Wc],
    spin_until: Instant,
    deadline: Instant,
) -> Result<usize> {
    loop {
        let n = cq.poll(wcs)?;
        if n > 0 {
            return Ok(n);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(0);
        }
        if now < spin_until {
            std::hint::spin_loop();
            continue;
        }
        return cq.wait(wcs, Some(deadline - now));
    }
}
