//! One TCP connection: input and output buffers around the protocol state.
//!
//! Pipelined requests are handled back to back from the input buffer; partial
//! requests wait for more bytes; partial writes wait for the socket. The
//! output is bounded: past `OUT_HIGH_WATER` pending bytes the connection stops
//! handling requests (and stops reading) until the client drains its replies,
//! so a client that never reads cannot grow our memory without bound.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::protocol::{self, Ctx, Session, Step};

/// Pending reply bytes beyond which we stop taking requests.
pub const OUT_HIGH_WATER: usize = 4 << 20;
/// The input buffer's starting size; it doubles when one request needs more
/// (a large value) and returns to this size once drained.
const INPUT_START: usize = 16 << 10;

pub struct Conn {
    pub stream: TcpStream,
    /// Zeroed once when (re)allocated, never per read: reads land in
    /// `input[in_end..]`, unhandled bytes are `input[in_pos..in_end]`.
    input: Vec<u8>,
    /// Start of unhandled input.
    in_pos: usize,
    /// End of the bytes read so far.
    in_end: usize,
    out: Vec<u8>,
    /// Start of unsent output.
    out_pos: usize,
    session: Session,
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
    /// Output is pending: wait for the socket to be writable (and do not read).
    Write,
    Close,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            input: vec![0; INPUT_START],
            in_pos: 0,
            in_end: 0,
            out: Vec::with_capacity(16 << 10),
            out_pos: 0,
            session: Session::default(),
            closing: false,
            eof: false,
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Read what the socket has, handle every complete request, write what we
    /// can. Called on readiness, or on every poll in busy mode.
    pub fn on_ready(&mut self, ctx: &Ctx) -> Next {
        if !self.closing && !self.eof && self.pending_out() < OUT_HIGH_WATER {
            self.fill(ctx);
        }
        self.handle(ctx);
        self.flush(ctx);
        if self.closing || (self.eof && self.pending_out() == 0) {
            if self.pending_out() == 0 {
                return Next::Close;
            }
            return Next::Write;
        }
        if self.pending_out() > 0 {
            Next::Write
        } else {
            Next::Read
        }
    }

    fn fill(&mut self, ctx: &Ctx) {
        loop {
            if self.in_pos == self.in_end {
                self.in_pos = 0;
                self.in_end = 0;
            } else if self.in_end == self.input.len() {
                if self.in_pos > 0 {
                    // Move the partial request to the front.
                    self.input.copy_within(self.in_pos..self.in_end, 0);
                    self.in_end -= self.in_pos;
                    self.in_pos = 0;
                } else {
                    // One request larger than the buffer: grow (the protocol
                    // bounds how large a request may be).
                    let n = self.input.len() * 2;
                    self.input.resize(n, 0);
                }
            }
            match self.stream.read(&mut self.input[self.in_end..]) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => {
                    self.in_end += n;
                    ctx.stats.bytes_read.add(n as u64);
                    if self.in_end < self.input.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.eof = true;
                    self.closing = true;
                    return;
                }
            }
        }
    }

    fn handle(&mut self, ctx: &Ctx) {
        while !self.closing && self.pending_out() < OUT_HIGH_WATER {
            if self.in_pos == self.in_end {
                // `step` would only say NeedMore; skip it and its clock read.
                break;
            }
            // Service time: parse start to reply in `out`, recorded under
            // the command the protocol says it ran.
            let t0 = Instant::now();
            match protocol::step(&mut self.session, &self.input[self.in_pos..self.in_end], &mut self.out, ctx) {
                Step::Consumed { len, kind } => {
                    ctx.stats.latency.record(kind, t0.elapsed());
                    self.in_pos += len
                }
                // Bytes swallowed after a refused value are not a request.
                Step::Discarded(n) => self.in_pos += n,
                Step::NeedMore => break,
                Step::Close => self.closing = true,
            }
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
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Give back memory a large reply grew, keeping a working buffer.
            if self.out.capacity() > OUT_HIGH_WATER {
                self.out.shrink_to(64 << 10);
            }
        }
        if self.input.len() > INPUT_START && self.in_pos == self.in_end {
            // A large request grew the buffer; give the memory back.
            self.input = vec![0; INPUT_START];
            self.in_pos = 0;
            self.in_end = 0;
        }
    }
}
