//! The fleet's package caches' hits and misses over a run's time, asked of
//! the caches themselves (their stats endpoint, `images/cache/stats.py`:
//! `GET /stats?from_ms=&to_ms=` answering JSON). A cache that cannot be
//! asked costs the report its figures, never the run: the finishing task
//! asks, bounded in time and size, and says why it could not.

use std::time::Duration;

use serde::Deserialize;
use testfleet_types::limits::{MAX_REASON_BYTES, MAX_TEST_ID_BYTES};
use testfleet_types::messages::{CacheCounters, CacheUse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a cache has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// An answer longer than this is no stats answer.
const MAX_ANSWER_BYTES: u64 = 64 << 10;

/// A cache as `aggregator.caches` names it: `name=http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEndpoint {
    pub name: String,
    /// `host:port` of its stats.
    pub address: String,
}

impl CacheEndpoint {
    /// `name=http://host:port`, or what is wrong with it.
    pub fn parse(text: &str) -> Result<CacheEndpoint, String> {
        let (name, url) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not name=http://host:port"))?;
        let address = url
            .trim()
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| a.contains(':') && !a.contains('/'))
            .ok_or_else(|| format!("{url:?} is not http://host:port"))?;
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_TEST_ID_BYTES {
            return Err(format!(
                "{text:?} names no cache, or one longer than {MAX_TEST_ID_BYTES} bytes"
            ));
        }
        Ok(CacheEndpoint {
            name: name.to_owned(),
            address: address.to_owned(),
        })
    }
}

/// What a cache's stats endpoint answers.
#[derive(Debug, Deserialize)]
struct Answer {
    package_hits: u64,
    package_misses: u64,
    index_requests: u64,
    bytes_served: u64,
    bytes_fetched: u64,
}

/// Every cache's counts between `from_ms` and `to_ms`, those that answered;
/// why the others did not in `error`.
pub async fn read_all(caches: &[CacheEndpoint], from_ms: u64, to_ms: u64) -> CacheUse {
    let mut read = Vec::new();
    let mut errors = Vec::new();
    for cache in caches {
        match tokio::time::timeout(ASK_TIMEOUT, ask(cache, from_ms, to_ms)).await {
            Ok(Ok(counters)) => read.push(counters),
            Ok(Err(error)) => errors.push(format!("{}: {error}", cache.name)),
            Err(_) => errors.push(format!("{}: no answer in {ASK_TIMEOUT:?}", cache.name)),
        }
    }
    CacheUse {
        caches: read,
        error: (!errors.is_empty()).then(|| {
            let mut error = errors.join("; ");
            let end = (0..=MAX_REASON_BYTES.min(error.len()))
                .rev()
                .find(|&i| error.is_char_boundary(i))
                .unwrap_or(0);
            error.truncate(end);
            error
        }),
    }
}

async fn ask(cache: &CacheEndpoint, from_ms: u64, to_ms: u64) -> Result<CacheCounters, String> {
    let mut stream = TcpStream::connect(&cache.address)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", cache.address))?;
    let request = format!(
        "GET /stats?from_ms={from_ms}&to_ms={to_ms} HTTP/1.0\r\nHost: {}\r\n\r\n",
        cache.address
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    counters(&cache.name, &answer)
}

/// The counts an HTTP answer carries, or why it carries none.
fn counters(name: &str, answer: &[u8]) -> Result<CacheCounters, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("an answer without a body")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("answered {status}"));
    }
    let answer: Answer = serde_json::from_str(body).map_err(|e| format!("answered {e}"))?;
    Ok(CacheCounters {
        name: name.to_owned(),
        package_hits: answer.package_hits,
        package_misses: answer.package_misses,
        index_requests: answer.index_requests,
        bytes_served: answer.bytes_served,
        bytes_fetched: answer.bytes_fetched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_named_with_its_stats_address() {
        assert_eq!(
            CacheEndpoint::parse("apt=http://127.0.0.1:3143/").unwrap(),
            CacheEndpoint {
                name: "apt".into(),
                address: "127.0.0.1:3143".into()
            }
        );
        for bad in [
            "apt",
            "apt=https://x:1",
            "apt=http://x",
            "=http://x:1",
            "a=http://x:1/stats",
        ] {
            assert!(CacheEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_answer_is_read_or_said_wrong() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"name\": \"apt\", \"kind\": \"apt\", \"package_hits\": 2, \"package_misses\": 4, \"index_requests\": 8, \"bytes_served\": 10, \"bytes_fetched\": 20}";
        let read = counters("apt", ok).unwrap();
        assert_eq!((read.package_hits, read.package_misses), (2, 4));
        assert!(counters("apt", b"HTTP/1.0 404 Not Found\r\n\r\n")
            .unwrap_err()
            .contains("404"));
        assert!(counters("apt", b"HTTP/1.0 200 OK\r\n\r\n{\"package_hits\": -1}").is_err());
    }

    #[tokio::test]
    async fn a_cache_that_is_not_there_costs_its_figures_only() {
        let gone = CacheEndpoint::parse("apt=http://127.0.0.1:1").unwrap();
        let used = read_all(&[gone], 0, 1).await;
        assert!(used.caches.is_empty());
        assert!(used.error.unwrap().starts_with("apt: cannot connect"));
    }
}
