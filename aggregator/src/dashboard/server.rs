//! The dashboard's web server (axum): the page, its state as JSON, the
//! Prometheus metrics and the aggregator's `report.html` of each run. It
//! reads the loop's snapshots and nothing else.
//!
//! It answers only requests whose `Host` (and `Origin`, when a page sends
//! one) is an IP address, `localhost` or a name it was told
//! (`aggregator.dashboard_hosts`): a page on another site whose name came
//! to resolve to this address (DNS rebinding) is refused with 403. With a
//! token configured, every request must carry it, else 401: as
//! `Authorization: Bearer <token>` (scrapers), or as the cookie `GET
//! /?token=` sets once and redirects away from, so that the token stays out
//! of URLs, history and links.

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

/// The cookie the token travels in once the page was opened with it.
const COOKIE: &str = "testfleet_dashboard";

/// Who the dashboard answers.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub token: Option<String>,
    /// Host names beside IP addresses and `localhost`, lower case.
    pub hosts: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    report_dir: PathBuf,
    token: Option<Arc<str>>,
    hosts: Arc<[String]>,
}

/// Binds `addr` and serves until the task is aborted; `Err` if it cannot bind.
pub async fn start(
    addr: SocketAddr,
    access: Access,
    report_dir: PathBuf,
    snapshots: watch::Receiver<Arc<Snapshot>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let Access { token, hosts } = access;
    if token.is_none() && !bound.ip().is_loopback() {
        warn!(%bound, "the dashboard listens beyond this host without a token: anyone who reaches it sees the fleet (set aggregator.dashboard_token)");
    }
    info!(address = %bound, "dashboard listening");
    let shared = Shared {
        snapshots,
        report_dir,
        token: token.map(Arc::from),
        hosts: hosts.into(),
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

/// Lets a request through if its Host (and Origin) are known here and, with
/// a token set, it carries the token; `GET /?token=` with the right token
/// sets the cookie and sends the browser to `/`.
async fn authorize(
    State(shared): State<Shared>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let header_text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let host_known = header_text(header::HOST).is_some_and(|h| host_allowed(h, &shared.hosts));
    let origin_known = header_text(header::ORIGIN).is_none_or(|o| origin_allowed(o, &shared.hosts));
    if !host_known || !origin_known {
        return (
            StatusCode::FORBIDDEN,
            "unknown Host or Origin: list the name in aggregator.dashboard_hosts\n",
        )
            .into_response();
    }
    let Some(token) = &shared.token else {
        return next.run(request).await;
    };
    let is = |given: &str| same(given.as_bytes(), token.as_bytes());
    if request.uri().path() == "/" && query.token.as_deref().is_some_and(is) {
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        return (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, cookie),
                (header::LOCATION, "/".to_owned()),
            ],
        )
            .into_response();
    }
    let bearer = header_text(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
    let cookie = header_text(header::COOKIE).and_then(cookie_token);
    match bearer.or(cookie).is_some_and(is) {
        true => next.run(request).await,
        false => (
            StatusCode::UNAUTHORIZED,
            "a token is needed: open /?token=… once, or send Authorization: Bearer\n",
        )
            .into_response(),
    }
}

/// The dashboard's cookie in a `Cookie` header.
fn cookie_token(cookies: &str) -> Option<&str> {
    cookies
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE).then_some(value))
}

/// Whether a `Host` header names this dashboard: an IP address (v4, or v6
/// in brackets) or `localhost`, any port, or a listed name. A rebinding
/// attack needs a name of its own, which no one listed.
fn host_allowed(host: &str, listed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || listed.contains(&name)
}

/// Whether an `Origin` names this dashboard (a page of its own); `null`
/// (a sandboxed page, a file) never does.
fn origin_allowed(origin: &str, listed: &[String]) -> bool {
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    host.is_some_and(|host| host_allowed(host, listed))
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
    fn hosts_that_are_names_must_be_listed() {
        let listed = vec!["fleet.example".to_owned()];
        for host in [
            "127.0.0.1:9191",
            "10.1.2.3",
            "[::1]:9191",
            "localhost:1",
            "Fleet.Example:80",
        ] {
            assert!(host_allowed(host, &listed), "{host}");
        }
        for host in ["evil.example:9191", "127.0.0.1.evil.example", "[::1", ""] {
            assert!(!host_allowed(host, &listed), "{host}");
        }
        assert!(origin_allowed("http://127.0.0.1:9191", &listed));
        assert!(!origin_allowed("http://evil.example:9191", &listed));
        assert!(!origin_allowed("null", &listed));
    }

    #[test]
    fn the_token_comes_from_its_cookie() {
        assert_eq!(
            cookie_token("a=1; testfleet_dashboard=s3cret; b=2"),
            Some("s3cret")
        );
        assert_eq!(cookie_token("testfleet_dashboardx=1"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
