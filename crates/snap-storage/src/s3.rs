//! Objects in an S3-compatible bucket: `s3://BUCKET/PREFIX/<key>`.
//!
//! Through object_store (its `aws` client), on a small tokio runtime owned
//! by the storage; the synchronous trait blocks on it at the boundary, so
//! callers must not already be inside a tokio runtime (snap never is).
//!
//! How the contract maps onto S3: a PUT is atomic (an object is absent or
//! whole), so a streamed object is buffered and sent by `commit` in one PUT
//! (packs are at most the repository's pack size, which bounds memory by
//! the number of packs in flight); deletes are durable when they return, so
//! `flush` has nothing to do; there are no temporaries to remove. Requests
//! that fail with a 5xx, a throttle or a dropped connection are retried
//! with exponential backoff, up to [`S3Options::max_retries`] times within
//! [`S3Options::retry_timeout`]; after that the call fails and the command
//! with it, before its commit.
//!
//! An object read whole (`read`, `read_if_exists`) is one GET, no HEAD.
//! Other reads are range GETs of aligned windows of [`READ_WINDOW`] bytes,
//! shared by every reader of the storage ([`super::read_windows`]): a
//! restore that walks a pack's chunks costs one GET per window, not one
//! per chunk, each window is fetched once however many workers want it,
//! the next one is fetched ahead, and at most [`WINDOW_BUDGET`] windows
//! are held.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::read_windows::{ReadWindows, Window};
use super::{
    ObjectInfo, ObjectReader, ObjectWriter, RequestCounts, Storage, check_key, short_object,
    split_key,
};
use crate::error::{Error, Result};

/// Bytes fetched by one range GET at least (when the object has them).
pub const READ_WINDOW: u64 = 4 << 20;
/// Windows held for all readers together (64 MiB): a few packs of the
/// default size, which several workers read in no particular order.
pub const WINDOW_BUDGET: usize = 16;
/// Windows fetched ahead of a read, while it is used.
const READ_AHEAD: u64 = 1;

/// Where a bucket is and how to sign requests to it. The library reads
/// no environment variable: the binary fills this from the AWS_* ones
/// every S3 tool reads ([`S3Options::from_env`]).
#[derive(Clone, Default)]
pub struct S3Options {
    /// `http://127.0.0.1:9000`; None for AWS itself. An endpoint means
    /// path-style addressing (`endpoint/bucket/key`).
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Retries of one request after its first failure (default 8).
    pub max_retries: Option<usize>,
    /// Give up retrying a request this long after it was first sent
    /// (default 60 s).
    pub retry_timeout: Option<Duration>,
    /// Time allowed for one request (default 60 s).
    pub request_timeout: Option<Duration>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Options {
    /// From `AWS_ENDPOINT_URL`, `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// and snap's own `SNAP_S3_RETRIES`, `SNAP_S3_RETRY_TIMEOUT` and
    /// `SNAP_S3_TIMEOUT` (seconds) for a link slower or flakier than the
    /// defaults assume.
    pub fn from_env() -> S3Options {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let secs = |k: &str| {
            var(k)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
        };
        S3Options {
            max_retries: var("SNAP_S3_RETRIES").and_then(|v| v.parse().ok()),
            retry_timeout: secs("SNAP_S3_RETRY_TIMEOUT"),
            request_timeout: secs("SNAP_S3_TIMEOUT"),
            endpoint: var("AWS_ENDPOINT_URL").or_else(|| var("AWS_ENDPOINT_URL_S3")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
        }
    }
}

/// `s3://BUCKET/PREFIX` taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl S3Url {
    /// `Some` for a string that starts with `s3://`; an error when the
    /// rest is not a bucket name and a clean prefix.
    pub fn parse(s: &str) -> Option<Result<S3Url>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let bad = |why: &str| Some(Err(Error::usage(format!("{s}: {why}"))));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return bad(
                "not a bucket name (3 to 63 lowercase letters, digits, '-' and '.'); write s3://BUCKET/PREFIX",
            );
        }
        if !prefix.is_empty() && check_key(prefix).is_err() {
            return bad("the prefix has an empty, '.'-led or NUL component");
        }
        Some(Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[derive(Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

struct Inner {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
    url: S3Url,
    counters: Counters,
    windows: ReadWindows,
}

pub struct S3Storage {
    inner: Arc<Inner>,
}

impl S3Storage {
    /// A client for the bucket; sends nothing yet.
    pub fn new(url: &S3Url, opts: &S3Options) -> Result<S3Storage> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(opts.region.as_deref().unwrap_or("us-east-1"));
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &opts.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &opts.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = &opts.session_token {
            b = b.with_token(t);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: opts.max_retries.unwrap_or(8),
            retry_timeout: opts.retry_timeout.unwrap_or(Duration::from_secs(60)),
        };
        // The client options replace the builder's, so allow_http is set
        // here (an http:// endpoint is a server on this host or network).
        let http = opts
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let client = ClientOptions::new()
            .with_allow_http(http)
            .with_timeout(opts.request_timeout.unwrap_or(Duration::from_secs(60)))
            .with_connect_timeout(Duration::from_secs(10));
        let store = b
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|e| Error::usage(format!("{url}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("snap-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io(url.to_string(), e))?;
        Ok(S3Storage {
            inner: Arc::new(Inner {
                store,
                runtime,
                url: url.clone(),
                counters: Counters::default(),
                windows: ReadWindows::new(WINDOW_BUDGET),
            }),
        })
    }

    pub fn url(&self) -> &S3Url {
        &self.inner.url
    }

    pub fn request_counts(&self) -> RequestCounts {
        let c = &self.inner.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestCounts {
            put: n(&c.put),
            get: n(&c.get),
            head: n(&c.head),
            list: n(&c.list),
            delete: n(&c.delete),
            bytes_up: n(&c.bytes_up),
            bytes_down: n(&c.bytes_down),
        }
    }
}

impl Inner {
    fn path(&self, key: &str) -> Result<ObjectPath> {
        check_key(key)?;
        Ok(self.raw_path(key))
    }

    fn raw_path(&self, key: &str) -> ObjectPath {
        let full = if self.url.prefix.is_empty() {
            key.to_string()
        } else if key.is_empty() {
            self.url.prefix.clone()
        } else {
            format!("{}/{key}", self.url.prefix)
        };
        ObjectPath::from(full.as_str())
    }

    fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    /// An object_store error as ours, naming the object.
    fn error(&self, key: &str, e: object_store::Error) -> Error {
        let kind = match e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        Error::io(self.describe(key), io::Error::new(kind, e.to_string()))
    }

    fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(key)?;
        let len = bytes.len() as u64;
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from_bytes(bytes)))
            .map_err(|e| self.error(key, e))?;
        self.counters.bytes_up.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn get_range(&self, key: &str, path: &ObjectPath, range: Range<u64>) -> Result<Bytes> {
        self.runtime.block_on(self.fetch(key, path, range))
    }

    async fn fetch(&self, key: &str, path: &ObjectPath, range: Range<u64>) -> Result<Bytes> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let want = range.end - range.start;
        let b = self
            .store
            .get_range(path, range)
            .await
            .map_err(|e| self.error(key, e))?;
        self.counters
            .bytes_down
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        if b.len() as u64 != want {
            return Err(Error::Damaged {
                path: self.describe(key).into(),
                reason: format!("asked for {want} bytes, the server sent {}", b.len()),
            });
        }
        Ok(b)
    }
}

impl Storage for S3Storage {
    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }

