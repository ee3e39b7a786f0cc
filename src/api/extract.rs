//! The API's typed edges: a query string or a JSON body becomes a
//! `Deserialize` request type, or a 400 in the OpenAI error shape.
//!
//! axum's own `Query` and `Json` answer a bad request with a plain-text body
//! (and `Json` insists on `Content-Type: application/json`, which rLLM's and
//! curl's callers do not always send). These wrap the same deserialisation
//! and answer [`GatewayError::bad_request`] instead, with the message of the
//! field that failed (`since: 'yesterday' is not a time: use an RFC 3339
//! time ...`). The field parsers that keep those messages are in `params`.
//!
//! [`Json`] is also the API's response body: any `Serialize` answer.

use crate::error::GatewayError;
use crate::record::ErrorKind;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A query string, deserialised into `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, GatewayError> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            // The source is the field's own message, after its name.
            Err(rejection) => Err(GatewayError::bad_request(
                std::error::Error::source(&rejection)
                    .map_or_else(|| rejection.body_text(), ToString::to_string),
            )),
        }
    }
}

/// A JSON object body deserialised into `T` (whatever its `Content-Type`),
/// or a JSON response body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &S) -> Result<Self, GatewayError> {
        let body = body(request, state).await?;
        object(&body).map(Json)
    }
}

/// `Option<Json<T>>`: `None` for an empty (or all-whitespace) body.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for Json<T> {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, GatewayError> {
        let body = body(request, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        object(&body).map(|value| Some(Json(value)))
    }
}

/// The whole body; a 413 beyond the API's body limit.
async fn body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, GatewayError> {
    Bytes::from_request(request, state).await.map_err(|e| {
        let kind = if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            ErrorKind::RequestTooLarge
        } else {
            ErrorKind::BadRequest
        };
        GatewayError::new(kind, e.body_text())
    })
}

/// Parses `body` as a JSON object, then as `T`.
fn object<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let not_an_object =
        |why: String| GatewayError::bad_request(format!("the body must be a JSON object{why}"));
    let value: Value = serde_json::from_slice(body).map_err(|e| not_an_object(format!(": {e}")))?;
    if !value.is_object() {
        return Err(not_an_object(String::new()));
    }
    // From a `Value`, an error is the field's own message, without a
    // position.
    T::deserialize(value).map_err(|e| GatewayError::bad_request(e.to_string()))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::params;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    struct Window {
        #[serde(default, deserialize_with = "params::time")]
        since: Option<f64>,
        #[serde(default, deserialize_with = "params::body_limit")]
        limit: Option<usize>,
    }

    async fn query(uri: &str) -> Result<Window, GatewayError> {
        let request = Request::builder().uri(uri).body(()).unwrap();
        let (mut parts, ()) = request.into_parts();
        Query::<Window>::from_request_parts(&mut parts, &())
            .await
            .map(|Query(w)| w)
    }

    async fn body(text: &str) -> Result<Option<Json<Window>>, GatewayError> {
        let request = Request::builder()
            .body(axum::body::Body::from(text.to_string()))
            .unwrap();
        <Json<Window> as OptionalFromRequest<()>>::from_request(request, &()).await
    }

    #[tokio::test]
    async fn a_bad_query_field_is_a_400_naming_the_field() {
        assert_eq!(query("/x?since=12.5").await.unwrap().since, Some(12.5));
        let e = query("/x?since=yesterday").await.unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert!(
            e.message
                .starts_with("since: 'yesterday' is not a time: use an RFC 3339 time"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_body_must_be_a_json_object_of_usable_fields() {
        assert!(body("  \n").await.unwrap().is_none());
        let Json(w) = body(r#"{"limit": 3}"#).await.unwrap().unwrap();
        assert_eq!(w.limit, Some(3));
        for (text, message) in [
            ("{not json", "the body must be a JSON object: "),
            ("[1]", "the body must be a JSON object"),
            (r#"{"limit": -1}"#, "limit must be a non-negative integer"),
        ] {
            let e = body(text).await.unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{text}");
            assert!(e.message.starts_with(message), "{text}: {}", e.message);
        }
    }
}
