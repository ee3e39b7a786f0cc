//! The keys of the configuration, as one table.
//!
//! Every setting has one name, the one the file uses (`read_timeout`,
//! `store.batch_max`); flags, environment variables and error messages map
//! to it. The layers are maps from [`Key`] to a raw value, so merging them is
//! one `extend` per layer and an unknown key is refused with the list of the
//! keys that exist, derived from this table. Routes have their own tables of
//! fields (see `routes.rs`), built with the same [`keys!`] macro.

/// Declares a fixed set of keys: the enum, `ALL`, the spelling of each
/// (`name`) and the lookup by spelling (`named`).
macro_rules! keys {
    ($(#[$meta:meta])* $vis:vis enum $enum:ident { $($variant:ident => $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $enum {
            $(#[doc = concat!("`", $name, "`")] $variant,)*
        }

        impl $enum {
            /// Every key, in the order the documentation lists them.
            $vis const ALL: &'static [$enum] = &[$($enum::$variant,)*];

            /// The key as written.
            $vis fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name,)*
                }
            }

            /// The key written `name`, if there is one.
            $vis fn named(name: &str) -> Option<$enum> {
                Self::ALL.iter().copied().find(|key| key.name() == name)
            }
        }
    };
}
pub(super) use keys;

keys! {
    /// Every key the gateway reads, as the file spells it; the keys of a
    /// section (`[store]`) are `section.key`.
    pub(super) enum Key {
        Listen => "listen",
        Db => "db",
        Upstream => "upstream",
        MaxBodyBytes => "max_body_bytes",
        ConnectTimeout => "connect_timeout",
        PoolMaxIdle => "pool_max_idle",
        PoolIdleTimeout => "pool_idle_timeout",
        ReadTimeout => "read_timeout",
        RequestTimeout => "request_timeout",
        FirstByteTimeout => "first_byte_timeout",
        IdleTimeout => "idle_timeout",
        ShutdownGrace => "shutdown_grace",
        LogFormat => "log_format",
        Kind => "kind",
        InjectLogprobs => "inject_logprobs",
        InjectReturnTokenIds => "inject_return_token_ids",
        StripVllmFields => "strip_vllm_fields",
        SessionAffinityHeaders => "session_affinity_headers",
        RawBodies => "raw_bodies",
        PropagateTraceparent => "propagate_traceparent",
        UpstreamAuth => "upstream_auth",
        HealthCheckInterval => "health_check_interval",
        FinishOnClientClose => "finish_on_client_close",
        HeartbeatAfter => "heartbeat_after",
        HeartbeatEvery => "heartbeat_every",
        StreamKeepalive => "stream_keepalive",
        Retry => "retry",
        OtlpGrpcListen => "otlp.grpc_listen",
        OtlpMaxSpansPerRequest => "otlp.max_spans_per_request",
        OtlpMaxAttributesPerSpan => "otlp.max_attributes_per_span",
        OtlpMaxAttributeBytes => "otlp.max_attribute_bytes",
        ServerHeaderReadTimeout => "server.header_read_timeout",
        ServerIdleTimeout => "server.idle_timeout",
        ServerMaxHeaders => "server.max_headers",
        ServerMaxHeaderBytes => "server.max_header_bytes",
        ServerMaxConnections => "server.max_connections",
        Prices => "prices",
        Routes => "routes",
        AuthTokens => "auth.tokens",
        AuthHeader => "auth.header",
        StoreMaxSize => "store.max_size",
        StoreSpillFile => "store.spill_file",
        StoreBacklogMemory => "store.backlog_memory",
        StoreFlushTimeout => "store.flush_timeout",
        StoreQueueCapacity => "store.queue_capacity",
        StoreBatchMax => "store.batch_max",
        StoreBusyTimeout => "store.busy_timeout",
        CaptureStoreEmbeddings => "capture.store_embeddings",
        ExportEndpoint => "export.endpoint",
        ExportProtocol => "export.protocol",
        ExportHeaders => "export.headers",
        ExportTimeout => "export.timeout",
        ExportServiceName => "export.service_name",
        ExportIncludeContent => "export.include_content",
        ExportBatchSize => "export.batch_size",
        ExportSelfTracing => "export.self_tracing",
    }
}

impl Key {
    /// The names a table of the file may hold: for the document (`None`),
    /// the top-level keys and the section names; for a section, its keys.
    pub(super) fn names_in(section: Option<&str>) -> Vec<&'static str> {
        let mut names = Vec::new();
        for key in Key::ALL {
            let name = match (key.name().split_once('.'), section) {
                (None, None) => key.name(),
                (Some((table, _)), None) => table,
                (Some((table, name)), Some(wanted)) if table == wanted => name,
                _ => continue,
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Whether `name` is a section of the file (`auth`, `store`, ...).
    pub(super) fn is_section(name: &str) -> bool {
        !Key::names_in(Some(name)).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_list_their_keys_and_sections() {
        let top = Key::names_in(None);
        assert!(top.starts_with(&["listen", "db", "upstream"]));
        assert!(top.ends_with(&["routes", "auth", "store", "capture", "export"]));
        assert_eq!(
            Key::names_in(Some("store")),
            [
                "max_size",
                "spill_file",
                "backlog_memory",
                "flush_timeout",
                "queue_capacity",
                "batch_max",
                "busy_timeout"
            ]
        );
        assert!(Key::is_section("export") && !Key::is_section("listen"));
        assert_eq!(Key::named("auth.header"), Some(Key::AuthHeader));
    }
}
