//! Link set-up for binaries that use libtorch (this crate's tests, the `runbase` binary).
//!
//! - Nothing references libtorch_cuda.so by symbol, so the linker's `--as-needed` drops it
//!   and libtorch then sees no GPU; link it with `--no-as-needed` when it exists.
//! - Record libtorch's directory as the run path, so binaries start without
//!   `LD_LIBRARY_PATH` (which still takes precedence, e.g. on a machine whose libtorch
//!   lives elsewhere).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    if Path::new(&dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
