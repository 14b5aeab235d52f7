//! Logging to stderr in a form journald keeps well: one line per event, with
//! a level. The crate logs through the `log` facade (`::log`, not the
//! record log of `src/log/`); this module is the process's `log::Log`, installed by
//! [`init`], and the `log_error!` .. `log_debug!` macros forward to it.
//!
//! - Under systemd (stderr is the stream named by `$JOURNAL_STREAM`) each line
//!   starts with a syslog priority prefix (`<4>`), which journald strips and
//!   records as the entry's priority; the level word follows for humans.
//! - Elsewhere a line starts with the level word (`warn: ...`), coloured only
//!   when stderr is a terminal (and `NO_COLOR` is unset).
//! - Off a terminal, a message's own newlines are folded so that one event
//!   stays one line (one journal entry, one grep hit).
//!
//! Levels follow memcached's `-v`: errors, warnings and notices always;
//! `info` from `-v`; `debug` from `-vv`; `trace` (unused so far) from
//! `-vvv`; and `verbosity N` at run time once [`follow`] has been given the
//! runtime's verbosity. memcached's NOTICE has no `log::Level`: a notice is
//! an `Info` record with target [`NOTICE`] (what `log_notice!` writes),
//! printed as `notice` at syslog priority 5 whatever `-v` says.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// The target that makes an `Info` record a notice.
pub const NOTICE: &str = "notice";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
    /// syslog has nothing below debug: priority 7 too.
    Trace = 8,
}

impl Level {
    /// A record's level, a notice being `Info` with target [`NOTICE`].
    pub fn of(level: ::log::Level, target: &str) -> Level {
        match level {
            ::log::Level::Error => Level::Error,
            ::log::Level::Warn => Level::Warn,
            ::log::Level::Info if target == NOTICE => Level::Notice,
            ::log::Level::Info => Level::Info,
            ::log::Level::Debug => Level::Debug,
            ::log::Level::Trace => Level::Trace,
        }
    }

    /// The syslog priority (journald's `<N>`).
    pub fn priority(self) -> u8 {
        (self as u8).min(7)
    }

    pub fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// The `-v` count from which this level is printed.
    fn min_verbosity(self) -> u32 {
        match self {
            Level::Error | Level::Warn | Level::Notice => 0,
            Level::Info => 1,
            Level::Debug => 2,
            Level::Trace => 3,
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Level::Error => "\x1b[1;31m",
            Level::Warn => "\x1b[33m",
            Level::Notice => "\x1b[1m",
            Level::Info => "\x1b[32m",
            Level::Debug | Level::Trace => "\x1b[2m",
        }
    }
}

/// How lines are decorated; decided once, on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `<N>word: message`, newlines folded.
    Journal,
    /// `word: message` with the word coloured.
    Terminal,
    /// `word: message`, newlines folded (a file, a pipe).
    Plain,
}

const UNSET: u8 = 0;
static STYLE: AtomicU8 = AtomicU8::new(UNSET);
/// `-v` count before the runtime exists (and when there is none).
static VERBOSITY: AtomicU32 = AtomicU32::new(0);
/// The runtime's verbosity, which the `verbosity` command changes.
static FOLLOWED: OnceLock<Arc<AtomicU32>> = OnceLock::new();

/// The process's logger: every record goes through [`write`].
struct Stderr;

impl ::log::Log for Stderr {
    fn enabled(&self, m: &::log::Metadata) -> bool {
        enabled(Level::of(m.level(), m.target()))
    }

