"""Generates openapi.yaml (next to this file): runbase's HTTP API as OpenAPI 3.0.3, which the
server serves at GET /api/v1/openapi.yaml. Run after changing a route: python3 gen.py
(needs PyYAML). tests/tests/openapi.rs checks every route of the router is described and
runs schemathesis against the real server with it.

The MLflow routes are written once and emitted under both prefixes
(/api/2.0/mlflow and /ajax-api/2.0/mlflow), as server/src/http/mlflow/mod.rs nests them.
"""
import copy
import yaml

R = lambda name: {"$ref": f"#/components/schemas/{name}"}
RESP = lambda name: {"$ref": f"#/components/responses/{name}"}

I64 = {"type": "integer", "format": "int64"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
NULLSTR = {"type": "string", "nullable": True}
NULLI64 = {"type": "integer", "format": "int64", "nullable": True}
UUID = {"type": "string", "format": "uuid"}
RUNID = {
    "type": "string",
    "description": "32 hex digits or a hyphenated UUID",
    "pattern": "^([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
    "example": "3fb6fa644a084d1e897e401a7c9c7056",
}
KEY = {"type": "string", "minLength": 1, "maxLength": 250, "pattern": "^[^\\x00]+$"}
SEG = "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,15}"
ART_PATH = {"type": "string", "pattern": f"^{SEG}(/{SEG}){{0,4}}$", "maxLength": 1024}
def flt(attrs):
    subj = "(" + "|".join(attrs) + "|tags\\.[a-z]{1,8})"
    clause = subj + " (=|!=|LIKE|ILIKE) '[a-z0-9%_]{0,8}'"
    return {"type": "string", "pattern": f"^({clause}( (AND|and) {clause})?)?$"}
RUN_CLAUSE = ("(metrics\\.[a-z]{1,8} (<|>|=|<=|>=|!=) -?[0-9]{1,4}(\\.[0-9]{1,3})?"
              "|params\\.[a-z]{1,8} (=|!=) '[a-z0-9.]{0,8}'"
              "|tags\\.[a-z]{1,8} (=|!=|LIKE) '[a-z0-9%]{0,8}'"
              "|attributes\\.status = '(RUNNING|FINISHED|FAILED|KILLED)'"
              "|attributes\\.run_name LIKE '[a-z%-]{0,8}')")
RUN_FILTER = {"type": "string", "pattern": f"^({RUN_CLAUSE}( (and|AND|or|OR) {RUN_CLAUSE})?)?$"}
MODEL_REF = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,30}(@([0-9]{1,6}|[A-Za-z_][A-Za-z0-9_-]{0,20}))?$", "example": "iris"}
ORDER_BY = {"type": "string", "pattern": "^((metrics|params|tags)\\.[a-z]{1,8}|attributes\\.(start_time|end_time|run_name|status))( (ASC|DESC|asc|desc))?$"}


def obj(props, required=None, additional=False, **extra):
    o = {"type": "object", "properties": props}
    if required is None:
        required = list(props)
    if required:
        o["required"] = required
    o["additionalProperties"] = additional
    o.update(extra)
    return o


def arr(items, **extra):
    a = {"type": "array", "items": items}
    a.update(extra)
    return a


def json_body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def ok_json(schema, desc="OK"):
    return {"200": {"description": desc, "content": {"application/json": {"schema": schema}}}}


def q(name, schema, required=False, desc=None):
    p = {"name": name, "in": "query", "required": required, "schema": schema}
    if desc:
        p["description"] = desc
    return p


def path_param(name, schema=None, desc=None):
    p = {"name": name, "in": "path", "required": True, "schema": schema or STR}
    if desc:
        p["description"] = desc
    return p


# ---------------------------------------------------------------- components

