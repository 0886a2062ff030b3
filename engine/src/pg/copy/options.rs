//! [`CopyFormat`]: the options of a `COPY` statement.

use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};

use crate::error::{Error, Result};

/// The data format of a `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format: tab-separated, `\N` for NULL, backslash escapes.
    Text {
        /// Field separator.
        delimiter: u8,
        /// How NULL is spelled.
        null: String,
    },
    /// CSV.
    Csv {
        /// Field separator.
        delimiter: u8,
        /// Quote character.
        quote: u8,
        /// Escape character inside quotes.
        escape: u8,
        /// How NULL is spelled (unquoted).
        null: String,
        /// Whether the first line is a header.
        header: bool,
    },
    /// PostgreSQL's binary format (asyncpg's `copy_records_to_table`).
    Binary,
}

impl CopyFormat {
    /// The format a `COPY` statement's options ask for.
    pub fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self> {
        let mut csv = false;
        let mut binary = false;
        let mut delimiter = None;
        let mut null = None;
        let mut header = false;
        let mut quote = b'"';
        let mut escape = None;
        let byte = |c: char, what: &str| -> Result<u8> {
            u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
                Error::InvalidArgument(format!("COPY {what} must be a single one-byte character"))
            })
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    "binary" => binary = true,
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "COPY format \"{other}\" not recognized"
                        )));
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(byte(*c, "escape")?),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => return Err(Error::NotSupported(format!("COPY option {other}"))),
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Binary => binary = true,
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = byte(*q, "quote")?,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(byte(*e, "escape")?),
                            other => {
                                return Err(Error::NotSupported(format!("COPY option {other}")));
                            }
                        }
                    }
                }
                other => return Err(Error::NotSupported(format!("COPY option {other}"))),
            }
        }
        if binary {
            let text_option = [
                (csv, "CSV"),
                (delimiter.is_some(), "DELIMITER"),
                (null.is_some(), "NULL"),
                (header, "HEADER"),
            ]
            .into_iter()
            .find_map(|(given, name)| given.then_some(name));
            return match text_option {
                Some(name) => Err(Error::Syntax(format!(
                    "cannot specify {name} in BINARY mode"
                ))),
                None => Ok(CopyFormat::Binary),
            };
        }
        if csv {
            Ok(CopyFormat::Csv {
                delimiter: delimiter.unwrap_or(b','),
                quote,
                escape: escape.unwrap_or(quote),
                null: null.unwrap_or_default(),
                header,
            })
        } else {
            if header {
                return Err(Error::NotSupported(
                    "COPY HEADER in text format (use csv)".into(),
                ));
            }
            Ok(CopyFormat::Text {
                delimiter: delimiter.unwrap_or(b'\t'),
                null: null.unwrap_or_else(|| "\\N".to_string()),
            })
        }
    }
}
