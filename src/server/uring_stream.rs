//! A connection's socket as the uring worker gives it to `Conn`: reads take
//! what the ring's multishot receive delivered, writes are staged and go out
//! as one send per loop iteration, so conn.rs runs unchanged over either loop.
//!
//! Both sides stay bounded like a socket's would: a write is taken only
//! while no send is in flight and the staged bytes are under `SEND_BATCH`
//! (otherwise `WouldBlock`, and the reply stays in the connection's output,
//! under its bounds); the worker cancels the receive once `RX_LIMIT` bytes
//! wait unread, and arms it again when they have been read. The staged,
//! in-flight and received bytes are counted in the runtime's `Buffers`.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use super::conn::TakeOutput;
use super::listen::Stream;
use crate::runtime::Buffers;

/// Staged reply bytes that go out as one send.
const SEND_BATCH: usize = 256 << 10;
/// Received bytes a connection may have unread before its receive is
/// cancelled (its client is sending faster than its replies go).
pub const RX_LIMIT: usize = 64 << 10;

/// What a completed send leaves.
#[derive(Debug)]
pub enum SendDone {
    /// Part is still to go: send the buffer again from here.
    Again(Vec<u8>, usize),
    /// All went: the buffer is free for reuse.
    Free(Vec<u8>),
    /// The socket failed.
    Failed,
}

#[derive(Debug)]
pub struct RingStream {
    pub socket: Stream,
    /// Received, not yet read: `rx[rx_pos..]`.
    rx: Vec<u8>,
    rx_pos: usize,
    /// The peer closed its side (after `rx` is read, reads return 0).
    pub eof: bool,
    /// The socket failed: reads and writes fail from now on.
    pub failed: bool,
    /// A multishot receive is in the kernel; a cancel of it has been asked.
    pub recv_armed: bool,
    pub cancelling: bool,
    /// Bytes written since the last send went out.
    tx: Vec<u8>,
    /// The send in the kernel: its length, from where in its buffer.
    in_flight: Option<(usize, usize)>,
    /// Waiting in the worker's ready list.
    pub queued: bool,
    /// The connection has output waiting for the send in flight: serve it
    /// when the send completes (otherwise a completion needs no serve).
    pub awaits_send: bool,
    /// This socket's share of the `Buffers` counters (output, input).
    counted: (usize, usize),
}

impl RingStream {
    pub fn new(socket: Stream) -> RingStream {
        RingStream {
            socket,
            rx: Vec::new(),
            rx_pos: 0,
            eof: false,
            failed: false,
            recv_armed: false,
            cancelling: false,
            tx: Vec::new(),
            in_flight: None,
            queued: false,
            awaits_send: false,
            counted: (0, 0),
        }
    }

    /// Bytes received and not yet read.
    pub fn unread(&self) -> usize {
        self.rx.len() - self.rx_pos
    }

    /// What the ring received.
    pub fn received(&mut self, bytes: &[u8]) {
        if self.rx_pos == self.rx.len() {
            self.rx.clear();
            self.rx_pos = 0;
        }
        self.rx.extend_from_slice(bytes);
    }

    /// The receive should be (re)armed: nothing stops reading.
    pub fn wants_recv(&self) -> bool {
        !self.recv_armed && !self.eof && !self.failed && self.unread() < RX_LIMIT
    }

    /// The receive should be cancelled: too much waits unread.
    pub fn wants_cancel(&self) -> bool {
        self.recv_armed && !self.cancelling && self.unread() >= RX_LIMIT
    }

