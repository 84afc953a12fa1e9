//! HTTP strictness the parser leaves to us (RFC 9112): a transfer coding other than
//! `chunked` is not understood (501), a request naming another host in its target, or with
//! more than one `Host`, is refused (400). Checked from the head, before any body is read.

use axum::http::{HeaderMap, Uri, header};

use crate::error::{ErrorKind, GatewayError};

/// Refuses a request head the gateway will not serve.
pub fn check(uri: &Uri, headers: &HeaderMap) -> Result<(), GatewayError> {
    for te in headers.get_all(header::TRANSFER_ENCODING) {
        let codings = String::from_utf8_lossy(te.as_bytes()).to_ascii_lowercase();
        if codings
            .split(',')
            .map(str::trim)
            .any(|c| !c.is_empty() && c != "chunked")
        {
            return Err(GatewayError::new(
                ErrorKind::NotImplemented,
                format!("transfer coding {codings:?} is not understood"),
            ));
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::new(
            ErrorKind::MalformedRequest,
            "more than one Host header",
        ));
    }
    // Absolute form (`POST http://other/...`): the target's host must be the Host header's.
    // An HTTP/2 request names its host in `:authority` and need not send Host at all.
    if let (Some(authority), Some(host)) = (uri.authority(), host) {
        let named = authority.as_str().to_ascii_lowercase();
        let host = String::from_utf8_lossy(host.as_bytes()).to_ascii_lowercase();
        if host != named {
            return Err(GatewayError::new(
                ErrorKind::MalformedRequest,
                format!("the request target names host {named:?}, not the Host header's"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, headers: &[(&str, &str)]) -> Result<(), GatewayError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check(&uri.parse().unwrap(), &h)
    }

    #[test]
    fn heads_the_parser_lets_through_are_refused() {
        assert!(
            head(
                "/v1/events",
                &[("host", "gw"), ("transfer-encoding", "chunked")]
            )
            .is_ok()
        );
        let not_understood = head(
            "/",
            &[("host", "gw"), ("transfer-encoding", "gzip, chunked")],
        );
        assert!(matches!(
            not_understood.unwrap_err().kind,
            ErrorKind::NotImplemented
        ));
        let two = head(
            "/",
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "br"),
            ],
        );
        assert!(matches!(two.unwrap_err().kind, ErrorKind::NotImplemented));
        let hosts = head("/", &[("host", "gw"), ("host", "other")]);
        assert!(matches!(
            hosts.unwrap_err().kind,
            ErrorKind::MalformedRequest
        ));
        let absolute = head("http://other.example/v1/events", &[("host", "gw")]);
        assert!(matches!(
            absolute.unwrap_err().kind,
            ErrorKind::MalformedRequest
        ));
        assert!(head("http://gw/v1/events", &[("host", "GW")]).is_ok());
        // HTTP/2: `:authority` without a Host header.
        assert!(head("https://gw:8443/v1/events", &[]).is_ok());
    }
}