    fn create(&self, dir: &str) -> Result<Box<dyn ObjectWriter>> {
        if !dir.is_empty() {
            check_key(dir)?;
        }
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            dir: dir.to_string(),
            buf: Vec::new(),
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>> {
        let path = self.inner.path(key)?;
        self.inner.counters.head.fetch_add(1, Ordering::Relaxed);
        let meta = self
            .inner
            .runtime
            .block_on(self.inner.store.head(&path))
            .map_err(|e| self.inner.error(key, e))?;
        self.open_sized(key, meta.size)
    }

    fn open_sized(&self, key: &str, size: u64) -> Result<Box<dyn ObjectReader>> {
        Ok(Box::new(S3Reader {
            inner: self.inner.clone(),
            key: key.to_string(),
            path: self.inner.path(key)?,
            size,
            last_window: AtomicU64::new(u64::MAX),
        }))
    }

    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.read_if_exists(key)?.ok_or_else(|| {
            Error::io(
                self.inner.describe(key),
                io::Error::new(io::ErrorKind::NotFound, "no such object"),
            )
        })
    }

    /// One GET of the whole object.
    fn read_if_exists(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.inner.path(key)?;
        self.inner.counters.get.fetch_add(1, Ordering::Relaxed);
        let got = self.inner.runtime.block_on(async {
            match self.inner.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let bytes = got.map_err(|e| self.inner.error(key, e))?;
        if let Some(b) = &bytes {
            self.inner
                .counters
                .bytes_down
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        Ok(bytes.map(Vec::from))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.inner.path(key)?;
        self.inner.counters.head.fetch_add(1, Ordering::Relaxed);
        match self.inner.runtime.block_on(self.inner.store.head(&path)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.inner.error(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // object_store lists by path segments: list the directory the
        // prefix lies in, then keep the keys that start with it.
        let (dir, _) = split_key(prefix);
        let base = self.inner.raw_path(dir);
        let strip = if self.inner.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.inner.url.prefix)
        };
        let inner = &self.inner;
        let listing = inner.runtime.block_on(async {
            let root = base.as_ref().is_empty();
            let stream = inner.store.list(if root { None } else { Some(&base) });
            stream.try_collect::<Vec<_>>().await
        });
        let metas = listing.map_err(|e| self.inner.error(prefix, e))?;
        // One request per page of (at most) 1000 keys.
        let pages = (metas.len() as u64).max(1).div_ceil(1000);
        inner.counters.list.fetch_add(pages, Ordering::Relaxed);
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(&strip)?.to_string();
                let name = split_key(&key).1;
                (key.starts_with(prefix) && !name.starts_with('.'))
                    .then_some(ObjectInfo { key, size: m.size })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.inner.path(key)?;
        self.inner.counters.delete.fetch_add(1, Ordering::Relaxed);
        match self.inner.runtime.block_on(self.inner.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.inner.error(key, e)),
        }
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn remove_partial(&self) -> Result<u64> {
        Ok(0)
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.inner.put(key, Bytes::copy_from_slice(bytes))
    }

    fn request_counts(&self) -> Option<RequestCounts> {
        Some(S3Storage::request_counts(self))
    }

    fn is_remote(&self) -> bool {
        true
    }
}

struct S3Writer {
    inner: Arc<Inner>,
    dir: String,
    buf: Vec<u8>,
}

impl ObjectWriter for S3Writer {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    fn commit(self: Box<Self>, key: &str) -> Result<()> {
        if !super::local::lies_under(key, &self.dir) {
            return Err(Error::internal(
                "storage",
                format!("object key {key:?} is not under {:?}", self.dir),
            ));
        }
        self.inner.put(key, Bytes::from(self.buf))
    }
}

struct S3Reader {
    inner: Arc<Inner>,
    key: String,
    path: ObjectPath,
    size: u64,
    /// The window of the last read (u64::MAX: none yet).
    last_window: AtomicU64,
}

impl S3Reader {
    /// Window `k` of this object, its fetch started when nobody had.
    fn window(&self, k: u64) -> Arc<Window> {
        let start = k * READ_WINDOW;
        let (w, fetch) = self.inner.windows.get(&self.key, start);
        if fetch {
            let end = (start + READ_WINDOW).min(self.size);
            let (inner, key, path, slot) = (
                self.inner.clone(),
                self.key.clone(),
                self.path.clone(),
                w.clone(),
            );
            self.inner.runtime.spawn(async move {
                let r = inner.fetch(&key, &path, start..end).await;
                slot.fill(r.map_err(|e| e.to_string()));
            });
        }
        w
    }
}

impl ObjectReader for S3Reader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = match offset.checked_add(len) {
            Some(end) if end <= self.size => end,
            _ => {
                return Err(short_object(
                    self.inner.describe(&self.key),
                    offset,
                    len,
                    self.size,
                ));
            }
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let (first, last) = (offset / READ_WINDOW, (end - 1) / READ_WINDOW);
        if (last - first + 1) as usize > self.inner.windows.budget() / 2 {
            // A read larger than half the budget: one GET, not kept.
            return Ok(self
                .inner
                .get_range(&self.key, &self.path, offset..end)?
                .into());
        }
        // A small read far from this object's last one (a chunk that
        // dedups against old data) fetches just its bytes; a second read
        // near it fetches the window.
        let near = self.last_window.swap(first, Ordering::Relaxed);
        let far = near == u64::MAX || first > near + 1 || first + 1 < near;
        let held = (first..=last).any(|k| self.inner.windows.holds(&self.key, k * READ_WINDOW));
        if far && !held && len < READ_WINDOW / 8 {
            return Ok(self
                .inner
                .get_range(&self.key, &self.path, offset..end)?
                .into());
        }
        let parts: Vec<_> = (first..=last).map(|k| self.window(k)).collect();
        // Read ahead: the next window arrives while this one is used.
        for ahead in last + 1..=last + READ_AHEAD {
            if ahead * READ_WINDOW < self.size {
                self.window(ahead);
            }
        }
        let mut out = Vec::with_capacity(len as usize);
        for (k, w) in (first..=last).zip(parts) {
            let bytes = w
                .wait()
                .map_err(|e| Error::io(self.inner.describe(&self.key), io::Error::other(e)))?;
            let start = k * READ_WINDOW;
            let (from, to) = (
                offset.max(start) - start,
                end.min(start + READ_WINDOW) - start,
            );
            let piece = bytes.get(from as usize..to as usize).ok_or_else(|| {
                short_object(self.inner.describe(&self.key), offset, len, self.size)
            })?;
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    fn read_planned(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {
                if len == 0 {
                    return Ok(Vec::new());
                }
                Ok(self
                    .inner
                    .get_range(&self.key, &self.path, offset..end)?
                    .into())
            }
            _ => Err(short_object(
                self.inner.describe(&self.key),
                offset,
                len,
                self.size,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_parse_into_bucket_and_prefix_and_bad_ones_are_refused() {
        let u = |s: &str| S3Url::parse(s).unwrap().unwrap();
        assert_eq!(u("s3://backups").prefix, "");
        let p = u("s3://my.bucket-1/laptop/app/");
        assert_eq!(
            (p.bucket.as_str(), p.prefix.as_str()),
            ("my.bucket-1", "laptop/app")
        );
        assert_eq!(p.to_string(), "s3://my.bucket-1/laptop/app");
        assert!(
            S3Url::parse("/var/backups").is_none(),
            "a path is not a URL"
        );
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://b_x/p",
            "s3://bucket/a//b",
            "s3://bucket/../x",
        ] {
            assert!(S3Url::parse(bad).unwrap().is_err(), "{bad} accepted");
        }
    }
}