    pub fn sending(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The staged bytes to send now, if there are any and no send is in
    /// flight; the buffer goes to the ring until [`RingStream::sent`].
    pub fn take_send(&mut self) -> Option<Vec<u8>> {
        if self.in_flight.is_some() || self.tx.is_empty() || self.failed {
            return None;
        }
        self.in_flight = Some((self.tx.len(), 0));
        Some(std::mem::take(&mut self.tx))
    }

    /// A send completed with `result` (bytes, or a negated errno): what
    /// becomes of its buffer.
    pub fn sent(&mut self, buf: Vec<u8>, result: i32) -> SendDone {
        let Some((len, from)) = self.in_flight.take() else { return SendDone::Free(buf) };
        if result <= 0 {
            // A socket that takes nothing, or refuses, is gone.
            self.failed = true;
            self.tx.clear();
            return SendDone::Failed;
        }
        let done = from + (result as usize).min(len - from);
        if done < len {
            self.in_flight = Some((len, done));
            return SendDone::Again(buf, done);
        }
        SendDone::Free(buf)
    }

    /// Take `buf` (empty) to stage writes in, if this socket has no buffer;
    /// otherwise hand it back.
    pub fn lend(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        if self.tx.capacity() == 0 && self.in_flight.is_none() {
            self.tx = buf;
            None
        } else {
            Some(buf)
        }
    }

    /// The staging buffer, when nothing is staged in it: the worker keeps
    /// it for the next connection that writes, so an idle one holds none.
    pub fn spare(&mut self) -> Option<Vec<u8>> {
        (self.tx.is_empty() && self.tx.capacity() > 0).then(|| std::mem::take(&mut self.tx))
    }

    /// Nothing is in the kernel or waiting to go: the socket may be closed.
    pub fn quiet(&self) -> bool {
        !self.recv_armed && self.in_flight.is_none() && (self.tx.is_empty() || self.failed)
    }

    /// Bring this socket's share of the `Buffers` counters up to date (0
    /// when `closed`).
    pub fn account(&mut self, bufs: &crate::runtime::Buffers, closed: bool) {
        let out = if closed { 0 } else { self.tx.len() + self.in_flight.map_or(0, |(len, _)| len) };
        let inp = if closed { 0 } else { self.unread() };
        Buffers::update(&bufs.output, self.counted.0, out);
        Buffers::update(&bufs.input, self.counted.1, inp);
        self.counted = (out, inp);
        if self.rx_pos == self.rx.len() && self.rx.capacity() > RX_LIMIT {
            self.rx = Vec::new();
            self.rx_pos = 0;
        }
    }
}

impl Read for RingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.unread() > 0 {
            let n = buf.len().min(self.unread());
            buf[..n].copy_from_slice(&self.rx[self.rx_pos..self.rx_pos + n]);
            self.rx_pos += n;
            return Ok(n);
        }
        if self.failed {
            Err(ErrorKind::ConnectionReset.into())
        } else if self.eof {
            Ok(0)
        } else {
            Err(ErrorKind::WouldBlock.into())
        }
    }
}

impl Write for RingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let room = SEND_BATCH.saturating_sub(self.tx.len());
        if self.in_flight.is_some() || room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(room);
        self.tx.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TakeOutput for RingStream {
    /// While nothing is staged or in flight, the output buffer becomes the
    /// next send as it is, and the (empty) staging buffer goes back in its
    /// place. Neither may be larger than a batch: the exchange must leave no
    /// buffer larger than the copy would have. Without this bound, buffers a
    /// slow reader's output had grown (to hold its replies) came to stage
    /// sends and pool for other connections, and the uncounted capacity
    /// pushed a flood of slow readers past the stated memory bound
    /// (tests/load.rs, by 2 MiB of 39 in one CI run).
    fn take_output(&mut self, out: &mut Vec<u8>) -> bool {
        if self.failed
            || self.in_flight.is_some()
            || !self.tx.is_empty()
            || out.capacity().max(self.tx.capacity()) > SEND_BATCH
        {
            return false;
        }
        std::mem::swap(&mut self.tx, out);
        true
    }
}

