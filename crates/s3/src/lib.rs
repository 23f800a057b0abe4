//! A repository in an S3 bucket (AWS or any S3-compatible store).
//!
//! The backend owns one tokio runtime and offers the synchronous [`Backend`] API to the rest
//! of Strata; the SDK's standard retry mode (exponential backoff with jitter on 5xx,
//! throttling and dropped connections) and bounded time-outs keep a flaky network from
//! hanging a backup.

mod capped;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::StalledStreamProtectionConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use aws_sdk_s3::Client;

use strata::backend::lifecycle::{LifecycleRule, ARCHIVE_CLASSES};
use strata::backend::{Backend, BackendOptions, BackendRef, Capabilities, FileInfo, FileKind};
use strata::backend::{ColdStorage, Lifecycle, ObjectLock, Temporaries, Versions, WriteOptions};
use strata::backend::{LockMode, ObjectVersion, Purge, Retention};
use strata::backend::{ThawState, ThawTier};
use strata::{Error, Missing, Result};

/// The scheme of S3 URLs: `s3://bucket/prefix`, `s3:http(s)://host:port/bucket/prefix`.
pub const SCHEME: &str = "s3";

/// Opens the S3 repository at `url`: the [`strata::backend::Opener`] of [`SCHEME`].
pub fn open(url: &str, opts: &BackendOptions) -> Result<BackendRef> {
    Ok(std::sync::Arc::new(S3Backend::open(url, opts)?))
}

/// The schemes a program with S3 opens: local directories and S3.
pub fn schemes() -> strata::backend::Schemes {
    strata::backend::Schemes::local().with(SCHEME, open)
}

/// Objects larger than this go up in parts.
const DEFAULT_MULTIPART_THRESHOLD: usize = 64 << 20;
const MIN_PART: usize = 5 << 20;
const PART_SIZE: usize = 16 << 20;

