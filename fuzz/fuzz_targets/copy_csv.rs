//! `COPY … FROM STDIN` data in the csv format, into a table of every column type.
#![no_main]

use runbase_engine::fuzzing::{CopyKind, copy};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = copy(CopyKind::Csv, data);
});
