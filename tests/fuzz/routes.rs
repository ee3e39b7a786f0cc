//! The route matcher and the path split: any model, any path.

use crate::check;
use http::Method;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use reqwest::Url;
use tracegate::config::RouteConfig;
use tracegate::protocol::{CallPath, Endpoint};
use tracegate::route::{self, Router};

/// Routes with lower-case prefixes (config lower-cases them), `*`, and
/// maybe a default.
fn routes() -> impl Strategy<Value = Vec<RouteConfig>> {
    let prefix = prop_oneof![
        4 => "[a-z0-9.:/-]{0,6}",
        1 => Just("*".to_string()),
        1 => "\\PC{0,4}".prop_map(|p| p.to_lowercase()),
    ];
    vec((prefix, any::<bool>()), 0..6).prop_map(|routes| {
        let url = Url::parse("http://127.0.0.1:1/v1").unwrap();
        routes
            .into_iter()
            .enumerate()
            .map(|(i, (prefix, is_default))| RouteConfig {
                name: Some(format!("r{i}")),
                model_prefix: Some(prefix),
                is_default,
                ..RouteConfig::to(url.clone())
            })
            .collect()
    })
}

/// A model name: close to the prefixes, in any case, or anything.
fn model() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof!["[a-zA-Z0-9.:/-]{0,10}", "\\PC{0,10}"])
}

/// The route the matcher should pick: the first whose prefix starts the
/// model (ignoring ASCII case), else the default.
fn expected(routes: &[RouteConfig], model: Option<&str>) -> Option<usize> {
    let matched = model.and_then(|model| {
        let model = model.to_ascii_lowercase();
        routes.iter().position(|r| match r.model_prefix.as_deref() {
            Some("*") | None => true,
            Some(prefix) => model.starts_with(prefix),
        })
    });
    matched.or_else(|| routes.iter().position(|r| r.is_default))
}

#[test]
fn the_route_matcher_picks_the_first_match_in_any_case() {
    check("route_for", (routes(), model()), |(routes, model)| {
        let router = Router::new(routes.clone());
        let label = |i: usize| routes[i].name.clone();
        let picked = router.route_for(model.as_deref()).ok();
        let picked = picked.map(|r| r.config.name.clone());
        prop_assert_eq!(
            picked.clone(),
            expected(&routes, model.as_deref()).map(label)
        );
        let upper = model.as_deref().map(str::to_ascii_uppercase);
        let again = router.route_for(upper.as_deref()).ok();
        prop_assert_eq!(again.map(|r| r.config.name.clone()), picked);
        Ok(())
    });
}

#[test]
fn any_path_splits_and_maps_to_an_upstream_url() {
    let base = prop_oneof![
        Just("http://127.0.0.1:8000"),
        Just("http://127.0.0.1:8000/v1"),
        Just("http://127.0.0.1:8000/v1/"),
        Just("https://example.invalid/openai/v1"),
        Just("http://[::1]:8000/a/b/"),
    ];
    let path = prop_oneof![
        "/sessions/[^/?#]{0,8}/v1/[a-z/]{0,16}",
        "/v1/[a-z/.%]{0,16}",
        "/\\PC{0,24}",
    ];
    let method = select(vec![Method::GET, Method::POST, Method::DELETE, Method::PUT]);
    let query = proptest::option::of("[ -~]{0,12}");
    check(
        "call_path_and_target_url",
        (base, path, method, query),
        |(base, path, method, query)| {
            let call = CallPath::parse(&path);
            prop_assert_eq!(call.session.is_some(), path.starts_with("/sessions/"));
            let endpoint = Endpoint::of(&method, &call.api_path);
            endpoint.protocol();
            CallPath::protocol_of(&method, &path);
            let base = Url::parse(base).unwrap();
            let url = route::target_url(&base, &call.api_path, query.as_deref());
            prop_assert_eq!(url.host_str(), base.host_str());
            Ok(())
        },
    );
}
