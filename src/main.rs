//! The `strata` command: parses arguments, calls the library, prints, sets the exit code.

mod cli;

fn main() {
    // Output into a closed pipe (`strata snapshots | head -1`) ends the process quietly, as
    // it does any Unix filter, instead of failing each write. Sockets are unaffected: Rust
    // writes to them with MSG_NOSIGNAL.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::main());
}
