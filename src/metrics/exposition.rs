//! The text formats `/metrics` speaks, chosen by the scraper's `Accept`.
//!
//! Prometheus asks for OpenMetrics first and the older Prometheus text
//! format (`text/plain; version=0.0.4`) as a fallback; other tools
//! (`promtool check metrics`, exporters' test harnesses, `curl`) know only
//! the older one. `prometheus-client` encodes OpenMetrics; the two formats
//! differ in so little for the metrics tracegate has that the older one is
//! a rewrite of it, line by line ([`Format::convert`]):
//!
//! * a counter family is named with its `_total` suffix (OpenMetrics names
//!   the family without it, and only its samples carry it);
//! * there are no `# UNIT` lines (the unit is already the name's suffix)
//!   and no `# EOF` marker.
//!
//! Samples are the same in both: tracegate writes no exemplars, timestamps
//! or `_created` series, and its help texts hold no quotes (the one escape
//! the formats disagree on).

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text`), ending in `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain`).
    Prometheus,
}

/// How `Accept` values name the formats, by media type.
const MEDIA_TYPES: [(&str, Format); 3] = [
    ("application/openmetrics-text", Format::OpenMetrics),
    ("text/plain", Format::Prometheus),
    ("text/*", Format::Prometheus),
];

impl Format {
    /// The format for an `Accept` header: the acceptable one with the
    /// highest quality, OpenMetrics on a tie; OpenMetrics (what Prometheus
    /// asks for first) when the header is absent or names neither.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best: Option<(f32, Format)> = None;
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
            let Some(format) = MEDIA_TYPES
                .iter()
                .find(|(name, _)| *name == media_type)
                .map(|(_, format)| *format)
            else {
                continue;
            };
            let quality = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let better = match best {
                None => true,
                Some((q, f)) => quality > q || (quality == q && f != Format::OpenMetrics),
            };
            if quality > 0.0 && better {
                best = Some((quality, format));
            }
        }
        best.map_or(Format::OpenMetrics, |(_, format)| format)
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// `openmetrics`, an OpenMetrics exposition, converted to this format.
    pub fn convert(self, openmetrics: &str) -> String {
        if self == Format::OpenMetrics {
            return openmetrics.to_string();
        }
        let counters: Vec<&str> = openmetrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut text = String::with_capacity(openmetrics.len());
        for line in openmetrics.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            text.push_str(&counter_named_total(line, &counters));
            text.push('\n');
        }
        text
    }
}

/// `line` with a counter family's name given its `_total` suffix, when it
/// is the `# HELP` or `# TYPE` line of one of `counters`.
fn counter_named_total(line: &str, counters: &[&str]) -> String {
    for prefix in ["# HELP ", "# TYPE "] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                return format!("{prefix}{name}_total {tail}");
            }
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn the_accept_header_picks_the_format() {
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some(PROMETHEUS_2)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain; version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain;q=0.9")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0, */*")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/json")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn the_prometheus_format_names_counters_with_total_and_has_no_units_or_eof() {
        let openmetrics = "# HELP a_seconds Time.\n# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1.5\n# HELP b Things.\n# TYPE b counter\nb_total{x=\"y\"} 3\n# EOF\n";
        assert_eq!(
            Format::Prometheus.convert(openmetrics),
            "# HELP a_seconds Time.\n# TYPE a_seconds gauge\na_seconds 1.5\n# HELP b_total Things.\n# TYPE b_total counter\nb_total{x=\"y\"} 3\n"
        );
        assert_eq!(Format::OpenMetrics.convert(openmetrics), openmetrics);
    }
}