schemas = {}
schemas["Error"] = obj(
    {
        "error_code": {
            "type": "string",
            "description": "runbase's protocol-neutral code (ErrorCode::as_str), e.g. "
            "invalid_argument, object_not_found, permission_denied, syntax",
            "pattern": "^[a-z_0-9]+$",
        },
        "message": STR,
    },
    description="Every error of the runbase API (server/src/http/error.rs).",
)
schemas["MlflowError"] = obj(
    {
        "error_code": {
            "type": "string",
            "enum": [
                "RESOURCE_DOES_NOT_EXIST",
                "RESOURCE_ALREADY_EXISTS",
                "INVALID_PARAMETER_VALUE",
                "ABORTED",
                "UNAUTHENTICATED",
                "PERMISSION_DENIED",
                "NOT_IMPLEMENTED",
                "CANCELLED",
                "DEADLINE_EXCEEDED",
                "TEMPORARILY_UNAVAILABLE",
                "INTERNAL_ERROR",
                "BAD_REQUEST",
            ],
        },
        "message": STR,
    },
    description="Errors on MLflow's routes, as MLflow words them (error.rs MlflowError).",
)
schemas["Status"] = obj({"status": STR})
schemas["WhoAmI"] = obj(
    {
        "user": STR,
        "role": {"type": "string", "enum": ["superuser", "readwrite", "readonly"]},
        "csrf_token": STR,
        "login_required": BOOL,
    }
)
schemas["Column"] = obj({"name": STR, "type": STR})
schemas["Cell"] = {
    "nullable": True,
    "description": "a JSON number (integers, floats; NaN/inf are null), a boolean, or text",
    "oneOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}],
}
schemas["Rows"] = obj(
    {
        "columns": arr(R("Column")),
        "rows": arr(arr(R("Cell"))),
        "truncated": BOOL,
    },
    description="One read-only query's rows (api/rows.rs, api/sql.rs).",
)
schemas["RunsPage"] = obj(
    {
        "columns": arr(R("Column")),
        "rows": arr(arr(R("Cell"))),
        "total": {"type": "integer", "minimum": 0},
        "offset": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        "experiment": STR,
    }
)
schemas["ExperimentSummary"] = obj(
    {
        "experiment_id": I64,
        "name": STR,
        "description": NULLSTR,
        "created_at_us": I64,
        "run_count": {"type": "integer", "minimum": 0},
        "running_count": {"type": "integer", "minimum": 0},
        "last_activity_us": I64,
        "best": {"type": "number", "nullable": True},
    },
    required=[
        "experiment_id",
        "name",
        "description",
        "created_at_us",
        "run_count",
        "running_count",
        "last_activity_us",
    ],
)
run_status = {"type": "string", "enum": ["RUNNING", "FINISHED", "FAILED", "KILLED"]}
schemas["RunRecord"] = obj(
    {
        "run_id": UUID,
        "experiment_id": I64,
        "experiment": STR,
        "name": STR,
        "status": run_status,
        "parent_run_id": {"type": "string", "format": "uuid", "nullable": True},
        "kind": STR,
        "started_at_us": I64,
        "ended_at_us": NULLI64,
        "user_name": NULLSTR,
        "source": NULLSTR,
        "deleted": BOOL,
    },
    required=[
        "run_id",
        "experiment_id",
        "experiment",
        "name",
        "status",
        "parent_run_id",
        "kind",
        "started_at_us",
        "ended_at_us",
        "user_name",
        "source",
    ],
    description="engine/src/tracking/types.rs Run (deleted only when true)",
)
schemas["RunDetail"] = obj(
    {
        "run": R("RunRecord"),
        "params": {"type": "object", "additionalProperties": STR},
        "tags": {"type": "object", "additionalProperties": STR},
        "inputs": arr(obj({"table": STR, "version": I64})),
        "metrics": arr(
            obj(
                {
                    "key": STR,
                    "step": I64,
                    "ts_us": I64,
                    "value": {"type": "number", "nullable": True},
                }
            )
        ),
        "children": arr(obj({"run_id": UUID, "name": STR, "status": run_status})),
        "artifacts": arr(obj({"path": STR, "size_bytes": I64, "sha256": STR})),
        "models": arr(obj({"name": STR, "version": I64})),
        "alerts": arr(
            obj(
                {
                    "alert": STR,
                    "kind": STR,
                    "message": STR,
                    "value": {"type": "number", "nullable": True},
                    "action": {"nullable": True},
                    "fired_at_us": I64,
                }
            )
        ),
        "stopped_by": {"nullable": True, "description": "the alert that stopped the run"},
    }
)
schemas["MetricSeries"] = obj(
    {
        "run_id": UUID,
        "key": STR,
        "x": {"type": "string", "enum": ["step", "time"]},
        "total": {"type": "integer", "minimum": 0},
        "downsampled": BOOL,
        "step": arr(I64),
        "ts_us": arr(I64),
        "value": arr({"type": "number", "nullable": True}),
    }
)
schemas["ModelVersionRecord"] = obj(
    {
        "name": STR,
        "run_id": {"type": "string", "format": "uuid", "nullable": True},
        "task": STR,
        "target": NULLSTR,
        "input_columns": arr(STR),
        "metrics": {"type": "object"},
        "format": STR,
        "spec": {"type": "object"},
        "version": I64,
        "location": STR,
        "size_bytes": I64,
        "sha256": STR,
        "created_at_us": I64,
    },
    description="engine/src/tracking/models.rs ModelVersion",
)
schemas["ModelAlias"] = obj({"name": STR, "alias": STR, "version": I64, "updated_at_us": I64})
schemas["Models"] = obj({"models": arr(R("ModelVersionRecord")), "aliases": arr(R("ModelAlias"))})
schemas["QueryRequest"] = obj(
    {"sql": {"type": "string", "description": "one read-only query (the spec generates a few SELECT shapes)", "pattern": "^SELECT (1|'[a-z]{0,6}'|[0-9]{1,6}\\.[0-9]{1,3}|NULL|true|count\\(\\*\\) FROM iris|\\* FROM (iris|runbase\\.(runs|metrics|experiments|models|jobs|tables|params|tags|latest_metrics)))( LIMIT [0-9]{1,3})?$"}, "limit": {"type": "integer", "minimum": 0, "nullable": True}},
    required=["sql"],
    additional=True,
    description="serde ignores unknown fields",
)
schemas["LoginRequest"] = obj({"user": STR, "password": STR}, additional=True)
schemas["TableDetail"] = obj(
    {"name": STR, "version": NULLI64, "versions": R("Rows"), "preview": R("Rows")}
)
schemas["Prediction"] = obj(
    {"predictions": arr({"nullable": True}), "model": {"type": "string", "pattern": "^.+@[0-9]+$"}}
)
schemas["ScoringBody"] = {
    "type": "object",
    "description": "MLflow scoring-server shapes: dataframe_split, dataframe_records, inputs, instances",
    "properties": {
        "dataframe_split": obj(
            {"columns": arr(STR), "data": arr(arr({"nullable": True}))}, required=["data"], additional=True
        ),
        "dataframe_records": arr({"type": "object"}),
        "inputs": {"oneOf": [arr({}), {"type": "object"}]},
        "instances": {"oneOf": [arr({}), {"type": "object"}]},
    },
    "minProperties": 1,
    "maxProperties": 1,
}

