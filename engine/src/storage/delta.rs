//! What runbase reads from Delta logs itself: commit files and their [`VersionInfo`].

/// The version number of a Delta commit file name (`00000000000000000003.json`).
pub(super) fn commit_file_version(file: &str) -> Option<i64> {
    let digits = file.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What one table version recorded about the commit that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    /// The Delta version number, from 0.
    pub version: i64,
    /// Commit time, milliseconds since the Unix epoch.
    pub committed_at_ms: i64,
    /// The Delta operation (`CREATE TABLE`, `WRITE`, …).
    pub operation: String,
    /// Rows the commit added.
    pub rows_added: i64,
    /// Rows the commit removed (`DELETE`, `TRUNCATE`).
    pub rows_removed: i64,
    /// Rows the commit changed (`UPDATE`).
    pub rows_updated: i64,
}

impl VersionInfo {
    pub(super) fn from_commit(version: i64, bytes: &[u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: serde_json::Value =
                serde_json::from_str(line).map_err(|e| e.to_string())?;
            let Some(info) = action.get("commitInfo") else {
                continue;
            };
            let committed_at_ms = info
                .get("inCommitTimestamp")
                .or_else(|| info.get("timestamp"))
                .and_then(serde_json::Value::as_i64)
                .unwrap_or_default();
            let operation = info
                .get("operation")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("UNKNOWN")
                .to_string();
            let metric = |name: &str| {
                info.get("operationMetrics")
                    .and_then(|m| m.get(name))
                    .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                    .unwrap_or(0)
            };
            return Ok(Self {
                version,
                committed_at_ms,
                operation,
                // MERGE reports its own names.
                rows_added: metric("num_added_rows") + metric("num_target_rows_inserted"),
                rows_removed: metric("num_deleted_rows") + metric("num_target_rows_deleted"),
                rows_updated: metric("num_updated_rows") + metric("num_target_rows_updated"),
            });
        }
        Err("no commitInfo action".to_string())
    }
}
