//! The one place that maps item memory: a region of 2 MiB huge pages (or, as a
//! declared fallback, normal pages with transparent-huge-page advice).
//!
//! The region is shared memory in the widest sense: the NIC reads it for
//! remote replicas, `shm` replicas map it from another process. So it hands out
//! no references to its bytes, only copies in and out and atomics in the
//! control block:
//! * `write` needs the region's one [`RegionWriter`] (`&mut`): only its holder
//!   (the log's writer) stores bytes, one store at a time;
//! * `read` is a plain copy, for bytes no one writes meanwhile (the log's
//!   protocol: records below head under the index lock, the writer's own);
//! * `read_racy` copies with atomic loads, for bytes someone may be writing
//!   meanwhile (another process's log): the copy may be torn, the caller
//!   validates it;
//! * `atomic_u64` for the control block's fields and progress slots.
//!
//! Who may write which bytes when is the log's protocol (see `src/log/`);
//! this module guarantees bounds and one writer.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use memmap2::{MmapMut, MmapOptions};

use crate::bail;
use crate::error::{Context, Error, Result};

/// Huge pages are 2 MiB on every platform we target (x86_64, aarch64 default).
pub const HUGE_PAGE: usize = 2 << 20;

/// What to do about huge pages (`--hugepages`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePages {
    /// Use them when reserved; otherwise fall back to normal pages and say so.
    Auto,
    /// Fail with instructions when they cannot be had.
    Require,
    /// Normal pages (with THP advice).
    Off,
}

impl std::str::FromStr for HugePages {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(HugePages::Auto),
            "require" => Ok(HugePages::Require),
            "off" => Ok(HugePages::Off),
            _ => Err(format!("--hugepages takes auto, require or off, not {s:?}")),
        }
    }
}

/// How the region's pages ended up backed; reported in `stats` as `hugepages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    HugeTlb,
    /// Normal pages with MADV_HUGEPAGE (the kernel may still use THP).
    Normal,
}

impl Backing {
    pub fn as_str(self) -> &'static str {
        match self {
            Backing::HugeTlb => "yes",
            Backing::Normal => "no",
        }
    }
}

/// A mapped region. Bytes are reached only through bounds-checked copies.
pub struct Region {
    ptr: *mut u8,
    len: usize,
    backing: Backing,
    /// Set when the region is a file another process may map (`shm`).
    path: Option<PathBuf>,
    /// Names this region to its [`RegionWriter`]; unique in the process.
    id: u64,
    /// Set once the writer was handed out (always, for a read-only mapping).
    writer_taken: AtomicBool,
    // Keeps the mapping alive; `ptr` points into it.
    _map: Mapping,
    /// A memory file (`-e`): held open for its lock for as long as we map it.
    _file: Option<File>,
}

/// The right to store bytes into one region: [`Region::take_writer`] hands out
/// one per writable region, it is neither `Clone` nor `Copy`, and
/// [`Region::write`] takes it `&mut`, so the compiler holds "one writer, one
/// store at a time" (the NIC and other processes are beyond it: they are the
/// log protocol's business).
#[derive(Debug)]
pub struct RegionWriter {
    region: u64,
}

static NEXT_REGION_ID: AtomicU64 = AtomicU64::new(1);

// Held only for its Drop, which unmaps; `ptr` is how the bytes are reached.
#[allow(dead_code)]
enum Mapping {
    Mut(MmapMut),
    ReadOnly(memmap2::Mmap),
}

// SAFETY: the region is plain bytes plus atomics; all access goes through
// copies with bounds checks, stores only through the one RegionWriter, and the
// log's publication protocol (Release on `head`, shard locks around the index)
// orders the writer and plain readers.
unsafe impl Send for Region {}
// SAFETY: as above; no method hands out a `&mut` or a `&[u8]` into the mapping,
// and shared `&Region` users cannot store bytes without the writer token.
unsafe impl Sync for Region {}

