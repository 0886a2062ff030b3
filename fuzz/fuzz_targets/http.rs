//! One HTTP request (first line `METHOD /path`, then the body) through the real router.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = runbase_server::fuzzing::http(data);
});
