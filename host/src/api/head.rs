//! A request's head as the handlers read it, whichever HTTP path parsed it: hyper's `http`
//! parts, or the HTTP/1.1 fast path's spans of its read buffer, read where they lie.
//!
//! Why not an `http::Request` for both: building one from the fast path's spans (a
//! `HeaderMap` that hashes every name, a shared `Bytes` per value, a parsed `Uri`) was about
//! an eighth of the node's user CPU on a GET, for the three or four lines a call reads.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The header lines of a request.
pub trait Headers: Sync {
    /// The raw value of the first line called `name`, whatever its case.
    fn raw(&self, name: &HeaderName) -> Option<&[u8]>;

    /// The value of the first line called `name` as text, if it is visible ASCII (as
    /// `HeaderValue::to_str` requires).
    fn text(&self, name: &HeaderName) -> Option<&str> {
        let value = self.raw(name)?;
        // Checked as `to_str` does: tab and printable ASCII only.
        value
            .iter()
            .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
            .then(|| std::str::from_utf8(value).expect("checked to be ASCII"))
    }
}

impl Headers for HeaderMap {
    fn raw(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }
}

/// What a handler reads of a request besides its body.
#[derive(Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    /// The path of the request-target, without its query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a dyn Headers,
}

impl<'a> Head<'a> {
    /// The head of a request hyper parsed.
    pub fn of(parts: &'a http::request::Parts) -> Self {
        Head {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        }
    }
}

/// `Connect-Timeout-Ms`, which `http` does not name.
pub static CONNECT_TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn text_is_only_visible_ascii_as_http_has_it() {
        let mut map = HeaderMap::new();
        map.insert(header::CONTENT_TYPE, HeaderValue::from_static("a/b\tc"));
        map.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xc3\xa9").unwrap(),
        );
        let headers: &dyn Headers = &map;
        assert_eq!(headers.text(&header::CONTENT_TYPE), Some("a/b\tc"));
        assert_eq!(
            headers.raw(&header::AUTHORIZATION),
            Some(&b"Bearer \xc3\xa9"[..])
        );
        assert_eq!(
            headers.text(&header::AUTHORIZATION),
            None,
            "as HeaderValue::to_str"
        );
        assert_eq!(headers.raw(&CONNECT_TIMEOUT_MS), None);
        assert_eq!(
            map.get(header::CONTENT_TYPE).unwrap().to_str().ok(),
            headers.text(&header::CONTENT_TYPE)
        );
    }
}
