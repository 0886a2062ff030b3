//! `experiments/*`: create, get, get-by-name, search, set-experiment-tag.

use axum::Json;
use axum::extract::State;
use runbase_engine::tracking::{DEFAULT_EXPERIMENT, Experiment};
use serde_json::{Value, json};

use super::super::AppState;
use super::super::auth::Caller;
use super::{
    Fields, MlflowError, blocking, empty, experiment_by_id, experiment_json, set_next_page,
};

/// Longest experiment name, as in MLflow.
const MAX_NAME_LEN: usize = 500;

/// `POST experiments/create {name, tags}` → `{"experiment_id"}`; an existing name is
/// 400 RESOURCE_ALREADY_EXISTS.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let name = fields.required("name")?;
    if name.trim().is_empty() {
        return Err(MlflowError::invalid(
            "Invalid experiment name: the name must not be empty",
        ));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(MlflowError::invalid(format!(
            "Invalid experiment name: longer than {MAX_NAME_LEN} characters"
        )));
    }
    let tags = tag_pairs(&fields.list("tags")?)?;
    blocking(&state, move |t| {
        if name == DEFAULT_EXPERIMENT {
            t.default_experiment()?;
        }
        let e = t.create_experiment(&name, None)?;
        for (k, v) in &tags {
            t.set_experiment_tag(&e.name, k, v)?;
        }
        Ok(Json(json!({ "experiment_id": e.id.to_string() })))
    })
    .await
}

/// `GET experiments/get?experiment_id=N` → `{"experiment"}`.
pub(super) async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let id = fields.required("experiment_id")?;
    blocking(&state, move |t| {
        let e = experiment_by_id(t, &id)?;
        Ok(Json(json!({ "experiment": experiment_json(&e) })))
    })
    .await
}

/// `GET experiments/get-by-name?experiment_name=x` → `{"experiment"}`, or 404
/// RESOURCE_DOES_NOT_EXIST (which `set_experiment` takes as "create it").
pub(super) async fn get_by_name(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let name = fields.required("experiment_name")?;
    blocking(&state, move |t| {
        let e = if name == DEFAULT_EXPERIMENT {
            Some(t.default_experiment()?)
        } else {
            t.experiment(&name)?
        };
        let e = e.ok_or_else(|| {
            MlflowError::missing(format!("Could not find experiment with name '{name}'"))
        })?;
        Ok(Json(json!({ "experiment": experiment_json(&e) })))
    })
    .await
}

/// `experiments/search {max_results, filter, order_by, page_token}` →
/// `{"experiments", "next_page_token"}`. Filters: `name` with `=`, `!=`, `LIKE`, `ILIKE`,
/// and `tags.<key>` with `=`, `!=`, clauses joined by AND; newest first.
pub(super) async fn search(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let max = fields.int("max_results")?.unwrap_or(1000);
    if !(1..=50_000).contains(&max) {
        return Err(MlflowError::invalid(format!(
            "Invalid value {max} for parameter 'max_results': between 1 and 50000"
        )));
    }
    let offset = super::runs::page_offset(fields.text("page_token")?.as_deref())?;
    let clauses = parse_filter(fields.text("filter")?.as_deref().unwrap_or(""))?;
    blocking(&state, move |t| {
        t.default_experiment()?;
        let mut all: Vec<Experiment> = t
            .experiments()?
            .into_iter()
            .filter(|e| clauses.iter().all(|c| c.matches(e)))
            .collect();
        all.sort_by(|a, b| b.created_at_us.cmp(&a.created_at_us).then(a.id.cmp(&b.id)));
        let max = usize::try_from(max).unwrap_or(1000);
        let page: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(max)
            .map(experiment_json)
            .collect();
        let mut out = json!({ "experiments": page });
        set_next_page(&mut out, offset + max, all.len());
        Ok(Json(out))
    })
    .await
}

/// `experiments/set-experiment-tag {experiment_id, key, value}`.
pub(super) async fn set_tag(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let id = fields.required("experiment_id")?;
    let key = fields.required("key")?;
    let value = fields.text("value")?.unwrap_or_default();
    blocking(&state, move |t| {
        let e = experiment_by_id(t, &id)?;
        t.set_experiment_tag(&e.name, &key, &value)?;
        Ok(empty())
    })
    .await
}

/// `[{key, value}]` as pairs.
pub(super) fn tag_pairs(list: &[Value]) -> Result<Vec<(String, String)>, MlflowError> {
    list.iter()
        .map(|tag| {
            let key = tag
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| MlflowError::invalid(format!("a tag needs a key: {tag}")))?;
            let value = match tag.get("value") {
                None | Some(Value::Null) => String::new(),
                Some(v) => super::scalar_text(v).ok_or_else(|| {
                    MlflowError::invalid(format!("a tag's value must be a string: {tag}"))
                })?,
            };
            Ok((key.to_string(), value))
        })
        .collect()
}

/// One clause of a filter over experiments or registry entries.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Clause {
    /// An attribute (`name`, `run_id`, …) or a tag.
    subject: Subject,
    op: String,
    value: String,
}

/// What a clause tests.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Subject {
    /// An attribute, by name.
    Attribute(String),
    /// A tag, by key.
    Tag(String),
}

