//! Building Arrow batches from the records a scan reads.

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};

use super::super::Run;
use super::*;

pub(super) fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

#[derive(Default)]
pub(super) struct RunColumns {
    pub(super) run_id: StringBuilder,
    pub(super) experiment: StringBuilder,
    pub(super) name: StringBuilder,
    pub(super) status: StringBuilder,
    pub(super) parent: StringBuilder,
    pub(super) kind: StringBuilder,
    pub(super) started: Option<TimestampMicrosecondBuilder>,
    pub(super) ended: Option<TimestampMicrosecondBuilder>,
    pub(super) user: StringBuilder,
    pub(super) source: StringBuilder,
    pub(super) len: usize,
}

impl RunColumns {
    pub(super) fn push(&mut self, r: &Run) {
        self.run_id.append_value(r.run_id.hyphenated().to_string());
        self.experiment.append_value(&r.experiment);
        self.name.append_value(&r.name);
        self.status.append_value(r.status.as_str());
        self.parent
            .append_option(r.parent_run_id.map(|p| p.hyphenated().to_string()));
        self.kind.append_value(&r.kind);
        self.started
            .get_or_insert_with(ts_builder)
            .append_value(r.started_at_us);
        self.ended
            .get_or_insert_with(ts_builder)
            .append_option(r.ended_at_us);
        self.user.append_option(r.user_name.as_deref());
        self.source.append_option(r.source.as_deref());
        self.len += 1;
    }
}

/// Column builders of one chunk.
pub(super) enum Rows {
    Experiments {
        id: Int64Builder,
        name: StringBuilder,
        description: StringBuilder,
        created: TimestampMicrosecondBuilder,
    },
    Runs(Box<RunColumns>),
    KeyValue {
        run_id: StringBuilder,
        key: StringBuilder,
        value: StringBuilder,
        experiment: StringBuilder,
    },
    Metrics {
        run_id: StringBuilder,
        key: StringBuilder,
        step: Int64Builder,
        ts: TimestampMicrosecondBuilder,
        value: Float64Builder,
    },
    Latest {
        run_id: StringBuilder,
        key: StringBuilder,
        step: Int64Builder,
        ts: TimestampMicrosecondBuilder,
        value: Float64Builder,
        experiment: StringBuilder,
    },
    Inputs {
        run_id: StringBuilder,
        table: StringBuilder,
        version: Int64Builder,
    },
    Artifacts {
        run_id: StringBuilder,
        path: StringBuilder,
        size: Int64Builder,
        sha256: StringBuilder,
        uri: StringBuilder,
    },
}

impl Rows {
    pub(super) fn new(kind: TableKind) -> Self {
        match kind {
            TableKind::Experiments => Rows::Experiments {
                id: Int64Builder::new(),
                name: StringBuilder::new(),
                description: StringBuilder::new(),
                created: ts_builder(),
            },
            TableKind::Runs => Rows::Runs(Box::default()),
            TableKind::Params | TableKind::Tags => Rows::KeyValue {
                run_id: StringBuilder::new(),
                key: StringBuilder::new(),
                value: StringBuilder::new(),
                experiment: StringBuilder::new(),
            },
            TableKind::Metrics => Rows::Metrics {
                run_id: StringBuilder::new(),
                key: StringBuilder::new(),
                step: Int64Builder::new(),
                ts: ts_builder(),
                value: Float64Builder::new(),
            },
            TableKind::LatestMetrics => Rows::Latest {
                run_id: StringBuilder::new(),
                key: StringBuilder::new(),
                step: Int64Builder::new(),
                ts: ts_builder(),
                value: Float64Builder::new(),
                experiment: StringBuilder::new(),
            },
            TableKind::RunInputs => Rows::Inputs {
                run_id: StringBuilder::new(),
                table: StringBuilder::new(),
                version: Int64Builder::new(),
            },
            TableKind::Artifacts => Rows::Artifacts {
                run_id: StringBuilder::new(),
                path: StringBuilder::new(),
                size: Int64Builder::new(),
                sha256: StringBuilder::new(),
                uri: StringBuilder::new(),
            },
        }
    }

    pub(super) fn len(&self) -> usize {
        use datafusion::arrow::array::ArrayBuilder;
        match self {
            Rows::Experiments { id, .. } => id.len(),
            Rows::Runs(c) => c.len,
            Rows::KeyValue { run_id, .. }
            | Rows::Metrics { run_id, .. }
            | Rows::Latest { run_id, .. }
            | Rows::Inputs { run_id, .. }
            | Rows::Artifacts { run_id, .. } => run_id.len(),
        }
    }

    pub(super) fn finish(self) -> Vec<ArrayRef> {
        fn a(b: &mut impl datafusion::arrow::array::ArrayBuilder) -> ArrayRef {
            b.finish()
        }
        match self {
            Rows::Experiments {
                mut id,
                mut name,
                mut description,
                mut created,
            } => {
                vec![
                    a(&mut id),
                    a(&mut name),
                    a(&mut description),
                    a(&mut created),
                ]
            }
            Rows::Runs(mut c) => {
                let mut started = c.started.take().unwrap_or_else(ts_builder);
                let mut ended = c.ended.take().unwrap_or_else(ts_builder);
                vec![
                    a(&mut c.run_id),
                    a(&mut c.experiment),
                    a(&mut c.name),
                    a(&mut c.status),
                    a(&mut c.parent),
                    a(&mut c.kind),
                    a(&mut started),
                    a(&mut ended),
                    a(&mut c.user),
                    a(&mut c.source),
                ]
            }
            Rows::KeyValue {
                mut run_id,
                mut key,
                mut value,
                mut experiment,
            } => {
                vec![
                    a(&mut run_id),
                    a(&mut key),
                    a(&mut value),
                    a(&mut experiment),
                ]
            }
            Rows::Metrics {
                mut run_id,
                mut key,
                mut step,
                mut ts,
                mut value,
            } => {
                vec![
                    a(&mut run_id),
                    a(&mut key),
                    a(&mut step),
                    a(&mut ts),
                    a(&mut value),
                ]
            }
            Rows::Latest {
                mut run_id,
                mut key,
                mut step,
                mut ts,
                mut value,
                mut experiment,
            } => vec![
                a(&mut run_id),
                a(&mut key),
                a(&mut step),
                a(&mut ts),
                a(&mut value),
                a(&mut experiment),
            ],
            Rows::Inputs {
                mut run_id,
                mut table,
                mut version,
            } => {
                vec![a(&mut run_id), a(&mut table), a(&mut version)]
            }
            Rows::Artifacts {
                mut run_id,
                mut path,
                mut size,
                mut sha256,
                mut uri,
            } => {
                vec![
                    a(&mut run_id),
                    a(&mut path),
                    a(&mut size),
                    a(&mut sha256),
                    a(&mut uri),
                ]
            }
        }
    }
}