/// Where an S3 repository lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `None` for AWS's own endpoints (from the environment), else `http(s)://host:port`.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    /// `s3://bucket/prefix` or `s3:http(s)://host:port/bucket/prefix`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadLocation {
            url: url.to_string(),
            reason: why.to_string(),
        };
        let (endpoint, rest) = if let Some(rest) = url.strip_prefix("s3://") {
            (None, rest)
        } else if let Some(rest) = url.strip_prefix("s3:") {
            let scheme_end = rest.find("://").ok_or_else(|| bad("no endpoint scheme"))?;
            let scheme = &rest[..scheme_end];
            if scheme != "http" && scheme != "https" {
                return Err(bad("the endpoint must be http:// or https://"));
            }
            let after = &rest[scheme_end + 3..];
            let host_end = after.find('/').ok_or_else(|| bad("no bucket"))?;
            (
                Some(format!("{scheme}://{}", &after[..host_end])),
                &after[host_end + 1..],
            )
        } else {
            return Err(bad("not an S3 URL"));
        };
        let rest = rest.trim_matches('/');
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, format!("{}/", p.trim_matches('/'))),
            None => (rest, String::new()),
        };
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        Ok(S3Location {
            endpoint,
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

/// Requests made, by kind, for reports and tests of request economy.
#[derive(Default, Debug)]
pub struct RequestCounts {
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub delete: AtomicU64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        [&self.get, &self.put, &self.list, &self.head, &self.delete]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// A repository in an S3 bucket (any S3-compatible server).
pub struct S3Backend {
    rt: tokio::runtime::Runtime,
    client: Client,
    loc: S3Location,
    url: String,
    multipart_threshold: usize,
    /// How long a request waits on the endpoint (see [`DEFAULT_TIMEOUT`]).
    timeout: Duration,
    /// The region requests are signed for, as messages name it.
    region: String,
    /// Requests sent so far, by kind.
    pub requests: RequestCounts,
}

impl S3Backend {
    /// The repository at `s3://bucket/prefix` or `s3:http(s)://host:port/bucket/prefix`;
    /// credentials from the environment.
    pub fn open(url: &str, opts: &BackendOptions) -> Result<Self> {
        let loc = S3Location::parse(url)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Backend {
                object: url.to_string(),
                source: e,
            })?;
        let endpoint = loc.endpoint.clone();
        let timeout = opts.s3_timeout.unwrap_or(DEFAULT_TIMEOUT);
        let (client, creds, region) = rt.block_on(async move {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .region(RegionProviderChain::default_provider().or_else("us-east-1"))
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(6)
                        .with_initial_backoff(Duration::from_millis(200)),
                )
                // Each try waits `timeout` for its reply (a PUT's includes sending its
                // body); all of a request's tries, and a reply parsed whole, end after
                // REQUEST_WINDOWS of it. A streamed body is paced instead (capped.rs).
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
                        .read_timeout(timeout)
                        .operation_timeout(timeout.saturating_mul(REQUEST_WINDOWS))
                        .build(),
                )
                .stalled_stream_protection(
                    StalledStreamProtectionConfig::enabled()
                        .grace_period(timeout)
                        .build(),
                );
            if let Some(ep) = &endpoint {
                loader = loader.endpoint_url(ep);
            }
            let conf = loader.load().await;
            let creds = match conf.credentials_provider() {
                None => Err("no credentials provider".to_string()),
                Some(p) => {
                    use aws_sdk_s3::config::ProvideCredentials;
                    p.provide_credentials()
                        .await
                        .map(|_| ())
                        .map_err(|e| DisplayErrorContext(e).to_string())
                }
            };
            let region = conf.region().map_or("us-east-1".into(), |r| r.to_string());
            let s3conf = aws_sdk_s3::config::Builder::from(&conf)
                .force_path_style(endpoint.is_some())
                .interceptor(capped::GuardBodies { window: timeout })
                .build();
            (Client::from_conf(s3conf), creds, region)
        });
        if let Err(e) = creds {
            return Err(Error::NoCredentials {
                url: url.to_string(),
                reason: e,
            });
        }
        // S3 refuses parts under 5 MiB (but the last).
        let multipart_threshold = opts
            .s3_multipart_threshold
            .map_or(DEFAULT_MULTIPART_THRESHOLD, |t| {
                usize::try_from(t).unwrap_or(usize::MAX)
            })
            .max(MIN_PART);
        Ok(S3Backend {
            rt,
            client,
            loc,
            url: url.to_string(),
            multipart_threshold,
            timeout,
            region,
            requests: RequestCounts::default(),
        })
    }

    fn key(&self, kind: FileKind, name: &str) -> String {
        format!("{}{}", self.loc.prefix, kind.path(name))
    }

    fn object(kind: FileKind, name: &str) -> String {
        format!("{kind} {name}")
    }

    /// The retention date of a file's current version (or of `version`), by HEAD.
    fn head_retention(
        &self,
        kind: FileKind,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<i64>> {
        self.count(&self.requests.head);
        let resp = self
            .rt
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.loc.bucket)
                    .key(self.key(kind, name))
                    .set_version_id(version.map(String::from))
                    .send(),
            )
            .map_err(|e| {
                Self::as_file(
                    self.error(e, "HeadObject", &Self::object(kind, name)),
                    kind,
                    name,
                )
            })?;
        Ok(resp.object_lock_retain_until_date().map(|t| t.secs()))
    }

    /// A 404 on a repository file says which file, typed.
    fn as_file(e: Error, kind: FileKind, name: &str) -> Error {
        match e {
            Error::NotFound { .. } => Error::no_file(kind, name),
            e => e,
        }
    }

    /// `init` makes a repository under a new or empty prefix only (or one where a killed
    /// `init` left the repository's own folders), as in a local directory: spreading
    /// `keys/`, `data/` ... among someone's objects mixes the two for good. One listing
    /// of the prefix's first level, a few names at most.
    fn refuse_foreign_keys(&self) -> Result<()> {
        let prefix = &self.loc.prefix;
        self.count(&self.requests.list);
        let resp = self
            .rt
            .block_on(
                self.client
                    .list_objects_v2()
                    .bucket(&self.loc.bucket)
                    .prefix(prefix)
                    .delimiter("/")
                    .max_keys(20)
                    .send(),
            )
            .map_err(|e| self.error(e, "ListObjectsV2", &format!("listing {}", self.url)))?;
        let ours = |key: &str| {
            let rest = key.strip_prefix(prefix.as_str()).unwrap_or(key);
            FileKind::ALL[1..]
                .iter()
                .any(|k| rest.strip_suffix('/') == Some(k.dir()))
        };
        let objects = resp.contents().iter().filter_map(|o| o.key());
        let folders = resp.common_prefixes().iter().filter_map(|p| p.prefix());
        let mut foreign: Vec<String> = (objects.chain(folders))
            .filter(|k| !ours(k))
            .map(|k| format!("{:?}", clean(k, 80)))
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        foreign.truncate(5);
        Err(Error::NotEmpty {
            location: self.url.clone(),
            found: format!("{} (not a repository's)", foreign.join(", ")),
        })
    }

    fn count(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Translates an SDK error (the SDK has retried what it retries) into a few lines
    /// naming the operation, the endpoint and the HTTP status or the cause; never the
    /// SDK's own dump, whose size and text the endpoint chooses.
    fn error<E>(&self, e: SdkError<E, HttpResponse>, op: &str, object: &str) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        use std::io::{Error as IoError, ErrorKind};
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = clean(e.code().unwrap_or(""), 64);
        let endpoint = self.endpoint();
        let backend = |kind, msg: String| Error::Backend {
            object: object.to_string(),
            source: IoError::new(kind, msg),
        };
        let unreachable = |why: String| {
            backend(
                ErrorKind::TimedOut,
                format!("{op} timed out: {endpoint} {why}"),
            )
            .with_remedy(strata::Remedy::CheckEndpoint)
        };
        if let Some(stalled) = find_cause::<capped::Stalled>(&e) {
            return unreachable(format!("{stalled}"));
        }
        let io = match (&e, status) {
            (_, Some(403)) if code == "InvalidObjectState" => {
                return Error::Archived {
                    object: object.to_string(),
                }
            }
            (_, Some(404)) if code == "NoSuchBucket" => {
                return Error::NoRepository(format!(
                    "{} (bucket {} does not exist)",
                    self.url, self.loc.bucket
                ))
            }
            (SdkError::ServiceError(_), Some(404)) => {
                return Error::not_found(Missing::Object(object.to_string()))
            }
            (_, Some(403)) | (_, Some(401)) => IoError::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{op}: access denied by {endpoint} (HTTP {}{}): check AWS_ACCESS_KEY_ID, \
                     AWS_SECRET_ACCESS_KEY and the key's rights on bucket {}",
                    status.unwrap_or(403),
                    paren(&code),
                    self.loc.bucket
                ),
            ),
            (_, Some(300..=399)) => {
                let reply = e.raw_response().expect("a status comes with a reply");
                return backend(ErrorKind::Other, self.redirected(op, &code, reply));
            }
            (SdkError::TimeoutError(_), _) => {
                return unreachable(format!(
                    "gave no whole reply within {}s in all (each try waits {}s)",
                    self.timeout.as_secs_f64() * REQUEST_WINDOWS as f64,
                    self.timeout.as_secs_f64()
                ))
            }
            (SdkError::DispatchFailure(d), _) if d.is_timeout() => {
                return unreachable(format!(
                    "sent no reply within {}s, tried again and gave up",
                    self.timeout.as_secs_f64()
                ))
            }
            (SdkError::DispatchFailure(_), _) => {
                return backend(
                    ErrorKind::NotConnected,
                    format!("{op}: cannot reach {endpoint}: {}", root_cause(&e)),
                )
                .with_remedy(strata::Remedy::CheckEndpoint)
            }
            // A reply that arrived but does not parse, or was cut off, after the SDK's tries.
            (SdkError::ResponseError(_), _) | (_, Some(200..=299)) => IoError::new(
                ErrorKind::InvalidData,
                format!(
                    "{op}: {endpoint} answered HTTP {} with a reply that cannot be read: {}",
                    status.map_or("?".into(), |s| s.to_string()),
                    root_cause(&e)
                ),
            ),
            (SdkError::ServiceError(_), Some(s)) => IoError::other(format!(
                "{op}: {endpoint} answered HTTP {s}{}{}",
                paren(&code),
                e.message()
                    .map_or(String::new(), |m| format!(": {}", clean(m, 160)))
            )),
            _ => IoError::other(format!("{op} at {endpoint}: {}", root_cause(&e))),
        };
        Error::Backend {
            object: object.to_string(),
            source: io,
        }
    }

    /// A 3xx: S3 redirects a request for a bucket in another region (301 PermanentRedirect)
    /// or one still being set up (307); the SDK does not follow redirects.
    fn redirected(&self, op: &str, code: &str, reply: &HttpResponse) -> String {
        let region = (reply.headers().get("x-amz-bucket-region"))
            .map_or(String::new(), |r| format!(" (it says {})", clean(r, 32)));
        format!(
            "{op}: {} answered HTTP {}{}, a redirect: bucket {} is in another region or \
             behind another endpoint; set AWS_REGION to the bucket's region{region}, or give \
             its endpoint in the repository URL (s3:https://HOST/BUCKET/PREFIX)",
            self.endpoint(),
            reply.status().as_u16(),
            paren(code),
            self.loc.bucket
        )
    }

    /// The endpoint, as the messages name it.
    fn endpoint(&self) -> String {
        match &self.loc.endpoint {
            Some(e) => e.clone(),
            None => format!("AWS S3 ({})", self.region),
        }
    }

    fn put_object(
        &self,
        kind: FileKind,
        key: &str,
        data: &[u8],
        class: Option<&str>,
        retention: Option<Retention>,
    ) -> Result<()> {
        let object = key.to_string();
        // Only data packs leave the default class: everything else is read on every run.
        let class = class
            .filter(|_| kind == FileKind::Data)
            .map(StorageClass::from);
        if data.len() > self.multipart_threshold {
            return self.put_multipart(key, data, class, retention);
        }
        self.count(&self.requests.put);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.loc.bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()));
        // Content-addressed objects are never overwritten where the store honours it; where
        // it does not (Garage 2.5 ignores it) a repeated write stores the same bytes again.
        if kind != FileKind::Lock {
            req = req.if_none_match("*");
        }
        if let Some(c) = class {
            req = req.storage_class(c);
        }
        if let Some(r) = retention {
            req = req
                .object_lock_mode(lock_mode(r.mode))
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(r.until));
        }
        match self.rt.block_on(req.send()) {
            Ok(_) => Ok(()),
            Err(e) if matches!(&e, SdkError::ServiceError(se) if status_of(se.raw()) == Some(412)) => {
                Ok(())
            }
            Err(e) => Err(self.error(e, "PutObject", &object)),
        }
    }

    fn put_multipart(
        &self,
        key: &str,
        data: &[u8],
        class: Option<StorageClass>,
        retention: Option<Retention>,
    ) -> Result<()> {
        let object = key.to_string();
        self.count(&self.requests.put);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.loc.bucket)
            .key(key);
        if let Some(c) = class {
            create = create.storage_class(c);
        }
        if let Some(r) = retention {
            create = create
                .object_lock_mode(lock_mode(r.mode))
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(r.until));
        }
        let upload = self
            .rt
            .block_on(create.send())
            .map_err(|e| self.error(e, "CreateMultipartUpload", &object))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| Error::Backend {
                object: object.clone(),
                source: std::io::Error::other("the server gave no multipart upload id"),
            })?
            .to_string();
        let result = self.upload_parts(key, &upload_id, data);
        if result.is_err() {
            self.count(&self.requests.delete);
            let _ = self.rt.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.loc.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send(),
            );
        }
        result
    }

    /// The parts of multipart upload `upload_id`, then its completion.
    fn upload_parts(&self, key: &str, upload_id: &str, data: &[u8]) -> Result<()> {
        let object = key.to_string();
        let mut parts = Vec::new();
        for (i, part) in data.chunks(PART_SIZE).enumerate() {
            let n = i as i32 + 1;
            self.count(&self.requests.put);
            let out = self
                .rt
                .block_on(
                    self.client
                        .upload_part()
                        .bucket(&self.loc.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(n)
                        .body(ByteStream::from(part.to_vec()))
                        .send(),
                )
                .map_err(|e| self.error(e, "UploadPart", &object))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(String::from))
                    .build(),
            );
        }
        self.count(&self.requests.put);
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.rt
            .block_on(
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.loc.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(done)
                    .send(),
            )
            .map_err(|e| self.error(e, "CompleteMultipartUpload", &object))?;
        Ok(())
    }

    /// A streamed body that failed: cut off (transient: the SDK does not retry a body, the
    /// retry layer does), or paced out (a time-out, final).
    fn body_failed(&self, e: aws_sdk_s3::primitives::ByteStreamError, object: &str) -> Error {
        let (kind, why) = match find_cause::<capped::Stalled>(&e) {
            Some(s) => (
                std::io::ErrorKind::TimedOut,
                format!("GetObject timed out: {} {s}", self.endpoint()),
            ),
            None => (
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "GetObject: reply cut off by {}: {}",
                    self.endpoint(),
                    root_cause(&e)
                ),
            ),
        };
        let e = Error::Backend {
            object: object.to_string(),
            source: std::io::Error::new(kind, why),
        };
        match kind {
            std::io::ErrorKind::TimedOut => e.with_remedy(strata::Remedy::CheckEndpoint),
            _ => e,
        }
    }

    /// A connection that drops while the body streams (the SDK retries a request only
    /// until its headers arrive) is an [`std::io::ErrorKind::UnexpectedEof`]: transient, so
    /// the retry layer tries again.
    /// The object at `key`, or `range` (offset, length) of it; more than `max` bytes, even
    /// announced, fail with `too_large` before they are held.
    fn get(
        &self,
        key: &str,
        object: &str,
        range: Option<(u64, u64)>,
        max: u64,
        too_large: impl Fn(u64) -> Error,
    ) -> Result<Vec<u8>> {
        self.count(&self.requests.get);
        let mut req = self.client.get_object().bucket(&self.loc.bucket).key(key);
        if let Some((offset, len)) = range {
            req = req.range(format!("bytes={}-{}", offset, offset + len - 1));
        }
        let cut = |why: String| Error::Backend {
            object: object.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why),
        };
        self.rt.block_on(async {
            let mut out = req
                .send()
                .await
                .map_err(|e| self.error(e, "GetObject", object))?;
            // Streamed into one buffer of the announced size: collecting the body first and
            // then flattening it would hold the object two or three times over.
            let announced = out.content_length().filter(|n| *n >= 0).map(|n| n as usize);
            if let Some(n) = announced.filter(|n| *n as u64 > max) {
                return Err(too_large(n as u64));
            }
            // Never more than PREALLOCATE_MAX up front: a hostile endpoint may announce up to
            // `max` (2 GiB for a pack) and send a few bytes; the buffer grows by what arrives.
            let mut data = Vec::with_capacity(announced.unwrap_or(0).min(PREALLOCATE_MAX));
            while let Some(piece) = out
                .body
                .try_next()
                .await
                .map_err(|e| self.body_failed(e, object))?
            {
                // An endpoint may send more than it announced, or announce nothing.
                if (data.len() + piece.len()) as u64 > max {
                    return Err(too_large((data.len() + piece.len()) as u64));
                }
                data.extend_from_slice(&piece);
            }
            match announced {
                Some(n) if n != data.len() => Err(cut(format!(
                    "response body cut off after {} of {n} bytes",
                    data.len()
                ))),
                _ => Ok(data),
            }
        })
    }
}

