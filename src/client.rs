//! The `mobula` command-line client of the storage API (put/get/ls/mkdir/rm/ln/info).
//!
//! Transfers stream both ways (files are never read whole); on a terminal, transfers over
//! 1 MiB show a progress bar. Server errors are returned as [`ClientError`] carrying the
//! server's code and message, which `main` prints before exiting non-zero.

use std::io::IsTerminal;
use std::path::Path;

use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Characters escaped in a path component.
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// A failed request: the server's code and message (or a local failure).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    pub code: String,
    pub message: String,
}

impl ClientError {
    pub fn local(e: impl std::fmt::Display) -> Self {
        ClientError {
            code: "ClientError".into(),
            message: e.to_string(),
        }
    }
}

/// One listing line.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mtime: Option<String>,
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    account: String,
    http: reqwest::Client,
    signer: Option<std::sync::Arc<crate::sign::Signer>>,
}

fn progress(len: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() || len.is_some_and(|l| l < 1 << 20) {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l),
        None => ProgressBar::new_spinner(),
    };
    pb.set_style(
        ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.bytes().await.map_err(ClientError::local)?;
    #[derive(Deserialize)]
    struct E {
        code: String,
        message: String,
    }
    Err(match serde_json::from_slice::<E>(&body) {
        Ok(e) => ClientError {
            code: e.code,
            message: e.message,
        },
        Err(_) => ClientError {
            code: format!("HTTP{}", status.as_u16()),
            message: status.canonical_reason().unwrap_or("error").into(),
        },
    })
}

