//! Text-protocol admin commands beyond memcached's: `replica promote` and
//! `replica follow URL`. (`stats replication` is a `stats` group.)
//!
//! They change a server's role or its data (following another primary
//! replaces the log), so they run only in an admin session (the
//! `--admin-socket`, protected by its file mode); on the data port they are
//! refused with a `CLIENT_ERROR` that says where to send them, and counted
//! in `admin_refused`.

use super::{Ctx, Session};
use crate::replication::Url;

/// The refusal on the data port (memcached's style for a command switched
/// off, as `CLIENT_ERROR flush_all not allowed`).
pub const NOT_ON_DATA_PORT: &str =
    "CLIENT_ERROR replica commands are admin commands: not allowed on the data port; send them to the --admin-socket";

/// Handle `replica <subcommand> [args]` and return the whole reply line.
pub fn replica_command(args: &[&[u8]], session: &Session, ctx: &Ctx) -> String {
    if !session.admin {
        ctx.stats.admin_refused.incr();
        return format!("{NOT_ON_DATA_PORT}\r\n");
    }
    let Some(repl) = ctx.rt.replication.get() else {
        return "SERVER_ERROR replication is not set up in this process\r\n".into();
    };
    match args {
        [b"promote"] => match repl.promote() {
            Ok(_) => "OK\r\n".into(),
            Err(e) => format!("SERVER_ERROR cannot promote: {e}\r\n"),
        },
        [b"follow", url] => {
            let url = match std::str::from_utf8(url).map_err(|_| "not UTF-8".to_string()).and_then(|u| u.parse::<Url>())
            {
                Ok(u) => u,
                Err(e) => return format!("CLIENT_ERROR {e}\r\n"),
            };
            match repl.follow(url) {
                Ok(()) => "OK\r\n".into(),
                Err(e) => format!("SERVER_ERROR {e}\r\n"),
            }
        }
        _ => "CLIENT_ERROR usage: replica promote | replica follow shm://NAME|rdma://HOST:PORT\r\n".into(),
    }
}