impl AsFd for RingStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> RingStream {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        RingStream::new(Stream::Tcp(c))
    }

    #[test]
    fn writes_wait_while_a_send_is_in_flight_and_resume_after_a_short_one() {
        let mut s = stream();
        assert_eq!(s.write(b"hello").unwrap(), 5);
        let buf = s.take_send().expect("staged bytes go out");
        assert_eq!(s.write(b"x").unwrap_err().kind(), ErrorKind::WouldBlock, "one send at a time");
        let SendDone::Again(buf, from) = s.sent(buf, 2) else { panic!("a short send goes on") };
        assert_eq!((&buf[from..], s.sending()), (&b"llo"[..], true));
        let SendDone::Free(mut buf) = s.sent(buf, 3) else { panic!("all sent") };
        assert!(!s.sending() && s.spare().is_none(), "no buffer while none is lent");
        buf.clear();
        assert!(s.lend(buf).is_none(), "an idle socket takes a lent buffer");
        assert_eq!(s.write(b"x").unwrap(), 1);
        let buf = s.take_send().unwrap();
        assert!(matches!(s.sent(buf, -libc::EPIPE), SendDone::Failed));
        assert_eq!(s.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
        assert!(s.quiet());
    }

    #[test]
    fn an_output_buffer_is_taken_whole_only_while_nothing_is_staged_or_in_flight() {
        let mut s = stream();
        let mut out = b"VALUE k 0 1\r\nx\r\nEND\r\n".to_vec();
        assert!(s.take_output(&mut out), "an idle socket takes the buffer");
        assert!(out.is_empty());
        let mut more = b"STORED\r\n".to_vec();
        assert!(!s.take_output(&mut more), "not over staged bytes (they would be lost)");
        assert_eq!(s.write(&more).unwrap(), more.len(), "they are appended instead");
        let buf = s.take_send().unwrap();
        assert_eq!(buf, b"VALUE k 0 1\r\nx\r\nEND\r\nSTORED\r\n", "in order, nothing lost");
        let mut next = b"END\r\n".to_vec();
        assert!(!s.take_output(&mut next), "not while a send is in flight");
        let SendDone::Free(_) = s.sent(buf, 29) else { panic!("all sent") };
        assert!(s.take_output(&mut next));
        let buf = s.take_send().unwrap();
        assert_eq!(buf, b"END\r\n");
        let SendDone::Free(_) = s.sent(buf, 5) else { panic!("all sent") };
        let mut big = vec![0; SEND_BATCH + 1];
        assert!(!s.take_output(&mut big), "not past the batch bound");
        big.truncate(10);
        assert!(!s.take_output(&mut big), "nor a short output in a buffer past it");
        big.shrink_to_fit();
        big.resize(SEND_BATCH, 0);
        assert!(s.take_output(&mut big), "up to it");
        assert!(big.is_empty() && big.capacity() <= SEND_BATCH);
        let buf = s.take_send().unwrap();
        let SendDone::Free(mut buf) = s.sent(buf, SEND_BATCH as i32) else { panic!("all sent") };
        buf.clear();
        buf.reserve(SEND_BATCH + 1);
        assert!(s.lend(buf).is_none(), "an idle socket takes a lent buffer");
        let mut small = b"END\r\n".to_vec();
        assert!(!s.take_output(&mut small), "nor is a staging buffer past the bound given in exchange");
    }

    #[test]
    fn reads_take_what_was_received_then_eof() {
        let mut s = stream();
        let mut b = [0u8; 4];
        assert_eq!(s.read(&mut b).unwrap_err().kind(), ErrorKind::WouldBlock);
        s.received(b"abcdef");
        assert_eq!((s.read(&mut b).unwrap(), &b), (4, b"abcd"));
        s.eof = true;
        assert_eq!(s.read(&mut b).unwrap(), 2);
        assert_eq!(s.read(&mut b).unwrap(), 0);
        s.received(&vec![0; RX_LIMIT]);
        s.recv_armed = true;
        assert!(s.wants_cancel() && !s.wants_recv());
    }
}