/// Names one listing page may hold: S3 sends 1,000 at most (MaxKeys).
const MAX_PAGE_KEYS: usize = 1000;

/// The most a read reserves before the bytes arrive (one read of a pack's range is ~16 MiB
/// at most; a larger object grows its buffer as it streams).
const PREALLOCATE_MAX: usize = 16 << 20;

/// The file name of `key` from a listing of `prefix`: its last part, or `""` for a key
/// that is no file of ours (skipped). S3 lists only keys under the prefix asked for: a
/// listing with another is not the store's. Strata writes no name with a control
/// character or a `.`/`..` part, so such a key is never trusted as a name.
fn listed_name<'a>(key: &'a str, prefix: &str) -> std::result::Result<&'a str, String> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Err(format!("listed {:?}, not under {prefix}", clean(key, 80)));
    };
    // A folder marker (`data/`, `data/00/`) that a console made holds nothing: skipped.
    if rest.is_empty() || rest.ends_with('/') {
        return Ok("");
    }
    let odd = |part: &str| {
        part.is_empty() || part == "." || part == ".." || part.chars().any(char::is_control)
    };
    // `name` or, for packs, `xx/name`: nothing else is a file of ours (`a//b`, `a/b/c`
    // would be taken for files they are not). Such a key is skipped, not an error: one
    // object anyone with write access to the bucket can add must not stop every listing.
    if rest.split('/').any(odd) || rest.split('/').count() > 2 {
        return Ok("");
    }
    let name = rest.rsplit('/').next().unwrap_or(rest);
    // Longer than any name of ours (readers take 64 hex digits only): never kept, so an
    // endpoint paging through long keys holds no memory by them (hostile pass 9: 15 KB
    // keys, 15 MB a page, without end).
    if name.len() > MAX_NAME {
        return Ok("");
    }
    Ok(name)
}

