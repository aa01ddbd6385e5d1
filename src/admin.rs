//! The admin listener (`--admin ADDR`, `admin = "ADDR"`): `GET /metrics`
//! (Prometheus text), `GET /stats` (JSON) and `GET /health`, served by two
//! blocking threads of its own, never by a worker.
//!
//! Each thread accepts a connection, reads one request head (at most
//! [`MAX_HEAD`] bytes within [`READ_DEADLINE`]), answers it and closes
//! (`Connection: close`): there is one request per connection, so a slow or
//! silent client holds one thread for at most the deadline while the other
//! keeps serving. When a token is configured every request, whatever its
//! path, must carry `Authorization: Bearer TOKEN` (compared in constant
//! time) or gets 401. The target may be absolute (`http://HOST/metrics`). A
//! known path with another method than GET or HEAD
//! (GET without the body) gets 405, an unknown path 404. The figures are read from [`Process`], summed over
//! every generation of workers, so a reload does not reset them.

use crate::server::Process;
use crate::stats::export;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most bytes a request head may take.
pub const MAX_HEAD: usize = 8 * 1024;
/// The time a client has to send its whole request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// The time a client has to take the response.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// After the response, how long to read what the client still sends before
/// closing (so that unread bytes do not turn the close into a reset).
const LINGER: Duration = Duration::from_secs(1);
/// Threads accepting and answering.
const THREADS: usize = 2;
/// Header fields a request may have.
const MAX_HEADERS: usize = 32;

/// An answer: status, extra header lines, media type and body.
struct Answer {
    status: u16,
    headers: &'static str,
    content_type: &'static str,
    body: String,
    /// The request was HEAD: the head says the body's length, no body follows.
    head_only: bool,
}

impl Answer {
    fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: "",
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
            head_only: false,
        }
    }

    fn with_headers(mut self, headers: &'static str) -> Answer {
        self.headers = headers;
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Bind the admin listener on `addr` and start its threads; returns the
/// bound address (port 0 picks a free one).
pub fn start(
    addr: SocketAddr,
    token: Option<String>,
    process: Arc<Process>,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let token: Arc<Option<String>> = Arc::new(token);
    for i in 0..THREADS {
        let listener = listener.try_clone()?;
        let (token, process) = (token.clone(), process.clone());
        std::thread::Builder::new()
            .name(format!("ferry-admin-{i}"))
            .spawn(move || accept_loop(listener, token.as_deref(), &process))?;
    }
    Ok(bound)
}

fn accept_loop(listener: TcpListener, token: Option<&str>, process: &Process) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => serve(stream, token, process),
            // Out of descriptors, or the like: wait rather than spin.
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(_) => {}
        }
    }
}

/// Read one request head, answer it, close.
fn serve(mut stream: TcpStream, token: Option<&str>, process: &Process) {
    let _ = stream.set_nodelay(true);
    let Some(answer) = read_and_answer(&mut stream, token, process) else {
        return;
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n{}\r\n",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len(),
        answer.headers
    );
    let _ = stream.set_write_timeout(Some(WRITE_DEADLINE));
    let mut message = head.into_bytes();
    if !answer.head_only {
        message.extend_from_slice(answer.body.as_bytes());
    }
    if stream.write_all(&message).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Take what the client still sends until it closes (briefly), so the
    // close does not reset the connection under an unread response.
    let _ = stream.set_read_timeout(Some(LINGER));
    let end = Instant::now() + LINGER;
    let mut sink = [0u8; 1024];
    while Instant::now() < end {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// The answer to the request on `stream`, or None if the client left first.
fn read_and_answer(
    stream: &mut TcpStream,
    token: Option<&str>,
    process: &Process,
) -> Option<Answer> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = [0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Answer::text(408, "request timeout\n"));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf[len..]) {
            Ok(0) => return None,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Some(Answer::text(408, "request timeout\n"))
            }
            Err(_) => return None,
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or("");
                let path = request.path.unwrap_or("");
                let auth = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value);
                let mut answer = route(method, path, auth, token, process);
                answer.head_only = method == "HEAD";
                return Some(answer);
            }
            Ok(httparse::Status::Partial) if len == buf.len() => {
                return Some(Answer::text(431, "request head too large\n"))
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Some(Answer::text(431, "too many header fields\n"))
            }
            Err(_) => return Some(Answer::text(400, "bad request\n")),
        }
    }
}

