//! memcached's `-o` extended options (`memcached -h`, and memcached.c's
//! `subopts_tokens`): those with a meaning for a log are honoured, the rest
//! are checked as memcached checks them and accepted with a notice saying
//! why they change nothing here, and a name memcached does not know is
//! refused with its words (`Illegal suboption "NAME"`, status 1).

use super::Fail;

/// What the `-o` options asked for that we honour, and the notices owed.
#[derive(Debug, Default)]
pub struct Extended {
    /// `idle_timeout=S`: close a connection idle this many seconds (0: never).
    pub idle_timeout: u32,
    /// `read_buf_mem_limit=MB`: bounds connection buffers: our `--output-budget`.
    pub read_buf_mem_limit: Option<usize>,
    /// `track_sizes`: `stats sizes` reports the item size histogram.
    pub track_sizes: bool,
    /// `watcher_logbuf_size=KB`, `worker_logbuf_size=KB` (bytes here).
    pub watcher_logbuf_size: Option<usize>,
    pub worker_logbuf_size: Option<usize>,
    /// `no_maxconns_fast`: asked for memcached's old behaviour at the limit.
    pub maxconns_fast: bool,
    hot_lru_pct: u32,
    warm_lru_pct: u32,
    temporary_ttl: bool,
    lru_maintainer: bool,
    /// One line per option accepted without effect, logged at start.
    pub notices: Vec<String>,
}

/// Why a family of memcached options means nothing for a log.
const SLABS: &str = "the log has no slab classes to size, move or rebalance";
const LRU: &str = "the log evicts from its tail in write order; there is no LRU to segment, crawl or maintain";
const HASH: &str = "the index hashes keys with SipHash-1-3 under a random key per process, so clients cannot aim at a bucket, and it grows by itself";
const EXTSTORE: &str = "there is no extstore: items live in the log in memory (-e keeps the log in a file)";
const TLS: &str = "TLS is not supported (-Z is refused)";
const PRIVS: &str = "memcached's seccomp privilege dropping is not used; -u drops the user";

fn fail(msg: impl Into<String>) -> Fail {
    Fail::usage(1, msg)
}

fn int<T: std::str::FromStr>(v: Option<&str>, missing: &str) -> Result<T, Fail> {
    let v = v.ok_or_else(|| fail(missing))?;
    v.trim().parse().map_err(|_| fail(format!("{missing}: not a number: {v:?}")))
}

impl Extended {
    /// One `-o` argument: `name[=value],...`.
    pub fn apply(&mut self, arg: &str) -> Result<(), Fail> {
        for item in arg.split(',').filter(|s| !s.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            self.one(name, value, item)?;
        }
        Ok(())
    }

    fn note(&mut self, name: &str, why: &str) {
        self.notices.push(format!("-o {name}: accepted, no effect here: {why}"));
    }

