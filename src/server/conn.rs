//! One TCP connection: what it keeps between readiness events around the
//! protocol state.
//!
//! Memory is taken when needed and given back after a burst. Reads land in
//! the worker's 16 KiB scratch buffer; a connection keeps only the input it could
//! not handle yet (a partial request, or requests waiting for output room).
//! Replies are written into the worker's scratch output and sent at once; a
//! connection keeps the buffer only while the socket has not taken all of
//! it. An idle connection holds no buffer at all.
//!
//! Output is bounded per connection and in total. A connection that holds
//! `CONN_OUTPUT_CAP` reply bytes, or that holds any while all connections
//! together hold `--output-budget`, takes no more requests (and stops reading)
//! until its client reads; a multi-get stops between hits for the same
//! reasons ([`Step::Paused`]) and carries on as the output drains. A
//! connection that holds nothing may always produce one reply (one hit of a
//! multi-get), whatever the budget, so none waits forever on the others.
//! And each connection produces at most `EVENT_QUANTUM`, and runs at most
//! `-R` requests, per readiness event before it gives way to
//! the worker's other connections.
//!
//! Under `--sync-replicas K` a write's reply is held (group commit): the
//! store applies the write without waiting and says where its records end;
//! the reply stays in the output, and every reply after it on this
//! connection behind it (order is kept), until the worker sees K replicas'
//! progress pass that end (`settle`, from its poll loop) or the
//! `--sync-timeout` run out, when the write's error reply takes its place
//! (`protocol::held`). A quiet write (binary SETQ..., text `noreply`) holds
//! an empty reply the same way: later replies (a NOOP) still wait for it,
//! and a binary one still gets its error. Other connections never wait.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use super::listen::Stream;
use crate::protocol::held::Unconfirmed;
use crate::protocol::{self, Ctx, Session, Step};
use crate::runtime::{Buffers, CONN_OUTPUT_CAP};

/// Bytes a worker reads at once into its scratch buffer (memcached's read
/// size too). It is also what a connection waiting for output room may keep
/// of unhandled requests, so small.
pub const READ_CHUNK: usize = 16 << 10;
/// Reply bytes a connection may produce per readiness event (at least one
/// reply, or one hit), and requests it may run, before it yields to the
/// worker's other connections (the requests are memcached's `-R`,
/// `Settings::reqs_per_event`, 64 unless told): a worker serves every ready
/// connection in turn, so these bound how long one waits for the others.
const EVENT_QUANTUM: usize = 256 << 10;
/// The scratch output a worker keeps between replies; a larger one (a big
/// multi-get) is shrunk back to this after use.
const SCRATCH_OUT_KEEP: usize = 256 << 10;
/// Held replies a connection may have before it takes no more requests: a
/// quiet write's holds no bytes, so the output cap alone would not bound them.
const MAX_HELD: usize = 1024;

/// A worker's buffers, lent to whichever connection it serves.
pub struct Scratch {
    input: Box<[u8]>,
    out: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch { input: vec![0; READ_CHUNK].into_boxed_slice(), out: Vec::new() }
    }
}

/// A socket that may take a connection's whole output buffer, instead of
/// a copy of its bytes: the uring worker's stages replies in a buffer the
/// ring then owns, and taking `out` itself spares copying every reply once
/// more (a 4 KiB value, or a multi-get's 200 KB, twice in user space).
pub trait TakeOutput {
    /// Take `out`'s bytes whole, leaving an empty buffer in its place, or
    /// refuse (return false) and let them be written as usual.
    fn take_output(&mut self, _out: &mut Vec<u8>) -> bool {
        false
    }
}

impl TakeOutput for Stream {}

