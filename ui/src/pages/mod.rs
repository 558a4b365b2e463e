//! Server-rendered HTML pages: the shared layout, its stylesheet, security headers and errors.
//! Every page works without JavaScript; span data reaches HTML only through askama's escaping.

pub mod chart;
pub mod compare;
pub mod dependencies;
pub mod graph;
pub mod links;
pub mod palette;
pub mod search;
pub mod services;
pub mod sql;
pub mod stats;
pub mod time_range;
pub mod trace;
pub mod units;

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

/// The one stylesheet, compiled into the binary so the UI needs no files at run time.
const STYLESHEET: &str = include_str!("../../static/style.css");

/// Small enhancements for the exploration pages, which work without it.
const EXPLORE_SCRIPT: &str = include_str!("../../static/explore.js");

/// Scripts, styles and images only from this server; no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `GET /static/style.css`
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// `GET /static/explore.js`
pub async fn explore_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        EXPLORE_SCRIPT,
    )
        .into_response()
}

/// Adds the security headers to every response, pages and API alike.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// A page that could not be produced; shown to the user as an HTML error page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("could not render the page: {0}")]
    Render(#[from] askama::Error),
    #[error("the query task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("could not read the span store: {0}")]
    Store(#[from] ducktrace_store::StoreError),
    /// The request cannot be answered as asked (a malformed id, a bad filter).
    #[error("{0}")]
    BadRequest(String),
    /// The request named something that does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Runs blocking store work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(work).await?
}

/// The error page, inside the usual layout.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    active: &'static str,
    heading: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        let heading = match status {
            StatusCode::BAD_REQUEST => "That request cannot be answered",
            StatusCode::NOT_FOUND => "Not found",
            _ => {
                tracing::warn!(error = %self, "page failed");
                "Something went wrong"
            }
        };
        let page = ErrorPage {
            active: "",
            heading,
            message: self.to_string(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, self.to_string()).into_response(),
        }
    }
}

/// Renders `page` as an HTML response with `status`.
fn render(status: StatusCode, page: &impl Template) -> Result<Response, PageError> {
    Ok((status, Html(page.render()?)).into_response())
}
