//! The `runbase` binary: parse the command line, run it.

use clap::Parser;

/// mimalloc for Rust allocations: result encoding allocates per row, and glibc's malloc
/// was a quarter of the server's time when streaming rows (libtorch keeps its own).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = runbase_server::config::Cli::parse();
    std::process::exit(runbase_server::run(cli).await);
}
