//! The `shm` transport: a replica on the same host maps its primary's region
//! file read-only and reports its progress in a slot file of its own. It
//! serves hosts without RDMA and zero-downtime restarts: start the new
//! binary as a replica, promote it, stop the old one.
//!
//! Files, all in `/dev/shm` unless the region is on hugetlbfs:
//! * `logmemcached-NAME`: the primary's region, mode 0600 (0640 and given
//!   to a group with `--shm-group`, so replicas run by other users of that
//!   group can read it). Nobody but the primary can write it.
//! * `/dev/shm/logmemcached-NAME.slots/slot-N` (N < 64): replica progress,
//!   created by the replica (mode 0600, or 0640 with the region's group),
//!   written only by it; the primary maps each read-only and polls it. The
//!   directory is the primary's (mode 0700, or 01770 of `--shm-group`), so
//!   no other user can plant or squat a slot file.
//!
//! Trust, both ways: a replica opens a region file (without following a
//! symlink) only if it is owned by its own user or root, or by a member of
//! `--shm-group` (the file's group), and writable by its owner alone, so
//! another local user cannot plant a rogue log; the primary reads a slot
//! file only on the same terms, so a stranger's file cannot fence it or
//! count as a replica for `--sync-replicas`.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::transport::{NextRead, Progress, Transport};
use crate::error::{Context, Error, Result};
use crate::log::control::{self, ControlSnapshot, MAX_REPLICAS, SLOT_LEN};
use crate::memory::futex;
use crate::memory::region::Region;

/// A progress slot unreported for this long may be taken by a new replica
/// (its holder died without releasing it).
pub const SLOT_STALE_US: u64 = 10_000_000;

/// Bytes of a slot file (one page: what a mapping takes anyway).
pub const SLOT_FILE_LEN: usize = 4096;
/// In a slot file, after the slot's fields: the incarnation of the log the
/// replica follows (`control::OFF_INCARNATION`). Slot files outlive a
/// primary; this keeps a replica of a dead log from counting for, or
/// fencing, the next primary of the same name.
pub const SLOT_FILE_INCARNATION: usize = 40;
/// In a slot file: the replica's sleep count, odd while it sleeps on the
/// primary's doorbell (`control::OFF_DOORBELL`). A primary holding replies
/// for `--sync-replicas` rings it once per odd value it sees
/// (`SlotTable::ring_sleepers`); an awake replica costs it no system call.
pub const SLOT_FILE_SLEEP: usize = 48;

/// The longest a replica sleeps on the doorbell of a primary that rings for
/// every write that waits on it (`control::OFF_RINGS`): what is left to
/// wake it for is a write nobody waits on (bounded lag), the heartbeat, and
/// a control request lost in the race `ShmTransport::idle_wait` describes.
/// Longer than a scheduler tick (4 ms at HZ=250), so the timer is seldom the
/// CPU's next one: arming and cancelling a short one cost the replica about
/// 30 us a sleep (a timer reprogram is a VM exit), a third of its CPU time
/// under set-only `--sync-replicas 1` (perf/results/sync_replicas.md).
pub const RUNG_WAIT: Duration = Duration::from_millis(10);

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

/// The directory of `shm://NAME`'s slot files (always on /dev/shm: a
/// hugetlbfs file cannot be one page long). Mode 0700 (01770 with
/// `--shm-group`), so no one outside can put a file there.
pub fn slot_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/logmemcached-{name}.slots"))
}

/// Replica `slot`'s progress file for `shm://NAME`.
pub fn slot_path(name: &str, slot: usize) -> PathBuf {
    slot_dir(name).join(format!("slot-{slot}"))
}

/// Make (or take back) the slot directory: ours, not a symlink, mode 0700
/// or, with `group`, 01770 of that group (sticky: members cannot remove
/// each other's files; no setgid, which systemd's RestrictSUIDSGID= forbids:
/// a replica gives its file the region's group itself). A directory someone
/// else owns is refused: they could read or replace slot files.
pub fn prepare_slot_dir(name: &str, group: Option<u32>) -> Result<()> {
    let dir = slot_dir(name);
    let mode = if group.is_some() { 0o1770 } else { 0o700 };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::from(e).context(format!("creating {}", dir.display()))),
    }
    let md = std::fs::symlink_metadata(&dir).with_context(|| format!("{}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !md.file_type().is_dir() || (md.uid() != me && md.uid() != 0) {
        crate::bail!("refusing {}: not a directory of ours (uid {}, we are {me}); remove it", dir.display(), md.uid());
    }
    if md.uid() == me {
        if let Some(g) = group {
            std::os::unix::fs::chown(&dir, None, Some(g))
                .with_context(|| format!("--shm-group: giving {} to group {g}", dir.display()))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", dir.display()))?;
    }
    Ok(())
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

/// `--shm-group`: a group name or number, resolved to a gid.
pub fn parse_group(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(gr)) => Ok(gr.gid.as_raw()),
        Ok(None) => crate::bail!("--shm-group: no group named {g:?}"),
        Err(e) => crate::bail!("--shm-group {g:?}: {e}"),
    }
}

