//! MLflow 3's logged models (`logged-models…`, what `log_model` creates) and the model
//! registry (`registered-models/*`, `model-versions/*`), kept as documents in the
//! `mlflow` records: `logged_model/<id>`, `registered/<name>`, `version/<name>/<n>`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use runbase_engine::tracking::Tracking;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::super::AppState;
use super::super::auth::Caller;
use super::experiments::{Clause, parse_clauses, tag_pairs};
use super::{
    Fields, MlflowError, blocking, empty, experiment_by_id, now_ms, parse_run, set_next_page,
};

use runbase_engine::tracking::mlflow::{
    logged_model_key as logged_key, model_version_key as version_key,
    model_version_prefix as version_prefix, registered_model_key as registered_key,
};

/// Tags as `[{key, value}]` from a `{key: value}` document field.
fn tag_list(doc: &Value) -> Vec<Value> {
    doc.get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `doc[field][key]` to `value`, making `doc[field]` an object first if it is not.
fn set_entry(doc: &mut Value, field: &str, key: &str, value: Value) {
    if !doc.get(field).is_some_and(Value::is_object) {
        doc[field] = json!({});
    }
    doc[field][key] = value;
}

/// Whether `doc` (a record with string attributes and a `tags` object) meets every
/// clause.
fn doc_matches(clauses: &[Clause], doc: &Value) -> bool {
    clauses.iter().all(|c| {
        c.matches_with(
            |a| doc.get(a).and_then(Value::as_str).map(str::to_string),
            |k| {
                doc.get("tags")
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            },
        )
    })
}

fn tag_map(pairs: Vec<(String, String)>) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// Model names: what MLflow allows, less `/` (names are key segments here).
fn check_name(name: &str) -> Result<(), MlflowError> {
    if name.trim().is_empty() {
        return Err(MlflowError::invalid(
            "Registered model name cannot be empty.",
        ));
    }
    if name.contains('/') || name.contains('\0') || name.len() > 256 {
        return Err(MlflowError::invalid(format!(
            "Invalid model name '{name}': at most 256 bytes, without '/'"
        )));
    }
    Ok(())
}

// ---- logged models ----

/// A logged model as MLflow shows it.
fn logged_json(doc: &Value) -> Value {
    let mut info = doc.clone();
    if let Some(obj) = info.as_object_mut() {
        obj.insert("tags".into(), Value::Array(tag_list(doc)));
        obj.remove("params");
    }
    let params: Vec<Value> = doc
        .get("params")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect()
        })
        .unwrap_or_default();
    json!({ "info": info, "data": { "params": params, "metrics": [] } })
}

fn logged(t: &Tracking, id: &str) -> Result<Value, MlflowError> {
    t.mlflow_record(&logged_key(id))?
        .ok_or_else(|| MlflowError::missing(format!("Logged model with ID '{id}' not found.")))
}

/// `POST logged-models {experiment_id, name, model_type, source_run_id, params, tags}` →
/// `{"model"}`, pending until finalized; its files go to its `artifact_uri`.
pub(super) async fn create_logged(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let experiment = fields.required("experiment_id")?;
    let name = fields.text("name")?.filter(|n| !n.is_empty());
    let model_type = fields.text("model_type")?;
    let run = match fields.text("source_run_id")?.filter(|r| !r.is_empty()) {
        Some(r) => Some(parse_run(&r)?),
        None => None,
    };
    let tags = tag_map(tag_pairs(&fields.list("tags")?)?);
    let params = tag_map(tag_pairs(&fields.list("params")?)?);
    let creator = caller.user.clone();
    blocking(&state, move |t| {
        let e = experiment_by_id(t, &experiment)?;
        if let Some(r) = &run {
            super::existing_run(t, r)?;
        }
        let id = format!("m-{}", Uuid::new_v4().simple());
        let now = now_ms();
        let doc = json!({
            "model_id": id,
            "experiment_id": e.id.to_string(),
            "name": name.unwrap_or_else(|| "model".into()),
            "artifact_uri": format!("mlflow-artifacts:/{}/models/{id}/artifacts", e.id),
            "creation_timestamp_ms": now,
            "last_updated_timestamp_ms": now,
            "model_type": model_type,
            "source_run_id": run.map(|r| r.simple().to_string()),
            "creator_id": creator,
            "status": "LOGGED_MODEL_PENDING",
            "tags": tags,
            "params": params,
        });
        let doc = strip_nulls(doc);
        t.put_mlflow_records(&[(logged_key(&id), Some(doc.clone()))])?;
        Ok(Json(json!({ "model": logged_json(&doc) })))
    })
    .await
}

