//! The checker's model of every key: what was written (each write attempt
//! has a version, and its value encodes the key and the version), what was
//! acknowledged and when, and the rules a read and an audit must satisfy.
//!
//! Keys belong to one load worker each, which writes them one request at a
//! time, so a key's writes are totally ordered. Two kinds:
//! - regular keys `kW:I`: `set`/`ms` store `value_of(key, version)`,
//!   `delete`/`md` remove it; every attempt takes the next version.
//! - counters `cW:I`: set once to `base` (a number that names the key), then
//!   only incremented by 1, so every value between base and base + attempts
//!   was, or may have been, written.
//!
//! Readers other than the owner see a key through three atomics ([`KeyShared`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Missing,
    /// A regular key's value of that version.
    Ver(u32),
    /// A counter's number.
    Num(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server said it was done (STORED, HD, DELETED, a number).
    Acked,
    /// No reply, a closed connection, or "stored, but not confirmed": it may
    /// or may not be there.
    Unknown,
    /// Refused before it ran (read-only replica, stale primary): never there.
    Refused,
}

/// One write attempt that changes the key's state if it runs.
#[derive(Clone, Debug)]
pub struct Op {
    /// The state it leaves (None: an increment whose result is unknown).
    pub state: Option<State>,
    /// A regular key's version; for counters, the attempt number.
    pub ver: u32,
    pub what: &'static str,
    pub outcome: Outcome,
    pub sent: Instant,
    pub acked: Option<Instant>,
    /// The CAS the server gave it (ms c, ma c), when it says.
    pub cas: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Counter { base: u64 },
}

/// What readers other than the owner need, published by the owner:
/// `sent` before a request goes, `floor` after its acknowledgement.
#[derive(Default)]
pub struct KeyShared {
    /// Regular: the highest version sent. Counter: increments sent.
    pub sent: AtomicU64,
    /// Regular: the last acknowledged state, `ver << 1 | deleted` (0: never).
    /// Counter: the last acknowledged number - base + 1 (0: never set).
    pub floor: AtomicU64,
    /// Regular: the highest version of a delete sent.
    pub del_sent: AtomicU64,
}

/// The owner's full record of one key since the last audit.
pub struct KeyModel {
    pub id: usize,
    pub name: String,
    pub kind: Kind,
    /// The state the last audit found (certain), and its CAS.
    pub base: State,
    pub base_cas: Option<u64>,
    /// Attempts since the audit, in order.
    pub ops: Vec<Op>,
    pub next_ver: u32,
}

impl KeyModel {
    pub fn new(id: usize, name: String, kind: Kind) -> KeyModel {
        KeyModel { id, name, kind, base: State::Missing, base_cas: None, ops: Vec::new(), next_ver: 1 }
    }

    /// The state and CAS the key certainly holds on the primary now, if the
    /// owner knows it: an attempt of unknown outcome makes it uncertain until
    /// a later acknowledged one settles it.
    pub fn certain(&self) -> Option<(State, Option<u64>)> {
        let mut cur = Some((self.base, self.base_cas));
        for op in &self.ops {
            match op.outcome {
                Outcome::Refused => {}
                Outcome::Unknown => cur = None,
                Outcome::Acked => cur = op.state.map(|s| (s, op.cas)),
            }
        }
        cur
    }
}

/// A value for `key` at `version`: the key, the version, then filler bytes
/// a hash of both chooses (length and content), and flags likewise.
pub fn value_of(key: &str, ver: u32) -> (Vec<u8>, u32) {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h ^= (ver as u64).wrapping_mul(0x9e3779b97f4a7c15);
    h = h.wrapping_mul(0xff51afd7ed558ccd) ^ (h >> 29);
    let len = if h.is_multiple_of(64) { 3000 + (h >> 8) % 2000 } else { 8 + (h >> 8) % 300 } as usize;
    let mut v = format!("{key}#{ver}#").into_bytes();
    let mut x = h | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    (v, ((h >> 40) & 0xffff) as u32)
}