/// Round `len` up to a whole number of huge pages.
pub fn round_to_huge(len: usize) -> usize {
    len.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

fn require_message(len: usize, err: &std::io::Error) -> Error {
    let pages = len / HUGE_PAGE;
    Error::new(format!(
        "--hugepages require: cannot map {} MiB of 2 MiB huge pages ({err}); \
         reserve at least {pages} pages, e.g. `echo {pages} > /proc/sys/vm/nr_hugepages` \
         or `hugepages/logmemcached-hugepages reserve -m {}`, or run with --hugepages auto",
        len >> 20,
        len >> 20
    ))
}

impl Region {
    /// An anonymous private-to-this-process region (the NIC still reads it).
    pub fn anonymous(len: usize, huge: HugePages) -> Result<Region> {
        let len = round_to_huge(len.max(1));
        if huge != HugePages::Off {
            match MmapOptions::new().len(len).huge(Some(21)).populate().map_anon() {
                Ok(map) => return Ok(Region::from_mut(map, len, Backing::HugeTlb, None)),
                Err(e) if huge == HugePages::Require => return Err(require_message(len, &e)),
                Err(_) => {}
            }
        }
        let map = MmapOptions::new().len(len).map_anon().context("mapping the log region")?;
        // Advice only: THP may or may not back it; failure changes nothing.
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Region::from_mut(map, len, Backing::Normal, None))
    }

    /// A region backed by a file that same-host replicas can map (`shm://`).
    /// On hugetlbfs the file is huge-page backed; elsewhere (e.g. /dev/shm)
    /// normal pages.
    pub fn create_file(path: &Path, len: usize, huge: HugePages) -> Result<Region> {
        let len = round_to_huge(len.max(1));
        // A new inode, never a truncated old one: replicas may still map the
        // old file, and truncating it under them would fault their reads.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::from(e).context(format!("replacing region file {}", path.display()))),
        }
        // Mode 0600: the log is every key and value; widening it to a group
        // is an explicit step (`replication::shm::share_with_group`).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating region file {}", path.display()))?;
        let on_hugetlbfs = is_hugetlbfs(path);
        if huge == HugePages::Require && !on_hugetlbfs {
            bail!(
                "--hugepages require: {} is not on a hugetlbfs mount (see hugepages/ for mounting one)",
                path.display()
            );
        }
        file.set_len(len as u64).with_context(|| format!("sizing region file {} to {} bytes", path.display(), len))?;
        // SAFETY: we created and sized the file; other processes only map it read-only.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&file) }
            .with_context(|| format!("mapping region file {}", path.display()))?;
        let backing = if on_hugetlbfs { Backing::HugeTlb } else { Backing::Normal };
        Ok(Region::from_mut(map, len, backing, Some(path.to_path_buf())))
    }

    /// The memory file (`-e PATH`) at `path`, mapped read-write and shared,
    /// so what we write is the file's (it survives the process; `kill -9`
    /// keeps what the page cache holds). A missing or empty file is created
    /// (mode 0600) and sized to `len` (whole huge pages); an existing one is
    /// mapped at its own length, for the log layer above to judge.
    /// Returns the region and whether the file held something. The file is
    /// locked (`flock`) while mapped: two servers on one file would both write.
    pub fn open_memory_file(path: &Path, len: usize, huge: HugePages) -> Result<(Region, bool)> {
        let len = round_to_huge(len.max(1));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening memory file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            bail!("memory file {} is in use by another process ({err})", path.display());
        }
        let md = file.metadata().with_context(|| format!("memory file {}", path.display()))?;
        if !md.file_type().is_file() {
            bail!("memory file {} is not a regular file", path.display());
        }
        let on_hugetlbfs = is_hugetlbfs(path);
        if huge == HugePages::Require && !on_hugetlbfs {
            bail!(
                "--hugepages require: memory file {} is not on a hugetlbfs mount (see hugepages/ for mounting one)",
                path.display()
            );
        }
        let existed = md.len() > 0;
        let map_len = if existed {
            usize::try_from(md.len()).map_err(|_| Error::new(format!("memory file {} is too large", path.display())))?
        } else {
            file.set_len(len as u64)
                .with_context(|| format!("sizing memory file {} to {} bytes", path.display(), len))?;
            len
        };
        // SAFETY: a shared mapping of a regular file we opened read-write and
        // hold locked: no other server of ours writes it; shm replicas only
        // map it read-only. Its bytes are reached through copies and atomics.
        let map = unsafe { MmapOptions::new().len(map_len).populate().map_mut(&file) }
            .with_context(|| format!("mapping memory file {}", path.display()))?;
        let backing = if on_hugetlbfs { Backing::HugeTlb } else { Backing::Normal };
        let mut r = Region::from_mut(map, map_len, backing, Some(path.to_path_buf()));
        r._file = Some(file);
        Ok((r, existed))
    }

    /// Map another process's region file read-only (a same-host replica).
    pub fn open_readonly(path: &Path) -> Result<Region> {
        let file = File::open(path).with_context(|| format!("opening region file {}", path.display()))?;
        Region::map_readonly(&file, path)
    }

    /// Map an opened file read-only, whole (the caller checked who owns it).
    pub fn map_readonly(file: &File, path: &Path) -> Result<Region> {
        let len = file.metadata()?.len() as usize;
        // SAFETY: the mapping is read-only; the file is written only by its
        // owner, through the same publication protocol readers validate.
        let map = unsafe { MmapOptions::new().len(len).map(file) }
            .with_context(|| format!("mapping region file {}", path.display()))?;
        let ptr = map.as_ptr() as *mut u8;
        let backing = if is_hugetlbfs(path) { Backing::HugeTlb } else { Backing::Normal };
        Ok(Region::new(ptr, len, backing, Some(path.to_path_buf()), false, Mapping::ReadOnly(map)))
    }

    /// Map the first `len` bytes of an opened file read-write and shared (a
    /// same-host replica's own progress slot file). Other processes map it
    /// too; its bytes are meant to be reached through [`Region::atomic_u64`].
    pub fn map_shared_rw(file: &File, path: &Path, len: usize) -> Result<Region> {
        // SAFETY: a shared mapping of a file the caller opened read-write and
        // sized; every process touches it through atomics only.
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(file) }
            .with_context(|| format!("mapping {} bytes of {}", len, path.display()))?;
        let ptr = map.as_mut_ptr();
        Ok(Region::new(ptr, len, Backing::Normal, Some(path.to_path_buf()), true, Mapping::Mut(map)))
    }

    fn from_mut(mut map: MmapMut, len: usize, backing: Backing, path: Option<PathBuf>) -> Region {
        let ptr = map.as_mut_ptr();
        Region::new(ptr, len, backing, path, true, Mapping::Mut(map))
    }

    fn new(ptr: *mut u8, len: usize, backing: Backing, path: Option<PathBuf>, writable: bool, map: Mapping) -> Region {
        let id = NEXT_REGION_ID.fetch_add(1, Ordering::Relaxed);
        Region { ptr, len, backing, path, id, writer_taken: AtomicBool::new(!writable), _map: map, _file: None }
    }

    /// The region's one writer: `Some` the first time on a writable region,
    /// `None` after that and on a read-only mapping.
    pub fn take_writer(&self) -> Option<RegionWriter> {
        (!self.writer_taken.swap(true, Ordering::AcqRel)).then_some(RegionWriter { region: self.id })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn backing(&self) -> Backing {
        self.backing
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Base address, for registering the region with the NIC.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check(&self, off: usize, len: usize) {
        // A bad offset here is a bug in the log, never client input: panic loudly.
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "region access out of bounds: {off}+{len} > {}",
            self.len
        );
    }

    /// Copy bytes out of the region with a plain copy: for bytes no one
    /// writes while we read them (the log's protocol excludes the writer:
    /// records below head read under the index lock, the writer's own reads).
    /// Bytes another party may be writing go through [`Region::read_racy`].
    pub fn read(&self, off: usize, dst: &mut [u8]) {
        self.check(off, dst.len());
        // SAFETY: bounds checked above; `dst` is a distinct Rust buffer, so the
        // ranges cannot overlap. Writers of these bytes are excluded by the
        // log's protocol while we copy (the contract of this method).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) }
    }

    /// Start loading the cache line at `off` (a hint: out of bounds, none).
    pub fn prefetch(&self, off: usize) {
        if off < self.len {
            super::prefetch::prefetch(self.ptr.wrapping_add(off));
        }
    }

    /// Whether the bytes at `off` equal `bytes`, compared in place (as
    /// `read`, under the same contract, without copying them out first: an
    /// index probe checks a candidate record's key this way on every get).
    pub fn bytes_eq(&self, off: usize, bytes: &[u8]) -> bool {
        self.check(off, bytes.len());
        // SAFETY: bounds checked above, in a mapping that lives as long as
        // `self`; the slice lives only for this comparison, while writers of
        // these bytes are excluded by the log's protocol (as for `read`).
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), bytes.len()) == bytes }
    }

    /// Borrow `len` bytes at `off` in place, for as long as this region's
    /// writer token is borrowed too: while `w` is lent out shared, no store
    /// of this process can run (every one takes it mutably). For bytes no
    /// other party writes either: a restart's scan of a memory file, which
    /// is `flock`ed to this process and not yet shared with replicas or the
    /// NIC (validating records in the mapping saves copying the whole log
    /// out first).
    pub fn view<'a>(&'a self, w: &'a RegionWriter, off: usize, len: usize) -> &'a [u8] {
        assert_eq!(w.region, self.id, "a region viewed with another region's writer");
        self.check(off, len);
        // SAFETY: in bounds (checked above) of a mapping that lives as long
        // as `self`; no store of this process runs while `w`, the one writer
        // token, is borrowed shared for the slice's lifetime, and the caller
        // views only bytes no other process or device writes meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }

    /// Append `len` bytes from `off` to `out` (as `read` does, without
    /// zero-filling the new part of `out` first: replies copy whole values
    /// this way, and a fill the copy overwrites doubled their cost).
    pub fn append_to(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        self.check(off, len);
        out.reserve(len);
        let spare = &mut out.spare_capacity_mut()[..len];
        // SAFETY: bounds checked above; `spare` is `len` bytes of `out`'s
        // own allocation, distinct from the mapping. Writers of these bytes
        // are excluded by the log's protocol while we copy (as for `read`).
        // After the copy those `len` bytes are initialised, so the length
        // may cover them.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(off), spare.as_mut_ptr().cast::<u8>(), len);
            out.set_len(out.len() + len);
        }
    }

    /// Copy bytes out of the region while someone else may be writing them
    /// (a primary's log mapped by its `shm` replica). Every byte is read by
    /// an atomic load (relaxed u64 words for the aligned middle, u8 for the
    /// ragged ends), so the copy is defined under concurrent stores, but it
    /// may be torn: a mix of old and new bytes. The caller validates what it
    /// got (records carry their position and checksum) and orders it with an
    /// Acquire load of `head` before. The writers this is defined against are
    /// outside this mapping (another process, another mapping of the file,
    /// the NIC); this region's own `RegionWriter` stores plainly, so no code
    /// reads racily what that writer is storing in this process meanwhile.
    pub fn read_racy(&self, off: usize, dst: &mut [u8]) {
        self.check(off, dst.len());
        let len = dst.len();
        let d = dst.as_mut_ptr();
        // SAFETY: bounds checked, so `off` is inside the mapping.
        let src = unsafe { self.ptr.add(off) };
        let lead = src.align_offset(8).min(len);
        let end = lead + (len - lead) / 8 * 8;
        // SAFETY: every index below is < len, so in bounds of the mapping
        // (checked above) and of `dst`; words start at `src + lead`, which is
        // 8-aligned, and end by `end`; the mapping lives as long as `self`.
        // Its bytes are reached only through copies and atomics, never a Rust
        // reference, and loads never store (fine on a read-only mapping: u64
        // loads are plain loads on our targets). Plain loops, not iterators:
        // debug builds (the test suite) copy megabytes this way too.
        unsafe {
            let byte = |i: usize| AtomicU8::from_ptr(src.add(i)).load(Ordering::Relaxed);
            let word = |i: usize| AtomicU64::from_ptr(src.add(i) as *mut u64).load(Ordering::Relaxed);
            let mut i = 0;
            while i < lead {
                d.add(i).write(byte(i));
                i += 1;
            }
            // Four words a round: the loads stay atomic, the stores into `dst` merge.
            while i + 32 <= end {
                let v = [word(i), word(i + 8), word(i + 16), word(i + 24)];
                (d.add(i) as *mut [u64; 4]).write_unaligned(v);
                i += 32;
            }
            while i < end {
                (d.add(i) as *mut u64).write_unaligned(word(i));
                i += 8;
            }
            while i < len {
                d.add(i).write(byte(i));
                i += 1;
            }
        }
    }

    /// Copy bytes into the region; `w` must be this region's writer.
    pub fn write(&self, w: &mut RegionWriter, off: usize, src: &[u8]) {
        assert_eq!(w.region, self.id, "a region written with another region's writer");
        self.check(off, src.len());
        // SAFETY: bounds checked; the mapping is writable (a read-only one has
        // no writer to pass); `src` is a Rust buffer outside the region; `w`
        // is the one writer and borrowed mutably, so no other store runs.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) }
    }

    /// An atomic u64 living in the region (the control block's fields).
    pub fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8);
        assert!(off.is_multiple_of(8), "unaligned atomic at {off}");
        // SAFETY: in bounds, 8-aligned (the mapping is page-aligned), lives as
        // long as `self`; AtomicU64 has the same layout as u64 and every access
        // to these 8 bytes in this process goes through atomics. On a read-only
        // mapping callers only load (a store would fault, never corrupt).
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    /// An atomic u32 living in the region (a futex word: `memory::futex`).
    pub fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        self.check(off, 4);
        assert!(off.is_multiple_of(4), "unaligned atomic at {off}");
        // SAFETY: in bounds, 4-aligned (the mapping is page-aligned), lives as
        // long as `self`; AtomicU32 has the same layout as u32 and every access
        // to these 4 bytes goes through atomics (or the kernel's futex reads).
        // On a read-only mapping callers only load or futex (never store).
        unsafe { &*(self.ptr.add(off) as *const AtomicU32) }
    }
}

