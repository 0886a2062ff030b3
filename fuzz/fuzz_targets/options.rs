//! TRAIN options, import specs and device names (JSON and text).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = runbase_udfs::fuzzing::options(data);
});
