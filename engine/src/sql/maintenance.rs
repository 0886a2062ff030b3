//! `OPTIMIZE t` and `VACUUM t [RETAIN n HOURS] [DRY RUN]`: keeping tables fast. The SQL
//! parser knows neither, so runbase parses them itself (a statement on its own).

use super::*;
use crate::error::{Error, Result};
use crate::users::Role;

/// A table maintenance statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maintenance {
    /// `OPTIMIZE [TABLE] name`: compact small files into larger ones (one version).
    Optimize {
        /// The table.
        table: String,
    },
    /// `VACUUM [TABLE] name [RETAIN n HOURS] [DRY RUN]`: delete files no version within
    /// the retention needs.
    Vacuum {
        /// The table.
        table: String,
        /// Hours of history to keep readable; the table's setting (7 days) by default.
        retain_hours: Option<u64>,
        /// Only list what would be deleted.
        dry_run: bool,
    },
}

/// `sql` as a maintenance statement, if it is one (`None`: not one; an error: a malformed
/// one, 42601).
pub(super) fn parse(sql: &str) -> Option<Result<Maintenance>> {
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let first = words.first()?.to_ascii_uppercase();
    if first != "OPTIMIZE" && first != "VACUUM" {
        return None;
    }
    let syntax = |why: &str| Some(Err(Error::Syntax(format!("{first}: {why}"))));
    let mut rest = &words[1..];
    if rest
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("TABLE"))
    {
        rest = &rest[1..];
    }
    let Some((name, options)) = rest.split_first() else {
        return syntax("expected a table name");
    };
    let name = name.trim_matches('"');
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    {
        return syntax("expected a table name");
    }
    let table = name.strip_prefix("public.").unwrap_or(name).to_string();
    let upper: Vec<String> = options.iter().map(|w| w.to_ascii_uppercase()).collect();
    if first == "OPTIMIZE" {
        if !upper.is_empty() {
            return syntax(&format!("unexpected {:?}", options.join(" ")));
        }
        return Some(Ok(Maintenance::Optimize { table }));
    }
    let (mut retain_hours, mut dry_run, mut i) = (None, false, 0);
    while i < upper.len() {
        match (
            upper[i].as_str(),
            upper.get(i + 1).map(String::as_str),
            upper.get(i + 2).map(String::as_str),
        ) {
            ("RETAIN", Some(n), Some("HOURS" | "HOUR")) => match n.parse::<u64>() {
                Ok(n) => {
                    retain_hours = Some(n);
                    i += 3;
                }
                Err(_) => return syntax("RETAIN takes a whole number of hours"),
            },
            ("DRY", Some("RUN"), _) => {
                dry_run = true;
                i += 2;
            }
            _ => return syntax("expected RETAIN n HOURS or DRY RUN"),
        }
    }
    Some(Ok(Maintenance::Vacuum {
        table,
        retain_hours,
        dry_run,
    }))
}

impl Session {
    /// Runs a maintenance statement; reports what it did as a notice.
    pub(super) async fn run_maintenance(&self, m: &Maintenance) -> Result<CommandTag> {
        if self.role() == Role::Readonly {
            return Err(Error::PermissionDenied(format!(
                "permission denied: user \"{}\" is read-only and cannot run {}",
                self.user_name(),
                match m {
                    Maintenance::Optimize { .. } => "OPTIMIZE",
                    Maintenance::Vacuum { .. } => "VACUUM",
                }
            )));
        }
        let name = match m {
            Maintenance::Optimize { table } | Maintenance::Vacuum { table, .. } => table,
        };
        let table = self
            .db
            .user_schema()
            .stored(&name.to_lowercase())
            .ok_or_else(|| Error::TableNotFound(name.clone()))?;
        match m {
            Maintenance::Optimize { .. } => {
                let report = table.optimize().await?;
                self.notices().push(format!(
                    "OPTIMIZE {}: {} files compacted into {}",
                    table.entry.name, report.files_removed, report.files_added
                ));
                Ok(CommandTag::plain("OPTIMIZE"))
            }
            Maintenance::Vacuum {
                retain_hours,
                dry_run,
                ..
            } => {
                let deleted = table.vacuum(*retain_hours, *dry_run).await?;
                self.notices().push(format!(
                    "VACUUM {}: {} {} files no longer needed",
                    table.entry.name,
                    if *dry_run { "would delete" } else { "deleted" },
                    deleted
                ));
                Ok(CommandTag::plain("VACUUM"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_optimize_and_vacuum() {
        assert_eq!(
            parse("optimize TABLE labels;").and_then(Result::ok),
            Some(Maintenance::Optimize {
                table: "labels".into()
            })
        );
        assert_eq!(
            parse("VACUUM public.labels RETAIN 0 HOURS DRY RUN").and_then(Result::ok),
            Some(Maintenance::Vacuum {
                table: "labels".into(),
                retain_hours: Some(0),
                dry_run: true
            })
        );
        assert!(parse("SELECT 1").is_none());
        assert!(matches!(parse("VACUUM"), Some(Err(Error::Syntax(_)))));
        assert!(matches!(
            parse("VACUUM t RETAIN many HOURS"),
            Some(Err(Error::Syntax(_)))
        ));
        assert!(matches!(
            parse("OPTIMIZE t now"),
            Some(Err(Error::Syntax(_)))
        ));
    }
}