/// `S` is the socket as the worker loop gives it: a [`Stream`] read and
/// written directly (epoll), or the uring worker's `RingStream`, which
/// reads what the ring received and hands writes to the ring.
pub struct Conn<S = Stream> {
    pub stream: S,
    /// Input kept between readiness events; `input[in_pos..]` is unhandled.
    input: Vec<u8>,
    in_pos: usize,
    /// Replies not yet taken by the socket (`out[out_pos..]`); while empty it
    /// holds no memory, and between events it is the worker's scratch.
    out: Vec<u8>,
    out_pos: usize,
    /// This connection's share of the runtime's `Buffers` counters.
    counted_out: usize,
    counted_in: usize,
    session: Session,
    /// Handling stopped for output room, not for lack of input.
    stalled: bool,
    /// This event's share ends when `out` is this long, or after this many
    /// more requests.
    quantum_end: usize,
    requests_left: u32,
    /// Close once the output is flushed.
    closing: bool,
    /// The peer closed its side; handle what is buffered, then close.
    eof: bool,
    /// Replies held for `--sync-replicas`, in output order.
    held: VecDeque<Held>,
    /// A paused request (a multi-`gat`) that wrote: where its reply starts
    /// in `out` and its last write's end, held once it completes.
    open_hold: Option<(usize, u64)>,
}

/// A write's reply waiting for `--sync-replicas`.
struct Held {
    /// Its reply is `out[start..start + len]` (empty for a quiet write).
    start: usize,
    len: usize,
    /// It goes once K replicas hold the log below this...
    end: u64,
    /// ...or, past this, `error` goes in its place.
    deadline: Instant,
    error: Unconfirmed,
}

/// What the worker should do with the connection after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for input.
    Read,
    /// Output is pending, or buffered requests wait for output room: wait
    /// for the socket to be writable (and do not read). A connection with
    /// nothing pending is writable at once, so it comes back next poll.
    Write,
    Close,
}

/// Why a connection may not produce now.
enum Wait {
    /// It holds its cap of unsent replies.
    Cap,
    /// It holds some while all connections hold the output budget.
    Budget,
    /// It has had its share of this event.
    Yield,
}

