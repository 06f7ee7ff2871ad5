//! Repositories on any S3-compatible store, through the `object_store`
//! crate (its retries with exponential backoff; credentials from the usual
//! AWS environment variables). The repository's files are objects under a
//! prefix, with the same names as in a local repository.

use std::ops::Range;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::backend::{Backend, ReadProfile};
use crate::error::{BackupError, Result};

/// How to reach the store. `None` fields come from the environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, ... as the AWS tools read them).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// For S3-compatible servers: addressed path-style; `http://` allowed.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Per request (default 30 s).
    pub timeout: Option<std::time::Duration>,
    /// Give up retrying a request after this long (default 60 s).
    pub retry_timeout: Option<std::time::Duration>,
}

/// `s3://bucket/prefix` on AWS or any S3-compatible store.
pub struct S3Backend {
    store: AmazonS3,
    bucket: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl S3Backend {
    /// `url` is `s3://BUCKET[/PREFIX]`.
    pub fn new(url: &str, options: &S3Options) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| BackupError::Storage {
                path: url.into(),
                source: std::io::Error::other("an S3 repository is s3://BUCKET/PREFIX"),
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BackupError::Storage {
                path: url.into(),
                source: std::io::Error::other("no bucket name"),
            });
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 8,
                retry_timeout: options
                    .retry_timeout
                    .unwrap_or(std::time::Duration::from_secs(60)),
                ..RetryConfig::default()
            })
            .with_client_options(
                object_store::ClientOptions::new().with_timeout(
                    options
                        .timeout
                        .unwrap_or(std::time::Duration::from_secs(30)),
                ),
            );
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(ep) = &endpoint {
            builder = builder
                .with_endpoint(ep)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(ep.starts_with("http://"));
        }
        if let Some(r) = &options.region {
            builder = builder.with_region(r);
        }
        if let Some(k) = &options.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(k) = &options.secret_access_key {
            builder = builder.with_secret_access_key(k);
        }
        let store = builder.build().map_err(|e| BackupError::Storage {
            path: url.into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackupError::Storage {
                path: url.into(),
                source: e,
            })?;
        Ok(Self {
            store,
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
            runtime,
        })
    }

    fn path(&self, name: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }

    fn put_payload(&self, name: &str, payload: PutPayload) -> Result<()> {
        // Names are content-derived (or `config`, written once by init), so
        // a second put of a name writes the same bytes: a plain PUT, which
        // every S3-compatible store has, is enough. A PUT is atomic.
        self.runtime
            .block_on(self.store.put(&self.path(name), payload))
            .map(|_| ())
            .map_err(self.err(name))
    }

    fn err(&self, name: &str) -> impl FnOnce(object_store::Error) -> BackupError + '_ {
        let path = format!("s3://{}/{}", self.bucket, self.path(name));
        move |e| {
            let kind = if matches!(e, object_store::Error::NotFound { .. }) {
                std::io::ErrorKind::NotFound
            } else {
                std::io::ErrorKind::Other
            };
            BackupError::Storage {
                path,
                source: std::io::Error::new(kind, e.to_string()),
            }
        }
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.put_payload(name, PutPayload::from(data.to_vec()))
    }

    /// One PUT whose body is the pieces as they are: object_store signs
    /// and sends a multi-buffer payload without joining it.
    fn put_pieces(&self, name: &str, pieces: Vec<Vec<u8>>) -> Result<()> {
        self.put_payload(name, pieces.into_iter().map(bytes::Bytes::from).collect())
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.runtime
            .block_on(async { self.store.get(&self.path(name)).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(self.err(name))
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let range: Range<u64> = offset..offset + len as u64;
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&self.path(name), range))
            .map_err(self.err(name))?;
        if bytes.len() != len {
            return Err(BackupError::damaged(name, "shorter than its index says"));
        }
        Ok(bytes.to_vec())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = self.path(dir);
        let skip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let metas: Vec<_> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .map_err(self.err(dir))?;
        let mut out: Vec<String> = metas
            .into_iter()
            .map(|m| m.location.as_ref()[skip..].to_string())
            .collect();
        out.sort();
        Ok(out)
    }

    fn size(&self, name: &str) -> Result<u64> {
        self.runtime
            .block_on(self.store.head(&self.path(name)))
            .map(|meta| meta.size)
            .map_err(self.err(name))
    }

    fn exists(&self, name: &str) -> Result<bool> {
        match self.runtime.block_on(self.store.head(&self.path(name))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(name)(e)),
        }
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.runtime
            .block_on(self.store.delete(&self.path(name)))
            .map_err(self.err(name))
    }

    /// An empty object PUT over it, then a DELETE. On a bucket without
    /// versioning the bytes are gone from the store's view; with
    /// versioning (or object lock) both leave older versions behind.
    fn destroy(&self, name: &str) -> Result<()> {
        self.runtime
            .block_on(self.store.put(&self.path(name), PutPayload::new()))
            .map_err(self.err(name))?;
        self.delete(name)
    }

    fn read_profile(&self) -> ReadProfile {
        ReadProfile::REMOTE
    }
}
