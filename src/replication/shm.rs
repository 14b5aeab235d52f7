//! The `shm` transport: a replica on the same host maps its primary's region
//! file read-only (and only the progress-slot page read-write). It serves
//! hosts without RDMA and zero-downtime restarts: start the new binary as a
//! replica, promote it, stop the old one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

use super::transport::{NextRead, Progress, Transport};
use crate::error::{Context, Error, Result};
use crate::log::control::{self, ControlSnapshot, MAX_REPLICAS, SLOT_LEN};
use crate::memory::region::Region;

/// A progress slot unreported for this long may be taken by a new replica
/// (its holder died without releasing it).
pub const SLOT_STALE_US: u64 = 10_000_000;

/// Where `shm://NAME` lives: a hugetlbfs mount when one is available and huge
/// pages are wanted, else /dev/shm.
pub fn region_path(name: &str, prefer_huge: bool) -> PathBuf {
    if prefer_huge {
        for dir in ["/dev/hugepages", "/mnt/huge"] {
            let d = Path::new(dir);
            if d.is_dir() && is_hugetlbfs(d) {
                return d.join(format!("logmemcached-{name}"));
            }
        }
    }
    PathBuf::from(format!("/dev/shm/logmemcached-{name}"))
}

fn is_hugetlbfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).map(|s| s.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC).unwrap_or(false)
}

/// Find an existing region file for `name` (hugetlbfs first, then /dev/shm).
pub fn find_region(name: &str) -> Option<PathBuf> {
    [region_path(name, true), region_path(name, false)].into_iter().find(|p| p.exists())
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A name must be a plain file name: it becomes part of a path.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub struct ShmTransport {
    name: String,
    region: Region,
    /// The slot page, mapped read-write (the only writable part).
    slots: Region,
    slot: usize,
    staging: Vec<u8>,
    release_on_drop: bool,
}

impl ShmTransport {
    /// Map `shm://name` and claim a progress slot with `id`.
    pub fn connect(name: &str, id: u64) -> Result<ShmTransport> {
        let path = find_region(name).ok_or_else(|| {
            Error::new(format!(
                "no primary region for shm://{name} (is a primary running with --replication-listen shm://{name}?)"
            ))
        })?;
        let region = Region::open_readonly(&path)?;
        let slots = Region::open_range_rw(&path, control::OFF_SLOTS, MAX_REPLICAS * SLOT_LEN)
            .context("mapping the progress slots")?;
        let slot = claim_slot_at(&slots, 0, id)
            .ok_or_else(|| Error::new(format!("all {MAX_REPLICAS} progress slots of shm://{name} are taken")))?;
        Ok(ShmTransport { name: name.to_string(), region, slots, slot, staging: Vec::new(), release_on_drop: true })
    }
}

/// Take a free (or stale) slot by compare-and-swap on its id word; the slot
/// area starts at `area` in `region` (0 for a mapping of the slot page alone).
pub fn claim_slot_at(slots: &Region, area: usize, id: u64) -> Option<usize> {
    let now = now_us();
    for i in 0..MAX_REPLICAS {
        let base = area + i * SLOT_LEN;
        let holder = slots.atomic_u64(base + control::SLOT_REPLICA_ID);
        let cur = holder.load(Ordering::Acquire);
        let updated = slots.atomic_u64(base + control::SLOT_UPDATED_US).load(Ordering::Acquire);
        let free = cur == 0 || cur == id || now.saturating_sub(updated) > SLOT_STALE_US;
        if free && holder.compare_exchange(cur, id, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            slots.atomic_u64(base + control::SLOT_APPLIED).store(0, Ordering::Release);
            slots.atomic_u64(base + control::SLOT_UPDATED_US).store(now, Ordering::Release);
            return Some(i);
        }
    }
    None
}

impl Transport for ShmTransport {
    fn control(&mut self) -> Result<ControlSnapshot> {
        // The fields are atomics in shared memory: load each; Acquire on head
        // orders the record bytes we read next after their publication.
        let a = |off| self.region.atomic_u64(off).load(Ordering::Acquire);
        Ok(ControlSnapshot {
            magic: a(control::OFF_MAGIC),
            version: a(control::OFF_VERSION),
            capacity: a(control::OFF_CAPACITY),
            log_offset: a(control::OFF_LOG_OFFSET),
            tail: a(control::OFF_TAIL),
            head: a(control::OFF_HEAD),
            epoch: a(control::OFF_EPOCH),
            heartbeat_us: a(control::OFF_HEARTBEAT),
            max_cas: a(control::OFF_MAX_CAS),
            epoch_start: a(control::OFF_EPOCH_START),
            incarnation: a(control::OFF_INCARNATION),
        })
    }

    fn read(&mut self, off: usize, len: usize) -> Result<&[u8]> {
        if off.checked_add(len).is_none_or(|end| end > self.region.len()) {
            crate::bail!("read of {len} bytes at {off} is outside the primary's region");
        }
        self.staging.resize(len, 0);
        // The primary writes its log while we copy (its cleaner may overwrite
        // what we read): atomic loads keep that defined; validation catches tears.
        self.region.read_racy(off, &mut self.staging[..len]);
        Ok(&self.staging[..len])
    }

    fn read_ahead_checked(&mut self, off: usize, len: usize, _next: NextRead<'_>) -> Result<(&[u8], Option<u64>)> {
        self.read(off, len)?;
        // Pairs with the fence in the primary's `LogWriter::publish_tail`:
        // if we copied any byte the cleaner wrote after freeing space, this
        // load sees that tail (or a later one) and the caller drops the copy.
        fence(Ordering::Acquire);
        let tail = self.region.atomic_u64(control::OFF_TAIL).load(Ordering::Relaxed);
        Ok((&self.staging[..len], Some(tail)))
    }

    fn report(&mut self, p: &Progress) -> Result<()> {
        let base = self.slot * SLOT_LEN;
        let w = |o, v| self.slots.atomic_u64(base + o).store(v, Ordering::Release);
        w(control::SLOT_EPOCH, p.epoch);
        w(control::SLOT_CAUGHT_UP_US, p.caught_up_us);
        w(control::SLOT_UPDATED_US, now_us());
        w(control::SLOT_APPLIED, p.applied);
        Ok(())
    }

    fn slot(&self) -> usize {
        self.slot
    }

    fn keep_slot(&mut self) {
        self.release_on_drop = false;
    }

    fn describe(&self) -> String {
        format!("shm://{}", self.name)
    }
}

impl Drop for ShmTransport {
    fn drop(&mut self) {
        // Release the slot so the primary stops reporting us.
        if !self.release_on_drop {
            return;
        }
        let base = self.slot * SLOT_LEN;
        self.slots.atomic_u64(base + control::SLOT_REPLICA_ID).store(0, Ordering::Release);
    }
}