/// What a complete request gets.
fn route(
    method: &str,
    target: &str,
    auth: Option<&[u8]>,
    token: Option<&str>,
    process: &Process,
) -> Answer {
    if let Some(token) = token {
        if !authorized(auth, token) {
            return Answer::text(401, "unauthorized\n")
                .with_headers("WWW-Authenticate: Bearer realm=\"ferry\"\r\n");
        }
    }
    let path = origin_form(target).split('?').next().unwrap_or("");
    if !matches!(path, "/metrics" | "/stats" | "/health") {
        return Answer::text(404, "not found: try /metrics, /stats or /health\n");
    }
    // HEAD is GET without the body (RFC 9110 9.3.2): monitors use it.
    if method != "GET" && method != "HEAD" {
        return Answer::text(405, "only GET and HEAD\n").with_headers("Allow: GET, HEAD\r\n");
    }
    match path {
        "/metrics" => Answer {
            content_type: export::PROMETHEUS_CONTENT_TYPE,
            ..Answer::text(200, &export::prometheus(&process.snapshot()))
        },
        "/stats" => Answer {
            content_type: "application/json",
            ..Answer::text(200, &export::json(&process.snapshot()))
        },
        _ => Answer::text(200, "ok\n"),
    }
}

/// The path and query of a request target: an absolute-form target
/// (`http://host:port/metrics`, which a server must accept, RFC 9112 3.2.2)
/// loses its scheme and authority; any other is kept as it is.
fn origin_form(target: &str) -> &str {
    let lower = |p: &str| {
        target
            .get(..p.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(p))
    };
    let Some(scheme) = ["http://", "https://"].into_iter().find(|p| lower(p)) else {
        return target;
    };
    let rest = &target[scheme.len()..];
    rest.find(['/', '?']).map_or("/", |i| &rest[i..])
}

/// Whether an `Authorization` value is `Bearer TOKEN` with the right token.
fn authorized(value: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = value else {
        return false;
    };
    let value = value.trim_ascii();
    let Some(split) = value.iter().position(|b| *b == b' ' || *b == b'\t') else {
        return false;
    };
    let (scheme, given) = value.split_at(split);
    scheme.eq_ignore_ascii_case(b"bearer") && same_secret(given.trim_ascii(), token.as_bytes())
}

/// Compare a presented secret with the expected one in time that depends on
/// the expected one's length only, not on where they first differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked_whole() {
        let ok = |v: &str| authorized(Some(v.as_bytes()), "s3cret");
        assert!(ok("Bearer s3cret"));
        assert!(ok("bearer   s3cret "));
        assert!(!ok("Bearer s3cre"));
        assert!(!ok("Bearer s3cret2"));
        assert!(!ok("Bearer S3cret"));
        assert!(!ok("Basic s3cret"));
        assert!(!ok("Bearer"));
        assert!(!ok("s3cret"));
        assert!(!authorized(None, "s3cret"));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"\0", b""));
    }

    #[test]
    fn routes_answer_by_path_then_method() {
        let process = Process::new(Default::default());
        let status = |m: &str, p: &str| route(m, p, None, None, &process).status;
        assert_eq!(status("GET", "/health"), 200);
        assert_eq!(status("GET", "/metrics?x=1"), 200);
        assert_eq!(status("GET", "/stats"), 200);
        assert_eq!(status("GET", "/"), 404);
        assert_eq!(status("GET", "http://127.0.0.1:9100/metrics?x"), 200);
        assert_eq!(status("GET", "HTTP://admin/health"), 200);
        assert_eq!(status("GET", "http://admin"), 404);
        assert_eq!(origin_form("http://a?b"), "?b");
        assert_eq!(status("POST", "/metrics"), 405);
        assert_eq!(status("HEAD", "/health"), 200);
        assert_eq!(status("PUT", "/health"), 405);
        let denied = route("GET", "/nope", None, Some("t"), &process);
        assert_eq!(
            denied.status, 401,
            "the token is asked before anything else"
        );
        assert!(denied.headers.starts_with("WWW-Authenticate: Bearer"));
        let allowed = route("GET", "/health", Some(b"Bearer t"), Some("t"), &process);
        assert_eq!((allowed.status, allowed.body.as_str()), (200, "ok\n"));
    }
}