# MLflow wire shapes (mlflow/mod.rs, models.rs)
schemas["MlflowTag"] = obj({"key": STR, "value": STR})
schemas["MlflowTagIn"] = obj({"key": KEY, "value": {"type": "string", "nullable": True}}, required=["key"], additional=True)
schemas["MlflowDouble"] = {
    "oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]
}
schemas["MlflowMetric"] = obj(
    {"key": STR, "value": R("MlflowDouble"), "timestamp": I64, "step": I64}
)
schemas["MlflowMetricIn"] = obj(
    {
        "key": KEY,
        "value": R("MlflowDouble"),
        "timestamp": {"oneOf": [I64, {"type": "string", "pattern": "^-?[0-9]{1,18}$"}]},
        "step": {"oneOf": [I64, {"type": "string", "pattern": "^-?[0-9]{1,18}$"}]},
    },
    required=["key", "value", "timestamp"],
    additional=True,
)
schemas["MlflowExperiment"] = obj(
    {
        "experiment_id": {"type": "string", "pattern": "^[0-9]+$"},
        "name": STR,
        "artifact_location": STR,
        "lifecycle_stage": {"type": "string", "enum": ["active"]},
        "creation_time": I64,
        "last_update_time": I64,
        "tags": arr(R("MlflowTag")),
    }
)
schemas["MlflowRunInfo"] = obj(
    {
        "run_uuid": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "run_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "run_name": STR,
        "experiment_id": {"type": "string", "pattern": "^[0-9]+$"},
        "user_id": STR,
        "status": run_status,
        "start_time": I64,
        "end_time": I64,
        "artifact_uri": STR,
        "lifecycle_stage": {"type": "string", "enum": ["active", "deleted"]},
    },
    required=[
        "run_uuid",
        "run_id",
        "run_name",
        "experiment_id",
        "user_id",
        "status",
        "start_time",
        "artifact_uri",
        "lifecycle_stage",
    ],
)
schemas["MlflowRun"] = obj(
    {
        "info": R("MlflowRunInfo"),
        "data": obj(
            {
                "metrics": arr(R("MlflowMetric")),
                "params": arr(R("MlflowTag")),
                "tags": arr(R("MlflowTag")),
            }
        ),
        "inputs": obj({"dataset_inputs": arr({"type": "object"})}),
        "outputs": obj(
            {"model_outputs": arr(obj({"model_id": STR, "step": I64}))}
        ),
    }
)
logged_status = {
    "type": "string",
    "enum": ["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"],
}
schemas["MlflowLoggedModel"] = obj(
    {
        "info": obj(
            {
                "model_id": {"type": "string", "pattern": "^m-[0-9a-f]{32}$"},
                "experiment_id": STR,
                "name": STR,
                "artifact_uri": STR,
                "creation_timestamp_ms": I64,
                "last_updated_timestamp_ms": I64,
                "model_type": STR,
                "source_run_id": STR,
                "creator_id": STR,
                "status": logged_status,
                "tags": arr(R("MlflowTag")),
            },
            required=[
                "model_id",
                "experiment_id",
                "name",
                "artifact_uri",
                "creation_timestamp_ms",
                "last_updated_timestamp_ms",
                "status",
                "tags",
            ],
        ),
        "data": obj({"params": arr(R("MlflowTag")), "metrics": arr({}, maxItems=0)}),
    }
)
schemas["MlflowModelVersion"] = obj(
    {
        "name": STR,
        "version": {"type": "string", "pattern": "^[0-9]+$"},
        "creation_timestamp": I64,
        "last_updated_timestamp": I64,
        "current_stage": STR,
        "description": STR,
        "source": STR,
        "run_id": STR,
        "model_id": STR,
        "user_id": STR,
        "status": {"type": "string", "enum": ["READY"]},
        "tags": arr(R("MlflowTag")),
        "aliases": arr(STR),
    },
    required=[
        "name",
        "version",
        "creation_timestamp",
        "last_updated_timestamp",
        "current_stage",
        "source",
        "status",
        "tags",
        "aliases",
    ],
)
schemas["MlflowRegisteredModel"] = obj(
    {
        "name": STR,
        "creation_timestamp": I64,
        "last_updated_timestamp": I64,
        "description": STR,
        "tags": arr(R("MlflowTag")),
        "aliases": arr(obj({"alias": STR, "version": STR})),
        "latest_versions": arr(R("MlflowModelVersion"), maxItems=1),
    },
    required=["name", "creation_timestamp", "last_updated_timestamp", "tags", "aliases", "latest_versions"],
)
schemas["Empty"] = obj({}, required=[], maxProperties=0)

responses = {}
for code, desc in [
    ("BadRequest", "invalid input"),
    ("Forbidden", "permission denied: not a loopback Host under trust, a missing or wrong X-CSRF-Token, or the read-only role"),
    ("NotFound", "no such object"),
    ("Conflict", "already exists / invalid state / conflict"),
    ("Unsupported", "not supported (501)"),
    ("Timeout", "the query ran too long (504)"),
    ("Unavailable", "storage failed or the server is shutting down (503)"),
]:
    responses[code] = {"description": desc, "content": {"application/json": {"schema": R("Error")}}}
for code, desc in [
    ("MlBadRequest", "INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS or BAD_REQUEST"),
    ("MlForbidden", "PERMISSION_DENIED"),
    ("MlNotFound", "RESOURCE_DOES_NOT_EXIST"),
    ("MlConflict", "ABORTED: the path collides with an existing artifact file or directory"),
]:
    responses[code] = {
        "description": desc,
        "content": {"application/json": {"schema": R("MlflowError")}},
    }


def errs(*codes):
    m = {
        "400": RESP("BadRequest"),
        "403": RESP("Forbidden"),
        "404": RESP("NotFound"),
        "409": RESP("Conflict"),
        "501": RESP("Unsupported"),
        "503": RESP("Unavailable"),
        "504": RESP("Timeout"),
    }
    return {c: m[c] for c in codes}


def mlerrs(*codes):
    m = {
        "400": RESP("MlBadRequest"),
        "403": RESP("MlForbidden"),
        "404": RESP("MlNotFound"),
        "409": RESP("MlConflict"),
    }
    return {c: m[c] for c in codes}


CSRF = [{"csrf": []}]

paths = {}


def op(path, method, **kw):
    paths.setdefault(path, {})[method] = kw


# ---------------------------------------------------------------- plain routes (http/mod.rs)

