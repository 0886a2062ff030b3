//! A PostgreSQL client's byte stream: frame guard, pgwire's decoder, SASL/SCRAM.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = runbase_server::fuzzing::frontend(data);
});