    fn one(&mut self, name: &str, v: Option<&str>, item: &str) -> Result<(), Fail> {
        match name {
            "idle_timeout" => self.idle_timeout = int(v, "Missing numeric argument for idle_timeout")?,
            "read_buf_mem_limit" => {
                let mb: usize = int(v, "Missing read_buf_mem_limit argument")?;
                // 0 is memcached's "unlimited": our default budget then.
                self.read_buf_mem_limit = (mb > 0).then(|| mb.saturating_mul(1 << 20));
            }
            "track_sizes" => self.track_sizes = true,
            "watcher_logbuf_size" => {
                let kb: usize = int(v, "Missing watcher_logbuf_size argument")?;
                self.watcher_logbuf_size = Some(kb.saturating_mul(1024));
            }
            "worker_logbuf_size" => {
                let kb: usize = int(v, "Missing worker_logbuf_size argument")?;
                self.worker_logbuf_size = Some(kb.saturating_mul(1024));
            }
            "maxconns_fast" => self.maxconns_fast = true,
            "no_maxconns_fast" => {
                self.maxconns_fast = false;
                self.note(name, "a client over -c is always told `ERROR Too many open connections` and closed");
            }
            "modern" => {}
            "no_modern" => {
                self.note(name, "memcached 1.4's defaults are slab, LRU and hash choices this server does not have")
            }
            "hashpower" => {
                let n: i64 = int(v, "Missing numeric argument for hashpower")?;
                if n < 12 {
                    return Err(fail(format!("Initial hashtable multiplier of {n} is too low")));
                }
                if n > 32 {
                    return Err(fail(format!(
                        "Initial hashtable multiplier of {n} is too high\n\
                         Choose a value based on \"STAT hash_power_level\" from a running instance"
                    )));
                }
                self.note(name, HASH);
            }
            "no_hashexpand" => self.note(name, HASH),
            "hash_algorithm" => {
                let a = v.ok_or_else(|| fail("Missing hash_algorithm argument"))?;
                if !["jenkins", "murmur3", "xxh3"].contains(&a) {
                    return Err(fail("Unknown hash_algorithm option (jenkins, murmur3, xxh3)"));
                }
                self.note(name, HASH);
            }
            "slab_reassign" | "no_slab_reassign" | "no_chunked_items" | "slab_sizes" | "slab_chunk_max" => {
                self.note(name, SLABS)
            }
            "slab_automove" => {
                if let Some(v) = v {
                    let n: i64 = int(Some(v), "slab_automove")?;
                    if !(0..=2).contains(&n) {
                        return Err(fail("slab_automove must be between 0 and 2"));
                    }
                }
                self.note(name, SLABS);
            }
            "no_slab_automove" => self.note(name, SLABS),
            "slab_automove_ratio" => {
                let r: f64 = int(v, "Missing slab_automove_ratio argument")?;
                if r <= 0.0 || r > 1.0 {
                    return Err(fail("slab_automove_ratio must be > 0 and < 1"));
                }
                self.note(name, SLABS);
            }
            "slab_automove_window" => {
                if int::<i64>(v, "Missing slab_automove_window argument")? < 3 {
                    return Err(fail("slab_automove_window must be > 2"));
                }
                self.note(name, SLABS);
            }
            "tail_repair_time" => {
                if int::<i64>(v, "Missing numeric argument for tail_repair_time")? < 10 {
                    return Err(fail("Cannot set tail_repair_time to less than 10 seconds"));
                }
                self.note(name, "records are immutable: no item's refcount can stick at the tail");
            }
            "lru_crawler" | "no_lru_crawler" => self.note(name, LRU),
            "lru_maintainer" => {
                self.lru_maintainer = true;
                self.note(name, LRU);
            }
            "no_lru_maintainer" => {
                self.lru_maintainer = false;
                self.note(name, LRU);
            }
            "lru_crawler_sleep" => {
                let us: i64 = int(v, "Missing lru_crawler_sleep value")?;
                if !(0..=1_000_000).contains(&us) {
                    return Err(fail("LRU crawler sleep must be between 0 and 1 second"));
                }
                self.note(name, LRU);
            }
            "lru_crawler_tocrawl" => {
                let t = v.ok_or_else(|| fail("Missing lru_crawler_tocrawl value"))?;
                if t.parse::<u32>().is_err() {
                    return Err(fail("lru_crawler_tocrawl takes a numeric 32bit value"));
                }
                self.note(name, LRU);
            }
            "hot_lru_pct" | "warm_lru_pct" => {
                let pct: u32 = int(v, &format!("Missing {name} argument"))?;
                if !(1..80).contains(&pct) {
                    return Err(fail(format!("{name} must be > 1 and < 80")));
                }
                if name == "hot_lru_pct" {
                    self.hot_lru_pct = pct;
                } else {
                    self.warm_lru_pct = pct;
                }
                self.note(name, LRU);
            }
            "hot_max_factor" | "warm_max_factor" => {
                let f: f64 = int(v, &format!("Missing {name} argument"))?;
                if f <= 0.0 {
                    return Err(fail(format!("{name} must be > 0")));
                }
                self.note(name, LRU);
            }
            "temporary_ttl" => {
                int::<i64>(v, "Missing temporary_ttl argument")?;
                self.temporary_ttl = true;
                self.note(name, LRU);
            }
            "inline_ascii_resp" | "no_inline_ascii_resp" => {
                self.note(name, "replies are always built from the log's bytes")
            }
            "drop_privileges" | "no_drop_privileges" => self.note(name, PRIVS),
            "resp_obj_mem_limit" => {
                // memcached's own words for it.
                self.notices.push("DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,".into())
            }
            "sock_cookie_id" => self.note(name, "sockets carry no SO_MARK cookie"),
            n if n.starts_with("ext_") || n == "slab_automove_freeratio" => self.note(name, EXTSTORE),
            n if n.starts_with("ssl_") => self.note(name, TLS),
            n if n.starts_with("proxy_") => {
                return Err(Fail::usage(
                    super::options::EX_USAGE,
                    format!("-o {n}: memcached's proxy mode is not supported: this server caches, it does not route"),
                ))
            }
            _ => return Err(fail(format!("Illegal suboption \"{item}\""))),
        }
        Ok(())
    }