op("/health", "get", operationId="health", tags=["service"], responses=ok_json(R("Status")))
op(
    "/api/v1/openapi.yaml",
    "get",
    operationId="openapi",
    tags=["service"],
    responses={"200": {"description": "this document", "content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
op(
    "/ready",
    "get",
    operationId="ready",
    tags=["service"],
    responses={**ok_json(R("Status")), **errs("503")},
)
op(
    "/metrics",
    "get",
    operationId="metrics",
    tags=["service"],
    responses={
        "200": {
            "description": "OpenMetrics text",
            "content": {"application/openmetrics-text": {"schema": STR}},
        }
    },
)
scoring_content = {
    "application/json": {"schema": R("ScoringBody")},
    "text/csv": {"schema": STR},
}
op(
    "/invocations",
    "post",
    operationId="invocations",
    tags=["scoring"],
    parameters=[
        q("model", MODEL_REF, required=True, desc="name, name@version or name@alias (or the X-Runbase-Model header instead)"),
        {"name": "X-Runbase-Model", "in": "header", "required": False, "schema": STR},
    ],
    requestBody={"required": True, "content": scoring_content},
    responses={**ok_json(R("Prediction")), **errs("400", "403", "404", "501")},
)
op(
    "/api/v1/models/{reference}/predict",
    "post",
    operationId="predict",
    tags=["scoring"],
    parameters=[path_param("reference", MODEL_REF, desc="name, name@version or name@alias")],
    requestBody={"required": True, "content": scoring_content},
    responses={**ok_json(R("Prediction")), **errs("400", "403", "404", "501")},
)

# ---------------------------------------------------------------- /api/v1 (api/mod.rs)

op(
    "/api/v1/login",
    "post",
    operationId="login",
    tags=["api"],
    requestBody=json_body(R("LoginRequest")),
    responses={**ok_json(R("WhoAmI")), **errs("400")},
)
paths["/api/v1/login"]["post"]["responses"]["401"] = {
    "description": "wrong user name or password (under --auth scram)",
    "content": {"application/json": {"schema": R("Error")}},
}
op(
    "/api/v1/logout",
    "post",
    operationId="logout",
    tags=["api"],
    security=CSRF,
    responses={**ok_json(obj({"logged_out": {"type": "boolean", "enum": [True]}})), **errs("403")},
)
op("/api/v1/whoami", "get", operationId="whoami", tags=["api"], responses={**ok_json(R("WhoAmI")), **errs("403")})
op(
    "/api/v1/experiments",
    "get",
    operationId="listExperiments",
    tags=["api"],
    parameters=[
        q("metric", STR, desc="adds `best`: the best latest value of this metric"),
        q("mode", {"type": "string", "enum": ["min", "max"]}),
    ],
    responses={**ok_json(obj({"experiments": arr(R("ExperimentSummary"))})), **errs("400", "403")},
)
op(
    "/api/v1/experiments/{name}/runs",
    "get",
    operationId="experimentRuns",
    tags=["api"],
    parameters=[
        path_param("name"),
        q("columns", {"type": "string", "pattern": "^((params|metrics|tags)\\.[a-z]{1,8})(,(params|metrics|tags)\\.[a-z]{1,8}){0,5}$"}, desc="comma-separated params.x, metrics.x, tags.x"),
        q("filter", RUN_FILTER, desc="SQL boolean expression or MLflow filter (the spec generates MLflow clauses only)"),
        q("order", {"type": "string", "pattern": "^(run_id|name|status|user_name|kind|parent_run_id|start_time|end_time|duration_s|(params|metrics|tags)\\.[a-z]{1,8})$"}),
        q("desc", BOOL),
        q("offset", {"type": "integer", "minimum": 0, "maximum": 18446744073709551615}),
        q("limit", {"type": "integer", "minimum": 0, "maximum": 18446744073709551615}),
    ],
    responses={**ok_json(R("RunsPage")), **errs("400", "403", "404", "504")},
)
op(
    "/api/v1/experiments/{name}/keys",
    "get",
    operationId="experimentKeys",
    tags=["api"],
    parameters=[path_param("name")],
    responses={
        **ok_json(obj({"params": arr(STR), "metrics": arr(STR), "tags": arr(STR)})),
        **errs("403", "404"),
    },
)
op(
    "/api/v1/runs/{run_id}",
    "get",
    operationId="getRun",
    tags=["api"],
    parameters=[path_param("run_id", UUID)],
    responses={**ok_json(R("RunDetail")), **errs("400", "403", "404")},
)
op(
    "/api/v1/runs/{run_id}/metric",
    "get",
    operationId="runMetric",
    tags=["api"],
    parameters=[
        path_param("run_id", UUID),
        q("key", STR, required=True),
        q("points", {"type": "integer", "minimum": 1, "maximum": 20000}),
        q("x", {"type": "string", "enum": ["step", "time"]}),
        q("from", I64),
        q("to", I64),
        q("format", {"type": "string", "enum": ["json", "csv"]}),
    ],
    responses={
        "200": {
            "description": "the series (JSON columns), or every point as CSV",
            "content": {
                "application/json": {"schema": R("MetricSeries")},
                "text/csv": {"schema": STR},
            },
        },
        **errs("400", "403", "404"),
    },
)
op(
    "/api/v1/runs/{run_id}/artifacts/{path}",
    "get",
    operationId="runArtifact",
    tags=["api"],
    parameters=[path_param("run_id", UUID), path_param("path", ART_PATH, desc="artifact path; may contain '/'")],
    responses={
        "200": {
            "description": "the artifact's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        **errs("400", "403", "404"),
    },
)
op("/api/v1/models", "get", operationId="listModels", tags=["api"], responses={**ok_json(R("Models")), **errs("403")})
op(
    "/api/v1/models/{name}/versions/{version}/export",
    "get",
    operationId="exportModel",
    tags=["api"],
    parameters=[path_param("name"), path_param("version", I64)],
    responses={
        "200": {
            "description": "the TorchScript file",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        **errs("400", "403", "404"),
    },
)
op("/api/v1/jobs", "get", operationId="listJobs", tags=["api"], responses={**ok_json(R("Rows")), **errs("403")})
op(
    "/api/v1/jobs/{run_id}/cancel",
    "post",
    operationId="cancelJob",
    tags=["api"],
    security=CSRF,
    parameters=[path_param("run_id", UUID)],
    responses={
        **ok_json(obj({"run_id": UUID, "cancelled": {"type": "boolean", "enum": [True]}})),
        **errs("400", "403", "404"),
    },
)
op("/api/v1/tables", "get", operationId="listTables", tags=["api"], responses={**ok_json(R("Rows")), **errs("403")})
op(
    "/api/v1/tables/{name}",
    "get",
    operationId="getTable",
    tags=["api"],
    parameters=[path_param("name"), q("version", I64)],
    responses={**ok_json(R("TableDetail")), **errs("400", "403", "404")},
)
query_errs = errs("400", "403", "404", "409", "504")
op(
    "/api/v1/query",
    "get",
    operationId="queryGet",
    tags=["api"],
    parameters=[q("sql", {"type": "string", "description": "one read-only query (the spec generates a few SELECT shapes)", "pattern": "^SELECT (1|'[a-z]{0,6}'|[0-9]{1,6}\\.[0-9]{1,3}|NULL|true|count\\(\\*\\) FROM iris|\\* FROM (iris|runbase\\.(runs|metrics|experiments|models|jobs|tables|params|tags|latest_metrics)))( LIMIT [0-9]{1,3})?$"}, required=True), q("limit", {"type": "integer", "minimum": 0})],
    responses={**ok_json(R("Rows")), **query_errs},
)
op(
    "/api/v1/query",
    "post",
    operationId="queryPost",
    tags=["api"],
    security=CSRF,
    requestBody=json_body(R("QueryRequest")),
    responses={**ok_json(R("Rows")), **query_errs},
)
op(
    "/api/v1/events",
    "get",
    operationId="events",
    tags=["api"],
    parameters=[
        q("runs", STR, desc="comma-separated run ids"),
        q("experiment", STR),
        q("kinds", STR, desc="comma-separated: run, metrics"),
        q("last_event_id", {"type": "integer", "minimum": 0}),
        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": STR},
    ],
    responses={
        "200": {"description": "Server-Sent Events", "content": {"text/event-stream": {"schema": STR}}},
        **errs("400", "403"),
    },
)

# ---------------------------------------------------------------- dashboard (dashboard.rs)

html = {"200": {"description": "the page shell", "content": {"text/html": {"schema": STR}}}}
for p in [
    "/",
    "/experiments/{name}",
    "/runs/{id}",
    "/compare",
    "/models",
    "/jobs",
    "/tables",
    "/tables/{name}",
    "/query",
    "/login",
]:
    params = []
    if "{name}" in p:
        params.append(path_param("name"))
    if "{id}" in p:
        params.append(path_param("id"))
    opid = "page" + "".join(s.strip("{}").capitalize() for s in p.split("/")) or "pageRoot"
    kw = dict(operationId=opid if p != "/" else "pageRoot", tags=["dashboard"], responses=html)
    if params:
        kw["parameters"] = params
    op(p, "get", **kw)
for p, ct in [
    ("/assets/app.js", "text/javascript"),
    ("/assets/favicon.svg", "image/svg+xml"),
    ("/assets/app.css", "text/css"),
    ("/assets/uPlot.iife.min.js", "text/javascript"),
    ("/assets/uPlot.min.css", "text/css"),
    ("/assets/uPlot.LICENSE.txt", "text/plain"),
]:
    op(
        p,
        "get",
        operationId="asset_" + p.rsplit("/", 1)[1].replace(".", "_"),
        tags=["dashboard"],
        responses={"200": {"description": "embedded asset", "content": {ct: {"schema": STR}}}},
    )

# ---------------------------------------------------------------- MLflow (mlflow/*.rs)

EXPID = {"type": "string", "pattern": "^[0-9]{1,18}$"}
INT64_WIRE = {"oneOf": [I64, {"type": "string", "pattern": "^-?[0-9]{1,18}$"}]}
TAGS_IN = arr(R("MlflowTagIn"))
ML_JSON = lambda schema: ok_json(schema)
mlops = []  # (subpath, method, kwargs)


def ml(sub, method, **kw):
    mlops.append((sub, method, kw))


def nullable(schema):
    schema = copy.deepcopy(schema)
    if "$ref" in schema:
        return {"allOf": [schema], "nullable": True}
    schema["nullable"] = True
    return schema


def body(props, required=()):
    """MLflow's Fields: unknown fields ignored, null is the same as absent."""
    props = {k: (v if k in required else nullable(v)) for k, v in props.items()}
    return json_body(obj(props, required=list(required), additional=True))


def run_body(props, required=()):
    """A body naming a run as run_id or run_uuid (Fields::run)."""
    props = {"run_uuid": RUNID, **props}
    b = body(props, [r for r in required if r != "run_id"])
    schema = b["content"]["application/json"]["schema"]
    schema["properties"]["run_id"] = {**RUNID, "pattern": "^(|" + RUNID["pattern"][1:-1] + ")$",
                                      "nullable": True, "description": "empty or null: use run_uuid"}
    schema["properties"]["run_uuid"] = RUNID
    schema["anyOf"] = [{"required": ["run_id"]}, {"required": ["run_uuid"]}]
    return b


def body_opt(props, required=()):
    b = body(props, required)
    b["required"] = False
    return b


ml(
    "/experiments/create",
    "post",
    operationId="createExperiment",
    requestBody=body({"name": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"}, "tags": TAGS_IN, "artifact_location": STR}, ["name"]),
    responses={**ML_JSON(obj({"experiment_id": EXPID})), **mlerrs("400", "403")},
)
ml(
    "/experiments/get",
    "get",
    operationId="getExperiment",
    parameters=[q("experiment_id", EXPID, required=True)],
    responses={**ML_JSON(obj({"experiment": R("MlflowExperiment")})), **mlerrs("400", "403", "404")},
)
ml(
    "/experiments/get-by-name",
    "get",
    operationId="getExperimentByName",
    parameters=[q("experiment_name", STR, required=True)],
    responses={**ML_JSON(obj({"experiment": R("MlflowExperiment")})), **mlerrs("400", "403", "404")},
)
search_exp_resp = {
    **ML_JSON(
        obj(
            {"experiments": arr(R("MlflowExperiment")), "next_page_token": {"type": "string", "pattern": "^[0-9]+$"}},
            required=["experiments"],
        )
    ),
    **mlerrs("400", "403"),
}
ml(
    "/experiments/search",
    "post",
    operationId="searchExperimentsPost",
    requestBody={
        **body(
            {
                "max_results": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 50000}, {"type": "string", "pattern": "^[1-9][0-9]{0,3}$"}]},
                "page_token": {"type": "string", "pattern": "^[0-9]{0,9}$"},
                "filter": flt(["name"]),
                "order_by": arr(STR),
                "view_type": {"description": "accepted and ignored"},
            }
        ),
        "required": False,
    },
    responses=search_exp_resp,
)
ml(
    "/experiments/search",
    "get",
    operationId="searchExperimentsGet",
    parameters=[
        q("max_results", {"type": "integer", "minimum": 1, "maximum": 50000}),
        q("page_token", {"type": "string", "pattern": "^[0-9]{0,9}$"}),
        q("filter", flt(["name"])),
    ],
    responses=search_exp_resp,
)
ml(
    "/experiments/set-experiment-tag",
    "post",
    operationId="setExperimentTag",
    requestBody=body({"experiment_id": EXPID, "key": KEY, "value": STR}, ["experiment_id", "key"]),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/create",
    "post",
    operationId="createRun",
    requestBody=body_opt(
        {"experiment_id": EXPID, "user_id": STR, "start_time": INT64_WIRE, "run_name": STR, "tags": TAGS_IN}
    ),
    responses={**ML_JSON(obj({"run": R("MlflowRun")})), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/get",
    "get",
    operationId="getRunMlflow",
    parameters=[q("run_id", RUNID, required=True), q("run_uuid", RUNID)],
    responses={**ML_JSON(obj({"run": R("MlflowRun")})), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/update",
    "post",
    operationId="updateRun",
    requestBody=run_body(
        {
            "run_id": RUNID,
            "run_uuid": RUNID,
            "status": {"type": "string", "enum": ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]},
            "end_time": INT64_WIRE,
            "run_name": STR,
        },
        ["run_id"],
    ),
    responses={**ML_JSON(obj({"run_info": R("MlflowRunInfo")})), **mlerrs("400", "403", "404")},
)
for sub, opid in [("/runs/delete", "deleteRun"), ("/runs/restore", "restoreRun")]:
    ml(
        sub,
        "post",
        operationId=opid,
        requestBody=run_body({"run_id": RUNID}, ["run_id"]),
        responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
    )
ml(
    "/runs/search",
    "post",
    operationId="searchRuns",
    requestBody={
        **body(
            {
                "experiment_ids": arr(EXPID),
                "filter": RUN_FILTER,
                "run_view_type": {"type": "string", "enum": ["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]},
                "max_results": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 50000}, {"type": "string", "pattern": "^[1-9][0-9]{0,3}$"}]},
                "order_by": arr(ORDER_BY),
                "page_token": {"type": "string", "pattern": "^[0-9]{0,9}$"},
            }
        ),
        "required": False,
    },
    responses={
        **ML_JSON(
            obj(
                {"runs": arr(R("MlflowRun")), "next_page_token": {"type": "string", "pattern": "^[0-9]+$"}},
                required=["runs"],
            )
        ),
        **mlerrs("400", "403", "404"),
    },
)
ml(
    "/runs/log-metric",
    "post",
    operationId="logMetric",
    requestBody=json_body(
        {
            "allOf": [
                R("MlflowMetricIn"),
                obj({"run_id": RUNID, "run_uuid": RUNID}, required=[], additional=True),
            ],
            "anyOf": [{"required": ["run_id"]}, {"required": ["run_uuid"]}],
        }
    ),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/log-parameter",
    "post",
    operationId="logParameter",
    requestBody=run_body({"run_id": RUNID, "key": KEY, "value": STR}, ["run_id", "key"]),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/set-tag",
    "post",
    operationId="setTag",
    requestBody=run_body({"run_id": RUNID, "key": KEY, "value": STR}, ["run_id", "key"]),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/log-batch",
    "post",
    operationId="logBatch",
    requestBody=run_body(
        {
            "run_id": RUNID,
            "metrics": arr(R("MlflowMetricIn"), maxItems=1000),
            "params": arr(R("MlflowTagIn"), maxItems=100),
            "tags": arr(R("MlflowTagIn"), maxItems=100),
        },
        ["run_id"],
    ),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/log-inputs",
    "post",
    operationId="logInputs",
    requestBody=run_body(
        {
            "run_id": RUNID,
            "datasets": arr(
                obj(
                    {
                        "tags": TAGS_IN,
                        "dataset": obj({"name": STR, "digest": STR}, required=["name", "digest"], additional=True),
                    },
                    required=["dataset"],
                    additional=True,
                )
            ),
        },
        ["run_id"],
    ),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/runs/outputs",
    "post",
    operationId="logOutputs",
    requestBody=run_body(
        {
            "run_id": RUNID,
            "models": arr(obj({"model_id": STR, "step": INT64_WIRE}, required=["model_id"], additional=True)),
        },
        ["run_id"],
    ),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/metrics/get-history",
    "get",
    operationId="getMetricHistory",
    parameters=[
        q("run_id", RUNID, required=True),
        q("run_uuid", RUNID),
        q("metric_key", STR, required=True),
        q("max_results", {"type": "integer", "minimum": 1}),
        q("page_token", {"type": "string", "pattern": "^$", "description": "opaque: the next_page_token of the previous page (hex); anything else is 400"}),
    ],
    responses={
        **ML_JSON(
            obj(
                {"metrics": arr(R("MlflowMetric")), "next_page_token": {"type": "string", "pattern": "^[0-9a-f]+$"}},
                required=["metrics"],
            )
        ),
        **mlerrs("400", "403", "404"),
    },
)
ml(
    "/logged-models",
    "post",
    operationId="createLoggedModel",
    requestBody=body(
        {
            "experiment_id": EXPID,
            "name": STR,
            "model_type": STR,
            "source_run_id": RUNID,
            "params": TAGS_IN,
            "tags": TAGS_IN,
        },
        ["experiment_id"],
    ),
    responses={**ML_JSON(obj({"model": R("MlflowLoggedModel")})), **mlerrs("400", "403", "404")},
)
ml(
    "/logged-models/search",
    "post",
    operationId="searchLoggedModels",
    requestBody={
        **body(
            {
                "experiment_ids": arr(EXPID),
                "filter": flt(["name", "source_run_id", "status", "model_type"]),
                "max_results": INT64_WIRE,
                "page_token": {"type": "string", "pattern": "^[0-9]{0,9}$"},
            }
        ),
        "required": False,
    },
    responses={
        **ML_JSON(
            obj(
                {"models": arr(R("MlflowLoggedModel")), "next_page_token": {"type": "string", "pattern": "^[0-9]+$"}},
                required=["models"],
            )
        ),
        **mlerrs("400", "403"),
    },
)
LMID = [path_param("model_id", STR)]
ml(
    "/logged-models/{model_id}",
    "get",
    operationId="getLoggedModel",
    parameters=LMID,
    responses={**ML_JSON(obj({"model": R("MlflowLoggedModel")})), **mlerrs("403", "404")},
)
ml(
    "/logged-models/{model_id}",
    "patch",
    operationId="finalizeLoggedModel",
    parameters=LMID,
    requestBody=body({"status": logged_status}, ["status"]),
    responses={**ML_JSON(obj({"model": R("MlflowLoggedModel")})), **mlerrs("400", "403", "404")},
)
ml(
    "/logged-models/{model_id}",
    "delete",
    operationId="deleteLoggedModel",
    parameters=LMID,
    responses={**ML_JSON(R("Empty")), **mlerrs("403", "404")},
)
ml(
    "/logged-models/{model_id}/tags",
    "patch",
    operationId="setLoggedModelTags",
    parameters=LMID,
    requestBody=body({"tags": TAGS_IN}),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
MODEL_NAME = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^/\u0000]*\\S[^/\u0000]*$"}
ml(
    "/registered-models/create",
    "post",
    operationId="createRegisteredModel",
    requestBody=body({"name": MODEL_NAME, "tags": TAGS_IN, "description": STR}, ["name"]),
    responses={**ML_JSON(obj({"registered_model": R("MlflowRegisteredModel")})), **mlerrs("400", "403")},
)
ml(
    "/registered-models/get",
    "get",
    operationId="getRegisteredModel",
    parameters=[q("name", STR, required=True)],
    responses={**ML_JSON(obj({"registered_model": R("MlflowRegisteredModel")})), **mlerrs("400", "403", "404")},
)
ml(
    "/registered-models/search",
    "get",
    operationId="searchRegisteredModels",
    parameters=[
        q("filter", flt(["name"])),
        q("max_results", I64),
        q("page_token", {"type": "string", "pattern": "^[0-9]{0,9}$"}),
    ],
    responses={
        **ML_JSON(
            obj(
                {
                    "registered_models": arr(R("MlflowRegisteredModel")),
                    "next_page_token": {"type": "string", "pattern": "^[0-9]+$"},
                },
                required=["registered_models"],
            )
        ),
        **mlerrs("400", "403"),
    },
)
VERSION = {"type": "string", "pattern": "^\\s*[0-9]{1,18}\\s*$"}
ALIAS = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]{0,63}$"}
ml(
    "/registered-models/alias",
    "post",
    operationId="setRegisteredModelAlias",
    requestBody=body({"name": STR, "alias": ALIAS, "version": VERSION}, ["name", "alias", "version"]),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
ml(
    "/registered-models/alias",
    "get",
    operationId="getModelVersionByAlias",
    parameters=[q("name", STR, required=True), q("alias", STR, required=True)],
    responses={**ML_JSON(obj({"model_version": R("MlflowModelVersion")})), **mlerrs("400", "403", "404")},
)
ml(
    "/registered-models/alias",
    "delete",
    operationId="deleteRegisteredModelAlias",
    requestBody=body({"name": STR, "alias": STR}, ["name", "alias"]),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)
latest_resp = {**ML_JSON(obj({"model_versions": arr(R("MlflowModelVersion"), maxItems=1)})), **mlerrs("400", "403", "404")}
ml(
    "/registered-models/get-latest-versions",
    "post",
    operationId="getLatestVersionsPost",
    requestBody=body({"name": STR, "stages": arr(STR)}, ["name"]),
    responses=latest_resp,
)
ml(
    "/registered-models/get-latest-versions",
    "get",
    operationId="getLatestVersionsGet",
    parameters=[q("name", STR, required=True)],
    responses=latest_resp,
)
ml(
    "/model-versions/create",
    "post",
    operationId="createModelVersion",
    requestBody=body(
        {"name": STR, "source": STR, "run_id": RUNID, "model_id": STR, "tags": TAGS_IN, "description": STR},
        ["name", "source"],
    ),
    responses={**ML_JSON(obj({"model_version": R("MlflowModelVersion")})), **mlerrs("400", "403", "404")},
)
ml(
    "/model-versions/get",
    "get",
    operationId="getModelVersion",
    parameters=[q("name", STR, required=True), q("version", VERSION, required=True)],
    responses={**ML_JSON(obj({"model_version": R("MlflowModelVersion")})), **mlerrs("400", "403", "404")},
)
ml(
    "/model-versions/search",
    "get",
    operationId="searchModelVersions",
    parameters=[q("filter", flt(["name", "run_id", "source", "version", "model_id"])), q("max_results", I64)],
    responses={**ML_JSON(obj({"model_versions": arr(R("MlflowModelVersion"))})), **mlerrs("400", "403")},
)
ml(
    "/model-versions/get-download-uri",
    "get",
    operationId="getModelVersionDownloadUri",
    parameters=[q("name", STR, required=True), q("version", VERSION, required=True)],
    responses={**ML_JSON(obj({"artifact_uri": STR})), **mlerrs("400", "403", "404")},
)
ml(
    "/model-versions/set-tag",
    "post",
    operationId="setModelVersionTag",
    requestBody=body({"name": STR, "version": VERSION, "key": KEY, "value": STR}, ["name", "version", "key"]),
    responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404")},
)

for prefix, tag, suffix in [("/api/2.0/mlflow", "mlflow", ""), ("/ajax-api/2.0/mlflow", "mlflow-ajax", "Ajax")]:
    for sub, method, kw in mlops:
        kw = copy.deepcopy(kw)
        kw["operationId"] = kw["operationId"] + suffix
        kw["tags"] = [tag]
        op(prefix + sub, method, **kw)

# the artifact proxy (mlflow/artifacts.rs)
for prefix, tag, suffix in [
    ("/api/2.0/mlflow-artifacts", "mlflow-artifacts", ""),
    ("/ajax-api/2.0/mlflow-artifacts", "mlflow-artifacts-ajax", "Ajax"),
]:
    op(
        prefix + "/artifacts",
        "get",
        operationId="listArtifacts" + suffix,
        tags=[tag],
        parameters=[q("path", {**ART_PATH, "pattern": "^$|" + ART_PATH["pattern"], "description": "a directory; empty or absent: the root"})],
        responses={
            **ML_JSON(
                {
                    "type": "object",
                    "properties": {
                        "files": arr(
                            obj(
                                {"path": STR, "is_dir": BOOL, "file_size": I64},
                                required=["path", "is_dir"],
                            ),
                            minItems=1,
                        )
                    },
                    "additionalProperties": False,
                }
            ),
            **mlerrs("400", "403", "404"),
        },
    )
    op(
        prefix + "/artifacts/{path}",
        "get",
        operationId="downloadArtifact" + suffix,
        tags=[tag],
        parameters=[path_param("path", ART_PATH, desc="may contain '/'")],
        responses={
            "200": {
                "description": "the file's bytes",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            },
            **mlerrs("400", "403", "404"),
        },
    )
    op(
        prefix + "/artifacts/{path}",
        "put",
        operationId="uploadArtifact" + suffix,
        tags=[tag],
        parameters=[path_param("path", ART_PATH, desc="<experiment>/<run>/artifacts/<file> records it as the run's artifact")],
        requestBody={
            "required": False,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        responses={**ML_JSON(R("Empty")), **mlerrs("400", "403", "404", "409")},
    )

EXAMPLES = {
    "run_id": "3fb6fa64-4a08-4d1e-897e-401a7c9c7056",
    "name": "mnist",
    "reference": "iris",
    "version": 1,
    "model_id": "m-f514e38b65e84a23900ed359f37606dc",
    "id": "3fb6fa64-4a08-4d1e-897e-401a7c9c7056",
}
for p, item in paths.items():
    for method, o in item.items():
        for prm in o.get("parameters", []):
            if prm["in"] == "path" and prm["name"] in EXAMPLES:
                ex = EXAMPLES[prm["name"]]
                if prm["name"] == "name" and "/tables/" in p or "/export" in p and prm["name"] == "name":
                    ex = "iris"
                prm["example"] = ex
            if prm["in"] == "path" and prm["name"] == "path":
                prm["example"] = "hello.txt" if p.startswith("/api/v1") else "1/3fb6fa644a084d1e897e401a7c9c7056/artifacts/hello.txt"

doc = {
    "openapi": "3.0.3",
    "info": {
        "title": "runbase HTTP API",
        "version": "0.1.0",
        "description": "The HTTP front end of runbase (docs/http.md, docs/mlflow.md). "
        "Under --auth trust (the default) nothing needs a login, but the Host must be a loopback "
        "name, and every non-GET /api/v1 request (except login) needs X-CSRF-Token "
        "(GET /api/v1/whoami gives it). Under --auth scram the /api/v1 routes need the "
        "runbase_session cookie from POST /api/v1/login, and MLflow routes and scoring need HTTP "
        "basic auth. Unknown paths: 404 JSON error (a bare 404 under MLflow's prefixes); a known "
        "path with another method: 405 with the JSON error body.",
    },
    "servers": [{"url": "http://127.0.0.1:5480"}],
    "tags": [{"name": t} for t in ["service", "scoring", "api", "dashboard", "mlflow", "mlflow-ajax", "mlflow-artifacts", "mlflow-artifacts-ajax"]],
    "paths": paths,
    "components": {
        "schemas": schemas,
        "responses": responses,
        "securitySchemes": {
            "csrf": {
                "type": "apiKey",
                "in": "header",
                "name": "X-CSRF-Token",
                "description": "the csrf_token of GET /api/v1/whoami or POST /api/v1/login",
            }
        },
    },
}


class NoAlias(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


import os

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.yaml"), "w") as f:
    yaml.dump(doc, f, Dumper=NoAlias, sort_keys=False, allow_unicode=True, width=100)
print(len(paths), "paths", sum(len(v) for v in paths.values()), "operations")
