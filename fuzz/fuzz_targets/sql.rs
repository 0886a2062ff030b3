//! SQL text as a session parses it before planning.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = runbase_engine::fuzzing::sql(data);
});
