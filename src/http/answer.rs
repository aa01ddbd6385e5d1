//! The answers ferry writes itself: short, complete, and closing.
//!
//! Each is a static byte string (nothing is formatted on the error path) with
//! a plain-text body, `Content-Length` and `Connection: close`: after such an
//! answer the connection cannot go on, so ferry shuts its side and lingers
//! briefly so the client reads the answer rather than a reset.

/// 407 on a connection that goes on: the client retries with credentials
/// on the same connection.
pub const AUTH_REQUIRED_KEEP_ALIVE: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"ferry\"\r\nContent-Type: text/plain\r\nContent-Length: 34\r\n\r\n407 Proxy Authentication Required\n";

/// What a forward proxy says once a CONNECT tunnel is open.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// The complete response for `status`; unknown codes answer 502.
pub fn answer(status: u16) -> &'static [u8] {
    match status {
        400 => b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n",
        403 => b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\n403 Forbidden\n",
        407 => b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"ferry\"\r\nContent-Type: text/plain\r\nContent-Length: 34\r\nConnection: close\r\n\r\n407 Proxy Authentication Required\n",
        414 => b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain\r\nContent-Length: 17\r\nConnection: close\r\n\r\n414 URI Too Long\n",
        429 => b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\n429 Too Many Requests\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 36\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large\n",
        502 => b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n503 Service Unavailable\n",
        505 => b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\nContent-Length: 31\r\nConnection: close\r\n\r\n505 HTTP Version Not Supported\n",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n504 Gateway Timeout\n",
        _ => answer(502),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_response, BodyKind, Method, Parsed};

    #[test]
    fn every_answer_is_a_complete_closing_response() {
        for code in [400, 403, 407, 408, 414, 429, 431, 502, 503, 504, 505] {
            let bytes = answer(code);
            let Parsed::Complete(head) = parse_response(bytes, Method::Get, 4096) else {
                panic!("{code} does not parse")
            };
            assert_eq!(head.status, code);
            assert!(!head.keep_alive);
            assert_eq!(
                head.body,
                BodyKind::Length((bytes.len() - head.head_len) as u64)
            );
        }
        let Parsed::Complete(head) = parse_response(AUTH_REQUIRED_KEEP_ALIVE, Method::Get, 4096)
        else {
            panic!("the keep-alive 407 does not parse")
        };
        assert!(head.keep_alive && head.status == 407);
        assert_eq!(
            head.body,
            BodyKind::Length((AUTH_REQUIRED_KEEP_ALIVE.len() - head.head_len) as u64)
        );
    }
}