impl Client {
    /// A client of the gateway at `base`, acting for `account` (used to expand `~~`).
    pub fn new(base: &str, account: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            account: account.to_string(),
            http: reqwest::Client::new(),
            signer: None,
        }
    }

    /// Sign every request with `signer`.
    pub fn with_signer(mut self, signer: crate::sign::Signer) -> Self {
        self.signer = Some(std::sync::Arc::new(signer));
        self
    }

    /// Expand a leading `~~` to `/<account>`.
    pub fn expand(&self, path: &str) -> String {
        match path.strip_prefix("~~") {
            Some(rest) => format!("/{}{rest}", self.account),
            None => path.to_string(),
        }
    }

    /// Expand `~~` and percent-encode each component.
    pub fn url(&self, path: &str) -> String {
        let p = self.expand(path);
        let enc: Vec<String> = p
            .split('/')
            .map(|c| utf8_percent_encode(c, COMPONENT).to_string())
            .collect();
        format!("{}{}", self.base, enc.join("/"))
    }

    fn req(&self, m: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, self.url(path));
        match &self.signer {
            Some(s) => {
                let date = httpdate::fmt_http_date(std::time::SystemTime::now());
                r.header("authorization", s.authorization(&date))
                    .header("date", date)
            }
            None => r,
        }
    }

    /// Send a request (query appended as is, optional body); the response if it succeeded.
    pub async fn send(
        &self,
        m: Method,
        path: &str,
        query: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut url = self.url(path);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut r = self.http.request(m, url);
        if let Some(s) = &self.signer {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            r = r
                .header("authorization", s.authorization(&date))
                .header("date", date);
        }
        if let Some((ct, b)) = body {
            r = r.header("content-type", ct).body(b);
        }
        check(r.send().await.map_err(ClientError::local)?).await
    }

    /// A signed URL for GET of `path`, valid for `secs` seconds.
    pub fn sign_url(&self, path: &str, secs: u64) -> Result<String, ClientError> {
        let s = self
            .signer
            .as_ref()
            .ok_or_else(|| ClientError::local("signing a URL needs a key (--key or MOBULA_KEY)"))?;
        let url = self.url(path);
        let path_part = &url[self.base.len()..];
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + secs;
        Ok(s.sign_url(&self.base, path_part, expires))
    }

    /// Upload a local file (or stdin for `-`) to `path`.
    pub async fn put(
        &self,
        local: &Path,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<(), ClientError> {
        let (body, len) = if local == Path::new("-") {
            let s = tokio_util::io::ReaderStream::new(tokio::io::stdin());
            (s.boxed_stream(), None)
        } else {
            let f = tokio::fs::File::open(local)
                .await
                .map_err(ClientError::local)?;
            let len = f.metadata().await.map_err(ClientError::local)?.len();
            (
                tokio_util::io::ReaderStream::with_capacity(f, 256 << 10).boxed_stream(),
                Some(len),
            )
        };
        let pb = progress(len);
        let pb2 = pb.clone();
        let counted = body.inspect_ok(move |b| pb2.inc(b.len() as u64));
        let mut r = self
            .req(Method::PUT, path)
            .body(reqwest::Body::wrap_stream(counted));
        if let Some(l) = len {
            r = r.header("content-length", l);
        }
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let resp = r.send().await.map_err(ClientError::local);
        pb.finish_and_clear();
        check(resp?).await.map(|_| ())
    }

    /// Download `path` to a local file (or stdout for `-`).
    pub async fn get(&self, path: &str, local: &Path) -> Result<(), ClientError> {
        let resp = check(
            self.req(Method::GET, path)
                .send()
                .await
                .map_err(ClientError::local)?,
        )
        .await?;
        let pb = progress(resp.content_length());
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if local == Path::new("-") {
            Box::new(tokio::io::stdout())
        } else {
            Box::new(
                tokio::fs::File::create(local)
                    .await
                    .map_err(ClientError::local)?,
            )
        };
        let mut s = resp.bytes_stream();
        while let Some(chunk) = s.try_next().await.map_err(ClientError::local)? {
            pb.inc(chunk.len() as u64);
            out.write_all(&chunk).await.map_err(ClientError::local)?;
        }
        out.flush().await.map_err(ClientError::local)?;
        pb.finish_and_clear();
        Ok(())
    }

    /// `HEAD`: the response headers.
    pub async fn info(&self, path: &str) -> Result<reqwest::header::HeaderMap, ClientError> {
        let resp = self
            .req(Method::HEAD, path)
            .send()
            .await
            .map_err(ClientError::local)?;
        if !resp.status().is_success() {
            // HEAD has no body: ask again with GET for the error text.
            let resp = self
                .req(Method::GET, path)
                .header("range", "bytes=0-0")
                .send()
                .await
                .map_err(ClientError::local)?;
            check(resp).await?;
            return Err(ClientError::local("HEAD failed"));
        }
        Ok(resp.headers().clone())
    }

    /// Every entry of a directory, following markers page by page.
    pub async fn list(&self, path: &str) -> Result<Vec<ListEntry>, ClientError> {
        let mut out: Vec<ListEntry> = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut r = self.req(Method::GET, path).query(&[("limit", "1024")]);
            if let Some(m) = &marker {
                r = r.query(&[("marker", m)]);
            }
            let resp = check(r.send().await.map_err(ClientError::local)?).await?;
            let body = resp.text().await.map_err(ClientError::local)?;
            let mut page: Vec<ListEntry> = body
                .lines()
                .filter(|l| !l.is_empty())
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .map_err(ClientError::local)?;
            // Markers are inclusive: drop the entry we already have.
            if marker.is_some() && page.first().map(|e| &e.name) == marker.as_ref() {
                page.remove(0);
            }
            if page.is_empty() {
                return Ok(out);
            }
            marker = page.last().map(|e| e.name.clone());
            out.extend(page);
        }
    }

    /// Create a directory (and, with `parents`, its missing ancestors).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<(), ClientError> {
        let path = self.expand(path);
        let mut targets = vec![path.trim_end_matches('/').to_string()];
        if parents {
            targets.clear();
            let p = path.trim_end_matches('/');
            let comps: Vec<&str> = p.split('/').collect();
            for i in 4..=comps.len() {
                targets.push(comps[..i].join("/"));
            }
        }
        for t in targets {
            let resp = self
                .req(Method::PUT, &t)
                .header("content-type", "application/json; type=directory")
                .send()
                .await
                .map_err(ClientError::local)?;
            check(resp).await?;
        }
        Ok(())
    }

    /// Delete an object or empty directory; with `recursive`, a whole tree.
    pub async fn rm(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let full = self.expand(path);
        if recursive && mobula_metadata::api::is_bucket(full.trim_end_matches('/')) {
            // A bucket: its keys (no delimiter, so every key), then the bucket.
            let bucket = full.trim_end_matches('/');
            for e in self.list(bucket).await? {
                Box::pin(self.rm(&format!("{bucket}/objects/{}", e.name), false)).await?;
            }
        } else if recursive {
            let h = self.info(path).await?;
            let is_dir = h
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("type=directory"));
            if is_dir {
                for e in self.list(path).await? {
                    let child = format!("{}/{}", path.trim_end_matches('/'), e.name);
                    Box::pin(self.rm(&child, true)).await?;
                }
            }
        }
        let resp = self
            .req(Method::DELETE, path)
            .send()
            .await
            .map_err(ClientError::local)?;
        check(resp).await.map(|_| ())
    }

    /// Create a snaplink at `dst` to the object `src`.
    pub async fn ln(&self, src: &str, dst: &str) -> Result<(), ClientError> {
        let src = self.expand(src);
        let resp = self
            .req(Method::PUT, dst)
            .header("content-type", "application/json; type=link")
            .header("location", src)
            .send()
            .await
            .map_err(ClientError::local)?;
        check(resp).await.map(|_| ())
    }
}

trait Boxed {
    fn boxed_stream(self) -> futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;
}

impl<S> Boxed for S
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    fn boxed_stream(self) -> futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> {
        Box::pin(self)
    }
}
