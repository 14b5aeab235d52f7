//! Meta `mg`: one read with its extras (create on miss `N`, new expiry `T`,
//! recache `R`) and the win-token protocol, done as one step.

use super::write::ItemState;
use super::{absolute_expiry, MetaGet, MetaGetArgs, Store, StoreError};

impl Store {
    /// Meta `mg`: one read with the extras `mg` may ask for, done as one
    /// step: create on miss (`N`), new expiry (`T`), and the win-token
    /// protocol (`N` created, `R` recache, stale items). `before_value`
    /// writes the reply's header; the value follows when `a.value`.
    /// Read-only stores refuse `T` and never create (a miss stays a miss).
    pub fn meta_get(
        &self,
        key: &[u8],
        a: &MetaGetArgs,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&MetaGet, &mut Vec<u8>),
    ) -> std::result::Result<Option<MetaGet>, StoreError> {
        let read_only = self.is_read_only();
        if a.touch.is_some() && read_only {
            return Err(StoreError::ReadOnly);
        }
        if (a.vivify.is_none() && a.touch.is_none()) || read_only {
            // Nothing to write: the lock-free read path.
            return Ok(self.meta_read(key, a, false, None, true, out, before_value));
        }
        self.writable(key)?;
        let start = out.len();
        let mut w = self.lock();
        let now = self.clock.now();
        let before = w.log.head();
        let got = match self.live_locked(key, now) {
            None => {
                let Some(vivify) = a.vivify else { return Ok(None) };
                // An empty placeholder the winner fills in (memcached: a
                // zero-length item with flags 0).
                let exptime = match a.touch {
                    Some(t) if a.touch_after_vivify => t,
                    _ => vivify,
                };
                let cas = self.next_cas(&mut w);
                let expiry = absolute_expiry(exptime, now);
                self.put_locked(&mut w, key, &[b""], 0, expiry, cas, now, 0, ItemState::default())?;
                self.meta_read(key, a, true, Some(0), false, out, before_value)
            }
            Some((pos, h)) => {
                // Still under the writer lock: read the item as the touch
                // left it, even if the new expiry already ended it (as gat does).
                let read = || self.meta_read(key, a, false, Some(h.expiry), false, out, before_value);
                match a.touch {
                    Some(t) => self.touch_locked(&mut w, key, pos, &h, absolute_expiry(t, now), now, read)?,
                    None => read(),
                }
            }
        };
        let end = w.log.head();
        drop(w);
        // A hit without `T` wrote nothing, so it waits for nothing.
        if end == before {
            return Ok(got);
        }
        if let Err(e) = self.replicated(end) {
            out.truncate(start);
            return Err(e);
        }
        Ok(got)
    }

    #[allow(clippy::too_many_arguments)]
    fn meta_read(
        &self,
        key: &[u8],
        a: &MetaGetArgs,
        created: bool,
        expiry_before: Option<u32>,
        check_live: bool,
        out: &mut Vec<u8>,
        before_value: impl FnOnce(&MetaGet, &mut Vec<u8>),
    ) -> Option<MetaGet> {
        self.with_entry(key, check_live, |e, h, now| {
            let note = a.note_access && !self.is_read_only();
            let item = self.meta_of(h, e, note, now);
            let token_sent = e.win_sent();
            let mut want_win = created;
            if let Some(r) = a.recache {
                // memcached: win if the item expires sooner than the recache time.
                let expiry = if a.touch_before_recache { h.expiry } else { expiry_before.unwrap_or(h.expiry) };
                if !token_sent && !created && expiry != 0 && expiry < absolute_expiry(r, now) {
                    want_win = true;
                }
            }
            if item.stale && !token_sent {
                want_win = true;
            }
            // Exactly one reader gets the token, even racing on another worker.
            let win = want_win && !self.is_read_only() && e.take_win();
            let m = MetaGet { item, token_sent, win, created, expiry_before: expiry_before.unwrap_or(h.expiry), now };
            before_value(&m, out);
            if a.value {
                self.log.append_value(e.pos(), h, out);
            }
            m
        })
    }
}