/// The longest file name a listing keeps (format-spec §1: 64 hex digits).
const MAX_NAME: usize = 64;
/// The longest storage class a listing keeps (S3's are short words).
const MAX_CLASS: usize = 64;

/// The most names one listing may hold (4 million packs are 64 TB at 16 MiB each): past
/// it, an endpoint inventing pages would have the reader hold names without end.
const MAX_LISTED: usize = 4_000_000;
/// Pages in a row with no name that still say "more to come": real S3 sends none without
/// a delimiter; an endpoint doing so could page for ever without repeating a token.
const MAX_EMPTY_PAGES: usize = 16;

/// What a listing's pages so far said, to see that the listing moves on: S3 lists keys in
/// ascending order, so each key must sort after the last, and it must end.
struct Paging {
    last: Option<String>,
    names: usize,
    empty_in_a_row: usize,
    /// When the listing began, and the endpoint's time-out: see [`Paging::too_slow`].
    began: std::time::Instant,
    timeout: Duration,
}

/// The fewest names a second a listing must average once it has taken longer than three
/// time-outs: S3 sends 1,000 a page in well under a second; an endpoint dripping one
/// name a page just inside the time-out would otherwise list for years (hostile pass 10).
const MIN_NAMES_PER_SEC: f64 = 50.0;

impl Paging {
    fn new(timeout: Duration) -> Self {
        Paging {
            last: None,
            names: 0,
            empty_in_a_row: 0,
            began: std::time::Instant::now(),
            timeout,
        }
    }

    /// Whether the listing, past three time-outs, brings fewer than
    /// [`MIN_NAMES_PER_SEC`] names a second.
    fn too_slow(&self) -> Option<String> {
        let took = self.began.elapsed();
        let rate = self.names as f64 / took.as_secs_f64().max(1e-3);
        (took > self.timeout * REQUEST_WINDOWS && rate < MIN_NAMES_PER_SEC).then(|| {
            format!(
                "{} names in {:.0} s: a listing that slow is not one the endpoint is serving \
                 (S3 sends 1,000 a page)",
                self.names,
                took.as_secs_f64()
            )
        })
    }

    fn page<'k>(&mut self, keys: impl Iterator<Item = &'k str>) -> std::result::Result<(), String> {
        let mut any = false;
        for key in keys {
            any = true;
            if self.last.as_deref().is_some_and(|last| key <= last) {
                return Err(format!(
                    "the endpoint listed {:?} after {:?}: not in order, or again",
                    clean(key, 80),
                    clean(self.last.as_deref().unwrap_or_default(), 80)
                ));
            }
            self.last = Some(key.to_string());
            self.names += 1;
            if self.names > MAX_LISTED {
                return Err(format!(
                    "more than {MAX_LISTED} names: not a listing of ours"
                ));
            }
        }
        if let Some(why) = self.too_slow() {
            return Err(why);
        }
        self.empty_in_a_row = if any { 0 } else { self.empty_in_a_row + 1 };
        if self.empty_in_a_row > MAX_EMPTY_PAGES {
            return Err(format!(
                "{} empty pages in a row, each saying more was to come",
                self.empty_in_a_row
            ));
        }
        Ok(())
    }
}

/// How long a request waits on the endpoint by default: for a reply, and for each KiB/s
/// of a body's flow (see `capped::FLOOR_PER_SEC`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// A request's tries (the SDK's, with backoff) together end after this many time-outs: one
/// that failed fast (a 503, a reset) is tried up to 6 times, one that waited 3 times.
const REQUEST_WINDOWS: u32 = 3;
/// A connection is made within this (or the time-out, if shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `text` as a message may hold what an endpoint sent: one line, at most `max` chars.
fn clean(text: &str, max: usize) -> String {
    let one_line: String = (text.chars())
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    match words.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &words[..at]),
        None => words,
    }
}

/// ` (code)`, or nothing for no code.
fn paren(code: &str) -> String {
    match code {
        "" => String::new(),
        c => format!(" ({c})"),
    }
}

/// The innermost cause of `e`, cleaned: what the SDK's layers wrapped.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    clean(&cause.to_string(), 200)
}

/// The first cause of `e` of type `T`.
fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cause = c.source();
    }
    None
}

