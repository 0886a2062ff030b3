//! The `runbase` binary: parse the command line, run it.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = runbase_server::config::Cli::parse();
    std::process::exit(runbase_server::run(cli).await);
}