    /// memcached's checks across options, after all of them.
    pub fn check(&self) -> Result<(), Fail> {
        let (hot, warm) = (
            if self.hot_lru_pct == 0 { 20 } else { self.hot_lru_pct },
            if self.warm_lru_pct == 0 { 40 } else { self.warm_lru_pct },
        );
        if hot + warm > 80 {
            return Err(Fail::usage(
                super::options::EX_USAGE,
                "hot_lru_pct + warm_lru_pct cannot be more than 80% combined",
            ));
        }
        if self.temporary_ttl && !self.lru_maintainer_on() {
            return Err(Fail::usage(super::options::EX_USAGE, "temporary_ttl requires lru_maintainer to be enabled"));
        }
        Ok(())
    }

    /// memcached starts its LRU maintainer unless told `no_lru_maintainer`.
    fn lru_maintainer_on(&self) -> bool {
        self.lru_maintainer || !self.notices.iter().any(|n| n.starts_with("-o no_lru_maintainer"))
    }
}

/// The `-o` part of `serve --help`.
pub fn help() -> String {
    [
        ("idle_timeout=S", "close connections idle S seconds (default: 0, never)"),
        ("read_buf_mem_limit=MB", "bound connection buffers: sets --output-budget (0: the default)"),
        ("track_sizes", "enable the item size histogram of `stats sizes`"),
        ("watcher_logbuf_size=KB", "per-watcher buffer of `watch` (default: 256)"),
        ("worker_logbuf_size=KB", "per-worker buffer of `watch` events (default: 64)"),
        ("maxconns_fast", "over -c a client is told so and closed (always, here)"),
        ("modern, no_modern", "accepted"),
        ("hashpower, no_hashexpand, hash_algorithm", "checked as memcached does, no effect (keyed SipHash index)"),
        ("slab_*, no_slab_*, no_chunked_items", "checked, no effect (no slab classes)"),
        (
            "lru_*, no_lru_*, hot_*/warm_*, temporary_ttl, tail_repair_time",
            "checked, no effect (the log's tail is the LRU)",
        ),
        ("ext_*, ssl_*, sock_cookie_id, *inline_ascii_resp, *drop_privileges", "accepted with a notice, no effect"),
        ("proxy_*", "refused: no proxy mode"),
    ]
    .iter()
    .map(|(n, h)| format!("   - {n:<28} {h}\n"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honoured_noted_and_refused() {
        let mut e = Extended::default();
        e.apply("idle_timeout=30,read_buf_mem_limit=8,track_sizes,hash_algorithm=xxh3,modern").unwrap();
        assert_eq!((e.idle_timeout, e.read_buf_mem_limit, e.track_sizes), (30, Some(8 << 20), true));
        assert_eq!(e.notices.len(), 1, "{:?}", e.notices);
        assert!(e.notices[0].contains("hash_algorithm") && e.notices[0].contains("SipHash"));
        let err = |s: &str| Extended::default().apply(s).unwrap_err();
        assert_eq!(err("bogus").msg, "Illegal suboption \"bogus\"");
        assert_eq!(err("bogus=1").msg, "Illegal suboption \"bogus=1\"");
        assert_eq!(err("idle_timeout").msg, "Missing numeric argument for idle_timeout");
        assert_eq!(err("hashpower=5").msg, "Initial hashtable multiplier of 5 is too low");
        assert_eq!(err("hash_algorithm=md5").msg, "Unknown hash_algorithm option (jenkins, murmur3, xxh3)");
        assert_eq!(err("proxy_config=x").code, 64);
        let mut e = Extended::default();
        e.apply("hot_lru_pct=50,warm_lru_pct=40").unwrap();
        assert!(e.check().unwrap_err().msg.contains("cannot be more than 80% combined"));
    }
}
