//! S3 (and S3-compatible servers) as the object store: object_store's own S3 client,
//! with no AWS SDK.
//!
//! Credentials and most settings come from the usual `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, web identity and container credentials, …); [`S3Options`] overrides
//! the ones people set per deployment. Concurrent Delta commits are made safe by
//! conditional PUT (`If-None-Match: *`, object_store's `PutMode::Create`): a commit that
//! loses the race gets a 412 and deltalake retries it as the next version.

use std::sync::{Arc, Once};
use std::time::Duration;

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::error::{Error, Result};

/// Settings of an S3 object store that override the `AWS_*` environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`); AWS by default.
    pub endpoint: Option<String>,
    /// Region (`AWS_REGION` or `us-east-1` by default).
    pub region: Option<String>,
    /// Permit plain-HTTP endpoints.
    pub allow_http: bool,
    /// Address buckets as `bucket.host` instead of `host/bucket` (path style, the default
    /// here because every S3-compatible server accepts it).
    pub virtual_hosted_style: bool,
    /// Static credentials, for embedders (the server takes them only from the
    /// environment, never from its command line): access key id and secret.
    pub credentials: Option<(String, String)>,
}

/// Builds the S3 client for the bucket of `url` (`s3://bucket/prefix/`): its `/` is the
/// bucket's root.
pub(crate) fn store(url: &Url, options: &S3Options) -> Result<Arc<dyn ObjectStore>> {
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Error::InvalidArgument(format!("object store URL {url} names no bucket")))?;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(options.virtual_hosted_style)
        // A bounded wait: a store that does not answer fails the statement with a clear
        // error within about a minute instead of hanging it.
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(60)),
        )
        .with_retry(RetryConfig {
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    if let Some((key, secret)) = &options.credentials {
        builder = builder
            .with_access_key_id(key)
            .with_secret_access_key(secret);
    }
    if options.allow_http {
        builder = builder.with_allow_http(true);
    }
    let store = builder
        .build()
        .map_err(|e| Error::InvalidArgument(format!("S3 object store {url}: {e}")))?;
    register_log_store();
    Ok(Arc::new(store))
}

/// deltalake looks up a log store by URL scheme even when it is handed the store itself;
/// only `file://` and `memory://` are registered by default. The default log store commits
/// by conditional PUT, which is all S3 needs since deltalake-aws 1.0.
fn register_log_store() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                logstore_factories().insert(url, Arc::new(DefaultLogStores));
            }
        }
    });
}

/// The log-store factory registered for `s3://`: deltalake's default log store.
struct DefaultLogStores;

impl LogStoreFactory for DefaultLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
