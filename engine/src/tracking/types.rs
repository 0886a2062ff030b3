//! The records tracking keeps, and the checks on what clients log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

use super::*;

/// An experiment: a named group of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Its id.
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Creation time, microseconds since the epoch.
    pub created_at_us: i64,
    /// Tags (MLflow's experiment tags), by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    /// Still logging.
    Running,
    /// Ended normally.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped from outside.
    Killed,
}

impl RunStatus {
    /// The status as SQL shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    /// Parses a status name (any case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "RUNNING" => Ok(RunStatus::Running),
            "FINISHED" => Ok(RunStatus::Finished),
            "FAILED" => Ok(RunStatus::Failed),
            "KILLED" => Ok(RunStatus::Killed),
            _ => Err(Error::InvalidArgument(format!(
                "invalid run status \"{s}\": expected RUNNING, FINISHED, FAILED or KILLED"
            ))),
        }
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Its id.
    pub run_id: Uuid,
    /// Id of its experiment.
    pub experiment_id: i64,
    /// Name of its experiment.
    pub experiment: String,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: RunStatus,
    /// The run it belongs to (a trial of a search, say).
    pub parent_run_id: Option<Uuid>,
    /// Who made it: `external` for runs logged by clients, `train` for TRAIN's.
    pub kind: String,
    /// Start time, microseconds since the epoch.
    pub started_at_us: i64,
    /// End time, once ended.
    pub ended_at_us: Option<i64>,
    /// The database user that started it.
    pub user_name: Option<String>,
    /// The client program that started it (`application_name`).
    pub source: Option<String>,
    /// Deleted (MLflow's `delete_run`): hidden from searches, takes no more values, and
    /// can be restored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// What [`Tracking::start_run`] needs besides the experiment.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    /// Run name; generated when absent.
    pub name: Option<String>,
    /// Parent run.
    pub parent_run_id: Option<Uuid>,
    /// `external` when absent.
    pub kind: Option<String>,
    /// Database user.
    pub user_name: Option<String>,
    /// Client program.
    pub source: Option<String>,
    /// Params to log with the start.
    pub params: Vec<(String, String)>,
    /// Start time, microseconds since the epoch; now when absent.
    pub started_at_us: Option<i64>,
    /// Tags to set with the start.
    pub tags: Vec<(String, String)>,
}

/// Which runs a write accepts, and what it does with a point logged twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogMode {
    /// runbase's rule: running runs only; every point is kept.
    #[default]
    Strict,
    /// MLflow's rules: any run not deleted (a finished run still takes values), and a
    /// point identical to one logged before (run, key, step, time, value) is stored once,
    /// so a client's retry of a batch adds nothing.
    Mlflow,
}

/// One metric value to log.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// The run.
    pub run: Uuid,
    /// The metric's name.
    pub key: String,
    /// The step; `None` logs at one past the run's latest step of this key (0 at first).
    pub step: Option<i64>,
    /// Microseconds since the epoch; `None` is now.
    pub ts_us: Option<i64>,
    /// The value; NaN and infinities are kept.
    pub value: f64,
}

/// An artifact's record; its bytes are on the object store at `uri`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Where the bytes are.
    pub uri: String,
    /// Object-store path, relative to the store's root.
    pub location: String,
}

/// Checks a param, metric or tag key.
pub fn validate_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what} key must not be empty"
        )));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::ValueTooLong(format!(
            "{what} key is {} bytes long; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(Error::InvalidText(format!(
            "{what} key must not contain NUL"
        )));
    }
    Ok(())
}

pub(crate) fn validate_value(what: &str, key: &str, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::ValueTooLong(format!(
            "{what} \"{key}\" is {} bytes long; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

/// Parses a run id.
pub fn parse_run_id(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim())
        .map_err(|_| Error::InvalidText(format!("invalid run id \"{s}\": expected a UUID")))
}

/// Checks an artifact path: relative, `/`-separated, no `.` or `..` segments.
pub fn validate_artifact_path(path: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid artifact path \"{path}\": {why}"
        )))
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return Err(Error::ValueTooLong(format!(
            "artifact path is {} bytes long; the limit is {MAX_PATH_LEN}",
            path.len()
        )));
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return bad("it must be relative, with / between segments");
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("empty, . and .. segments are not allowed");
    }
    Ok(())
}

/// Params from a JSON object: strings as they are, other values as JSON text.
pub fn params_from_json(json: &str) -> Result<Vec<(String, String)>> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::InvalidText(format!("invalid JSON for params: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::InvalidText(
            "params must be a JSON object of key: value".into(),
        ));
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}
