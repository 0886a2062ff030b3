//! [`MeteredStore`]: an object store that counts its requests and their failures, by
//! operation, into a `prometheus-client` family the database registers
//! (`runbase_object_store_requests_total{op, result}`).

use std::fmt;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;

/// The labels of one request count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `head`, `put`, `put_multipart`, `list`, `delete`, `copy`, `rename`.
    pub op: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Request counts by operation and result.
pub type RequestCounts = Family<RequestLabels, Counter>;

/// `inner`, counted.
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    counts: RequestCounts,
}

impl MeteredStore {
    /// Counts `inner`'s requests into `counts`.
    pub fn new(inner: Arc<dyn ObjectStore>, counts: RequestCounts) -> Self {
        Self { inner, counts }
    }

    fn count<T>(&self, op: &'static str, r: &object_store::Result<T>) {
        count(&self.counts, op, r.is_ok());
    }

    /// Counts each item of a listing-like stream (one request per call, one error per
    /// failed item).
    fn counted_stream<T: Send + 'static>(
        &self,
        op: &'static str,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        count(&self.counts, op, true);
        let counts = self.counts.clone();
        stream
            .inspect(move |item| {
                if item.is_err() {
                    count(&counts, op, false);
                }
            })
            .boxed()
    }
}

fn count(counts: &RequestCounts, op: &'static str, ok: bool) {
    counts
        .get_or_create(&RequestLabels {
            op,
            result: if ok { "ok" } else { "error" },
        })
        .inc();
}

impl fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeteredStore({})", self.inner)
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await;
        self.count("put", &r);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.count("put_multipart", &r);
        r
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        let r = self.inner.get_opts(location, options).await;
        // A missing object is an answer, not a failure of the store.
        let ok = matches!(&r, Ok(_) | Err(object_store::Error::NotFound { .. }));
        count(&self.counts, op, ok);
        r
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        let r = self.inner.get_ranges(location, ranges).await;
        self.count("get", &r);
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.delete_stream(locations);
        self.counted_stream("delete", inner)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.list(prefix);
        self.counted_stream("list", inner)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.list_with_offset(prefix, offset);
        self.counted_stream("list", inner)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let r = self.inner.list_with_delimiter(prefix).await;
        self.count("list", &r);
        r
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let r = self.inner.copy_opts(from, to, options).await;
        // A lost create-if-absent race is the store answering, not failing.
        let ok = matches!(&r, Ok(()) | Err(object_store::Error::AlreadyExists { .. }));
        count(&self.counts, "copy", ok);
        r
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        let r = self.inner.rename_opts(from, to, options).await;
        let ok = matches!(&r, Ok(()) | Err(object_store::Error::AlreadyExists { .. }));
        count(&self.counts, "rename", ok);
        r
    }
}