/// The version a value read for `key` encodes, or why it is not one the
/// campaign could have written for that key.
pub fn decode(key: &str, value: &[u8], flags: u32) -> Result<u32, String> {
    let show = || String::from_utf8_lossy(&value[..value.len().min(60)]).into_owned();
    let rest = value.strip_prefix(key.as_bytes()).and_then(|r| r.strip_prefix(b"#"));
    let Some(rest) = rest else { return Err(format!("value {:?} does not name key {key}", show())) };
    let end = rest.iter().position(|&b| b == b'#').ok_or_else(|| format!("value {:?} has no version", show()))?;
    let ver: u32 = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("value {:?} has no version", show()))?;
    let (want, want_flags) = value_of(key, ver);
    if want != value {
        return Err(format!(
            "value {:?} ({} bytes) is not version {ver} of {key} ({} bytes)",
            show(),
            value.len(),
            want.len()
        ));
    }
    if want_flags != flags {
        return Err(format!("{key} version {ver} has flags {flags}, written with {want_flags}"));
    }
    Ok(ver)
}

/// The base number of counter `index` (names the key: counters are never
/// within 10^9 of each other).
pub fn counter_base(index: usize) -> u64 {
    (index as u64 + 1) * 1_000_000_000
}

/// Where a read was served: the rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The current primary, within one epoch: linearizable per key.
    Primary,
    /// A replica: any value ever written, possibly stale, or a miss.
    Replica,
}

/// Snapshot of a key's atomics taken before a read is sent.
#[derive(Clone, Copy)]
pub struct Before {
    floor: u64,
}

pub fn before(k: &KeyShared) -> Before {
    Before { floor: k.floor.load(Ordering::Acquire) }
}

/// The rules for one read of `key` (a hit: its value and flags; None: a
/// miss). `before` was taken before the request was sent; the other
/// atomics are read now, after its reply. Ok, or what is wrong.
pub fn check_read(
    key: &str,
    kind: Kind,
    shared: &KeyShared,
    before: Before,
    got: Option<(&[u8], u32)>,
    src: Source,
) -> Result<(), String> {
    let sent = shared.sent.load(Ordering::Acquire);
    let del_sent = shared.del_sent.load(Ordering::Acquire);
    let f = before.floor;
    match (kind, got) {
        (Kind::Regular, Some((v, flags))) => {
            let ver = decode(key, v, flags)? as u64;
            if ver > sent {
                return Err(format!("{key}: read version {ver}, but only {sent} were ever sent"));
            }
            if src == Source::Primary && ver < f >> 1 {
                return Err(format!(
                    "{key}: the primary served version {ver} after version {} was acknowledged{}",
                    f >> 1,
                    if f & 1 == 1 { " (a delete)" } else { "" }
                ));
            }
            Ok(())
        }
        (Kind::Regular, None) => {
            // A miss on the primary: never written, last acknowledged a
            // delete, or a delete newer than that was sent meanwhile.
            if src == Source::Primary && f != 0 && f & 1 == 0 && del_sent <= f >> 1 {
                return Err(format!("{key}: the primary missed although version {} was acknowledged", f >> 1));
            }
            Ok(())
        }
        (Kind::Counter { base }, Some((v, _))) => {
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{key}: counter value {:?} is not a number", String::from_utf8_lossy(v)))?;
            if n < base || n - base > sent {
                return Err(format!("{key}: counter read {n}, outside [{base}, {base} + {sent} increments]"));
            }
            if src == Source::Primary && f != 0 && n - base < f - 1 {
                return Err(format!("{key}: the primary served {n} after {} was acknowledged", base + f - 1));
            }
            Ok(())
        }
        (Kind::Counter { base }, None) => {
            if src == Source::Primary && f != 0 {
                return Err(format!("{key}: the primary missed the counter after {} was acknowledged", base + f - 1));
            }
            Ok(())
        }
    }
}

/// What an audit found for one key against its history.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes after the state found.
    pub lost: Vec<Op>,
    /// The CAS of the acknowledged write the state found came from (if
    /// known): evidence that everything before it in the log survived.
    pub survivor_cas: Option<u64>,
    pub error: Option<String>,
}