/// Drops null fields (protobuf JSON leaves unset fields out).
fn strip_nulls(mut doc: Value) -> Value {
    if let Some(obj) = doc.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    doc
}

/// `GET logged-models/{id}` → `{"model"}`.
pub(super) async fn get_logged(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, MlflowError> {
    blocking(&state, move |t| {
        Ok(Json(json!({ "model": logged_json(&logged(t, &id)?) })))
    })
    .await
}

/// `PATCH logged-models/{id} {status}`: finalizes it (LOGGED_MODEL_READY or
/// LOGGED_MODEL_UPLOAD_FAILED) → `{"model"}`.
pub(super) async fn finalize_logged(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let status = fields.required("status")?;
    if ![
        "LOGGED_MODEL_READY",
        "LOGGED_MODEL_UPLOAD_FAILED",
        "LOGGED_MODEL_PENDING",
    ]
    .contains(&status.as_str())
    {
        return Err(MlflowError::invalid(format!(
            "Invalid logged model status '{status}'"
        )));
    }
    blocking(&state, move |t| {
        let mut doc = logged(t, &id)?;
        doc["status"] = json!(status);
        doc["last_updated_timestamp_ms"] = json!(now_ms());
        t.put_mlflow_records(&[(logged_key(&id), Some(doc.clone()))])?;
        Ok(Json(json!({ "model": logged_json(&doc) })))
    })
    .await
}

/// `PATCH logged-models/{id}/tags {tags}`.
pub(super) async fn tag_logged(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let tags = tag_pairs(&fields.list("tags")?)?;
    blocking(&state, move |t| {
        let mut doc = logged(t, &id)?;
        for (k, v) in tags {
            set_entry(&mut doc, "tags", &k, Value::String(v));
        }
        t.put_mlflow_records(&[(logged_key(&id), Some(doc))])?;
        Ok(empty())
    })
    .await
}

/// `DELETE logged-models/{id}`.
pub(super) async fn delete_logged(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    blocking(&state, move |t| {
        logged(t, &id)?;
        t.put_mlflow_records(&[(logged_key(&id), None)])?;
        Ok(empty())
    })
    .await
}

/// `POST logged-models/search {experiment_ids, filter, max_results, page_token}` →
/// `{"models", "next_page_token"}`, newest first. Filters: `name`, `source_run_id`,
/// `status`, `tags.<key>`.
pub(super) async fn search_logged(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let experiments = fields.texts("experiment_ids")?;
    let clauses = parse_clauses(
        fields.text("filter")?.as_deref().unwrap_or(""),
        &["name", "source_run_id", "status", "model_type"],
    )?;
    let max =
        usize::try_from(fields.int("max_results")?.unwrap_or(100).clamp(1, 1000)).unwrap_or(100);
    let offset = super::runs::page_offset(fields.text("page_token")?.as_deref())?;
    blocking(&state, move |t| {
        let mut docs: Vec<Value> = t
            .mlflow_records("logged_model/")?
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| {
                let exp = d.get("experiment_id").and_then(Value::as_str).unwrap_or("");
                (experiments.is_empty() || experiments.iter().any(|e| e == exp))
                    && doc_matches(&clauses, d)
            })
            .collect();
        docs.sort_by_key(|d| {
            std::cmp::Reverse(d.get("creation_timestamp_ms").and_then(Value::as_i64))
        });
        let page: Vec<Value> = docs
            .iter()
            .skip(offset)
            .take(max)
            .map(logged_json)
            .collect();
        let mut out = json!({ "models": page });
        set_next_page(&mut out, offset + max, docs.len());
        Ok(Json(out))
    })
    .await
}

// ---- the registry ----

fn registered(t: &Tracking, name: &str) -> Result<Value, MlflowError> {
    t.mlflow_record(&registered_key(name))?
        .ok_or_else(|| MlflowError::missing(format!("Registered Model with name={name} not found")))
}