    fn log(&self, r: &::log::Record) {
        write(Level::of(r.level(), r.target()), *r.args());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

static LOGGER: Stderr = Stderr;

/// Install this module as the `log` facade's logger (once per process;
/// later calls do nothing). Until then, records are dropped.
pub fn init() {
    if ::log::set_logger(&LOGGER).is_ok() {
        // The facade passes every level; `enabled` applies `-v`, which
        // changes at run time.
        ::log::set_max_level(::log::LevelFilter::Trace);
    }
}

/// Set the starting verbosity (`-v` count).
pub fn set_verbosity(v: u32) {
    VERBOSITY.store(v, Ordering::Relaxed);
}

/// From now on, follow this verbosity (the runtime's, changed by
/// `verbosity N`). The first call wins.
pub fn follow(verbosity: Arc<AtomicU32>) {
    let _ = FOLLOWED.set(verbosity);
}

pub fn verbosity() -> u32 {
    match FOLLOWED.get() {
        Some(v) => v.load(Ordering::Relaxed),
        None => VERBOSITY.load(Ordering::Relaxed),
    }
}

pub fn enabled(level: Level) -> bool {
    verbosity() >= level.min_verbosity()
}

/// journald's own test: `$JOURNAL_STREAM` is `DEV:INODE` of the stream it
/// connected our stderr to; a stderr since redirected elsewhere does not match.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else { return false };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

pub fn style() -> Style {
    match STYLE.load(Ordering::Relaxed) {
        1 => Style::Journal,
        2 => Style::Terminal,
        3 => Style::Plain,
        _ => {
            let s = if stderr_is_journal() {
                Style::Journal
            } else if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
                Style::Terminal
            } else {
                Style::Plain
            };
            STYLE.store(s as u8 + 1, Ordering::Relaxed);
            s
        }
    }
}

/// One event as the line written for it (with its newline).
pub fn format_line(style: Style, level: Level, msg: &str) -> String {
    let mut line = String::with_capacity(msg.len() + 16);
    match style {
        Style::Journal => {
            line.push('<');
            line.push(char::from(b'0' + level.priority()));
            line.push('>');
            line.push_str(level.word());
        }
        Style::Terminal => {
            line.push_str(level.colour());
            line.push_str(level.word());
            line.push_str("\x1b[0m");
        }
        Style::Plain => line.push_str(level.word()),
    }
    line.push_str(": ");
    if style == Style::Terminal {
        line.push_str(msg);
    } else {
        // One event, one line: continuation lines join with " | ".
        let mut parts = msg.lines().filter(|l| !l.trim().is_empty());
        if let Some(first) = parts.next() {
            line.push_str(first.trim_end());
        }
        for p in parts {
            line.push_str(" | ");
            line.push_str(p.trim());
        }
    }
    line.push('\n');
    line
}

/// Write one event if its level is enabled. One `write_all` on a locked
/// stderr, so lines from different threads never interleave.
fn write(level: Level, args: std::fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let msg = match args.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(args.to_string()),
    };
    let line = format_line(style(), level, &msg);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

// The crate's logging macros: thin forwards to the facade (`$crate` has a
// module named `log`, hence the absolute path).
#[macro_export]
macro_rules! log_error { ($($a:tt)*) => { ::log::error!($($a)*) } }
#[macro_export]
macro_rules! log_warn { ($($a:tt)*) => { ::log::warn!($($a)*) } }
/// memcached's NOTICE: printed whatever `-v` says, at syslog priority 5.
#[macro_export]
macro_rules! log_notice { ($($a:tt)*) => { ::log::info!(target: $crate::logging::NOTICE, $($a)*) } }
#[macro_export]
macro_rules! log_info { ($($a:tt)*) => { ::log::info!($($a)*) } }
#[macro_export]
macro_rules! log_debug { ($($a:tt)*) => { ::log::debug!($($a)*) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_the_syslog_priority() {
        assert_eq!(format_line(Style::Journal, Level::Warn, "lag high"), "<4>warn: lag high\n");
        assert_eq!(format_line(Style::Journal, Level::Error, "a\nb\n"), "<3>error: a | b\n");
        assert_eq!(format_line(Style::Plain, Level::Info, "x\n  y"), "info: x | y\n");
        let t = format_line(Style::Terminal, Level::Debug, "x\ny");
        assert!(t.contains("\x1b[") && t.ends_with("x\ny\n"), "{t:?}");
    }

    #[test]
    fn levels_follow_verbosity() {
        assert!(Level::Error.min_verbosity() == 0 && Level::Notice.min_verbosity() == 0);
        assert_eq!(Level::Info.min_verbosity(), 1);
        assert_eq!(Level::Debug.min_verbosity(), 2);
        assert_eq!(Level::Trace.min_verbosity(), 3);
    }

    #[test]
    fn facade_levels_map_to_syslog_priorities() {
        use ::log::Level as L;
        let p = |l, target| Level::of(l, target).priority();
        assert_eq!([p(L::Error, "x"), p(L::Warn, "x"), p(L::Info, NOTICE), p(L::Info, "x")], [3, 4, 5, 6]);
        assert_eq!([p(L::Debug, "x"), p(L::Trace, "x")], [7, 7]);
        assert_eq!(Level::of(L::Info, NOTICE).word(), "notice");
        assert_eq!(Level::of(L::Info, "logmemcached::replication").word(), "info");
        assert_eq!(
            format_line(Style::Journal, Level::of(L::Info, NOTICE), "no huge pages"),
            "<5>notice: no huge pages\n"
        );
        assert_eq!(format_line(Style::Plain, Level::Trace, "t"), "trace: t\n");
    }
}
