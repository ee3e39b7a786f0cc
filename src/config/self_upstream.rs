//! An upstream that is the gateway itself: refused at start.
//!
//! Exporting `OPENAI_BASE_URL=http://127.0.0.1:9090/v1` for the SDK and then
//! starting the gateway in the same shell is a common mistake: the gateway
//! takes that variable as its upstream and forwards every call to itself,
//! each hop a new call, until the process runs out of file descriptors (one
//! such run made ~10 000 records and 785 MB in seconds). So the gateway
//! refuses to start when an upstream is its own listen address, with the key
//! that says so and where its value came from.
//!
//! "Its own address" is what a connection from this machine would reach: the
//! listen address itself and, for a loopback or wildcard listener, the other
//! spellings of the local host on the same port (`localhost`, `127.0.0.1`,
//! `0.0.0.0`, `[::1]`). Loops this cannot see — through another host name,
//! another gateway, a proxy — are stopped at request time by the hop check
//! (`forward::hop`, `508 Loop Detected`).

use super::error::{ConfigError, Origin};
use super::key::Key;
use super::raw::{Raw, Setting, Settings};
use super::routes::{RouteConfig, implicit_upstream};
use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Refuses the first upstream of `routes` that is `listen` itself.
pub(super) fn check(
    listen: SocketAddr,
    routes: &[RouteConfig],
    s: &Settings,
) -> Result<(), ConfigError> {
    for (i, route) in routes.iter().enumerate() {
        for (j, worker) in route.workers.iter().enumerate() {
            if reaches(&worker.url, listen) {
                let (key, origin) = whence(s, route, i, j);
                let message = format!(
                    "{} is this gateway's own listen address ({listen}): every call would be \
                     forwarded back to the gateway; point it at the model server",
                    worker.url
                );
                return Err(ConfigError::new(key, message, origin));
            }
        }
    }
    Ok(())
}

/// Whether a connection to `url` from this machine would reach a listener
/// on `listen`.
fn reaches(url: &Url, listen: SocketAddr) -> bool {
    if url.port_or_known_default() != Some(listen.port()) {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let listener = listen.ip();
    match host.parse::<IpAddr>() {
        Ok(ip) if ip == listener => true,
        // A wildcard listener is every local address.
        Ok(ip) if listener.is_unspecified() => ip.is_loopback() || ip.is_unspecified(),
        // Connecting to the wildcard address reaches the loopback one.
        Ok(IpAddr::V4(ip)) => ip.is_unspecified() && listener == IpAddr::V4(Ipv4Addr::LOCALHOST),
        Ok(IpAddr::V6(ip)) => ip.is_unspecified() && listener == IpAddr::V6(Ipv6Addr::LOCALHOST),
        Err(_) => is_localhost(host) && (listener.is_unspecified() || is_local_host_ip(listener)),
    }
}

/// `localhost` and the names under it (RFC 6761), which resolve to the
/// loopback addresses.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The addresses `localhost` resolves to.
fn is_local_host_ip(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
}

/// The key that set worker `j` of route `i`, and where it was set.
pub(super) fn whence(s: &Settings, route: &RouteConfig, i: usize, j: usize) -> (String, Origin) {
    let Some(name) = &route.name else {
        let upstream = implicit_upstream(s, route.protocol);
        let origin = upstream.items().get(j).unwrap_or(&upstream).origin.clone();
        return (Key::Upstream.name().to_string(), origin);
    };
    let label = format!("routes[{i}] ({name})");
    let raw = s.get(Key::Routes).and_then(|routes| routes.items().get(i));
    let field = |name: &str| match raw.map(|r| &r.raw) {
        Some(Raw::Table(fields)) => fields.get(name),
        _ => None,
    };
    if let Some(upstream) = field("upstream") {
        return (format!("{label}: upstream"), upstream.origin.clone());
    }
    let worker = field("workers").and_then(|pool| pool.items().get(j));
    let url = worker.and_then(|w| match &w.raw {
        Raw::Table(fields) => fields.get("url"),
        _ => Some(w),
    });
    let origin = url
        .or(raw)
        .map_or(Origin::Default, |s: &Setting| s.origin.clone());
    (format!("{label}: workers[{j}].url"), origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_spelling_of_the_local_host_on_the_same_port_is_the_gateway() {
        let loopback = at("127.0.0.1:9090");
        for own in [
            "http://127.0.0.1:9090/v1",
            "http://localhost:9090",
            "http://LOCALHOST.:9090/v1",
            "http://0.0.0.0:9090/v1",
        ] {
            assert!(reaches(&url(own), loopback), "{own}");
        }
        for other in [
            "http://127.0.0.1:9091/v1",
            "http://127.0.0.2:9090",
            "http://10.0.0.5:9090",
            "http://example.com:9090",
            "http://127.0.0.1/v1",
        ] {
            assert!(!reaches(&url(other), loopback), "{other}");
        }
        let wildcard = at("0.0.0.0:80");
        assert!(reaches(&url("http://127.0.0.1/v1"), wildcard));
        assert!(reaches(&url("http://[::1]:80"), wildcard));
        assert!(reaches(&url("http://localhost"), wildcard));
        assert!(
            !reaches(&url("https://localhost"), wildcard),
            "443 is not 80"
        );
        assert!(reaches(&url("http://[::]:9090"), at("[::1]:9090")));
        assert!(reaches(&url("http://10.0.0.5:9090"), at("10.0.0.5:9090")));
        assert!(!reaches(&url("http://localhost:9090"), at("10.0.0.5:9090")));
    }
}
