//! Just enough HTTP/1.1 for `/metrics`, `/health` and `/ready`, as plain functions over bytes
//! (the socket code is in `serve` and `recovering`): find the end of a request's head, read its
//! request line, and write a whole response with `Content-Length` and `Connection: close`.
//!
//! One request per connection: a scraper or a probe sends a GET and reads the answer. Anything
//! else gets the status HTTP says: 400 for a head that is not HTTP, 405 for a method other than
//! GET or HEAD, 404 for another path, 431 for a head longer than `HEAD_BYTES_MAX`.

/// The longest request head read (`limits`); a longer one is answered 431 and closed.
pub use crate::limits::METRICS_HEAD_BYTES_MAX as HEAD_BYTES_MAX;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Health,
    Ready,
}

/// A request's head, read.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// GET (or HEAD, with `head_only`) of a known path.
    Get { endpoint: Endpoint, head_only: bool },
    /// Answer this status and close.
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
}

/// The end of the head (just past its blank line) if `buf` holds it all.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2))
}

/// Reads the request line of a whole head.
pub fn parse(head: &[u8]) -> Request {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Refuse(Refusal::BadRequest);
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Refuse(Refusal::BadRequest);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Refuse(Refusal::BadRequest);
    }
    let path = target.split('?').next().unwrap_or(target);
    let endpoint = match path {
        "/metrics" => Endpoint::Metrics,
        "/health" => Endpoint::Health,
        "/ready" => Endpoint::Ready,
        _ => return Request::Refuse(Refusal::NotFound),
    };
    match method {
        "GET" => Request::Get {
            endpoint,
            head_only: false,
        },
        "HEAD" => Request::Get {
            endpoint,
            head_only: true,
        },
        _ => Request::Refuse(Refusal::MethodNotAllowed),
    }
}

/// A response to write: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    /// A plain-text answer: `body` and a newline.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        let mut body = body.into();
        body.push('\n');
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    pub fn refusal(refusal: Refusal) -> Reply {
        match refusal {
            Refusal::BadRequest => Reply::text(
                400,
                "bad request: send GET /metrics, /health or /ready over HTTP/1.1",
            ),
            Refusal::NotFound => {
                Reply::text(404, "not found: kvsd serves /metrics, /health and /ready")
            }
            Refusal::MethodNotAllowed => Reply::text(405, "method not allowed: use GET"),
            Refusal::HeadTooLarge => Reply::text(431, "request head too large"),
        }
    }

    /// The bytes to send (without the body for a HEAD request).
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_paths_are_found_with_get_and_head() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Get {
                endpoint: Endpoint::Metrics,
                head_only: false
            }
        );
        assert_eq!(
            parse(b"HEAD /health?x=1 HTTP/1.0\r\n\r\n"),
            Request::Get {
                endpoint: Endpoint::Health,
                head_only: true
            }
        );
        assert_eq!(
            parse(b"GET /ready HTTP/1.1\n\n"),
            Request::Get {
                endpoint: Endpoint::Ready,
                head_only: false
            }
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_status_http_names() {
        let refused = |head: &[u8]| match parse(head) {
            Request::Refuse(refusal) => Some(refusal),
            Request::Get { .. } => None,
        };
        assert_eq!(
            refused(b"GET /nope HTTP/1.1\r\n\r\n"),
            Some(Refusal::NotFound)
        );
        assert_eq!(
            refused(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Refusal::MethodNotAllowed)
        );
        for bad in [
            &b"\xff\xfe\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"",
        ] {
            assert_eq!(refused(bad), Some(Refusal::BadRequest), "{bad:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn a_reply_carries_its_length_and_closes() {
        let reply = Reply::text(405, "no");
        let text = String::from_utf8(reply.encode(false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 3\r\n"), "{text}");
        assert!(text.contains("Allow: GET, HEAD\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nno\n"), "{text}");
        let head = String::from_utf8(reply.encode(true)).unwrap();
        assert!(
            head.ends_with("\r\n\r\n") && head.contains("Content-Length: 3"),
            "{head}"
        );
    }
}
