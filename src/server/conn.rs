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
//! `REQUESTS_PER_EVENT` requests, per readiness event before it gives way to
//! the worker's other connections.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::protocol::{self, Ctx, Session, Step};
use crate::runtime::{Buffers, CONN_OUTPUT_CAP};

/// Bytes a worker reads at once into its scratch buffer (memcached's read
/// size too). It is also what a connection waiting for output room may keep
/// of unhandled requests, so small.
pub const READ_CHUNK: usize = 16 << 10;
/// Reply bytes a connection may produce per readiness event (at least one
/// reply, or one hit), and requests it may run, before it yields to the
/// worker's other connections (memcached's `-R`, 20 requests): a worker
/// serves every ready connection in turn, so these bound how long one
/// waits for the others.
const EVENT_QUANTUM: usize = 256 << 10;
const REQUESTS_PER_EVENT: u32 = 64;
/// The scratch output a worker keeps between replies; a larger one (a big
/// multi-get) is shrunk back to this after use.
const SCRATCH_OUT_KEEP: usize = 256 << 10;

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

pub struct Conn {
    pub stream: TcpStream,
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

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            in_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            counted_out: 0,
            counted_in: 0,
            session: Session::default(),
            stalled: false,
            quantum_end: 0,
            requests_left: 0,
            closing: false,
            eof: false,
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// How many more reply bytes this connection may produce now (0: one
    /// reply, or one hit), or why it must wait for its client to read.
    fn room(&self, ctx: &Ctx) -> Result<usize, Wait> {
        let pending = self.pending_out();
        if pending >= CONN_OUTPUT_CAP {
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
        self.stalled = false;
        // What the socket takes now is room to produce in.
        self.flush(ctx);
        self.quantum_end = self.out.len() + EVENT_QUANTUM;
        self.requests_left = REQUESTS_PER_EVENT;
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
        if pending > 0 || self.stalled {
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
        while !self.closing && pos < input.len() {
            match self.room(ctx) {
                Ok(room) => self.session.out_limit = self.out.len().saturating_add(room),
                Err(wait) => {
                    self.stall(wait, ctx);
                    break;
                }
            }
            // Service time: parse start to reply in `out`, recorded under
            // the command the protocol says it ran.
            let t0 = Instant::now();
            match protocol::step(&mut self.session, &input[pos..], &mut self.out, ctx) {
                Step::Consumed { len, kind } => {
                    ctx.stats.latency.record(kind, t0.elapsed());
                    self.requests_left = self.requests_left.saturating_sub(1);
                    pos += len
                }
                // Bytes swallowed after a refused value are not a request.
                Step::Discarded(n) => pos += n,
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
        while self.pending_out() > 0 {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => {
                    self.closing = true;
                    self.out_pos = self.out.len();
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
                    self.out_pos = self.out.len();
                }
            }
        }
    }

    /// Hand empty buffers back (the output to the worker's scratch, the input
    /// to the allocator), drop the sent front of a partly sent output once it
    /// is half of it, and bring this connection's share of the counters up
    /// to date.
    fn give_back(&mut self, ctx: &Ctx, scratch: &mut Scratch) {
        if self.out_pos == self.out.len() {
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
        Buffers::update(&ctx.rt.buffers.output, self.counted_out, 0);
        Buffers::update(&ctx.rt.buffers.input, self.counted_in, 0);
        self.counted_out = 0;
        self.counted_in = 0;
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
