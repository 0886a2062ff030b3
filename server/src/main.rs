//! The `runbase` binary: parse the command line, run it.

use clap::Parser;

/// mimalloc for Rust allocations: result encoding allocates per row, and glibc's malloc
/// was a quarter of the server's time when streaming rows (libtorch keeps its own).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = runbase_server::config::Cli::parse();
    if let Err(e) = runbase_engine::failpoints::configure_from_env() {
        eprintln!("runbase: {e}");
        std::process::exit(2);
    }
    // Worker threads with room for deep plans (see `runbase_engine::executor::THREAD_STACK_SIZE`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(runbase_engine::executor::THREAD_STACK_SIZE)
        .build();
    match runtime {
        Ok(runtime) => std::process::exit(runtime.block_on(runbase_server::run(cli))),
        Err(e) => {
            eprintln!("runbase: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}