impl Clause {
    fn matches(&self, e: &Experiment) -> bool {
        self.matches_with(
            |attr| (attr == "name").then(|| e.name.clone()),
            |k| e.tags.get(k).cloned(),
        )
    }

    /// Whether the clause holds of what `attribute` and `tag` read.
    pub(super) fn matches_with(
        &self,
        attribute: impl Fn(&str) -> Option<String>,
        tag: impl Fn(&str) -> Option<String>,
    ) -> bool {
        let subject = match &self.subject {
            Subject::Attribute(a) => attribute(a),
            Subject::Tag(k) => tag(k),
        };
        let Some(subject) = subject else {
            return self.op == "!=";
        };
        match self.op.as_str() {
            "=" => subject == self.value,
            "!=" => subject != self.value,
            "LIKE" => like(&subject, &self.value, false),
            "ILIKE" => like(&subject, &self.value, true),
            _ => false,
        }
    }
}

/// SQL LIKE: `%` any run of characters, `_` one character.
fn like(text: &str, pattern: &str, fold: bool) -> bool {
    let (text, pattern) = if fold {
        (text.to_lowercase(), pattern.to_lowercase())
    } else {
        (text.to_string(), pattern.to_string())
    };
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative matching with backtracking to the last `%`.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

/// Parses `name LIKE 'x%' AND tags.k = 'v'` over experiments.
fn parse_filter(filter: &str) -> Result<Vec<Clause>, MlflowError> {
    parse_clauses(filter, &["name"])
}

/// Parses clauses `<attribute or tags.key> <op> '<value>'` joined by AND, where the
/// attributes are `attributes` (also written `attribute.x`, `attributes.x`).
pub(super) fn parse_clauses(filter: &str, attributes: &[&str]) -> Result<Vec<Clause>, MlflowError> {
    let bad = |why: &str| MlflowError::invalid(format!("Invalid filter '{filter}': {why}"));
    let tokens = tokenize(filter).map_err(|e| bad(&e))?;
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !clauses.is_empty() {
            if !tokens[i].eq_ignore_ascii_case("and") {
                return Err(bad("clauses are joined by AND"));
            }
            i += 1;
        }
        let [subject, op, value] = [tokens.get(i), tokens.get(i + 1), tokens.get(i + 2)];
        let (Some(subject), Some(op), Some(value)) = (subject, op, value) else {
            return Err(bad("expected <name or tags.key> <op> '<value>'"));
        };
        let subject = subject.trim_matches('`');
        let bare = subject
            .strip_prefix("attributes.")
            .or_else(|| subject.strip_prefix("attribute."))
            .unwrap_or(subject);
        let subject = if let Some(k) = subject
            .strip_prefix("tags.")
            .or_else(|| subject.strip_prefix("tag."))
        {
            Subject::Tag(k.trim_matches('`').trim_matches('"').to_string())
        } else if attributes.contains(&bare) {
            Subject::Attribute(bare.to_string())
        } else {
            return Err(bad(&format!("cannot filter on \"{subject}\"")));
        };
        let op = op.to_ascii_uppercase();
        if !["=", "!=", "LIKE", "ILIKE"].contains(&op.as_str()) {
            return Err(bad(&format!("unsupported operator {op}")));
        }
        let Some(value) = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
        else {
            return Err(bad("values are quoted strings"));
        };
        clauses.push(Clause {
            subject,
            op,
            value: value.to_string(),
        });
        i += 3;
    }
    Ok(clauses)
}

/// Splits a filter into names, operators and quoted strings (kept with their quotes).
fn tokenize(s: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' || c == '`' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i == chars.len() {
                return Err("unterminated quote".into());
            }
            i += 1;
            // A quoted key may continue a dotted name: tags.`a b`.
            let token: String = chars[start..i].iter().collect();
            match out.last_mut() {
                Some(prev) if c == '`' && prev.ends_with('.') => prev.push_str(&token),
                _ => out.push(token),
            }
        } else if "=!<>".contains(c) {
            let start = i;
            while i < chars.len() && "=!<>".contains(chars[i]) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"=!<>'\"`".contains(chars[i]) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(name: &str, tags: &[(&str, &str)]) -> Experiment {
        Experiment {
            id: 1,
            name: name.into(),
            description: None,
            created_at_us: 0,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn experiment_filters_match_names_and_tags() {
        let e = exp("vision-resnet", &[("team", "cv"), ("a b", "x")]);
        for (filter, want) in [
            ("name = 'vision-resnet'", true),
            ("name LIKE 'vision%'", true),
            ("name ILIKE 'VISION-%'", true),
            ("name like '%net' and tags.team = 'cv'", true),
            ("tags.team != 'cv'", false),
            ("tags.`a b` = 'x'", true),
            ("tags.missing != 'x'", true),
            ("name = \"other\"", false),
        ] {
            let clauses = parse_filter(filter).expect(filter);
            assert_eq!(clauses.iter().all(|c| c.matches(&e)), want, "{filter}");
        }
        for bad in [
            "name",
            "name = x",
            "creation_time > 5",
            "name = 'a' or name = 'b'",
            "name = 'x",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert!(like("abc", "a_c", false));
        assert!(like("abc", "%", false));
        assert!(!like("abc", "ab", false));
        assert!(like("a%c", "a%%c", false));
    }
}
