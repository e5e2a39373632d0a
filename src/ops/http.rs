//! Just enough HTTP/1.1 for the metrics endpoint: parse one request head from the front of a
//! connection's buffer, and write a complete response.
//!
//! Invariants the event loop relies on:
//! - [`parse`] never panics and looks at no more than [`MAX_REQUEST_BYTES`]: a head that is
//!   not complete by then is [`HttpError::TooLarge`], so a client cannot make us buffer more.
//! - Request bodies are never read. A request that announces one (`Content-Length` other than
//!   0, or any `Transfer-Encoding`) is answered and the connection is closed after the
//!   response, because the framing of whatever follows is unknown.
//! - Every response carries `Content-Length` and says `Connection: keep-alive` or `close`; the
//!   caller closes after a `close` response.

use std::ops::Range;

/// The largest request head accepted (request line and headers). Prometheus sends about 300
/// bytes; browsers and curl well under 2 KiB.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Headers parsed per request; more is [`HttpError::TooLarge`] (431).
const MAX_HEADERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Anything else: answered 405.
    Other,
}

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without its query string, as a range into the parsed buffer.
    pub path: Range<usize>,
    /// Whether the connection may stay open after the response.
    pub keep_alive: bool,
    /// Bytes of the buffer the head took.
    pub consumed: usize,
}

/// A request that cannot be served; the connection is closed after the error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400: not HTTP/1.x, or a GET/HEAD with a body.
    Malformed,
    /// 431: the head is longer than [`MAX_REQUEST_BYTES`] or has too many headers.
    TooLarge,
}

impl HttpError {
    pub fn status(self) -> Status {
        match self {
            HttpError::Malformed => Status::BAD_REQUEST,
            HttpError::TooLarge => Status::TOO_LARGE,
        }
    }
}

/// A response status: code and reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

impl Status {
    pub const OK: Status = Status(200, "OK");
    pub const BAD_REQUEST: Status = Status(400, "Bad Request");
    pub const NOT_FOUND: Status = Status(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
    pub const TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
    pub const UNAVAILABLE: Status = Status(503, "Service Unavailable");
}

/// Parses the request head at the front of `buf`: `Ok(None)` while it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let window = &buf[..buf.len().min(MAX_REQUEST_BYTES)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_BYTES => {
            return Err(HttpError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let version = req.version.unwrap_or(0);
    let mut close = false;
    let mut keep_alive_token = false;
    let mut has_body = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            has_body |= h.value.trim_ascii() != b"0";
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        }
    }
    if has_body && method != Method::Other {
        return Err(HttpError::Malformed);
    }
    // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told not to.
    let keep_alive = !has_body && !close && (version == 1 || keep_alive_token);
    let Some(target) = req.path else {
        return Err(HttpError::Malformed);
    };
    // `req.path` borrows from `window`, which starts at `buf`: its offset is the address
    // difference. Checked anyway, so a surprise cannot become an out-of-range slice later.
    let start = (target.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .filter(|s| s + target.len() <= buf.len())
        .ok_or(HttpError::Malformed)?;
    let path_len = target.find('?').unwrap_or(target.len());
    Ok(Some(Request {
        method,
        path: start..start + path_len,
        keep_alive,
        consumed,
    }))
}

/// Appends a whole response. `head_only` (a HEAD request) leaves the body out but keeps its
/// `Content-Length`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) {
    use std::io::Write as _;
    let Status(code, reason) = status;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(text: &str) -> Request {
        parse(text.as_bytes()).expect("valid").expect("complete")
    }

    fn path<'a>(text: &'a str, r: &Request) -> &'a str {
        &text[r.path.clone()]
    }

    #[test]
    fn prometheus_scrape() {
        let text =
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9479\r\nUser-Agent: Prometheus/2.42.0\r\n\
                    Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n\
                    X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\nGET /next";
        let r = req(text);
        assert_eq!(r.method, Method::Get);
        assert_eq!(path(text, &r), "/metrics");
        assert!(r.keep_alive);
        assert_eq!(&text[r.consumed..], "GET /next");
    }

    #[test]
    fn query_strings_versions_and_connection_tokens() {
        let text = "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n";
        let r = req(text);
        assert_eq!(
            (r.method, path(text, &r), r.keep_alive),
            (Method::Head, "/metrics", false)
        );
        assert!(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!req("GET / HTTP/1.1\r\nconnection: foo, close\r\n\r\n").keep_alive);
        assert!(req("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").keep_alive);
        let post = req("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(post.method, Method::Other);
        assert!(
            !post.keep_alive,
            "an unread body means the connection must close"
        );
    }

    #[test]
    fn incomplete_malformed_and_too_large() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00"),
            Err(HttpError::Malformed),
            "TLS hello"
        );
        assert_eq!(
            parse(b"GET /metrics SPDY/3\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(parse(b"PING\r\n"), Err(HttpError::Malformed));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        let mut long = b"GET /".to_vec();
        long.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(parse(&long), Err(HttpError::TooLarge));
        let many: String = std::iter::once("GET / HTTP/1.1\r\n".to_string())
            .chain((0..40).map(|i| format!("X-{i}: y\r\n")))
            .chain(std::iter::once("\r\n".to_string()))
            .collect();
        assert_eq!(parse(many.as_bytes()), Err(HttpError::TooLarge));
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            Status::OK,
            &[("Content-Type", "text/plain")],
            b"hi",
            false,
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\
             Content-Type: text/plain\r\n\r\nhi"
        );
        let mut out = Vec::new();
        write_response(&mut out, Status::NOT_FOUND, &[], b"gone", true, false);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("Connection: close\r\n\r\n"));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(r)) = parse(&buf) {
                prop_assert!(r.consumed <= buf.len());
                prop_assert!(r.path.end <= buf.len());
            }
        }
    }
}
