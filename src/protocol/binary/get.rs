//! get, getq, getk, getkq: the binary encoding of a read.

use super::{opcode, status, Req};
use crate::protocol::Ctx;
use crate::store::ReadOpts;

pub(crate) fn handle(req: &Req, out: &mut Vec<u8>, ctx: &Ctx) {
    let with_key = req.op == opcode::GETK;
    ctx.stats.cmd_get.incr();
    let hit = ctx.store.get(req.key, ReadOpts { value: true, note_access: true }, out, |m, out| {
        write_hit_header(req, out, m.flags, ctx.shown_cas(m.cas), m.value_len, with_key);
    });
    ctx.rt.detail.get(req.key, ctx.rt.settings.detail_delimiter, hit.is_some());
    if ctx.rt.watch.wants(crate::stats::watch::FETCHERS) {
        ctx.rt.watch.item_get(req.key, hit.is_some(), hit.as_ref().map_or(0, |m| m.value_len as usize), req.cfd);
    }
    if hit.is_some() {
        ctx.stats.get_hits.incr();
    } else {
        ctx.stats.get_misses.incr();
        miss(req, out, with_key);
    }
}

/// Header, flags and (getk/gatk) key of a hit; the value follows.
pub(crate) fn write_hit_header(req: &Req, out: &mut Vec<u8>, flags: u32, cas: u64, value_len: u32, with_key: bool) {
    let key: &[u8] = if with_key { req.key } else { &[] };
    let body = 4 + key.len() as u32 + value_len;
    super::header::write_response_header(
        out,
        req.h.opcode,
        status::SUCCESS,
        4,
        key.len() as u16,
        body,
        req.h.opaque,
        cas,
    );
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(key);
}

/// A miss: silent when quiet; getk/gatk return the key instead of a message.
pub(crate) fn miss(req: &Req, out: &mut Vec<u8>, with_key: bool) {
    if req.quiet {
        return;
    }
    if with_key {
        req.reply(out, status::KEY_ENOENT, 0, &[], req.key, &[]);
    } else {
        req.error(out, status::KEY_ENOENT);
    }
}
