//! The `logmemcached` command: the command line (`src/cli/`) and wiring only.

mod cli;

fn main() {
    logmemcached::logging::init();
    let code = cli::run(std::env::args().collect());
    std::process::exit(code);
}
