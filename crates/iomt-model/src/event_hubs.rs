//! Azure Event Hubs connection strings, as the portal gives them
//! (`Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…`).
//!
//! # Why here
//! The service's Kafka clients (source, sink, scale-out roles) and the simulator's Kafka target
//! both take one, and must agree on what a valid one is; both depend on this crate.
//!
//! # What must hold
//! * Keys are matched case-insensitively and whitespace around keys and values is ignored, as
//!   the Event Hubs SDKs do.
//! * The host is the endpoint's authority without scheme, path or port: Event Hubs' Kafka
//!   endpoint is always that host on [`KAFKA_PORT`].

/// The port of Event Hubs' Kafka endpoint.
pub const KAFKA_PORT: u16 = 9093;

/// The namespace host of `connection_string`'s `Endpoint` (e.g.
/// `contoso.servicebus.windows.net` from `Endpoint=sb://contoso.servicebus.windows.net/`), or
/// `None` when it has no endpoint with a host.
pub fn namespace_host(connection_string: &str) -> Option<&str> {
    let endpoint = connection_string
        .split(';')
        .filter_map(|part| part.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("endpoint"))
        .map(|(_, value)| value.trim())?;
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = authority.split(':').next().unwrap_or_default();
    (!host.is_empty()).then_some(host)
}

/// The bootstrap server of Event Hubs' Kafka endpoint for `connection_string`
/// (`<namespace host>:9093`), or `None` as [`namespace_host`].
pub fn kafka_bootstrap(connection_string: &str) -> Option<String> {
    namespace_host(connection_string).map(|host| format!("{host}:{KAFKA_PORT}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_connection_strings() {
        let portal = "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc=";
        assert_eq!(
            namespace_host(portal),
            Some("contoso.servicebus.windows.net")
        );
        assert_eq!(
            kafka_bootstrap(portal).as_deref(),
            Some("contoso.servicebus.windows.net:9093")
        );
        // Case, spaces, no trailing slash, a port or a path, an entity path after it.
        assert_eq!(
            namespace_host(" endpoint = sb://x.servicebus.windows.net ;EntityPath=hub"),
            Some("x.servicebus.windows.net")
        );
        assert_eq!(
            namespace_host("Endpoint=sb://x.example:5671/path;SharedAccessKey=k"),
            Some("x.example")
        );
        for missing in [
            "",
            "SharedAccessKeyName=a;SharedAccessKey=b",
            "Endpoint=;SharedAccessKey=b",
            "Endpoint=sb://;SharedAccessKey=b",
            "Endpoint=sb:///path",
        ] {
            assert_eq!(namespace_host(missing), None, "{missing}");
        }
    }
}
