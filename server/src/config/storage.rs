//! Where the data lives: the object store (a local directory by default, or S3) and the
//! S3 settings shared by the object store and backup targets.

use runbase_engine::storage::{ObjectStoreRoot, S3Options};

/// The object store's options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StorageArgs {
    /// Where tables, model blobs and artifacts live: `s3://bucket/prefix`, or a local
    /// directory (default: `<data-dir>/objects`). The catalog and tracking records stay
    /// in RocksDB under `--data-dir`. A data directory keeps the store it was created
    /// with. Credentials come from the usual `AWS_*` variables.
    #[arg(long, env = "RUNBASE_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// S3 endpoint URL, for S3-compatible servers (`http://127.0.0.1:9000`); also read
    /// from `AWS_ENDPOINT_URL`.
    #[arg(long, env = "RUNBASE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region; also read from `AWS_REGION`.
    #[arg(long, env = "RUNBASE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Allow a plain-HTTP S3 endpoint; also read from `AWS_ALLOW_HTTP`.
    #[arg(long, env = "RUNBASE_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,

    /// Virtual-hosted-style S3 requests (`bucket.host`) instead of path style
    /// (`host/bucket`, the default, which every S3-compatible server accepts).
    #[arg(long, env = "RUNBASE_S3_VIRTUAL_HOSTED")]
    pub s3_virtual_hosted: bool,
}

impl StorageArgs {
    /// The S3 settings.
    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            allow_http: self.s3_allow_http,
            virtual_hosted_style: self.s3_virtual_hosted,
            credentials: None,
        }
    }

    /// The object store, or `None` for the default (`<data-dir>/objects`). Local
    /// directories are synced per `synced` (`--synchronous-commit`).
    pub fn object_store(&self, synced: bool) -> runbase_engine::Result<Option<ObjectStoreRoot>> {
        self.object_store
            .as_deref()
            .map(|location| ObjectStoreRoot::parse(location, &self.s3_options(), synced))
            .transpose()
    }
}
