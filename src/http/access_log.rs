//! The access log: combined log format plus the backend address and the
//! request time, written by a thread of its own.
//!
//! A worker copies what a line needs (client, request line, referer, user
//! agent, status, bytes, backend, times) into a fixed-size [`Record`] and
//! hands it over a bounded channel; nothing is formatted or allocated on the
//! worker. The logger thread formats records into a buffered writer and
//! flushes when the channel runs dry or once a second, so lines come in
//! batches. A log file moved away by rotation is followed by a new one at
//! its path (`log_file`). A full channel drops the record and counts it: logging never
//! slows the proxy down.

use super::log_file::LogFile;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A text field cut to a fixed size.
#[derive(Clone, Copy)]
pub struct Field<const N: usize> {
    bytes: [u8; N],
    len: u16,
}

impl<const N: usize> Default for Field<N> {
    fn default() -> Self {
        Field {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Field<N> {
    pub fn set(&mut self, value: &[u8]) {
        let n = value.len().min(N);
        self.bytes[..n].copy_from_slice(&value[..n]);
        self.len = n as u16;
    }

    /// `set` of the parts one after the other.
    fn set_parts(&mut self, parts: &[&[u8]]) {
        self.len = 0;
        for part in parts {
            let at = self.len as usize;
            let n = part.len().min(N - at);
            self.bytes[at..at + n].copy_from_slice(&part[..n]);
            self.len += n as u16;
        }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Where the userinfo (`user:password@`) of a request line's target lies,
/// if it has one: in an absolute-form target (`http://u:p@host/`) or a
/// CONNECT authority (`u:p@host:443`). Such a target is refused, but its
/// line is still logged, and a password is a credential.
fn userinfo(line: &[u8]) -> Option<(usize, usize)> {
    let start = line.iter().position(|&b| b == b' ')? + 1;
    let len = line[start..]
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(line.len() - start);
    let target = &line[start..start + len];
    let from = match target.windows(3).position(|w| w == b"://") {
        Some(i) => i + 3,
        None if target.first() == Some(&b'/') => return None,
        None => 0,
    };
    let authority = &target[from..];
    let end = authority
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(authority.len());
    let at = authority[..end].iter().rposition(|&b| b == b'@')?;
    Some((start + from, start + from + at))
}

/// One request's line, before formatting.
#[derive(Clone, Copy)]
pub struct Record {
    pub client: IpAddr,
    pub backend: Option<SocketAddr>,
    /// When the request head was complete (Unix time).
    pub start: SystemTime,
    pub request_line: Field<512>,
    pub referer: Field<256>,
    pub user_agent: Field<256>,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
}

impl Record {
    pub fn new(client: IpAddr) -> Record {
        Record {
            client,
            backend: None,
            start: SystemTime::now(),
            request_line: Field::default(),
            referer: Field::default(),
            user_agent: Field::default(),
            status: 0,
            bytes: 0,
            duration: Duration::ZERO,
        }
    }

    /// Keep the first line of what the client sent (a head that may be
    /// malformed or incomplete).
    pub fn capture_line(&mut self, head: &[u8]) {
        let line_end = head
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(head.len());
        let line = &head[..line_end];
        match userinfo(line) {
            Some((from, to)) => self
                .request_line
                .set_parts(&[&line[..from], b"*", &line[to..]]),
            None => self.request_line.set(line),
        }
    }

    /// Fill the request fields from a complete, validated request head.
    pub fn capture(&mut self, head: &[u8]) {
        self.capture_line(head);
        let mut slots = super::head::uninit_slots();
        let mut req = httparse::Request::new(&mut []);
        if req.parse_with_uninit_headers(head, &mut slots).is_ok() {
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("referer") {
                    self.referer.set(h.value);
                } else if h.name.eq_ignore_ascii_case("user-agent") {
                    self.user_agent.set(h.value);
                }
            }
        }
    }
}

/// The workers' end: records go in, or are dropped when the logger lags.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Record>,
}

impl AccessLog {
    /// Start the logger thread writing to `path` (`-` for stderr).
    pub fn start(path: &str, capacity: usize) -> std::io::Result<AccessLog> {
        let out = if path == "-" {
            Out::Stderr(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stderr(),
            ))
        } else {
            Out::File(LogFile::open(path)?)
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name("ferry-access-log".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(AccessLog { tx })
    }

    /// Hand a record to the logger; false if it was dropped.
    pub fn send(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Where the lines go.
enum Out {
    Stderr(std::io::BufWriter<std::io::Stderr>),
    /// A file, reopened when rotation moves it away.
    File(LogFile),
}

impl Out {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::Stderr(w) => w,
            Out::File(f) => f,
        }
    }
}

fn write_loop(rx: Receiver<Record>, mut out: Out) {
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(record) => {
                if let Out::File(f) = &mut out {
                    f.follow(Instant::now());
                }
                let mut w = out.writer();
                let _ = format_line(&record, &mut w);
                // Take whatever else is waiting before one flush.
                while let Ok(more) = rx.try_recv() {
                    let _ = format_line(&more, &mut w);
                }
                let _ = w.flush();
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.writer().flush();
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.writer().flush();
                return;
            }
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// (year, month 1-12, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Write a field, escaping `"`, `\` and control bytes as Apache does.
fn escaped(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.write_all(&[b'\\', b])?,
            0x20..=0x7e => out.write_all(&[b])?,
            _ => write!(out, "\\x{b:02x}")?,
        }
    }
    Ok(())
}

fn quoted_or_dash(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(b"\"")?;
    if bytes.is_empty() {
        out.write_all(b"-")?;
    } else {
        escaped(out, bytes)?;
    }
    out.write_all(b"\"")
}

/// `client - - [date] "request" status bytes "referer" "agent" backend secs`
pub fn format_line(r: &Record, out: &mut impl Write) -> std::io::Result<()> {
    let secs = r
        .start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    write!(
        out,
        "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"",
        r.client,
        day,
        MONTHS[(month - 1) as usize],
        year,
        t / 3600,
        t / 60 % 60,
        t % 60
    )?;
    escaped(out, r.request_line.get())?;
    out.write_all(b"\" ")?;
    write!(out, "{} ", r.status)?;
    if r.bytes == 0 {
        out.write_all(b"- ")?;
    } else {
        write!(out, "{} ", r.bytes)?;
    }
    quoted_or_dash(out, r.referer.get())?;
    out.write_all(b" ")?;
    quoted_or_dash(out, r.user_agent.get())?;
    match r.backend {
        Some(b) => write!(out, " {b}")?,
        None => out.write_all(b" -")?,
    }
    writeln!(out, " {:.3}", r.duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_in_combined_format_with_backend_and_time() {
        let mut r = Record::new("10.0.0.7".parse().unwrap());
        r.start = UNIX_EPOCH + Duration::from_secs(1_763_784_000); // 2025-11-22 04:00:00 UTC
        r.capture(
            b"GET /a?b HTTP/1.1\r\nHost: h\r\nReferer: http://r/\r\nUser-Agent: t \"x\"\r\n\r\n",
        );
        r.status = 200;
        r.bytes = 1234;
        r.backend = Some("127.0.0.1:8081".parse().unwrap());
        r.duration = Duration::from_millis(12);
        let mut line = Vec::new();
        format_line(&r, &mut line).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "10.0.0.7 - - [22/Nov/2025:04:00:00 +0000] \"GET /a?b HTTP/1.1\" 200 1234 \"http://r/\" \
             \"t \\\"x\\\"\" 127.0.0.1:8081 0.012\n"
        );
    }

    #[test]
    fn userinfo_in_a_target_is_masked() {
        let logged = |line: &str| {
            let mut r = Record::new("10.0.0.7".parse().unwrap());
            r.capture_line(line.as_bytes());
            String::from_utf8(r.request_line.get().to_vec()).unwrap()
        };
        assert_eq!(
            logged("GET http://bob:pw@h:9/x?a@b HTTP/1.1"),
            "GET http://*@h:9/x?a@b HTTP/1.1"
        );
        assert_eq!(
            logged("CONNECT bob:pw@h:443 HTTP/1.1"),
            "CONNECT *@h:443 HTTP/1.1"
        );
        assert_eq!(logged("CONNECT a@b:c@h:443"), "CONNECT *@h:443");
        assert_eq!(logged("GET /p?u=a@b HTTP/1.1"), "GET /p?u=a@b HTTP/1.1");
        assert_eq!(
            logged("GET http://h/a@b HTTP/1.1"),
            "GET http://h/a@b HTTP/1.1"
        );
        assert_eq!(logged("GARBAGE"), "GARBAGE");
    }

    #[test]
    fn dates_convert_across_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
    }
}