impl<S: Read + Write + AsFd + TakeOutput> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        use std::os::fd::AsRawFd;
        let cfd = stream.as_fd().as_raw_fd();
        Conn {
            stream,
            input: Vec::new(),
            in_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            counted_out: 0,
            counted_in: 0,
            session: Session { cfd, ..Session::default() },
            stalled: false,
            quantum_end: 0,
            requests_left: 0,
            closing: false,
            eof: false,
            held: VecDeque::new(),
            open_hold: None,
        }
    }

    /// Unsent reply bytes, held ones included (they count against the bounds).
    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Where the output that may be sent now ends: at the first held reply.
    fn sendable_end(&self) -> usize {
        match (self.held.front(), self.open_hold) {
            (Some(h), _) => h.start,
            (None, Some((start, _))) => start,
            (None, None) => self.out.len(),
        }
    }

    /// Whether replies wait for `--sync-replicas` (the worker then calls
    /// [`Conn::settle`] on every poll).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Release the held replies at the front that K replicas now hold (all
    /// below `confirmed`), and replace those whose wait ran out by `now`
    /// with their error. Returns whether any went: the connection is to be
    /// served again then, to send them.
    pub fn settle(&mut self, confirmed: u64, now: Instant, ctx: &Ctx) -> bool {
        let mut changed = false;
        while let Some(h) = self.held.front() {
            if h.end <= confirmed {
                self.held.pop_front();
            } else if now >= h.deadline {
                let Some(h) = self.held.pop_front() else { break };
                let mut error = Vec::new();
                h.error.write(&mut error);
                let (old, new) = (h.len, error.len());
                self.out.splice(h.start..h.start + h.len, error);
                for later in self.held.iter_mut() {
                    later.start = later.start + new - old;
                }
                if let Some((start, _)) = self.open_hold.as_mut() {
                    *start = *start + new - old;
                }
                ctx.store.note_sync_timeout();
            } else {
                break;
            }
            changed = true;
        }
        changed
    }

    /// The output's first `by` bytes (sent) are gone: move the holds with it.
    fn shift_holds(&mut self, by: usize) {
        for h in self.held.iter_mut() {
            h.start -= by;
        }
        if let Some((start, _)) = self.open_hold.as_mut() {
            *start -= by;
        }
    }

    /// How many more reply bytes this connection may produce now (0: one
    /// reply, or one hit), or why it must wait for its client to read.
    fn room(&self, ctx: &Ctx) -> Result<usize, Wait> {
        let pending = self.pending_out();
        if pending >= CONN_OUTPUT_CAP || self.held.len() >= MAX_HELD {
            return Err(Wait::Cap);
        }
        let total = ctx.rt.buffers.output.load(std::sync::atomic::Ordering::Relaxed) as usize;
        let held = total.saturating_sub(self.counted_out).saturating_add(self.out.len());
        let budget = ctx.rt.settings.output_budget.saturating_sub(held);
        if budget == 0 && pending > 0 {
            return Err(Wait::Budget);
        }
        let share = self.quantum_end.saturating_sub(self.out.len());
        if share == 0 || self.requests_left == 0 {
            return Err(Wait::Yield);
        }
        Ok((CONN_OUTPUT_CAP - pending).min(budget).min(share))
    }

    /// Read what the socket has, handle every complete request there is room
    /// for, write what we can. Called on readiness, or on every poll in busy
    /// mode. Returns this connection's buffers' memory to `scratch` or the
    /// allocator when they are empty.
    pub fn on_ready(&mut self, ctx: &Ctx, scratch: &mut Scratch) -> Next {
        if self.out.capacity() == 0 {
            std::mem::swap(&mut self.out, &mut scratch.out);
        }
        if self.session.watch.is_some() {
            return self.on_watch(ctx, scratch);
        }
        self.stalled = false;
        // What the socket takes now is room to produce in.
        self.flush(ctx);
        self.quantum_end = self.out.len() + EVENT_QUANTUM;
        self.requests_left = ctx.rt.settings.reqs_per_event;
        if self.in_pos < self.input.len() {
            let input = std::mem::take(&mut self.input);
            self.in_pos += self.handle(&input[self.in_pos..], ctx);
            self.input = input;
        }
        let complete = self.in_pos == self.input.len();
        if !self.stalled && !self.closing && !self.eof && self.room(ctx).is_ok() {
            if complete {
                self.read_fresh(ctx, scratch);
            } else {
                self.read_more(ctx, scratch);
            }
        }
        self.flush(ctx);
        self.give_back(ctx, scratch);
        let pending = self.pending_out();
        if self.closing || (self.eof && pending == 0 && !self.stalled) {
            return if pending == 0 { Next::Close } else { Next::Write };
        }
        // Output all held is not waiting for the socket: the worker serves
        // this connection again when its holds settle.
        if self.out_pos < self.sendable_end() || self.stalled {
            Next::Write
        } else {
            Next::Read
        }
    }

    /// Whether this connection streams `watch` events (the worker then
    /// serves it on every poll, to move them).
    pub fn watching(&self) -> bool {
        self.session.watch.is_some()
    }

    /// A watcher with event lines waiting to move.
    pub fn watch_has_lines(&self) -> bool {
        self.session.watch.as_ref().is_some_and(|w| w.has_lines())
    }

    /// A watcher: its input is read and ignored (as memcached's) only to
    /// see it close; queued event lines move into the output while it is
    /// under the connection's cap.
    fn on_watch(&mut self, ctx: &Ctx, scratch: &mut Scratch) -> Next {
        self.input.clear();
        self.in_pos = 0;
        while !self.eof && self.read_into(&mut scratch.input, ctx).is_some() {}
        self.flush(ctx);
        if let Some(w) = &self.session.watch {
            let limit = self.out_pos + CONN_OUTPUT_CAP;
            if w.drain_into(&mut self.out, limit) {
                self.flush(ctx);
            }
        }
        self.give_back(ctx, scratch);
        if self.closing || self.eof {
            return Next::Close;
        }
        if self.out_pos < self.out.len() {
            Next::Write
        } else {
            Next::Read
        }
    }

    /// Nothing is buffered: read into the worker's scratch and handle the
    /// requests there; keep only what is left.
    fn read_fresh(&mut self, ctx: &Ctx, scratch: &mut Scratch) {
        let Some(n) = self.read_into(&mut scratch.input, ctx) else { return };
        let used = self.handle(&scratch.input[..n], ctx);
        if used < n {
            self.input.clear();
            self.input.extend_from_slice(&scratch.input[used..n]);
            self.in_pos = 0;
        }
    }

    /// A partial request is buffered: read after it and handle. A small one
    /// takes the read through the scratch; a large one (a big value, a long
    /// multi-get line) reads straight after itself, as much again as it has
    /// up to a MiB (the protocol bounds how large a request may be), so it
    /// takes a few reads and parses rather than one per chunk.
    fn read_more(&mut self, ctx: &Ctx, scratch: &mut Scratch) {
        if self.in_pos > 0 {
            self.input.drain(..self.in_pos);
            self.in_pos = 0;
        }
        let len = self.input.len();
        if len < READ_CHUNK {
            let Some(n) = self.read_into(&mut scratch.input, ctx) else { return };
            self.input.extend_from_slice(&scratch.input[..n]);
        } else {
            // At most a MiB at a time: the zeroed room is memory touched.
            self.input.resize(len + len.min(1 << 20), 0);
            let mut buf = std::mem::take(&mut self.input);
            let n = self.read_into(&mut buf[len..], ctx);
            buf.truncate(len + n.unwrap_or(0));
            self.input = buf;
            if n.is_none() {
                return;
            }
        }
        let input = std::mem::take(&mut self.input);
        self.in_pos = self.handle(&input, ctx);
        self.input = input;
    }

    /// One read into `buf`: the bytes read, or `None` (nothing to read, EOF,
    /// or an error: `eof`/`closing` say which).
    fn read_into(&mut self, buf: &mut [u8], ctx: &Ctx) -> Option<usize> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return None;
                }
                Ok(n) => {
                    ctx.stats.bytes_read.add(n as u64);
                    return Some(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(_) => {
                    self.eof = true;
                    self.closing = true;
                    return None;
                }
            }
        }
    }

    /// Run the requests at the front of `input` while there is output room;
    /// returns the bytes consumed.
    fn handle(&mut self, input: &[u8], ctx: &Ctx) -> usize {
        let mut pos = 0;
        // Service time: parse start to reply in `out`, recorded under the
        // command the protocol says it ran. One clock read a request: the
        // end of one is the start of the next (the two reads a request took
        // were 1.6% of a get's CPU).
        let mut began = None;
        while !self.closing && pos < input.len() {
            match self.room(ctx) {
                Ok(room) => self.session.out_limit = self.out.len().saturating_add(room),
                Err(wait) => {
                    self.stall(wait, ctx);
                    break;
                }
            }
            let t0 = *began.get_or_insert_with(Instant::now);
            let before = self.out.len();
            let (step, wrote) =
                ctx.store.deferring(|| protocol::step(&mut self.session, &input[pos..], &mut self.out, ctx));
            if let Some(end) = wrote {
                let open = self.open_hold.get_or_insert((before, 0));
                open.1 = open.1.max(end);
            }
            match step {
                Step::Consumed { len, kind } => {
                    if self.session.watch.is_some() {
                        // `watch`: what follows it is never run.
                        return input.len();
                    }
                    let t1 = Instant::now();
                    ctx.stats.latency.record(kind, t1 - t0);
                    began = Some(t1);
                    self.requests_left = self.requests_left.saturating_sub(1);
                    if let Some((start, end)) = self.open_hold.take() {
                        self.held.push_back(Held {
                            start,
                            len: self.out.len() - start,
                            end,
                            deadline: t1 + ctx.store.sync_timeout(),
                            error: Unconfirmed::of(self.session.protocol, &input[pos..pos + len]),
                        });
                    }
                    pos += len
                }
                // Bytes swallowed after a refused value are not a request.
                Step::Discarded(n) => {
                    pos += n;
                    began = None;
                }
                Step::NeedMore => break,
                Step::Close => self.closing = true,
                Step::Paused => {
                    // Whichever limit the hit reached.
                    let wait = self.room(ctx).err().unwrap_or(Wait::Yield);
                    self.stall(wait, ctx);
                    break;
                }
            }
        }
        pos
    }

    fn stall(&mut self, wait: Wait, ctx: &Ctx) {
        self.stalled = true;
        match wait {
            Wait::Cap => ctx.stats.output_cap_waits.incr(),
            Wait::Budget => ctx.stats.output_budget_waits.incr(),
            Wait::Yield => ctx.stats.conn_yields.incr(),
        }
    }

    fn flush(&mut self, ctx: &Ctx) {
        // All of it may go and none has: hand the buffer over whole.
        let n = self.out.len();
        if n > 0 && self.out_pos == 0 && self.sendable_end() == n && self.stream.take_output(&mut self.out) {
            debug_assert!(self.out.is_empty(), "a taken output leaves an empty buffer");
            ctx.stats.bytes_written.add(n as u64);
            // Quiet writes' holds (empty, at the end) go with it, as a
            // written-out buffer's do in give_back.
            self.shift_holds(n);
            return;
        }
        loop {
            let end = self.sendable_end();
            if self.out_pos >= end {
                break;
            }
            match self.stream.write(&self.out[self.out_pos..end]) {
                Ok(0) => {
                    self.closing = true;
                    self.drop_output();
                }
                Ok(n) => {
                    self.out_pos += n;
                    ctx.stats.bytes_written.add(n as u64);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The peer is gone: nothing more can be delivered.
                    self.closing = true;
                    self.drop_output();
                }
            }
        }
    }

    /// Nothing more can be delivered: forget the output, held replies too.
    fn drop_output(&mut self) {
        self.out_pos = self.out.len();
        self.held.clear();
        self.open_hold = None;
    }

    /// Hand empty buffers back (the output to the worker's scratch, the input
    /// to the allocator), drop the sent front of a partly sent output once it
    /// is half of it, and bring this connection's share of the counters up
    /// to date.
    fn give_back(&mut self, ctx: &Ctx, scratch: &mut Scratch) {
        if self.out_pos == self.out.len() {
            // Holds left here are empty (quiet writes'), at the end.
            let sent = self.out_pos;
            self.shift_holds(sent);
            self.out.clear();
            self.out_pos = 0;
            if scratch.out.capacity() == 0 {
                std::mem::swap(&mut self.out, &mut scratch.out);
                if scratch.out.capacity() > SCRATCH_OUT_KEEP {
                    scratch.out.shrink_to(SCRATCH_OUT_KEEP);
                }
            } else {
                self.out = Vec::new();
            }
        } else if self.out_pos >= READ_CHUNK && self.out_pos >= self.out.len() / 2 {
            // A client reading slowly while we keep producing must not make
            // the buffer grow by what it has already taken.
            self.out.drain(..self.out_pos);
            let sent = self.out_pos;
            self.shift_holds(sent);
            self.out_pos = 0;
            if self.out.capacity() > 2 * self.out.len() {
                self.out.shrink_to(self.out.len() + READ_CHUNK);
            }
        }
        if self.in_pos == self.input.len() {
            self.input = Vec::new();
            self.in_pos = 0;
        }
        let bufs = &ctx.rt.buffers;
        Buffers::update(&bufs.output, self.counted_out, self.out.len());
        self.counted_out = self.out.len();
        Buffers::update(&bufs.input, self.counted_in, self.input.len());
        self.counted_in = self.input.len();
    }

    /// Take this connection's share out of the counters (it is closing).
    pub fn release(&mut self, ctx: &Ctx) {
        if let Some(w) = self.session.watch.take() {
            ctx.rt.watch.remove(&w);
        }
        Buffers::update(&ctx.rt.buffers.output, self.counted_out, 0);
        Buffers::update(&ctx.rt.buffers.input, self.counted_in, 0);
        self.counted_out = 0;
        self.counted_in = 0;
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "conn_hold_tests.rs"]
mod hold_tests;
