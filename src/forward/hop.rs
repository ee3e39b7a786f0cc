//! Loop detection: every request the gateway forwards names it, and a
//! request that already names it is refused.
//!
//! A gateway whose upstream leads back to itself — directly (caught at start
//! by `config`), through another host name, through a second gateway or a
//! proxy — would forward each call to itself again, every hop a new call and
//! a new record, until it runs out of file descriptors. So each gateway has
//! an instance id, drawn at random when it starts, and appends
//! `Via: <version> tracegate-<id>` (RFC 9110 §7.6.3) to what it sends
//! upstream, after every other header rule (`headers`), so that neither a
//! caller nor a route can remove or replace it. A request whose `Via`
//! already holds this gateway's entry has come round: it is refused with
//! `508 Loop Detected` (`loop_detected`) and recorded like any failed call,
//! once; the hops before it see the 508 come back and relay it. Other
//! gateways' entries pass through, so chaining gateways on purpose works.

use crate::error::GatewayError;
use crate::headers::VIA;
use crate::record::ErrorKind;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Version};

/// This gateway's name in `Via`: `tracegate-<instance id>`.
pub struct Hop {
    received_by: String,
}

/// The prefix of [`Hop`]'s name before the instance id.
const NAME_PREFIX: &str = "tracegate-";

impl Hop {
    /// A hop with a fresh instance id.
    pub fn new() -> Hop {
        Hop::named(&Hop::draw_instance_id())
    }

    /// A hop named for `instance` (the id the store tags this replica's
    /// rows and connections with).
    pub fn named(instance: &str) -> Hop {
        let received_by = format!("{NAME_PREFIX}{instance}");
        tracing::debug!(instance = %received_by, "hop name for loop detection");
        Hop { received_by }
    }

    /// A fresh instance id: 12 random hex digits.
    pub fn draw_instance_id() -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        id[..12].to_string()
    }

    /// This gateway's instance id: 12 hex digits drawn when it started,
    /// which `/health` reports, so that replicas behind a balancer can be
    /// told apart.
    pub fn instance_id(&self) -> &str {
        &self.received_by[NAME_PREFIX.len()..]
    }

    /// Refuses a request that already passed through this gateway;
    /// otherwise appends this gateway to the `Via` of `outbound`, the
    /// headers going upstream.
    pub fn pass(&self, incoming: &Parts, outbound: &mut HeaderMap) -> Result<(), GatewayError> {
        if self.is_named_in(&incoming.headers) {
            return Err(GatewayError::new(
                ErrorKind::LoopDetected,
                format!(
                    "this request already passed through this gateway ({}): its upstream leads \
                     back to it; check the upstream URLs",
                    self.received_by
                ),
            ));
        }
        let entry = format!(
            "{} {}",
            protocol_version(incoming.version),
            self.received_by
        );
        if let Ok(value) = HeaderValue::from_str(&entry) {
            outbound.append(VIA, value);
        }
        Ok(())
    }

    /// Whether any `Via` entry of `headers` was received by this gateway.
    fn is_named_in(&self, headers: &HeaderMap) -> bool {
        headers.get_all(VIA).iter().any(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split(',')
                .filter_map(|entry| entry.split_whitespace().nth(1))
                .any(|received_by| received_by == self.received_by)
        })
    }
}

impl Default for Hop {
    fn default() -> Self {
        Hop::new()
    }
}

/// The `received-protocol` of a `Via` entry for a request of `version`.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(via: &[&str]) -> Parts {
        let mut request = http::Request::builder().uri("/v1/chat/completions");
        for value in via {
            request = request.header(VIA, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_is_stamped_and_refused_when_it_comes_back() {
        let hop = Hop::new();
        let mut outbound = HeaderMap::new();
        let first = parts(&["1.1 proxy-a (squid)"]);
        outbound.insert(VIA, first.headers[VIA].clone());
        hop.pass(&first, &mut outbound).unwrap();
        let via: Vec<_> = outbound.get_all(VIA).iter().collect();
        assert_eq!(via[0], "1.1 proxy-a (squid)");
        assert_eq!(via[1], &format!("1.1 {}", hop.received_by));
        let joined = format!("1.0 other, 1.1 {}", hop.received_by);
        let back = parts(&["2 somewhere", &joined]);
        let e = hop.pass(&back, &mut HeaderMap::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LoopDetected);
        assert_eq!(e.status(), http::StatusCode::LOOP_DETECTED);
    }

    #[test]
    fn other_gateways_pass() {
        let (a, b) = (Hop::new(), Hop::new());
        let mut outbound = HeaderMap::new();
        a.pass(&parts(&[]), &mut outbound).unwrap();
        let mut request = parts(&[]);
        request.headers = outbound;
        b.pass(&request, &mut HeaderMap::new()).unwrap();
    }
}