fn status_of(raw: &HttpResponse) -> Option<u16> {
    Some(raw.status().as_u16())
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn exists(&self) -> Result<bool> {
        self.count(&self.requests.head);
        let key = self.key(FileKind::Config, "config");
        match self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.loc.bucket)
                .key(&key)
                .send(),
        ) {
            Ok(_) => Ok(true),
            Err(e) => match self.error(e, "HeadObject", "config") {
                Error::NotFound { .. } => Ok(false),
                e => Err(e),
            },
        }
    }

    fn create(&self) -> Result<()> {
        self.count(&self.requests.head);
        match self
            .rt
            .block_on(self.client.head_bucket().bucket(&self.loc.bucket).send())
        {
            Ok(_) => self.refuse_foreign_keys(),
            Err(e) => match self.error(e, "HeadBucket", &format!("bucket {}", self.loc.bucket)) {
                Error::NotFound { .. } | Error::NoRepository(_) => {
                    Err(Error::NoRepository(format!(
                        "{} (bucket {} does not exist: create it first)",
                        self.url, self.loc.bucket
                    )))
                }
                e => Err(e),
            },
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        let prefix = format!("{}{}/", self.loc.prefix, kind.dir());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = Paging::new(self.timeout);
        loop {
            let resp = {
                self.count(&self.requests.list);
                self.rt
                    .block_on(
                        self.client
                            .list_objects_v2()
                            .bucket(&self.loc.bucket)
                            .prefix(&prefix)
                            .set_continuation_token(token.clone())
                            .send(),
                    )
                    .map_err(|e| self.error(e, "ListObjectsV2", &format!("listing {}", kind.dir())))
            }?;
            // A page holds 1,000 names at most; more is not a listing of ours.
            if resp.contents().len() > MAX_PAGE_KEYS {
                return Err(Error::corrupt(
                    format!("listing {}", kind.dir()),
                    format!(
                        "a page of {} names (S3 sends 1,000 at most)",
                        resp.contents().len()
                    ),
                ));
            }
            pages
                .page(resp.contents().iter().filter_map(|o| o.key()))
                .map_err(|why| Error::corrupt(format!("listing {}", kind.dir()), why))?;
            for obj in resp.contents() {
                let Some(key) = obj.key() else { continue };
                let name = listed_name(key, &prefix).map_err(|why| {
                    let what = format!("listing {}", kind.dir());
                    Error::corrupt(what, format!("{} {why}", self.endpoint()))
                })?;
                if name.is_empty() || name.starts_with('.') {
                    continue;
                }
                out.push(FileInfo {
                    name: name.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    storage_class: (obj.storage_class().map(|c| c.as_str()))
                        .map(|c| clean(c, MAX_CLASS)),
                    modified: obj.last_modified().map(|t| t.secs()),
                    not_regular: None,
                });
            }
            match resp.next_continuation_token() {
                // A token handed back again would page for ever (a hostile or broken
                // endpoint): a listing that does not move on is damage, not a loop.
                Some(t) if token.as_deref() == Some(t) => {
                    return Err(Error::corrupt(
                        format!("listing {}", kind.dir()),
                        "the endpoint returned the same continuation token twice",
                    ))
                }
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let too_large = |n| strata::backend::too_large(kind, name, n);
        self.get(
            &self.key(kind, name),
            &Self::object(kind, name),
            None,
            kind.max_size(),
            too_large,
        )
        .map_err(|e| Self::as_file(e, kind, name))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let object = Self::object(kind, name);
        let bytes = self
            .get(
                &self.key(kind, name),
                &object,
                Some((offset, len)),
                len,
                |n| {
                    Error::corrupt(
                        object.clone(),
                        format!("{n} bytes or more sent where {len} were asked for"),
                    )
                },
            )
            .map_err(|e| Self::as_file(e, kind, name))?;
        if bytes.len() as u64 != len {
            return Err(Error::corrupt(
                object,
                format!(
                    "short read: wanted {len} bytes at {offset}, got {}",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    fn put(&self, kind: FileKind, name: &str, data: &[u8], how: &WriteOptions) -> Result<()> {
        self.put_object(kind, &self.key(kind, name), data, how.class, how.retention)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.count(&self.requests.delete);
        let key = self.key(kind, name);
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.loc.bucket)
                    .key(&key)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| self.error(e, "DeleteObject", &Self::object(kind, name)))
    }

    /// One `DeleteObjects` per thousand names (S3's bound), quiet: only failures come back.
    fn delete_many(&self, kind: FileKind, names: &[String]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let unbuilt = |e: aws_sdk_s3::error::BuildError| Error::Backend {
            object: kind.dir().to_string(),
            source: std::io::Error::other(e),
        };
        for batch in names.chunks(1000) {
            let objects = (batch.iter())
                .map(|name| {
                    ObjectIdentifier::builder()
                        .key(self.key(kind, name))
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(unbuilt)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(unbuilt)?;
            self.count(&self.requests.delete);
            let out = self
                .rt
                .block_on(
                    self.client
                        .delete_objects()
                        .bucket(&self.loc.bucket)
                        .delete(delete)
                        .send(),
                )
                .map_err(|e| self.error(e, "DeleteObjects", &format!("{}/", kind.dir())))?;
            if let Some(failed) = out.errors().first() {
                return Err(Error::Backend {
                    object: failed.key().unwrap_or_default().to_string(),
                    source: std::io::Error::other(format!(
                        "{}: {}",
                        failed.code().unwrap_or("error"),
                        failed.message().unwrap_or("the store did not delete it")
                    )),
                });
            }
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities {
            upload_concurrency: 4,
            // Each read holds up to a pack (~17 MiB) while it is decrypted: 6 keeps that
            // near 100 MiB and a link with 20-50 ms per request busy.
            read_concurrency: 6,
            request_count: Some(self.requests.total()),
            cold_storage: Some(self),
            lifecycle: Some(self),
            object_lock: Some(self),
            versions: Some(self),
            temporaries: Some(self),
            special_files: false,
        }
    }
}

impl Temporaries for S3Backend {
    /// Multipart uploads that a killed or failed writer never completed: the store keeps
    /// (and bills) their parts until they are aborted.
    fn remove_stale(&self, older_than: Duration) -> Result<Vec<FileInfo>> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut removed = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let resp = {
                self.count(&self.requests.list);
                self.rt
                    .block_on(
                        self.client
                            .list_multipart_uploads()
                            .bucket(&self.loc.bucket)
                            .prefix(&self.loc.prefix)
                            .set_key_marker(key_marker.clone())
                            .set_upload_id_marker(id_marker.clone())
                            .send(),
                    )
                    .map_err(|e| self.error(e, "ListMultipartUploads", "listing multipart uploads"))
            }?;
            for u in resp.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let initiated = u
                    .initiated()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                // Younger ones may be a backup's upload in progress, here or elsewhere.
                if initiated.is_none_or(|t| t > cutoff) {
                    continue;
                }
                self.count(&self.requests.delete);
                self.rt
                    .block_on(
                        self.client
                            .abort_multipart_upload()
                            .bucket(&self.loc.bucket)
                            .key(key)
                            .upload_id(id)
                            .send(),
                    )
                    .map_err(|e| self.error(e, "AbortMultipartUpload", key))?;
                removed.push(FileInfo {
                    name: key.to_string(),
                    size: 0,
                    storage_class: None,
                    modified: None,
                    not_regular: None,
                });
            }
            match (resp.is_truncated(), resp.next_key_marker()) {
                (Some(true), Some(k)) => {
                    key_marker = Some(k.to_string());
                    id_marker = resp.next_upload_id_marker().map(String::from);
                }
                _ => break,
            }
        }
        Ok(removed)
    }
}

impl ColdStorage for S3Backend {
    fn thaw_state(&self, kind: FileKind, name: &str) -> Result<ThawState> {
        self.count(&self.requests.head);
        let resp = self
            .rt
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.loc.bucket)
                    .key(self.key(kind, name))
                    .send(),
            )
            .map_err(|e| {
                Self::as_file(
                    self.error(e, "HeadObject", &Self::object(kind, name)),
                    kind,
                    name,
                )
            })?;
        let archived = resp
            .storage_class()
            .is_some_and(|c| ARCHIVE_CLASSES.contains(&c.as_str()));
        Ok(match (archived, resp.restore()) {
            (false, _) => ThawState::Hot,
            (true, None) => ThawState::Archived,
            (true, Some(r)) if r.contains("ongoing-request=\"true\"") => ThawState::Thawing,
            (true, Some(_)) => ThawState::Thawed,
        })
    }

    fn thaw(&self, kind: FileKind, name: &str, days: u32, tier: ThawTier) -> Result<()> {
        use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
        let tier = match tier {
            ThawTier::Expedited => Tier::Expedited,
            ThawTier::Standard => Tier::Standard,
            ThawTier::Bulk => Tier::Bulk,
        };
        let request = RestoreRequest::builder()
            .days(days.min(i32::MAX as u32) as i32)
            .glacier_job_parameters(
                GlacierJobParameters::builder()
                    .tier(tier)
                    .build()
                    .expect("tier is set"),
            )
            .build();
        self.count(&self.requests.put);
        match self.rt.block_on(
            self.client
                .restore_object()
                .bucket(&self.loc.bucket)
                .key(self.key(kind, name))
                .restore_request(request)
                .send(),
        ) {
            Ok(_) => Ok(()),
            // A thaw already under way.
            Err(e) if e.code() == Some("RestoreAlreadyInProgress") => Ok(()),
            Err(e) => Err(Self::as_file(
                self.error(e, "RestoreObject", &Self::object(kind, name)),
                kind,
                name,
            )),
        }
    }
}

impl ObjectLock for S3Backend {
    fn enabled(&self) -> Result<bool> {
        use aws_sdk_s3::types::ObjectLockEnabled;
        self.count(&self.requests.get);
        let resp = self.rt.block_on(
            self.client
                .get_object_lock_configuration()
                .bucket(&self.loc.bucket)
                .send(),
        );
        match resp {
            Ok(r) => Ok(r
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                == Some(&ObjectLockEnabled::Enabled)),
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(false),
            Err(e) => Err(self.error(
                e,
                "GetObjectLockConfiguration",
                "the bucket's object lock configuration",
            )),
        }
    }

    fn retain(&self, kind: FileKind, name: &str, retention: Retention) -> Result<()> {
        use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
        let mode = match retention.mode {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        };
        self.count(&self.requests.put);
        self.rt
            .block_on(
                self.client
                    .put_object_retention()
                    .bucket(&self.loc.bucket)
                    .key(self.key(kind, name))
                    .retention(
                        ObjectLockRetention::builder()
                            .mode(mode)
                            .retain_until_date(aws_smithy_types::DateTime::from_secs(
                                retention.until,
                            ))
                            .build(),
                    )
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| {
                Self::as_file(
                    self.error(e, "PutObjectRetention", &Self::object(kind, name)),
                    kind,
                    name,
                )
            })
    }

    fn retention(&self, kind: FileKind, name: &str) -> Result<Option<i64>> {
        self.head_retention(kind, name, None)
    }
}

impl Versions for S3Backend {
    fn versions(&self, kind: FileKind) -> Result<Vec<ObjectVersion>> {
        let prefix = match kind {
            FileKind::Config => self.key(kind, "config"),
            _ => format!("{}{}/", self.loc.prefix, kind.dir()),
        };
        let name_of = |key: &str| key.rsplit('/').next().unwrap_or(key).to_string();
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let resp = {
                self.count(&self.requests.list);
                self.rt
                    .block_on(
                        self.client
                            .list_object_versions()
                            .bucket(&self.loc.bucket)
                            .prefix(&prefix)
                            .set_key_marker(key_marker.clone())
                            .set_version_id_marker(id_marker.clone())
                            .send(),
                    )
                    .map_err(|e| {
                        self.error(
                            e,
                            "ListObjectVersions",
                            &format!("listing versions of {}", kind.dir()),
                        )
                    })
            }?;
            for v in resp.versions() {
                let (Some(key), Some(id)) = (v.key(), v.version_id()) else {
                    continue;
                };
                out.push(ObjectVersion {
                    name: name_of(key),
                    version_id: id.to_string(),
                    delete_marker: false,
                    latest: v.is_latest() == Some(true),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    modified: v.last_modified().map_or(0, |t| t.secs()),
                });
            }
            for m in resp.delete_markers() {
                let (Some(key), Some(id)) = (m.key(), m.version_id()) else {
                    continue;
                };
                out.push(ObjectVersion {
                    name: name_of(key),
                    version_id: id.to_string(),
                    delete_marker: true,
                    latest: m.is_latest() == Some(true),
                    size: 0,
                    modified: m.last_modified().map_or(0, |t| t.secs()),
                });
            }
            match (resp.is_truncated(), resp.next_key_marker()) {
                (Some(true), Some(k)) => {
                    key_marker = Some(k.to_string());
                    id_marker = resp.next_version_id_marker().map(String::from);
                }
                _ => break,
            }
        }
        out.retain(|v| !v.name.is_empty() && !v.name.starts_with('.'));
        Ok(out)
    }

    fn purge_version(&self, kind: FileKind, name: &str, version_id: &str) -> Result<Purge> {
        self.count(&self.requests.delete);
        let resp = self.rt.block_on(
            self.client
                .delete_object()
                .bucket(&self.loc.bucket)
                .key(self.key(kind, name))
                .version_id(version_id)
                .send(),
        );
        match resp {
            Ok(_) => Ok(Purge::Deleted),
            Err(e) => {
                let e = self.error(e, "DeleteObject", &Self::object(kind, name));
                // Object Lock answers 403 as a missing permission does: the version's own
                // retention date tells them apart.
                if let Error::Backend { source, .. } = &e {
                    if source.kind() == std::io::ErrorKind::PermissionDenied {
                        let until = self.head_retention(kind, name, Some(version_id))?;
                        let now = chrono::Utc::now().timestamp();
                        if until.is_some_and(|u| u > now) {
                            return Ok(Purge::Held(until));
                        }
                    }
                }
                Err(e)
            }
        }
    }
}

impl Lifecycle for S3Backend {
    fn rules(&self) -> Result<(String, Vec<LifecycleRule>)> {
        self.count(&self.requests.get);
        let resp = self.rt.block_on(
            self.client
                .get_bucket_lifecycle_configuration()
                .bucket(&self.loc.bucket)
                .send(),
        );
        let resp = match resp {
            Ok(r) => r,
            // A bucket without rules answers 404 NoSuchLifecycleConfiguration.
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => {
                return Ok((self.loc.prefix.clone(), Vec::new()))
            }
            Err(e) => {
                return Err(self.error(
                    e,
                    "GetBucketLifecycleConfiguration",
                    "the bucket's lifecycle configuration",
                ))
            }
        };
        let rules = resp.rules().iter().map(lifecycle_rule).collect();
        Ok((self.loc.prefix.clone(), rules))
    }
}

/// A rule as the SDK gives it, reduced to what matters to a repository.
fn lock_mode(m: LockMode) -> aws_sdk_s3::types::ObjectLockMode {
    match m {
        LockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
        LockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
    }
}

fn lifecycle_rule(r: &aws_sdk_s3::types::LifecycleRule) -> LifecycleRule {
    use aws_sdk_s3::types::ExpirationStatus;
    let filter = r.filter();
    #[allow(deprecated)] // the rule-level prefix of older configurations
    let prefix = filter
        .and_then(|f| f.prefix().or_else(|| f.and().and_then(|a| a.prefix())))
        .or(r.prefix())
        .unwrap_or("")
        .to_string();
    let tagged =
        filter.is_some_and(|f| f.tag().is_some() || f.and().is_some_and(|a| !a.tags().is_empty()));
    let when = |days: Option<i32>, date: Option<&aws_smithy_types::DateTime>| match (days, date) {
        (Some(d), _) => Some(format!("after {d} days")),
        (None, Some(t)) => Some(format!("on {t}")),
        (None, None) => None,
    };
    LifecycleRule {
        id: r.id().unwrap_or("").to_string(),
        enabled: *r.status() == ExpirationStatus::Enabled,
        prefix,
        tagged,
        expiration: r.expiration().and_then(|e| when(e.days(), e.date())),
        transitions: r
            .transitions()
            .iter()
            .filter_map(|t| {
                let class = t.storage_class()?.as_str().to_string();
                Some((when(t.days(), t.date())?, class))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile pass: keys such as `index/../x`, `index//x` or `data/ab/../../x` were taken
    /// for files named `x`; then (hostile pass 3) one such key stopped every listing. They
    /// are skipped; only a key outside the prefix makes the listing damaged.
    #[test]
    fn only_canonical_keys_are_file_names() {
        let p = "repo/data/";
        assert_eq!(listed_name("repo/data/ab/abcd", p), Ok("abcd"));
        assert_eq!(listed_name("repo/data/abcd", p), Ok("abcd"));
        assert_eq!(listed_name("repo/data/ab/", p), Ok(""));
        for bad in [
            "repo/data//abcd",
            "repo/data/ab/../../abcd",
            "repo/data/../abcd",
            "repo/data/a/b/abcd",
            "repo/data/ab/x\ny",
            "repo/data/..",
            "repo/data/.",
        ] {
            assert_eq!(listed_name(bad, p), Ok(""), "{bad:?}");
        }
        assert!(listed_name("other/abcd", p).is_err());
        // Hostile pass 9: keys longer than any name of ours are not kept.
        let ours = "a".repeat(MAX_NAME);
        assert_eq!(listed_name(&format!("{p}ab/{ours}"), p), Ok(ours.as_str()));
        assert_eq!(listed_name(&format!("{p}{ours}b"), p), Ok(""));
        assert_eq!(
            listed_name(&format!("{p}{}", "k".repeat(15_000)), p),
            Ok("")
        );
    }

    /// Hostile pass: an endpoint paging for ever with a fresh token each time (empty
    /// pages, or invented names) kept a listing going without end, its memory growing.
    #[test]
    fn a_listing_must_move_on_and_end() {
        let mut p = Paging::new(DEFAULT_TIMEOUT);
        p.page(["a", "b"].into_iter()).unwrap();
        p.page(["c"].into_iter()).unwrap();
        let e = p.page(["c"].into_iter()).unwrap_err();
        assert!(e.contains("not in order, or again"), "{e}");
        let mut p = Paging::new(DEFAULT_TIMEOUT);
        p.page(["b"].into_iter()).unwrap();
        assert!(p.page(["a"].into_iter()).is_err(), "backwards");
        let mut p = Paging::new(DEFAULT_TIMEOUT);
        for _ in 0..MAX_EMPTY_PAGES {
            p.page(std::iter::empty()).unwrap();
        }
        p.page(["x"].into_iter()).unwrap();
        for _ in 0..MAX_EMPTY_PAGES {
            p.page(std::iter::empty()).unwrap();
        }
        let e = p.page(std::iter::empty()).unwrap_err();
        assert!(e.contains("empty pages in a row"), "{e}");
        let mut p = Paging {
            names: MAX_LISTED - 1,
            ..Paging::new(DEFAULT_TIMEOUT)
        };
        p.page(["k1"].into_iter()).unwrap();
        let e = p.page(["k2"].into_iter()).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        // Hostile pass 10: one name a page, each just inside the time-out.
        let mut p = Paging::new(Duration::from_millis(10));
        p.page(["a"].into_iter()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        let e = p.page(["b"].into_iter()).unwrap_err();
        assert!(e.contains("that slow"), "{e}");
        // As fast as S3 pages, it goes on.
        let mut p = Paging::new(Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(40));
        let page: Vec<String> = (0..1000).map(|i| format!("k{i:04}")).collect();
        p.page(page.iter().map(String::as_str)).unwrap();
    }

    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    /// An endpoint whose every connection gets `answer` once the request's headers are
    /// read; its repository URL.
    fn endpoint(answer: impl Fn(&mut TcpStream) + Clone + Send + 'static) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut b = [0u8; 1];
                    while !req.ends_with(b"\r\n\r\n") && conn.read(&mut b).is_ok_and(|n| n == 1) {
                        req.push(b[0]);
                    }
                    answer(&mut conn);
                });
            }
        });
        format!("s3:http://{addr}/bucket/repo")
    }

    /// An endpoint that answers every request with `head` and then `body`.
    fn hostile_endpoint(head: &'static str, body: Vec<u8>) -> String {
        endpoint(move |conn| {
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        })
    }

    /// The backend at `url` with a time-out of `secs`.
    fn open_with_timeout(url: &str, secs: u64) -> S3Backend {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        let opts = BackendOptions {
            s3_timeout: Some(Duration::from_secs(secs)),
            ..Default::default()
        };
        S3Backend::open(url, &opts).unwrap()
    }

    /// Hostile pass 2: no reply, or a body trickling a byte now and then (GetObject
    /// streamed, a listing parsed whole), times out within a bounded time, as a final error
    /// that names the endpoint and has a remedy.
    #[test]
    fn a_hung_or_trickling_endpoint_times_out_soon() {
        let hung = endpoint(|_| std::thread::sleep(Duration::from_secs(3600)));
        let trickle = |head: &'static str| {
            endpoint(move |conn| {
                let _ = conn.write_all(head.as_bytes());
                while conn.write_all(b"x").is_ok() {
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        let object = trickle("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        let listing = trickle(
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 100000\r\n\r\n",
        );
        for (what, url, list) in [
            ("hung read", &hung, false),
            ("hung listing", &hung, true),
            ("trickled read", &object, false),
            ("trickled listing", &listing, true),
        ] {
            let b = open_with_timeout(url, 1);
            let start = Instant::now();
            let e = match list {
                true => b.list(FileKind::Snapshot).map(|_| ()).unwrap_err(),
                false => b.read(FileKind::Data, "ab").map(|_| ()).unwrap_err(),
            };
            let took = start.elapsed();
            // 3 time-outs for the tries, and the runtime's slack.
            assert!(took < Duration::from_secs(5), "{what}: {took:?}");
            let msg = e.to_string();
            assert!(msg.contains("timed out"), "{what}: {msg}");
            assert!(
                msg.contains(
                    url.trim_start_matches("s3:")
                        .trim_end_matches("/bucket/repo")
                ),
                "{what}: {msg}"
            );
            assert!(msg.len() < 300, "{what}: {msg}");
            assert!(!e.is_transient(), "{what}: {msg}");
            assert_eq!(e.remedy(), Some(strata::Remedy::CheckEndpoint), "{what}");
        }
    }

    /// A slow link is not a hung one: a body flowing at 64 KiB/s with pauses shorter than
    /// the time-out arrives whole, although it takes 4 time-outs.
    #[test]
    fn a_slow_body_that_keeps_flowing_is_read_whole() {
        let len = 256 << 10;
        let url = endpoint(move |conn| {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            let _ = conn.write_all(head.as_bytes());
            for chunk in vec![7u8; len].chunks(32 << 10) {
                std::thread::sleep(Duration::from_millis(500));
                if conn.write_all(chunk).is_err() {
                    return;
                }
            }
        });
        let b = open_with_timeout(&url, 1);
        let start = Instant::now();
        let data = b.read(FileKind::Data, "ab").unwrap();
        assert_eq!(data, vec![7u8; len]);
        assert!(
            start.elapsed() > Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    /// The first error of `run` against an endpoint answering `head` and `body`.
    fn error_of(head: &'static str, body: &str, run: fn(&S3Backend) -> Result<()>) -> Error {
        let url = hostile_endpoint(head, body.as_bytes().to_vec());
        match run(&open_with_timeout(&url, 5)) {
            Ok(()) => panic!("{head}{body}: accepted"),
            Err(e) => e,
        }
    }

    /// Hostile pass 2: replies the SDK cannot use (a redirect, XML that does not parse, a
    /// header that does not) are a line naming the operation, the endpoint and the status,
    /// not the SDK's dump of the reply.
    #[test]
    fn replies_that_cannot_be_used_are_short_errors() {
        let list: fn(&S3Backend) -> Result<()> = |b| b.list(FileKind::Snapshot).map(|_| ());
        let read: fn(&S3Backend) -> Result<()> = |b| b.read(FileKind::Lock, "ab").map(|_| ());
        let xml = "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nConnection: close\r\n\r\n";
        let cases = [
            (error_of(xml, "<ListBucketResult><Contents><Key>a</Ke", list), "listing snapshots", "not under"),
            (error_of(xml, "<ListBucketResult><KeyCount>many</KeyCount></ListBucketResult>", list), "ListObjectsV2", "HTTP 200"),
            (
                error_of(
                    "HTTP/1.1 200 OK\r\nLast-Modified: yesterday\r\nx-amz-mp-parts-count: lots\r\nConnection: close\r\n\r\n",
                    "abc",
                    read,
                ),
                "GetObject",
                "HTTP 200",
            ),
            (
                error_of(
                    "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-west-1\r\nConnection: close\r\n\r\n",
                    "<Error><Code>PermanentRedirect</Code></Error>",
                    list,
                ),
                "ListObjectsV2",
                "AWS_REGION",
            ),
        ];
        // Keys a listing must not hand over as names: outside the prefix (the listing is
        // not the store's), `..` and escapes (skipped: no file of ours).
        let listing = |key: &str| {
            format!("<ListBucketResult><Contents><Key>{key}</Key><Size>1</Size></Contents></ListBucketResult>")
        };
        let e = error_of(xml, &listing("a"), list);
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("not under repo/snapshots/") && msg.len() < 300,
            "{msg}"
        );
        assert!(!msg.contains('\x1b'), "{msg}");
        for key in [
            "repo/snapshots/../../etc/passwd",
            "repo/snapshots/ab&#27;[2Jcd",
        ] {
            let url = hostile_endpoint(xml, listing(key).into_bytes());
            let names = open_with_timeout(&url, 5).list(FileKind::Snapshot).unwrap();
            assert!(names.is_empty(), "{key}: {names:?}");
        }
        for (e, op, said) in cases {
            let msg = e.to_string();
            assert!(msg.len() < 400, "{} bytes: {msg}", msg.len());
            assert!(msg.contains(op) && msg.contains(said), "{msg}");
            assert!(msg.contains("127.0.0.1"), "{msg}");
        }
    }

    /// Hostile pass (issue 26): a hostile endpoint announcing a huge object, or sending
    /// more than it announced or than a file of its kind can be, gets an error, not an
    /// allocation of its choosing.
    #[test]
    fn a_read_holds_no_more_than_its_kind_allows_whatever_the_endpoint_says() {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        let opts = BackendOptions::default();
        // One TiB announced: refused before a byte of it is held.
        let url = hostile_endpoint(
            "HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n",
            vec![0; 4096],
        );
        let b = S3Backend::open(&url, &opts).unwrap();
        let e = b.read(FileKind::Lock, "ab").unwrap_err().to_string();
        assert!(e.contains("larger than any lock file can be"), "{e}");
        // Nothing announced, more sent than a lock can be.
        let url = hostile_endpoint(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            vec![0; (FileKind::Lock.max_size() + 10) as usize],
        );
        let b = S3Backend::open(&url, &opts).unwrap();
        let e = b.read(FileKind::Lock, "ab").unwrap_err().to_string();
        assert!(e.contains("larger than any lock file can be"), "{e}");
        // A range read gets no more than it asked for.
        let e = b
            .read_range(FileKind::Data, "ab", 0, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("where 100 were asked for"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            S3Location::parse("s3://bucket/some/prefix").unwrap(),
            S3Location {
                endpoint: None,
                bucket: "bucket".into(),
                prefix: "some/prefix/".into()
            }
        );
        assert_eq!(
            S3Location::parse("s3:http://127.0.0.1:3900/b").unwrap(),
            S3Location {
                endpoint: Some("http://127.0.0.1:3900".into()),
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            S3Location::parse("s3:https://s3.example.net/backups/cortex/")
                .unwrap()
                .prefix,
            "cortex/"
        );
        assert!(S3Location::parse("s3:ftp://x/b").is_err());
        assert!(S3Location::parse("s3://").is_err());
        assert!(S3Location::parse("s3:http://host:1").is_err());
    }
}