/// Open the primary's region file to share it: mode 0640 and group `gid`
/// (from 0600, as the primary created it). The primary must be in the group.
pub fn share_with_group(path: &Path, gid: u32) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening region file {}", path.display()))?;
    std::os::unix::fs::fchown(&f, None, Some(gid))
        .with_context(|| format!("--shm-group: giving {} to group {gid} (are we a member?)", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o640))
        .with_context(|| format!("--shm-group: chmod 640 {}", path.display()))?;
    Ok(())
}

/// Whether a file another process made may be believed: a regular file,
/// writable by its owner only, owned by us or root, or (with `group`)
/// carrying that group, which only its members (or root) can give a file.
pub fn trusted(md: &std::fs::Metadata, group: Option<u32>) -> std::result::Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    if !md.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!("mode {:04o} lets others write it", md.mode() & 0o7777));
    }
    if md.uid() == me || md.uid() == 0 || group.is_some_and(|g| g == md.gid()) {
        return Ok(());
    }
    Err(format!("owned by uid {} (we are {me}) and not of --shm-group", md.uid()))
}

/// Open `path` read-only without following a symlink, if [`trusted`].
pub fn open_trusted(path: &Path, group: Option<u32>) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let md = f.metadata().with_context(|| format!("{}", path.display()))?;
    trusted(&md, group).map_err(|why| Error::new(format!("refusing {}: {why}", path.display())))?;
    Ok(f)
}

/// A primary with a memory file (`-e PATH`) offers that file as its
/// region: `logmemcached-NAME` is a symlink to it (absolute), made after
/// the store recovered. A replica follows that one link only if we (or
/// root, or `--shm-group`) made it, then opens the file as it opens any
/// region file (`open_region`). Returns the link's path.
pub fn link_region(name: &str, prefer_huge: bool, memory_file: &Path) -> Result<PathBuf> {
    let link = region_path(name, prefer_huge);
    let target = std::fs::canonicalize(memory_file).with_context(|| format!("{}", memory_file.display()))?;
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::from(e).context(format!("replacing region link {}", link.display()))),
    }
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {} to memory file {}", link.display(), target.display()))?;
    Ok(link)
}

