//! Model references, alert rules, run ids and the other short arguments.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = runbase_engine::fuzzing::text_argument(data);
});
