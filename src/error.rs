//! One error type for the whole crate: a message plus the chain of contexts it
//! travelled through, so `main` can print "while X: while Y: cause" and exit.
//! Deep code never exits; it returns `Result` and adds context on the way up.
//! An error that came from the OS keeps its `io::ErrorKind` through every
//! context, so a caller can still tell "not found" from "in use".

use std::fmt;
use std::io;

#[derive(Debug)]
pub struct Error {
    msg: String,
    /// The kind of the `io::Error` (or errno) at the root, if any.
    kind: Option<io::ErrorKind>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error { msg: msg.into(), kind: None }
    }

    /// Prefix the message with what we were doing when it failed.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error { msg: format!("{ctx}: {}", self.msg), kind: self.kind }
    }

    pub fn message(&self) -> &str {
        &self.msg
    }

    /// The OS error's kind when this error began as an `io::Error` or an
    /// errno; `None` for our own errors.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error { msg: e.to_string(), kind: Some(e.kind()) }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        // nix's message ("EADDRINUSE: Address already in use"), std's kind.
        Error { msg: e.to_string(), kind: Some(io::Error::from(e).kind()) }
    }
}

/// `.context("doing X")` on any `Result` whose error converts into ours.
pub trait Context<T> {
    fn context(self, ctx: impl fmt::Display) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(ctx))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// Early return with a formatted error: `bail!("bad {}", x)`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::new(format!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_outermost_first() {
        let r: std::result::Result<(), std::io::Error> = Err(std::io::Error::other("disk on fire"));
        let e = r.context("opening log").unwrap_err().context("starting server");
        assert_eq!(e.to_string(), "starting server: opening log: disk on fire");
    }

    #[test]
    fn os_errors_keep_their_kind_through_context() {
        let r: std::result::Result<(), io::Error> = Err(io::Error::from(io::ErrorKind::NotFound));
        let e = r.context("opening /x").unwrap_err().context("starting");
        assert_eq!(e.kind(), Some(io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), format!("starting: opening /x: {}", io::Error::from(io::ErrorKind::NotFound)));

        let r: std::result::Result<(), nix::Error> = Err(nix::errno::Errno::EADDRINUSE);
        let e = r.context("listening").unwrap_err();
        assert_eq!(e.kind(), Some(io::ErrorKind::AddrInUse));
        assert_eq!(e.to_string(), format!("listening: {}", nix::errno::Errno::EADDRINUSE));

        assert_eq!(Error::new("ours").context("ctx").kind(), None);
    }
}