fn is_hugetlbfs(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("/"));
    match nix::sys::statfs::statfs(dir) {
        Ok(s) => s.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn rounds_to_whole_huge_pages() {
        assert_eq!(round_to_huge(1), HUGE_PAGE);
        assert_eq!(round_to_huge(HUGE_PAGE), HUGE_PAGE);
        assert_eq!(round_to_huge(HUGE_PAGE + 1), 2 * HUGE_PAGE);
    }

    #[test]
    fn auto_falls_back_and_reads_back_writes() {
        let r = Region::anonymous(3 << 20, HugePages::Auto).unwrap();
        assert_eq!(r.len(), 4 << 20);
        let mut w = r.take_writer().unwrap();
        r.write(&mut w, 100, b"hello");
        let mut b = [0u8; 5];
        r.read(100, &mut b);
        assert_eq!(&b, b"hello");
        let mut v = b"<".to_vec();
        r.append_to(101, 3, &mut v);
        assert_eq!(v, b"<ell");
        assert!(r.bytes_eq(101, b"ell") && r.bytes_eq(101, b"") && !r.bytes_eq(101, b"elm"));
        r.atomic_u64(8).store(42, Ordering::Release);
        assert_eq!(r.atomic_u64(8).load(Ordering::Acquire), 42);
    }

    #[test]
    fn a_region_has_one_writer() {
        let r = Region::anonymous(1, HugePages::Off).unwrap();
        assert!(r.take_writer().is_some());
        assert!(r.take_writer().is_none(), "a second writer");
    }

    #[test]
    #[should_panic(expected = "another region's writer")]
    fn a_writer_writes_only_its_own_region() {
        let a = Region::anonymous(1, HugePages::Off).unwrap();
        let b = Region::anonymous(1, HugePages::Off).unwrap();
        let mut wa = a.take_writer().unwrap();
        b.write(&mut wa, 0, b"x");
    }

    #[test]
    fn racy_reads_copy_what_plain_reads_do_at_any_alignment() {
        let r = Region::anonymous(1, HugePages::Off).unwrap();
        let mut w = r.take_writer().unwrap();
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 251) as u8).collect();
        r.write(&mut w, 0, &pattern);
        for off in [0usize, 1, 3, 7, 8, 13, 64] {
            for len in [0usize, 1, 5, 7, 8, 9, 15, 16, 17, 1000] {
                let mut plain = vec![0u8; len];
                let mut racy = vec![0xeeu8; len];
                r.read(off, &mut plain);
                r.read_racy(off, &mut racy);
                assert_eq!(racy, plain, "off {off} len {len}");
                assert_eq!(&racy[..], &pattern[off..off + len]);
            }
        }
    }

    /// Free 2 MiB huge pages (the size `Region` asks for), 0 if the kernel has none.
    fn free_huge_pages() -> u64 {
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn require_uses_huge_pages_or_fails_with_instructions() {
        // Either way something is asserted: with two free pages `Require`
        // maps them, without it fails and says how to reserve them. Pages
        // are counted before and after, since another process may take or
        // free some meanwhile.
        let before = free_huge_pages();
        match Region::anonymous(4 << 20, HugePages::Require) {
            Ok(r) => {
                assert_eq!(r.backing(), Backing::HugeTlb, "Require mapped normal pages");
                assert_eq!(r.len(), 4 << 20);
            }
            Err(err) => {
                assert!(err.to_string().contains("nr_hugepages"), "{err}");
                assert!(err.to_string().contains("reserve at least 2 pages"), "{err}");
                let after = free_huge_pages();
                assert!(before < 2 || after < 2, "{before} then {after} free huge pages, yet Require failed: {err}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_is_a_loud_bug() {
        let r = Region::anonymous(1, HugePages::Off).unwrap();
        let mut b = [0u8; 16];
        r.read(r.len() - 8, &mut b);
    }

    #[test]
    fn a_memory_file_is_0600_kept_across_mappings_and_huge_only_on_hugetlbfs() {
        let dir = std::env::temp_dir().join(format!("lmc-memfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m");
        {
            let (r, existed) = Region::open_memory_file(&p, 1, HugePages::Off).unwrap();
            assert!(!existed);
            assert_eq!(r.len(), HUGE_PAGE);
            r.write(&mut r.take_writer().unwrap(), 4096, b"kept");
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let (r, existed) = Region::open_memory_file(&p, 1, HugePages::Off).unwrap();
        assert!(existed);
        let mut b = [0u8; 4];
        r.read(4096, &mut b);
        assert_eq!(&b, b"kept", "the bytes outlive the mapping");
        drop(r);
        if !is_hugetlbfs(&p) {
            let err = Region::open_memory_file(&p, 1, HugePages::Require).err().map(|e| e.to_string());
            assert!(err.unwrap_or_default().contains("not on a hugetlbfs mount"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_region_is_seen_by_a_readonly_mapping() {
        let dir = std::env::temp_dir().join(format!("lmc-region-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r");
        let w = Region::create_file(&p, 1, HugePages::Auto).unwrap();
        // Only the owner may read the log (every key and value).
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        w.write(&mut w.take_writer().unwrap(), 4096, b"shared");
        let r = Region::open_readonly(&p).unwrap();
        assert!(r.take_writer().is_none(), "a read-only mapping has no writer");
        let mut b = [0u8; 6];
        r.read_racy(4096, &mut b);
        assert_eq!(&b, b"shared");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
