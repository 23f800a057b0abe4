//! The `strata` command: parses arguments, calls the library, prints, sets the exit code.

mod cli;

fn main() {
    // Output into a closed pipe (`strata snapshots | head -1`) ends the process quietly, as
    // it does any Unix filter, instead of failing each write. Sockets are unaffected: Rust
    // writes to them with MSG_NOSIGNAL.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Trees are walked, built and restored recursively, some KiB of stack per directory
    // level, the amount depending on what the optimizer inlines: 2,000 levels took between
    // 8 and 16 MiB in one build. A thread of its own gets room for any depth a path can
    // reach; stack never touched costs no memory.
    let code = std::thread::Builder::new()
        .name("main".into())
        .stack_size(STACK_SIZE)
        .spawn(cli::main)
        .map(|t| t.join().unwrap_or_else(|_| cli::panic_code()))
        .unwrap_or_else(|e| {
            eprintln!("error: cannot start: {e}");
            1
        });
    std::process::exit(code);
}

const STACK_SIZE: usize = 256 << 20;
