//! The HTTP API users query: `/api/sql`, `/api/v3/traces/{id}` and the UI pages.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value as Json;

/// A client of one ducktrace UI/API server; clones share connections.
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Runs SQL through `POST /api/sql` and returns its rows.
    pub async fn sql(&self, sql: &str) -> Result<Vec<Vec<Json>>> {
        let url = format!("{}/api/sql", self.base);
        let body = self
            .fetch(Method::POST, &url, Bytes::from(sql.to_string()))
            .await?;
        let mut answer: Json = serde_json::from_slice(&body).context("/api/sql answered no JSON")?;
        let rows = answer["rows"].take();
        serde_json::from_value(rows).with_context(|| format!("/api/sql answered no rows for {sql}"))
    }

    /// GETs a path of this server or a whole URL; fails unless the answer is 2xx.
    pub async fn get(&self, path_or_url: &str) -> Result<Bytes> {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        self.fetch(Method::GET, &url, Bytes::new()).await
    }

    async fn fetch(&self, method: Method, url: &str, body: Bytes) -> Result<Bytes> {
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(body))
            .with_context(|| format!("URL {url}"))?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("requesting {url}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}
