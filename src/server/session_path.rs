//! Session ids with slashes in them, in paths that do not escape them.
//!
//! Harnesses name sessions after namespaced tasks (`harbor/hello-world:0`)
//! and rLLM's client puts the id into the path as it is:
//! `/sessions/harbor/hello-world:0/v1/chat/completions`. The router matches
//! one segment per `{session_id}`, so before routing the id's slashes are
//! escaped (`%2F`), which the path extractors and [`CallPath`] decode back.
//! The id is what rLLM's gateway takes: everything up to the first `/v1`
//! that ends the path or is followed by `/`; else, for `GET`, up to a final
//! `/traces` (or tracegate's `/trajectory` and `/spans`); else the rest of the path (`GET`/`DELETE /sessions/{sid}`).
//! The path the client called is kept ([`OriginalPath`]) for the record.
//!
//! [`CallPath`]: crate::protocol::CallPath

use axum::extract::Request;
use http::{Method, Uri};

/// The path as the client sent it, before its session id was escaped.
#[derive(Debug, Clone)]
pub struct OriginalPath(pub String);

/// Escapes the slashes of the session id in a `/sessions/...` path.
pub fn escape(mut request: Request) -> Request {
    let Some(path) = escaped(request.method(), request.uri().path()) else {
        return request;
    };
    let uri = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return request;
    };
    let original = OriginalPath(request.uri().path().to_string());
    *request.uri_mut() = uri;
    request.extensions_mut().insert(original);
    request
}

/// The path with the session id's slashes escaped, when it has any.
fn escaped(method: &Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/sessions/")?;
    let (sid, tail) = match crate::protocol::api_start(rest) {
        Some(at) => rest.split_at(at),
        None => {
            let suffix = ["/traces", "/trajectory", "/spans"]
                .into_iter()
                .find_map(|tail| Some((rest.strip_suffix(tail)?, tail)));
            match suffix {
                Some((sid, tail)) if method == Method::GET && !sid.is_empty() => (sid, tail),
                _ => (rest, ""),
            }
        }
    };
    sid.contains('/')
        .then(|| format!("/sessions/{}{tail}", sid.replace('/', "%2F")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slashes_inside_the_id_are_escaped() {
        let get = &Method::GET;
        let cases = [
            (
                "/sessions/a/b/v1/chat/completions",
                Some("/sessions/a%2Fb/v1/chat/completions"),
            ),
            ("/sessions/a/b/traces", Some("/sessions/a%2Fb/traces")),
            ("/sessions/a/b", Some("/sessions/a%2Fb")),
            ("/sessions/a/v1/chat/completions", None),
            ("/sessions/a/traces", None),
            ("/sessions/batch_delete", None),
            ("/v1/models", None),
        ];
        for (path, want) in cases {
            assert_eq!(escaped(get, path).as_deref(), want, "{path}");
        }
        assert_eq!(
            escaped(&Method::DELETE, "/sessions/a/traces").as_deref(),
            Some("/sessions/a%2Ftraces")
        );
    }
}
