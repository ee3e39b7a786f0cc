//! Upstream base URLs: what the gateway accepts as a place to forward to.
//!
//! The same rules hold for the configuration and for workers added through
//! the admin API, so they live here with their own error type: http or
//! https, a host, no credentials (they would end up in logs and records),
//! no query or fragment (the gateway appends API paths), and no trailing
//! slash, so that `base + "/chat/completions"` has one slash.

use reqwest::Url;

/// Why a text is not an upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUrlError {
    /// Not a URL at all.
    #[error("'{text}' is not a URL ({reason})")]
    NotAUrl {
        /// The text given.
        text: String,
        /// What the URL parser said.
        reason: String,
    },
    /// Neither http nor https.
    #[error("'{0}' must start with http:// or https://")]
    Scheme(String),
    /// No host to connect to.
    #[error("'{0}' has no host")]
    NoHost(String),
    /// A user name or password in the URL (never echoed).
    #[error("credentials in an upstream URL are not supported")]
    Credentials,
    /// A query or fragment, which API paths cannot be appended to.
    #[error("'{0}' must not have a query or fragment")]
    QueryOrFragment(String),
}

/// Parses an upstream base URL: http or https, no credentials, no query;
/// the trailing slash is removed.
pub fn parse_upstream(text: &str) -> Result<Url, UpstreamUrlError> {
    let mut url = Url::parse(text.trim()).map_err(|e| UpstreamUrlError::NotAUrl {
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UpstreamUrlError::Scheme(text.to_string()));
    }
    if url.host_str().is_none() {
        return Err(UpstreamUrlError::NoHost(text.to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UpstreamUrlError::Credentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UpstreamUrlError::QueryOrFragment(text.to_string()));
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_lose_their_trailing_slash() {
        assert_eq!(
            parse_upstream("http://h:8000/v1/").unwrap().as_str(),
            "http://h:8000/v1"
        );
        assert!(parse_upstream("ftp://h").is_err());
        assert!(parse_upstream("http://user:pw@h/v1").is_err());
    }
}
