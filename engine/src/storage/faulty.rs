//! [`FaultyStore`]: an object store that passes every request through the
//! [`failpoints`](crate::failpoints) first, so tests can make the store fail, stall, or
//! kill the server between any two steps of a write.
//!
//! A Delta commit file (`…/_delta_log/<version>.json`) passes `delta.commit` and
//! `delta.commit.after` instead of the plain put points: they stand between a write's
//! Parquet files and its commit, and between the commit and the catalog and the ack.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use crate::failpoints;

/// `inner`, with failpoints before (and after) each request.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
}

impl FaultyStore {
    /// Passes `inner`'s requests through the failpoints.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

/// Whether `location` is a Delta commit file.
fn is_commit(location: &Path) -> bool {
    let mut parts: Vec<_> = location.parts().collect();
    let (Some(file), Some(dir)) = (parts.pop(), parts.pop()) else {
        return false;
    };
    dir.as_ref() == "_delta_log"
        && file
            .as_ref()
            .strip_suffix(".json")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// The points a write to `location` passes: before and after.
fn write_points(location: &Path) -> (&'static str, &'static str) {
    if is_commit(location) {
        ("delta.commit", "delta.commit.after")
    } else {
        ("object_store.put", "object_store.put.after")
    }
}

/// Passes `point`, as an object-store error.
async fn pass(point: &'static str) -> object_store::Result<()> {
    failpoints::check(point)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "FaultyStore",
            source: Box::new(e),
        })
}

/// `stream`, failing at its start if `point` says so.
fn checked_stream<T: Send + 'static>(
    point: &'static str,
    stream: BoxStream<'static, object_store::Result<T>>,
) -> BoxStream<'static, object_store::Result<T>> {
    futures::stream::once(pass(point))
        .filter_map(|r| async move { r.err().map(Err) })
        .chain(stream)
        .boxed()
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let (before, after) = write_points(location);
        pass(before).await?;
        let r = self.inner.put_opts(location, payload, opts).await?;
        pass(after).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        pass("object_store.put_multipart").await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            points: write_points(location),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        pass(if options.head {
            "object_store.head"
        } else {
            "object_store.get"
        })
        .await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        pass("object_store.get").await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        checked_stream("object_store.delete", self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        checked_stream("object_store.list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        checked_stream(
            "object_store.list",
            self.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        pass("object_store.list").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        pass("object_store.copy").await?;
        let (before, after) = write_points(to);
        pass(before).await?;
        self.inner.copy_opts(from, to, options).await?;
        pass(after).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        pass("object_store.copy").await?;
        let (before, after) = write_points(to);
        pass(before).await?;
        self.inner.rename_opts(from, to, options).await?;
        pass(after).await
    }
}

/// A multipart upload whose completion (when the object appears) passes the write points.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    points: (&'static str, &'static str),
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        pass(self.points.0).await?;
        let r = self.inner.complete().await?;
        pass(self.points.1).await?;
        Ok(r)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_files_are_told_apart() {
        assert!(is_commit(&Path::from(
            "tables/t/_delta_log/00000000000000000003.json"
        )));
        assert!(!is_commit(&Path::from(
            "tables/t/_delta_log/_last_checkpoint"
        )));
        assert!(!is_commit(&Path::from("tables/t/part-0001.parquet")));
        assert!(!is_commit(&Path::from("tables/t/_delta_log/.json")));
        assert!(!is_commit(&Path::from("x.json")));
    }
}
