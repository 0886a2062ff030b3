//! Alert rules: the JSON a user writes, checked into a [`Rule`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The JSON of a rule as `create_alert` takes it. Every field but `kind` is optional;
/// which ones a kind needs is checked by [`Rule::parse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// `run_failed`, `threshold`, `not_finite`, `plateau`, `hung` or `budget`.
    pub kind: String,
    /// The experiment the rule watches; every experiment when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The metric (`threshold`, `not_finite`, `plateau`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// `threshold`: fire when the metric goes above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// `threshold`: fire when the metric goes below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// `plateau`: points without improvement before it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// `plateau`: `min` (lower is better, the default) or `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `plateau`: the least change that counts as an improvement (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delta: Option<f64>,
    /// `hung`: seconds without a new metric; `budget`: seconds of wall clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// `hung`: mark the run FAILED this many seconds after the alert fired, if still silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_failed_after: Option<f64>,
    /// `notify` (the default) or `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// A URL to POST each event to (allowed by the server's `--alert-webhook-allow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// When a rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A run ended FAILED or KILLED.
    RunFailed,
    /// A metric went above `above` or below `below`.
    Threshold {
        /// The metric.
        metric: String,
        /// Upper bound.
        above: Option<f64>,
        /// Lower bound.
        below: Option<f64>,
    },
    /// A metric became NaN or infinite.
    NotFinite {
        /// The metric.
        metric: String,
    },
    /// A metric did not improve for `steps` points.
    Plateau {
        /// The metric.
        metric: String,
        /// Points without improvement.
        steps: u64,
        /// Whether higher is better.
        maximize: bool,
        /// The least change that counts as an improvement.
        min_delta: f64,
    },
    /// No new metric for `seconds` while the run is RUNNING.
    Hung {
        /// Silence before it fires.
        seconds: f64,
        /// Then mark the run FAILED after this many more seconds of silence.
        mark_failed_after: Option<f64>,
    },
    /// The run has been RUNNING for more than `seconds`.
    Budget {
        /// The wall-clock budget.
        seconds: f64,
    },
}

impl Condition {
    /// The condition's name, as events record it (`kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::RunFailed => "run_failed",
            Condition::Threshold { .. } => "threshold",
            Condition::NotFinite { .. } => "not_finite",
            Condition::Plateau { .. } => "plateau",
            Condition::Hung { .. } => "hung",
            Condition::Budget { .. } => "budget",
        }
    }

    /// The metric the condition watches, if it watches one.
    pub fn metric(&self) -> Option<&str> {
        match self {
            Condition::Threshold { metric, .. }
            | Condition::NotFinite { metric }
            | Condition::Plateau { metric, .. } => Some(metric),
            _ => None,
        }
    }

    /// Whether the condition is checked by the clock rather than by writes.
    pub fn timed(&self) -> bool {
        matches!(self, Condition::Hung { .. } | Condition::Budget { .. })
    }
}

/// What a rule does when it fires, besides recording and announcing the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Record and announce only.
    Notify,
    /// Also stop the run: cancel its TRAIN, or raise the flag `should_stop` returns.
    Stop,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The alert's name.
    pub name: String,
    /// The experiment watched; all when `None`.
    pub experiment: Option<String>,
    /// When it fires.
    pub condition: Condition,
    /// What it does then.
    pub action: Action,
    /// Where events are POSTed, if anywhere.
    pub webhook: Option<String>,
    /// The rule as written (normalized), for `runbase.alerts`.
    pub spec: RuleSpec,
}

fn invalid(name: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("alert \"{name}\": {what}"))
}

fn positive(name: &str, field: &str, v: Option<f64>) -> Result<f64> {
    match v {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(invalid(
            name,
            format!("\"{field}\" must be a positive number, not {v}"),
        )),
        None => Err(invalid(name, format!("this kind needs \"{field}\""))),
    }
}