/// Open the region file at `path`: the file itself, or the symlink a
/// primary with a memory file made (`link_region`), followed once.
pub fn open_region(path: &Path, group: Option<u32>) -> Result<(File, PathBuf)> {
    let md = std::fs::symlink_metadata(path).with_context(|| format!("{}", path.display()))?;
    if !md.file_type().is_symlink() {
        return Ok((open_trusted(path, group)?, path.to_path_buf()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != me && md.uid() != 0 && group.is_none_or(|g| g != md.gid()) {
        crate::bail!("refusing {}: a link owned by uid {} (we are {me})", path.display(), md.uid());
    }
    let target = std::fs::read_link(path).with_context(|| format!("reading link {}", path.display()))?;
    if !target.is_absolute() {
        crate::bail!("refusing {}: links to a relative path {}", path.display(), target.display());
    }
    Ok((open_trusted(&target, group)?, target))
}

/// Remove the primary's files for `name` at exit: the region, and the slot
/// files we would believe (replicas that still map them keep their copy).
pub fn remove_files(name: &str, region: &Path, group: Option<u32>) {
    let _ = std::fs::remove_file(region);
    for i in 0..MAX_REPLICAS {
        let p = slot_path(name, i);
        if std::fs::symlink_metadata(&p).is_ok_and(|md| trusted(&md, group).is_ok()) {
            let _ = std::fs::remove_file(p);
        }
    }
    // Only if empty: a replica of another user may still have its file there.
    let _ = std::fs::remove_dir(slot_dir(name));
}

pub struct ShmTransport {
    name: String,
    /// Shared with the control requests' waker (`Transport::waker`).
    region: Arc<Region>,
    /// Our slot file, mapped read-write (the only thing we write).
    slot_file: Region,
    slot: usize,
    staging: Vec<u8>,
    release_on_drop: bool,
    /// What we last wrote at `SLOT_FILE_SLEEP` (odd: asleep).
    sleeps: u64,
}

impl ShmTransport {
    /// Map `shm://name` and claim a progress slot with `id`.
    pub fn connect(name: &str, id: u64) -> Result<ShmTransport> {
        ShmTransport::connect_with(name, id, None)
    }

    /// As [`connect`](Self::connect); `group` (`--shm-group`) is trusted to
    /// own the region file besides our own user and root.
    pub fn connect_with(name: &str, id: u64, group: Option<u32>) -> Result<ShmTransport> {
        let path = find_region(name).ok_or_else(|| {
            Error::new(format!(
                "no primary region for shm://{name} (is a primary running with --replication-listen shm://{name}?)"
            ))
        })?;
        let (file, path) = open_region(&path, group)?;
        let md = file.metadata()?;
        let region = Arc::new(Region::map_readonly(&file, &path)?);
        // Our slot file is readable by the region's group when the region is.
        let share = (md.mode() & 0o040 != 0 && md.uid() != nix::unistd::geteuid().as_raw()).then_some(md.gid());
        // A primary made it; an in-process one (tests) may not have.
        if !slot_dir(name).exists() {
            prepare_slot_dir(name, None)?;
        }
        let (slot, slot_file) = (0..MAX_REPLICAS)
            .find_map(|i| claim_slot_file(&slot_path(name, i), id, share).map(|r| (i, r)))
            .ok_or_else(|| Error::new(format!("all {MAX_REPLICAS} progress slots of shm://{name} are taken")))?;
        Ok(ShmTransport {
            name: name.to_string(),
            region,
            slot_file,
            slot,
            staging: Vec::new(),
            release_on_drop: true,
            sleeps: 0,
        })
    }
}

/// Open (creating if need be) one slot file and claim it for `id`: `None`
/// when it is held, or not ours to write.
fn claim_slot_file(path: &Path, id: u64, share: Option<u32>) -> Option<Region> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(if share.is_some() { 0o640 } else { 0o600 })
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let md = f.metadata().ok()?;
    // Only a file of our own: another user's could be rewritten under us.
    if !md.file_type().is_file() || md.uid() != nix::unistd::geteuid().as_raw() || md.mode() & 0o022 != 0 {
        return None;
    }
    if let Some(g) = share {
        let _ = std::os::unix::fs::fchown(&f, None, Some(g));
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o640));
    }
    if (md.len() as usize) < SLOT_FILE_LEN {
        f.set_len(SLOT_FILE_LEN as u64).ok()?;
    }
    let r = Region::map_shared_rw(&f, path, SLOT_FILE_LEN).ok()?;
    claim_one(&r, 0, id, now_us()).then_some(r)
}

/// Take a free (or stale) slot by compare-and-swap on its id word; the slot
/// area starts at `area` in `region`.
pub fn claim_slot_at(slots: &Region, area: usize, id: u64) -> Option<usize> {
    let now = now_us();
    (0..MAX_REPLICAS).find(|i| claim_one(slots, area + i * SLOT_LEN, id, now))
}

/// Claim the slot at `base` for `id` if it is free, ours or stale.
fn claim_one(slots: &Region, base: usize, id: u64, now: u64) -> bool {
    let holder = slots.atomic_u64(base + control::SLOT_REPLICA_ID);
    let cur = holder.load(Ordering::Acquire);
    let updated = slots.atomic_u64(base + control::SLOT_UPDATED_US).load(Ordering::Acquire);
    let free = cur == 0 || cur == id || now.saturating_sub(updated) > SLOT_STALE_US;
    if free && holder.compare_exchange(cur, id, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        slots.atomic_u64(base + control::SLOT_APPLIED).store(0, Ordering::Release);
        slots.atomic_u64(base + control::SLOT_UPDATED_US).store(now, Ordering::Release);
        return true;
    }
    false
}

