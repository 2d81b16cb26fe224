//! The dashboard's web server (axum): the page, its state as JSON, the
//! Prometheus metrics and the aggregator's `report.html` of each run. It
//! reads the loop's snapshots and nothing else. With a token configured,
//! every request must carry it (`Authorization: Bearer <token>`, or
//! `?token=` for a browser), else it is refused with 401.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use super::metrics;
use super::model::Snapshot;

const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
struct Shared {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    report_dir: PathBuf,
    token: Option<Arc<str>>,
}

/// Binds `addr` and serves until the task is aborted; `Err` if it cannot bind.
pub async fn start(
    addr: SocketAddr,
    token: Option<String>,
    report_dir: PathBuf,
    snapshots: watch::Receiver<Arc<Snapshot>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if token.is_none() && !bound.ip().is_loopback() {
        warn!(%bound, "the dashboard listens beyond this host without a token: anyone who reaches it sees the fleet (set aggregator.dashboard_token)");
    }
    info!(address = %bound, "dashboard listening");
    let shared = Shared {
        snapshots,
        report_dir,
        token: token.map(Arc::from),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/api/state", get(state))
        .route("/metrics", get(prometheus))
        .route("/runs/{run_id}/report.html", get(report))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .with_state(shared);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            warn!(%error, "the dashboard stopped serving");
        }
    }))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Lets a request through if no token is set, or if it carries the token.
async fn authorize(
    State(shared): State<Shared>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &shared.token else {
        return next.run(request).await;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let given = bearer.or(query.token.as_deref());
    match given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        true => next.run(request).await,
        false => (
            StatusCode::UNAUTHORIZED,
            "a token is needed: ?token= or Authorization: Bearer\n",
        )
            .into_response(),
    }
}

/// Compares in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn state(State(shared): State<Shared>) -> Json<Snapshot> {
    let snapshot = shared.snapshots.borrow().clone();
    Json((*snapshot).clone())
}

async fn prometheus(State(shared): State<Shared>) -> impl IntoResponse {
    let snapshot = shared.snapshots.borrow().clone();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&snapshot),
    )
}

/// A run's `report.html` from the aggregator's report dir; the id must be a
/// UUID, so no path leaves that folder.
async fn report(State(shared): State<Shared>, Path(run_id): Path<String>) -> Response {
    let Ok(run_id) = run_id.parse::<Uuid>() else {
        return (StatusCode::NOT_FOUND, "no such run\n").into_response();
    };
    let path = shared
        .report_dir
        .join(run_id.to_string())
        .join("report.html");
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no report of that run here\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