/// Match the state the server holds (`found`: a decoded state) against
/// the key's history since its last audit.
pub fn judge(m: &KeyModel, found: State) -> Verdict {
    match (m.kind, found) {
        (Kind::Counter { base }, State::Num(n)) => judge_counter(m, base, n),
        (Kind::Counter { .. }, State::Ver(_)) => {
            Verdict { error: Some(format!("{}: a counter holds a regular value", m.name)), ..Verdict::default() }
        }
        _ => judge_regular(m, found),
    }
}

fn judge_regular(m: &KeyModel, found: State) -> Verdict {
    let mut v = Verdict::default();
    // The latest attempt that may have left `found` (-1: the base). A
    // version names one attempt; a miss, the latest delete.
    let latest = match found {
        State::Ver(ver) => m.ops.iter().rposition(|o| o.state == Some(found) && o.ver == ver),
        _ => m.ops.iter().rposition(|o| o.state == Some(State::Missing)),
    };
    let Some(j) = latest.map(|i| i as isize).or((m.base == found).then_some(-1)) else {
        v.error = Some(format!(
            "{}: holds {found:?}, which no write since the last audit (base {:?}) can have left",
            m.name, m.base
        ));
        return v;
    };
    if j >= 0 {
        let op = &m.ops[j as usize];
        if op.outcome == Outcome::Refused {
            v.error = Some(format!("{}: holds {found:?} from a write the server refused ({})", m.name, op.what));
            return v;
        }
        if op.outcome == Outcome::Acked && found != State::Missing {
            v.survivor_cas = op.cas;
        }
    }
    v.lost = m.ops[(j + 1) as usize..].iter().filter(|o| o.outcome == Outcome::Acked).cloned().collect();
    v
}

/// Within an epoch a counter only grows by one per increment that ran
/// (set to its base once), so the increments lost are exactly the
/// acknowledged ones that returned more than the number found.
fn judge_counter(m: &KeyModel, base: u64, n: u64) -> Verdict {
    let mut v = Verdict::default();
    let floor = match m.base {
        State::Num(b) => b,
        _ => base,
    };
    let known = m.ops.iter().filter_map(|o| match o.state {
        Some(State::Num(r)) if o.outcome != Outcome::Refused => Some(r),
        _ => None,
    });
    let unknown = m.ops.iter().filter(|o| o.state.is_none() && o.outcome == Outcome::Unknown).count() as u64;
    let most = known.max().unwrap_or(floor).max(floor) + unknown;
    if n < floor || n > most {
        v.error = Some(format!(
            "{}: holds {n}, outside what its writes since the last audit can leave [{floor}, {most}]",
            m.name
        ));
        return v;
    }
    v.lost = m
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Acked && matches!(o.state, Some(State::Num(r)) if r > n))
        .cloned()
        .collect();
    // The record that made n is unique in the epoch (a reset to base aside).
    if n != base {
        v.survivor_cas = m
            .ops
            .iter()
            .rev()
            .find(|o| o.outcome == Outcome::Acked && o.state == Some(State::Num(n)))
            .and_then(|o| o.cas);
    }
    v
}

/// Violations found anywhere in a run (the first few kept in full).
#[derive(Default)]
pub struct Violations {
    list: Mutex<Vec<String>>,
    count: AtomicU64,
}

