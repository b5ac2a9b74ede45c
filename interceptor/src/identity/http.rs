//! The one HTTP client all issuers share, and a bounded JSON GET: an issuer (or whatever
//! answers in its place) must not be able to make us buffer an unbounded response.

use std::time::Duration;

use reqwest::{header::ACCEPT, redirect::Policy, Client};
use serde_json::Value;

use super::error::FetchError;

/// Key sets and discovery documents are a few KiB; this leaves room for big key sets.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;
const MAX_REDIRECTS: usize = 5;

/// Follows a few redirects, never from https to plain http (which would let anyone on the
/// path substitute keys).
fn redirect(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let downgrade = attempt.url().scheme() != "https"
        && attempt.previous().iter().any(|url| url.scheme() == "https");
    if downgrade {
        attempt.error("redirect from https to plain http")
    } else if attempt.previous().len() > MAX_REDIRECTS {
        attempt.error("too many redirects")
    } else {
        attempt.follow()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Client,
}

impl HttpClient {
    pub(crate) fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(Policy::custom(redirect))
            .user_agent(concat!("interceptor/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// GETs `url` and parses the body as JSON; non-2xx answers and bodies over
    /// [`MAX_BODY_BYTES`] are errors.
    pub(crate) async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let mut response = self
            .client
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::request(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err(FetchError::TooLarge(MAX_BODY_BYTES));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::request(&e))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge(MAX_BODY_BYTES));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(FetchError::Json)
    }
}
