//! The `logmemcached` command line. `serve` (also what `logmemcached
//! [flags]` means) takes memcached 1.6's whole command line and our own
//! long options through a getopt_long-compatible parser (`getopt.rs`,
//! `options.rs`, `extended.rs` for `-o`); the other subcommands
//! (`rdma-devices`, `bench`) stay with argh. `daemon.rs` holds the process
//! flags (`-d`, `-P`, `-u`, `-r`, `-k`) and `serve.rs` the wiring.

pub mod daemon;
mod extended;
mod getopt;
mod options;
mod serve;

use argh::FromArgs;

/// A memcached-compatible cache whose item memory is one log in huge pages,
/// replicated to read-only replicas by one-sided RDMA. With no subcommand it
/// serves; `logmemcached -p 11212 ...` means `serve -p 11212 ...`.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Serve(ServeListing),
    RdmaDevices(RdmaDevicesArgs),
    Bench(logmemcached::bench::BenchArgs),
}

/// Serve the memcached protocols: memcached 1.6's flags (-p, -l, -m, -u,
/// -d, -o ...) and ours; `logmemcached serve --help` lists them all.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct ServeListing {}

/// List RDMA devices, ports, port state, MTU, link layer and GIDs (a short
/// ibv_devinfo). On a host without RDMA it says so and succeeds.
#[derive(FromArgs)]
#[argh(subcommand, name = "rdma-devices")]
struct RdmaDevicesArgs {}

/// Why the command stops, and with which exit status.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub msg: String,
    /// Printed as is (memcached's own words), not as a log line; or not at
    /// all when empty.
    pub raw: bool,
}

impl Fail {
    /// A refusal of the command line, printed as memcached prints it.
    pub fn usage(code: i32, msg: impl Into<String>) -> Fail {
        Fail { code, msg: msg.into(), raw: true }
    }

    /// The OS refused something (memcached's EX_OSERR).
    pub fn os(msg: impl Into<String>) -> Fail {
        Fail { code: daemon::EX_OSERR, msg: msg.into(), raw: false }
    }

    /// Fails with `code`; what went wrong was said already.
    pub fn quiet(code: i32, msg: impl Into<String>) -> Fail {
        Fail { code, msg: msg.into(), raw: false }
    }
}

impl From<logmemcached::error::Error> for Fail {
    fn from(e: logmemcached::error::Error) -> Fail {
        Fail { code: 1, msg: e.to_string(), raw: false }
    }
}

/// Run the command; returns its exit status.
pub fn run(args: Vec<String>) -> i32 {
    match dispatch(&args) {
        Ok(()) => 0,
        Err(f) => {
            if f.raw {
                eprintln!("{}", f.msg);
            } else if !f.msg.is_empty() {
                logmemcached::log_error!("{}", f.msg);
            }
            f.code
        }
    }
}

fn dispatch(args: &[String]) -> Result<(), Fail> {
    let first = args.get(1).map(String::as_str);
    match first {
        None => serve_with(&[]),
        Some("serve") => serve_with(&args[2..]),
        Some(a) if a.starts_with('-') && a != "--help" => serve_with(&args[1..]),
        _ => {
            let strs: Vec<&str> = args.iter().map(String::as_str).collect();
            let cli = match Cli::from_args(&[strs[0]], &strs[1..]) {
                Ok(cli) => cli,
                // --help prints to stdout and succeeds; a usage error fails.
                Err(early) => {
                    return match early.status {
                        Ok(()) => {
                            say(&format!("{}\n", early.output));
                            Ok(())
                        }
                        Err(()) => Err(Fail::usage(1, early.output.trim_end().to_string())),
                    }
                }
            };
            match cli.cmd {
                None | Some(Cmd::Serve(_)) => serve_with(&[]),
                Some(Cmd::RdmaDevices(_)) => Ok(logmemcached::rdma::print_devices(&mut std::io::stdout().lock())?),
                Some(Cmd::Bench(a)) => Ok(logmemcached::bench::run(a)?),
            }
        }
    }
}

fn serve_with(args: &[String]) -> Result<(), Fail> {
    match options::ServeArgs::parse(args)? {
        options::Action::Help => {
            say(&options::help());
            Ok(())
        }
        options::Action::Version => {
            say(&format!("logmemcached {}\n", logmemcached::runtime::VERSION));
            Ok(())
        }
        options::Action::License => {
            say(&format!(
                "logmemcached {} is distributed under the BSD 3-Clause license (Cargo.toml: license);\n\
                 it speaks memcached's protocols and takes memcached's flags (memcached: BSD license, \
                 Copyright 2003 Danga Interactive, Inc.).\n",
                logmemcached::runtime::VERSION
            ));
            Ok(())
        }
        options::Action::Serve(a) => match daemon::stage() {
            daemon::Stage::Foreground if a.daemonize => match daemon::start_and_wait(a.verbose > 0)? {
                0 => Ok(()),
                code => Err(Fail::quiet(code, "")),
            },
            daemon::Stage::Detach => daemon::detach(),
            _ => serve::serve(*a),
        },
    }
}

/// Print to stdout; a closed stdout (`logmemcached -h | head -1`) is not
/// an error worth a panic.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