impl Rule {
    /// Parses and checks the rule `json` of alert `name`.
    pub fn parse(name: &str, json: &str) -> Result<Self> {
        if name.is_empty() || name.len() > super::super::MAX_KEY_LEN || name.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "alert name must be 1 to {} bytes, without NUL",
                super::super::MAX_KEY_LEN
            )));
        }
        let spec: RuleSpec = serde_json::from_str(json)
            .map_err(|e| invalid(name, format!("rule is not valid: {e}")))?;
        Self::from_spec(name, spec)
    }

    /// Checks a decoded spec.
    pub fn from_spec(name: &str, spec: RuleSpec) -> Result<Self> {
        let metric = || {
            spec.metric
                .clone()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| invalid(name, format!("kind \"{}\" needs \"metric\"", spec.kind)))
        };
        // Fields that only some kinds read must not be set on others: a typo'd rule
        // would otherwise silently watch something else.
        let allowed: &[&str] = match spec.kind.as_str() {
            "run_failed" => &[],
            "threshold" => &["metric", "above", "below"],
            "not_finite" => &["metric"],
            "plateau" => &["metric", "steps", "mode", "min_delta"],
            "hung" => &["seconds", "mark_failed_after"],
            "budget" => &["seconds"],
            other => {
                return Err(invalid(
                    name,
                    format!(
                        "unknown kind \"{other}\": expected run_failed, threshold, not_finite, plateau, hung or budget"
                    ),
                ));
            }
        };
        let set = [
            ("metric", spec.metric.is_some()),
            ("above", spec.above.is_some()),
            ("below", spec.below.is_some()),
            ("steps", spec.steps.is_some()),
            ("mode", spec.mode.is_some()),
            ("min_delta", spec.min_delta.is_some()),
            ("seconds", spec.seconds.is_some()),
            ("mark_failed_after", spec.mark_failed_after.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(f, on)| *on && !allowed.contains(f)) {
            return Err(invalid(
                name,
                format!("kind \"{}\" does not take \"{field}\"", spec.kind),
            ));
        }
        let condition = match spec.kind.as_str() {
            "run_failed" => Condition::RunFailed,
            "threshold" => {
                if spec.above.is_none() && spec.below.is_none() {
                    return Err(invalid(
                        name,
                        "kind \"threshold\" needs \"above\" or \"below\"",
                    ));
                }
                if spec.above.is_some_and(f64::is_nan) || spec.below.is_some_and(f64::is_nan) {
                    return Err(invalid(name, "a threshold must be a number"));
                }
                Condition::Threshold {
                    metric: metric()?,
                    above: spec.above,
                    below: spec.below,
                }
            }
            "not_finite" => Condition::NotFinite { metric: metric()? },
            "plateau" => {
                let steps = match spec.steps {
                    Some(n) if n > 0 => n,
                    _ => return Err(invalid(name, "kind \"plateau\" needs \"steps\" ≥ 1")),
                };
                let maximize = match spec.mode.as_deref() {
                    None | Some("min") => false,
                    Some("max") => true,
                    Some(other) => {
                        return Err(invalid(
                            name,
                            format!("\"mode\" is \"min\" or \"max\", not \"{other}\""),
                        ));
                    }
                };
                let min_delta = spec.min_delta.unwrap_or(0.0);
                if !(min_delta.is_finite() && min_delta >= 0.0) {
                    return Err(invalid(name, "\"min_delta\" must be a number ≥ 0"));
                }
                Condition::Plateau {
                    metric: metric()?,
                    steps,
                    maximize,
                    min_delta,
                }
            }
            "hung" => Condition::Hung {
                seconds: positive(name, "seconds", spec.seconds)?,
                mark_failed_after: match spec.mark_failed_after {
                    None => None,
                    v => Some(positive(name, "mark_failed_after", v)?),
                },
            },
            _ => Condition::Budget {
                seconds: positive(name, "seconds", spec.seconds)?,
            },
        };
        let action = match spec.action.as_deref() {
            None | Some("notify") => Action::Notify,
            Some("stop") => Action::Stop,
            Some(other) => {
                return Err(invalid(
                    name,
                    format!("\"action\" is \"notify\" or \"stop\", not \"{other}\""),
                ));
            }
        };
        if let Some(hook) = &spec.webhook {
            let url = url::Url::parse(hook)
                .map_err(|e| invalid(name, format!("\"webhook\" is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(name, "\"webhook\" must be an http or https URL"));
            }
        }
        if spec.experiment.as_deref() == Some("") {
            return Err(invalid(name, "\"experiment\" must not be empty"));
        }
        Ok(Self {
            name: name.to_string(),
            experiment: spec.experiment.clone(),
            condition,
            action,
            webhook: spec.webhook.clone(),
            spec,
        })
    }

    /// Whether the rule watches runs of `experiment`.
    pub fn watches(&self, experiment: &str) -> bool {
        self.experiment.as_deref().is_none_or(|e| e == experiment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_say_why() {
        let r = Rule::parse(
            "a",
            r#"{"kind":"threshold","metric":"loss","above":10,"action":"stop"}"#,
        )
        .expect("parses");
        assert_eq!(r.action, Action::Stop);
        assert_eq!(r.condition.metric(), Some("loss"));
        let r = Rule::parse(
            "p",
            r#"{"kind":"plateau","metric":"acc","steps":3,"mode":"max"}"#,
        )
        .expect("parses");
        assert!(matches!(
            r.condition,
            Condition::Plateau {
                maximize: true,
                steps: 3,
                ..
            }
        ));
        for (json, says) in [
            ("not json", "not valid"),
            (r#"{"kind":"nope"}"#, "unknown kind"),
            (
                r#"{"kind":"threshold","metric":"loss"}"#,
                "needs \"above\" or \"below\"",
            ),
            (r#"{"kind":"threshold","above":1}"#, "needs \"metric\""),
            (r#"{"kind":"hung"}"#, "needs \"seconds\""),
            (r#"{"kind":"hung","seconds":-1}"#, "positive"),
            (
                r#"{"kind":"run_failed","metric":"x"}"#,
                "does not take \"metric\"",
            ),
            (r#"{"kind":"run_failed","colour":"red"}"#, "unknown field"),
            (
                r#"{"kind":"run_failed","action":"explode"}"#,
                "\"notify\" or \"stop\"",
            ),
            (
                r#"{"kind":"run_failed","webhook":"ftp://x"}"#,
                "http or https",
            ),
            (r#"{"kind":"plateau","metric":"l","steps":0}"#, "steps"),
        ] {
            let e = Rule::parse("r", json).expect_err(json).to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
        assert!(Rule::parse("", r#"{"kind":"run_failed"}"#).is_err());
    }
}
