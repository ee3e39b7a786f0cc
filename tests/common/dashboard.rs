//! The Grafana dashboards in `dashboards/`, read the way Grafana reads
//! them: their Prometheus queries, with the dashboard variables filled in
//! so they are plain PromQL.

use serde_json::{Value, json};
use std::path::Path;

/// A dashboard, parsed.
pub fn dashboard(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dashboards")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `expr` of a Prometheus target, and every query of a Prometheus
/// template variable, anywhere in a dashboard, as written.
pub fn prometheus_queries(board: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    collect_queries(board, &mut queries);
    queries
}

fn collect_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            if map.get("type") == Some(&json!("query"))
                && let Some(query) = map["query"]["query"].as_str()
            {
                out.push(query.to_string());
            }
            map.values().for_each(|v| collect_queries(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The values a dashboard's variables take.
pub struct Variables<'a> {
    /// `$model`: a regex (`.*` is Grafana's "All").
    pub model: &'a str,
    /// `$route`: a regex.
    pub route: &'a str,
    /// `$__rate_interval`: a PromQL duration.
    pub rate_interval: &'a str,
}

impl Variables<'_> {
    /// "All" of every variable.
    pub const ALL: Variables<'static> = Variables {
        model: ".*",
        route: ".*",
        rate_interval: "1m",
    };
}

/// `query` as the PromQL Grafana sends: variables filled in, and Grafana's
/// own `label_values(metric, label)` as the query that lists those values.
pub fn promql(query: &str, vars: &Variables<'_>) -> String {
    let query = query
        .replace("$__rate_interval", vars.rate_interval)
        .replace("$model", vars.model)
        .replace("$route", vars.route);
    match query
        .strip_prefix("label_values(")
        .and_then(|args| args.strip_suffix(')'))
        .and_then(|args| args.split_once(','))
    {
        Some((metric, label)) => format!("count by ({}) ({})", label.trim(), metric.trim()),
        None => query,
    }
}
