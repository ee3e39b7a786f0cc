//! The protocol vocabulary: which API a call speaks, which operation it is,
//! and which endpoint it hit — decided once per request, from its method and
//! path, and used everywhere after.
//!
//! A gateway in front of OpenAI-style servers and Anthropic has to answer
//! three questions about every request before it can do anything else:
//!
//! * **which endpoint** ([`Endpoint`]): the assembler capture folds the
//!   answer with, whether vLLM token data may be asked for;
//! * **which protocol** ([`Protocol`]): the error shape a failure is answered
//!   in (OpenAI's or Anthropic's), how an injected key is sent;
//! * **which operation** ([`Operation`]): the GenAI operation name on the
//!   record, the span and the metrics.
//!
//! The path may carry a session (`/sessions/{sid}/v1/...`); [`CallPath`]
//! splits it off so that the rest of the gateway sees the API path the
//! upstream will see. Every protocol or operation name the gateway writes
//! comes from here, through serde: no other module compares or spells them.

use http::Method;

crate::wire_enum! {
    /// The API family a call speaks.
    #[derive(Default)]
    pub enum Protocol {
        /// OpenAI's API and the servers that copy it (vLLM, llama.cpp, ...).
        #[default]
        Openai = "openai",
        /// Anthropic's Messages API.
        Anthropic = "anthropic",
    }
}

crate::wire_enum! {
    /// The GenAI operation of a call (`gen_ai.operation.name`).
    #[derive(Default)]
    pub enum Operation {
        /// Chat completions, Anthropic messages and the Responses API.
        #[default]
        Chat = "chat",
        /// Legacy text completions.
        TextCompletion = "text_completion",
        /// Embeddings.
        Embeddings = "embeddings",
        /// Anything else (model lists, token counts, files, batches).
        Other = "other",
    }
}

/// The API a call was made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `/v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `/v1/completions`.
    Completions,
    /// OpenAI `/v1/responses`.
    Responses,
    /// OpenAI `/v1/embeddings`.
    Embeddings,
    /// Anthropic `/v1/messages`.
    Messages,
    /// Any other OpenAI-style path: forwarded and recorded with raw bodies.
    Other,
    /// Any other Anthropic path (`/v1/messages/count_tokens`, batches).
    OtherAnthropic,
}

impl Endpoint {
    /// The endpoint of a request to `api_path` (which starts with `/v1`).
    /// Only a `POST` is a model call; any other method on a model path
    /// (listing stored completions, say) is `Other` of that protocol.
    pub fn of(method: &Method, api_path: &str) -> Endpoint {
        let path = api_path.trim_end_matches('/');
        let anthropic = path == "/v1/messages" || path.starts_with("/v1/messages/");
        if method != Method::POST {
            return if anthropic {
                Endpoint::OtherAnthropic
            } else {
                Endpoint::Other
            };
        }
        match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/responses" => Endpoint::Responses,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/messages" => Endpoint::Messages,
            _ if anthropic => Endpoint::OtherAnthropic,
            _ => Endpoint::Other,
        }
    }

    /// The API family.
    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Messages | Endpoint::OtherAnthropic => Protocol::Anthropic,
            _ => Protocol::Openai,
        }
    }

    /// The GenAI operation.
    pub fn operation(self) -> Operation {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages => Operation::Chat,
            Endpoint::Completions => Operation::TextCompletion,
            Endpoint::Embeddings => Operation::Embeddings,
            Endpoint::Other | Endpoint::OtherAnthropic => Operation::Other,
        }
    }

    /// Whether the endpoint generates tokens that vLLM can return ids and
    /// logprobs for (chat and text completions).
    pub fn has_token_data(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

/// A request path, split into the session it names (if any) and the API
/// path the upstream sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPath {
    /// The session of `/sessions/{sid}/v1/...`, percent-decoded.
    pub session: Option<String>,
    /// The path from `/v1` on.
    pub api_path: String,
}

impl CallPath {
    /// Splits `/sessions/{sid}/v1/...` into the session and the `/v1/...`
    /// path; any other path has no session and is its own API path. The
    /// session is everything up to the first `/v1` that ends the path or
    /// is followed by `/`, so it may hold slashes (`harbor/hello-world:0`),
    /// as rLLM's gateway reads it.
    pub fn parse(path: &str) -> CallPath {
        let Some(rest) = path.strip_prefix("/sessions/") else {
            return CallPath {
                session: None,
                api_path: path.to_string(),
            };
        };
        let (sid, api) = match api_start(rest) {
            Some(at) => rest.split_at(at),
            None => rest.find('/').map_or((rest, ""), |at| rest.split_at(at)),
        };
        let sid = percent_encoding::percent_decode_str(sid)
            .decode_utf8_lossy()
            .into_owned();
        let api_path = if api.starts_with('/') {
            api.to_string()
        } else {
            format!("/{api}")
        };
        CallPath {
            session: Some(sid),
            api_path,
        }
    }

    /// The protocol of a request to `path` with `method`, for answers given
    /// before the request is read (inbound auth).
    pub fn protocol_of(method: &Method, path: &str) -> Protocol {
        Endpoint::of(method, &CallPath::parse(path).api_path).protocol()
    }
}

/// Where the API path of `{sid}/v1/...` starts: the first `/v1` after a
/// non-empty session that ends the path or is followed by `/`.
pub fn api_start(rest: &str) -> Option<usize> {
    rest.match_indices("/v1").map(|(at, _)| at).find(|&at| {
        let after = &rest[at + 3..];
        at > 0 && (after.is_empty() || after.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_may_hold_slashes() {
        let path = CallPath::parse("/sessions/harbor/hello-world:0/v1/chat/completions");
        assert_eq!(path.session.as_deref(), Some("harbor/hello-world:0"));
        assert_eq!(path.api_path, "/v1/chat/completions");
        let path = CallPath::parse("/sessions/a/v1x/v1");
        assert_eq!(path.session.as_deref(), Some("a/v1x"));
        assert_eq!(path.api_path, "/v1");
    }

    #[test]
    fn session_paths_split() {
        assert_eq!(
            CallPath::parse("/sessions/ep%2017/v1/chat/completions"),
            CallPath {
                session: Some("ep 17".into()),
                api_path: "/v1/chat/completions".into()
            }
        );
        assert_eq!(CallPath::parse("/v1/models").session, None);
    }

    #[test]
    fn endpoints_follow_method_and_path() {
        assert_eq!(
            Endpoint::of(&Method::POST, "/v1/chat/completions/"),
            Endpoint::ChatCompletions
        );
        assert_eq!(
            Endpoint::of(&Method::POST, "/v1/messages/count_tokens"),
            Endpoint::OtherAnthropic
        );
        assert_eq!(Endpoint::of(&Method::GET, "/v1/models"), Endpoint::Other);
        assert_eq!(
            Endpoint::of(&Method::GET, "/v1/chat/completions"),
            Endpoint::Other
        );
    }

    #[test]
    fn the_protocol_of_a_session_path_is_its_api_path() {
        assert_eq!(
            CallPath::protocol_of(&Method::POST, "/sessions/s/v1/messages"),
            Protocol::Anthropic
        );
        assert_eq!(
            CallPath::protocol_of(&Method::POST, "/v1/chat/completions"),
            Protocol::Openai
        );
    }

    #[test]
    fn names_are_the_wire_names() {
        assert_eq!(
            serde_json::to_string(&Operation::TextCompletion).unwrap(),
            "\"text_completion\""
        );
        assert_eq!(Protocol::Anthropic.as_str(), "anthropic");
    }
}
