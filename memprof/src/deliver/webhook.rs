//! One webhook receiver: where alerts are POSTed (`MEMPROF_WEBHOOK_URL`). Its URL is a secret
//! (a Slack incoming webhook's path is its credential): only `redacted` — scheme, host and
//! port — is ever printed, and no error memprof logs carries the path or query.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::sink::Permanent;

/// The longest one POST may take, connection included: a receiver that hangs is retried later.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Webhook {
    uri: Uri,
    redacted: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// `uri` checked: http or https, a host, no user name or password (`user:pass@` would be
/// sent in the clear by some receivers and logged by others; put tokens in the path or query).
pub fn parse(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.trim().parse().map_err(|_| "not a URL".to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("not an http:// or https:// URL".into()),
    }
    let authority = uri.authority().ok_or("no host")?;
    if authority.as_str().contains('@') {
        return Err("carries a user name or password: put the token in the path or query".into());
    }
    Ok(uri)
}

/// A webhook's URL, checked (`parse`); printed redacted, `{:?}` included.
#[derive(Clone, PartialEq, Eq)]
pub struct Url(pub Uri);

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// What may be printed of a webhook URL: `https://hooks.slack.com/…`.
pub fn redact(uri: &Uri) -> String {
    let rest = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("/") | Some("") => "/",
        Some(_) => "/…",
    };
    format!(
        "{}://{}{rest}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", |a| a.as_str())
    )
}

impl Webhook {
    pub fn new(uri: Uri) -> Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .context("the system's CA certificates")?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            redacted: redact(&uri),
            uri,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// POSTs one JSON body. `id` goes along as `Idempotency-Key`: after a lost response the
    /// retry sends the same alert again, and a receiver can tell. A redirect or a 4xx other
    /// than 408 and 429 cannot succeed by retrying (`Permanent`); anything else is retried.
    pub async fn post(&self, id: &str, body: Vec<u8>) -> Result<()> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("memprof/", env!("CARGO_PKG_VERSION")),
            )
            .header("idempotency-key", id)
            .body(Full::new(Bytes::from(body)))
            .context("building the request")?;
        // The client's errors name the connection, never the path; still, each is reduced to
        // its kind here so a future library version cannot put the URL into a log line.
        let response = match tokio::time::timeout(TIMEOUT, self.client.request(request)).await {
            Err(_) => bail!(
                "{}: no answer within {} s",
                self.redacted,
                TIMEOUT.as_secs()
            ),
            Ok(Err(e)) => bail!("{}: {}", self.redacted, kind_of(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let what = format!("{} answered {status}", self.redacted);
        // A redirect means the URL is not the webhook's (a receiver answers where it is).
        let refused = status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429;
        if refused || status.is_redirection() {
            return Err(Permanent(what).into());
        }
        bail!(what)
    }
}

/// The connection error without anything it might quote.
fn kind_of(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        let slack = parse("https://hooks.slack.com/services/T0/B0/secret").unwrap();
        assert_eq!(redact(&slack), "https://hooks.slack.com/…");
        let local = parse(" http://127.0.0.1:9000 ").unwrap();
        assert_eq!(redact(&local), "http://127.0.0.1:9000/");
        let query = parse("http://alerts:8080/?token=secret").unwrap();
        assert!(!redact(&query).contains("secret"));
        assert!(parse("ftp://host/x").is_err());
        assert!(parse("hooks.slack.com/services/x").is_err());
        let auth = parse("https://user:secret@host/x").unwrap_err();
        assert!(!auth.contains("secret"), "{auth}");
    }
}