impl Violations {
    pub fn add(&self, what: String) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if n < 40 {
            eprintln!("VIOLATION: {what}");
            self.list.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn first(&self) -> Vec<String> {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_to_their_key_and_version_only() {
        for ver in [1, 2, 77, 123456] {
            let (v, f) = value_of("k3:14", ver);
            assert_eq!(decode("k3:14", &v, f), Ok(ver));
            assert!(decode("k3:15", &v, f).is_err(), "another key's value");
            assert!(decode("k3:14", &v, f ^ 1).is_err(), "other flags");
            let mut cut = v.clone();
            cut.pop();
            assert!(decode("k3:14", &cut, f).is_err(), "a torn value");
            let mut other = v.clone();
            *other.last_mut().unwrap() ^= 1;
            assert!(decode("k3:14", &other, f).is_err(), "a changed byte");
        }
    }

    fn op(state: Option<State>, ver: u32, outcome: Outcome, cas: Option<u64>) -> Op {
        let now = Instant::now();
        Op { state, ver, what: "t", outcome, sent: now, acked: (outcome == Outcome::Acked).then_some(now), cas }
    }

    #[test]
    fn an_audit_finds_exactly_the_acknowledged_writes_after_the_state_found() {
        let mut m = KeyModel::new(0, "k".into(), Kind::Regular);
        m.ops.push(op(Some(State::Ver(1)), 1, Outcome::Acked, Some(10)));
        m.ops.push(op(Some(State::Ver(2)), 2, Outcome::Unknown, None));
        m.ops.push(op(Some(State::Missing), 3, Outcome::Acked, None));
        m.ops.push(op(Some(State::Ver(4)), 4, Outcome::Refused, None));
        assert_eq!(m.certain(), Some((State::Missing, None)));
        let all = judge(&m, State::Missing);
        assert!(all.lost.is_empty() && all.error.is_none(), "{all:?}");
        let v = judge(&m, State::Ver(1));
        assert_eq!((v.lost.len(), v.survivor_cas), (1, Some(10)), "the delete is lost");
        assert_eq!(judge(&m, State::Ver(2)).lost.len(), 1, "the unknown write ran, the delete is lost");
        assert!(judge(&m, State::Ver(4)).error.is_some(), "a refused write cannot be there");
        assert!(judge(&m, State::Ver(9)).error.is_some(), "never written");
    }

    #[test]
    fn a_counter_is_judged_by_the_numbers_its_increments_returned() {
        let base = counter_base(3);
        let mut m = KeyModel::new(0, "c".into(), Kind::Counter { base });
        m.ops.push(op(Some(State::Num(base)), 1, Outcome::Acked, Some(5)));
        m.ops.push(op(Some(State::Num(base + 1)), 2, Outcome::Acked, Some(6)));
        m.ops.push(op(None, 3, Outcome::Unknown, None));
        m.ops.push(op(Some(State::Num(base + 3)), 4, Outcome::Acked, Some(8)));
        assert_eq!(m.certain(), Some((State::Num(base + 3), Some(8))));
        assert!(judge(&m, State::Num(base + 3)).lost.is_empty());
        assert_eq!(judge(&m, State::Num(base + 2)).lost.len(), 1, "the last increment is lost");
        assert_eq!(judge(&m, State::Num(base + 1)).lost.len(), 1);
        assert_eq!(judge(&m, State::Missing).lost.len(), 3, "everything acknowledged is lost");
    }

    #[test]
    fn reads_on_the_primary_are_held_to_the_acknowledged_floor() {
        let k = KeyShared::default();
        k.sent.store(5, Ordering::Relaxed);
        k.floor.store(4 << 1, Ordering::Relaxed);
        let b = before(&k);
        let (v3, f3) = value_of("k", 3);
        let (v5, f5) = value_of("k", 5);
        assert!(check_read("k", Kind::Regular, &k, b, Some((&v3, f3)), Source::Primary).is_err());
        assert!(check_read("k", Kind::Regular, &k, b, Some((&v3, f3)), Source::Replica).is_ok());
        assert!(check_read("k", Kind::Regular, &k, b, Some((&v5, f5)), Source::Primary).is_ok());
        assert!(check_read("k", Kind::Regular, &k, b, None, Source::Primary).is_err());
        k.del_sent.store(5, Ordering::Relaxed);
        assert!(check_read("k", Kind::Regular, &k, b, None, Source::Primary).is_ok(), "a delete was in flight");
        let (v6, f6) = value_of("k", 6);
        assert!(check_read("k", Kind::Regular, &k, b, Some((&v6, f6)), Source::Replica).is_err(), "never sent");
    }
}