fn versions(t: &Tracking, name: &str) -> Result<Vec<Value>, MlflowError> {
    Ok(t.mlflow_records(&version_prefix(name))?
        .into_iter()
        .map(|(_, d)| d)
        .collect())
}

fn version_doc(t: &Tracking, name: &str, version: i64) -> Result<Value, MlflowError> {
    registered(t, name)?;
    t.mlflow_record(&version_key(name, version))?
        .ok_or_else(|| {
            MlflowError::missing(format!(
                "Model Version (name={name}, version={version}) not found"
            ))
        })
}

/// A version as MLflow shows it (tags as a list, aliases pointing at it).
fn version_json(doc: &Value, aliases: &Map<String, Value>) -> Value {
    let mut out = doc.clone();
    let version = doc.get("version").and_then(Value::as_str).unwrap_or("");
    let pointing: Vec<Value> = aliases
        .iter()
        .filter(|(_, v)| v.as_str() == Some(version))
        .map(|(a, _)| json!(a))
        .collect();
    if let Some(obj) = out.as_object_mut() {
        obj.insert("tags".into(), Value::Array(tag_list(doc)));
        obj.insert("aliases".into(), Value::Array(pointing));
    }
    out
}

fn aliases_of(doc: &Value) -> Map<String, Value> {
    doc.get("aliases")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// A registered model as MLflow shows it, with its latest version and aliases.
fn registered_json(t: &Tracking, doc: &Value) -> Result<Value, MlflowError> {
    let name = doc.get("name").and_then(Value::as_str).unwrap_or("");
    let aliases = aliases_of(doc);
    let mut out = doc.clone();
    let latest: Vec<Value> = versions(t, name)?
        .last()
        .map(|v| version_json(v, &aliases))
        .into_iter()
        .collect();
    if let Some(obj) = out.as_object_mut() {
        obj.insert("tags".into(), Value::Array(tag_list(doc)));
        obj.insert(
            "aliases".into(),
            Value::Array(
                aliases
                    .iter()
                    .map(|(a, v)| json!({ "alias": a, "version": v }))
                    .collect(),
            ),
        );
        obj.insert("latest_versions".into(), Value::Array(latest));
    }
    Ok(out)
}

/// `POST registered-models/create {name, tags, description}` → `{"registered_model"}`;
/// an existing name is 400 RESOURCE_ALREADY_EXISTS (which the client takes in stride).
pub(super) async fn create_registered(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let name = fields.required("name")?;
    check_name(&name)?;
    let tags = tag_map(tag_pairs(&fields.list("tags")?)?);
    let description = fields.text("description")?;
    blocking(&state, move |t| {
        t.with_registry_lock(|| -> Result<_, MlflowError> {
            if t.mlflow_record(&registered_key(&name))?.is_some() {
                return Err(MlflowError::from(runbase_engine::Error::UniqueViolation(
                    format!("Registered Model (name={name}) already exists."),
                )));
            }
            let now = now_ms();
            let doc = strip_nulls(json!({
                "name": name,
                "creation_timestamp": now,
                "last_updated_timestamp": now,
                "description": description,
                "tags": tags,
                "aliases": {},
            }));
            Ok(t.put_mlflow_records(&[(registered_key(&name), Some(doc))])?)
        })?;
        let doc = registered(t, &name)?;
        Ok(Json(
            json!({ "registered_model": registered_json(t, &doc)? }),
        ))
    })
    .await
}

/// `GET registered-models/get?name=` → `{"registered_model"}`.
pub(super) async fn get_registered(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let name = fields.required("name")?;
    blocking(&state, move |t| {
        let doc = registered(t, &name)?;
        Ok(Json(
            json!({ "registered_model": registered_json(t, &doc)? }),
        ))
    })
    .await
}

/// `GET registered-models/search?filter=&max_results=` → `{"registered_models"}`.
/// Filters: `name` (`=`, `!=`, `LIKE`, `ILIKE`) and `tags.<key>`.
pub(super) async fn search_registered(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let clauses = parse_clauses(fields.text("filter")?.as_deref().unwrap_or(""), &["name"])?;
    let max =
        usize::try_from(fields.int("max_results")?.unwrap_or(100).clamp(1, 1000)).unwrap_or(100);
    let offset = super::runs::page_offset(fields.text("page_token")?.as_deref())?;
    blocking(&state, move |t| {
        let docs: Vec<Value> = t
            .mlflow_records("registered/")?
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| doc_matches(&clauses, d))
            .collect();
        let page = docs
            .iter()
            .skip(offset)
            .take(max)
            .map(|d| registered_json(t, d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = json!({ "registered_models": page });
        set_next_page(&mut out, offset + max, docs.len());
        Ok(Json(out))
    })
    .await
}

/// `POST model-versions/create {name, source, run_id, model_id, tags, description}` →
/// `{"model_version"}`, READY at once (its files are where `source` says).
pub(super) async fn create_version(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let name = fields.required("name")?;
    let source = fields.required("source")?;
    let run_id = fields.text("run_id")?.filter(|r| !r.is_empty());
    let model_id = fields.text("model_id")?.filter(|r| !r.is_empty());
    let tags = tag_map(tag_pairs(&fields.list("tags")?)?);
    let description = fields.text("description")?;
    let creator = caller.user.clone();
    blocking(&state, move |t| {
        let doc = t.with_registry_lock(|| -> Result<_, MlflowError> {
            let mut registered_doc = registered(t, &name)?;
            let next = versions(t, &name)?
                .last()
                .and_then(|d| {
                    d.get("version")
                        .and_then(Value::as_str)
                        .and_then(|v| v.parse::<i64>().ok())
                })
                .unwrap_or(0)
                + 1;
            let now = now_ms();
            let doc = strip_nulls(json!({
                "name": name,
                "version": next.to_string(),
                "creation_timestamp": now,
                "last_updated_timestamp": now,
                "current_stage": "None",
                "description": description,
                "source": source,
                "run_id": run_id,
                "model_id": model_id,
                "user_id": creator,
                "status": "READY",
                "tags": tags,
            }));
            registered_doc["last_updated_timestamp"] = json!(now);
            t.put_mlflow_records(&[
                (version_key(&name, next), Some(doc.clone())),
                (registered_key(&name), Some(registered_doc)),
            ])?;
            Ok(doc)
        })?;
        let aliases = aliases_of(&registered(t, &name)?);
        Ok(Json(
            json!({ "model_version": version_json(&doc, &aliases) }),
        ))
    })
    .await
}

fn version_number(fields: &Fields) -> Result<i64, MlflowError> {
    let v = fields.required("version")?;
    v.trim().parse().map_err(|_| {
        MlflowError::invalid(format!("Invalid model version '{v}': expected an integer"))
    })
}

/// `GET model-versions/get?name=&version=` → `{"model_version"}`.
pub(super) async fn get_version(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let name = fields.required("name")?;
    let version = version_number(&fields)?;
    blocking(&state, move |t| {
        let doc = version_doc(t, &name, version)?;
        let aliases = aliases_of(&registered(t, &name)?);
        Ok(Json(
            json!({ "model_version": version_json(&doc, &aliases) }),
        ))
    })
    .await
}

/// `GET model-versions/search?filter=` → `{"model_versions"}`. Filters: `name`,
/// `run_id`, `source`, `version`, `tags.<key>`.
pub(super) async fn search_versions(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let clauses = parse_clauses(
        fields.text("filter")?.as_deref().unwrap_or(""),
        &["name", "run_id", "source", "version", "model_id"],
    )?;
    let max = usize::try_from(
        fields
            .int("max_results")?
            .unwrap_or(10_000)
            .clamp(1, 200_000),
    )
    .unwrap_or(10_000);
    blocking(&state, move |t| {
        let mut aliases: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (_, d) in t.mlflow_records("registered/")? {
            if let Some(n) = d.get("name").and_then(Value::as_str) {
                aliases.insert(n.to_string(), aliases_of(&d));
            }
        }
        let empty_aliases = Map::new();
        let out: Vec<Value> = t
            .mlflow_records("version/")?
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| doc_matches(&clauses, d))
            .take(max)
            .map(|d| {
                let name = d.get("name").and_then(Value::as_str).unwrap_or("");
                version_json(&d, aliases.get(name).unwrap_or(&empty_aliases))
            })
            .collect();
        Ok(Json(json!({ "model_versions": out })))
    })
    .await
}

/// `registered-models/get-latest-versions {name}` → `{"model_versions"}`: the newest.
pub(super) async fn latest_versions(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let name = fields.required("name")?;
    blocking(&state, move |t| {
        let aliases = aliases_of(&registered(t, &name)?);
        let latest: Vec<Value> = versions(t, &name)?
            .last()
            .map(|v| version_json(v, &aliases))
            .into_iter()
            .collect();
        Ok(Json(json!({ "model_versions": latest })))
    })
    .await
}

/// `POST model-versions/set-tag {name, version, key, value}`.
pub(super) async fn set_version_tag(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let name = fields.required("name")?;
    let version = version_number(&fields)?;
    let key = fields.required("key")?;
    let value = fields.text("value")?.unwrap_or_default();
    blocking(&state, move |t| {
        t.with_registry_lock(|| -> Result<_, MlflowError> {
            let mut doc = version_doc(t, &name, version)?;
            set_entry(&mut doc, "tags", &key, json!(value));
            Ok(t.put_mlflow_records(&[(version_key(&name, version), Some(doc))])?)
        })?;
        Ok(empty())
    })
    .await
}

/// `POST registered-models/alias {name, alias, version}`: points the alias at the
/// version (moving it from another).
pub(super) async fn set_alias(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let name = fields.required("name")?;
    let alias = fields.required("alias")?;
    let version = version_number(&fields)?;
    runbase_engine::tracking::models::validate_alias(&alias)?;
    blocking(&state, move |t| {
        t.with_registry_lock(|| -> Result<_, MlflowError> {
            version_doc(t, &name, version)?;
            let mut doc = registered(t, &name)?;
            set_entry(&mut doc, "aliases", &alias, json!(version.to_string()));
            Ok(t.put_mlflow_records(&[(registered_key(&name), Some(doc))])?)
        })?;
        Ok(empty())
    })
    .await
}

/// `DELETE registered-models/alias {name, alias}`.
pub(super) async fn delete_alias(
    State(state): State<AppState>,
    caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    caller.writer()?;
    let name = fields.required("name")?;
    let alias = fields.required("alias")?;
    blocking(&state, move |t| {
        t.with_registry_lock(|| -> Result<_, MlflowError> {
            let mut doc = registered(t, &name)?;
            if let Some(m) = doc.get_mut("aliases").and_then(Value::as_object_mut) {
                m.remove(&alias);
            }
            Ok(t.put_mlflow_records(&[(registered_key(&name), Some(doc))])?)
        })?;
        Ok(empty())
    })
    .await
}

/// `GET registered-models/alias?name=&alias=` → `{"model_version"}` the alias points at.
pub(super) async fn get_by_alias(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let name = fields.required("name")?;
    let alias = fields.required("alias")?;
    blocking(&state, move |t| {
        let doc = registered(t, &name)?;
        let aliases = aliases_of(&doc);
        let version = aliases
            .get(&alias)
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| {
                MlflowError::missing(format!("Registered model alias {alias} not found."))
            })?;
        let v = version_doc(t, &name, version)?;
        Ok(Json(json!({ "model_version": version_json(&v, &aliases) })))
    })
    .await
}

/// `GET model-versions/get-download-uri?name=&version=` → `{"artifact_uri"}`: where the
/// version's files are (a logged model's or a run's artifact directory).
pub(super) async fn download_uri(
    State(state): State<AppState>,
    _caller: Caller,
    fields: Fields,
) -> Result<Json<Value>, MlflowError> {
    let name = fields.required("name")?;
    let version = version_number(&fields)?;
    blocking(&state, move |t| {
        let doc = version_doc(t, &name, version)?;
        let source = doc
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let uri = resolve_source(t, &source)?;
        Ok(Json(json!({ "artifact_uri": uri })))
    })
    .await
}

/// The artifact location a version's `source` names (a logged model's or a run's
/// artifact directory, or the source itself when it names neither).
fn resolve_source(t: &Tracking, source: &str) -> Result<String, MlflowError> {
    if source.starts_with("models:/") || source.starts_with("runs:/") {
        return Ok(format!("mlflow-artifacts:/{}", t.mlflow_model_dir(source)?));
    }
    Ok(source.to_string())
}
