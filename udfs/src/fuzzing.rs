//! Entry points for fuzzing the JSON options and specs the SQL functions take from users.
//!
//! As in `runbase_engine::fuzzing`: arbitrary bytes in, whether they were accepted out, and
//! never a panic. Driven by the targets in `fuzz/` and replayed by
//! `tests/tests/fuzz_corpus.rs`.

/// Parses `data` as the text argument of a function, the first byte picking which: TRAIN's
/// options (epochs, layers, search spaces…), `import_model`'s spec, a device name.
/// Whether it was accepted.
pub fn options(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return false;
    };
    match which % 3 {
        0 => crate::train::options::TrainOptions::parse(Some(text)).is_ok(),
        1 => crate::inference::spec::ImportSpec::parse(text).is_ok(),
        _ => crate::train::options::parse_device(text).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed_or_refused() {
        assert!(options(b"\x00{\"epochs\": 3}"));
        assert!(!options(b"\x00{\"epochs\": -3}"));
        assert!(!options(b"\x00[1,2]"));
        assert!(options(b"\x02cpu"));
        assert!(!options(b"\x02tpu:9"));
    }
}