/// Give `slot` back if `id` still holds it (a replica that never finished
/// connecting must not keep it for [`SLOT_STALE_US`]).
pub fn release_slot_at(slots: &Region, area: usize, slot: usize, id: u64) {
    if slot < MAX_REPLICAS {
        let holder = slots.atomic_u64(area + slot * SLOT_LEN + control::SLOT_REPLICA_ID);
        let _ = holder.compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Transport for ShmTransport {
    fn control(&mut self) -> Result<ControlSnapshot> {
        // The fields are atomics in shared memory: load each; Acquire on head
        // orders the record bytes we read next after their publication.
        Ok(ControlSnapshot::load(|off| self.region.atomic_u64(off).load(Ordering::Acquire)))
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
        let incarnation = self.region.atomic_u64(control::OFF_INCARNATION).load(Ordering::Acquire);
        let w = |o, v| self.slot_file.atomic_u64(o).store(v, Ordering::Release);
        w(SLOT_FILE_INCARNATION, incarnation);
        w(control::SLOT_EPOCH, p.epoch);
        w(control::SLOT_CAUGHT_UP_US, p.caught_up_us);
        w(control::SLOT_UPDATED_US, now_us());
        w(control::SLOT_APPLIED, p.applied);
        Ok(())
    }

    /// Sleep on the doorbell. Against `SlotTable::ring_sleepers`, a
    /// store-fence-load on each side: we say we sleep, then look at the head;
    /// the primary publishes a head, then looks whether we sleep. One of the
    /// two sees the other's store, so either we see the new head and do not
    /// sleep, or the primary rings; and it bumps the doorbell before waking,
    /// so a ring that comes before our futex wait makes that wait return.
    /// A control request's wake (`waker`) does not bump it: one that lands
    /// between `interrupted` and the futex wait is seen when the wait ends.
    fn idle_wait(&mut self, head: u64, d: Duration, interrupted: &dyn Fn() -> bool) -> bool {
        let bell = self.region.atomic_u32(control::OFF_DOORBELL);
        let rung = bell.load(Ordering::Acquire);
        let d = if self.region.atomic_u32(control::OFF_RINGS).load(Ordering::Acquire) == 1 { RUNG_WAIT } else { d };
        let word = self.slot_file.atomic_u64(SLOT_FILE_SLEEP);
        self.sleeps = (self.sleeps + 1) | 1;
        word.store(self.sleeps, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.region.atomic_u64(control::OFF_HEAD).load(Ordering::SeqCst) == head && !interrupted() {
            futex::wait(bell, rung, d);
        }
        self.sleeps += 1;
        word.store(self.sleeps, Ordering::Release);
        true
    }

    fn waker(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        let region = self.region.clone();
        Some(Box::new(move || {
            futex::wake(region.atomic_u32(control::OFF_DOORBELL));
        }))
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
        self.slot_file.atomic_u64(control::SLOT_REPLICA_ID).store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::region::HugePages;
    use crate::replication::primary::SlotTable;
    use crate::store::{SetArgs, SetMode, Store, StoreConfig};

    #[test]
    fn the_primary_rings_a_sleeping_replica_once_per_sleep_and_never_an_awake_one() {
        let name = format!("unit-doorbell-{}", std::process::id());
        let cfg = StoreConfig { memory_bytes: 4 << 20, max_item_size: 1 << 10, hugepages: HugePages::Off };
        let store = Store::open(&cfg, Some(&region_path(&name, false))).expect("primary store");
        prepare_slot_dir(&name, None).expect("slot dir");
        let mut t = ShmTransport::connect(&name, 7).expect("replica transport");
        // The slot file says which log it follows once the replica reports.
        t.report(&Progress { applied: 0, epoch: store.log().epoch(), caught_up_us: now_us() }).expect("report");
        let slots = SlotTable::new(store.log().clone(), Some((name.clone(), None)));
        let bell = || store.log().region().atomic_u32(control::OFF_DOORBELL).load(Ordering::Acquire);
        let set = |k: &[u8]| store.set(&SetArgs::new(SetMode::Set, k, b"v", 0, 0)).expect("set");
        let b0 = bell();
        set(b"a");
        let head = store.log().head();
        slots.ring_sleepers(head);
        assert_eq!((bell(), slots.sleepers()), (b0, 0), "an awake replica is not rung");
        // As idle_wait does before it sleeps (its futex wait would block here).
        let sleep = t.slot_file.atomic_u64(SLOT_FILE_SLEEP);
        sleep.store(1, Ordering::SeqCst);
        assert_eq!(slots.sleepers(), 1);
        slots.ring_sleepers(head);
        assert_eq!(bell(), b0 + 1, "a sleeping replica behind the head is rung");
        slots.ring_sleepers(head);
        assert_eq!(bell(), b0 + 1, "once per sleep, however often the primary looks");
        sleep.store(2, Ordering::SeqCst);
        sleep.store(3, Ordering::SeqCst);
        slots.ring_sleepers(head);
        assert_eq!(bell(), b0 + 2, "the next sleep is rung again");
        // Asleep but holding everything: nothing to wake it for.
        sleep.store(5, Ordering::SeqCst);
        t.report(&Progress { applied: head, epoch: store.log().epoch(), caught_up_us: now_us() }).expect("report");
        slots.ring_sleepers(head);
        assert_eq!(bell(), b0 + 2, "a replica that holds the head is not rung");
        set(b"b");
        slots.ring_sleepers(store.log().head());
        assert_eq!(bell(), b0 + 3);
        drop(t);
        remove_files(&name, &region_path(&name, false), None);
    }
}
