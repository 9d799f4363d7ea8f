//! The access log's writer: one line per request, formatted straight into
//! a shared buffer that a thread of its own writes to stderr every 50 ms
//! (or once 64 KiB are waiting). A busy node answers tens of thousands of
//! requests a second; going through the general log formatter and one
//! channel message per line cost about an eighth of fetch throughput, this
//! costs a few hundred nanoseconds a line.
//!
//! Lines come as the node's other log lines do (`text`: the same layout;
//! `json`: the same object shape), so whatever collects one reads both.
//! What a client sent is never written raw: in a text line, control bytes
//! and backslashes become `\xHH` (nginx's `escape=default`), so a CR/LF in
//! a field cannot forge a line; the values of `token`-like parameters are
//! written as `<redacted>`. Past 8 MiB waiting (stderr blocked), lines are
//! dropped and counted, never requests; what waits is written when the
//! node stops ([`AccessLog::flush`]).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::counter::Counter;

/// How a line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// One request, as its line tells it.
pub struct Entry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub params: &'a str,
    pub code: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub remote: Option<SocketAddr>,
}

const FLUSH_AT: usize = 64 << 10;
const DROP_PAST: usize = 8 << 20;

pub struct AccessLog {
    format: Format,
    waiting: Mutex<Vec<u8>>,
    wake: Condvar,
    /// Lines dropped because stderr did not keep up (the metric's count).
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer thread; it ends (having written everything) once
    /// the last handle is dropped.
    pub fn start(format: Format, dropped: Counter) -> Arc<AccessLog> {
        let log = Arc::new(AccessLog {
            format,
            waiting: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            wake: Condvar::new(),
            dropped,
        });
        let weak = Arc::downgrade(&log);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_while_alive(&weak, std::io::stderr()))
            .expect("the access log thread starts");
        log
    }

    pub fn log(&self, e: &Entry) {
        let mut waiting = self.waiting.lock();
        if waiting.len() > DROP_PAST {
            self.dropped.inc();
            return;
        }
        match self.format {
            Format::Text => text_line(&mut waiting, SystemTime::now(), e),
            Format::Json => json_line(&mut waiting, SystemTime::now(), e),
        }
        if waiting.len() >= FLUSH_AT {
            self.wake.notify_one();
        }
    }

    /// Writes what waits now, for a node that stops: the lines of the
    /// last requests are not left to a thread the process may not wait
    /// for.
    pub fn flush(&self) {
        let waiting = std::mem::take(&mut *self.waiting.lock());
        let mut out = std::io::stderr().lock();
        let _ = out.write_all(&waiting);
        let _ = out.flush();
    }
}

/// Parameters whose values are never logged.
const SECRET_PARAMS: [&str; 4] = ["token", "access_token", "admin_token", "password"];

/// `params` (a query and a form body, `&`-joined) with the values of
/// secret parameters replaced by `<redacted>`; as it was (not copied) when
/// it has none, as nearly every request.
pub fn redact(params: String) -> String {
    let secret = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s))
    };
    if !params.split('&').any(secret) {
        return params;
    }
    let pairs: Vec<String> = params
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(pair) => format!("{name}=<redacted>"),
            _ => pair.to_string(),
        })
        .collect();
    pairs.join("&")
}

/// `value` with control bytes, DEL and backslashes as `\xHH`.
fn escaped(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b < 0x20 || b == 0x7f || b == b'\\' {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// Writes what waits, every 50 ms or once 64 KiB wait, until the log is
/// gone.
fn write_while_alive(log: &Weak<AccessLog>, mut out: impl Write) {
    let mut spare = Vec::with_capacity(FLUSH_AT);
    loop {
        let alive = match log.upgrade() {
            Some(log) => {
                let mut waiting = log.waiting.lock();
                if waiting.len() < FLUSH_AT {
                    log.wake.wait_for(&mut waiting, Duration::from_millis(50));
                }
                std::mem::swap(&mut *waiting, &mut spare);
                true
            }
            None => false,
        };
        if !spare.is_empty() {
            // Whole lines in one call, so they never interleave with the
            // node's other log lines.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if !alive {
            return;
        }
    }
}

// Lines are written with plain appends rather than `write!`: formatting
// through `core::fmt` was an eighth of a woken poll's own instructions
// (counted with callgrind; the remote address alone a quarter of that).

/// `2026-11-27T14:17:35.888839Z` into `out`.
fn timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    digits(out, year as u64, 4);
    out.push(b'-');
    digits(out, month as u64, 2);
    out.push(b'-');
    digits(out, day as u64, 2);
    out.push(b'T');
    digits(out, (rem / 3600) as u64, 2);
    out.push(b':');
    digits(out, (rem % 3600 / 60) as u64, 2);
    out.push(b':');
    digits(out, (rem % 60) as u64, 2);
    out.push(b'.');
    digits(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn digits(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let text = buf.format(n);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
    out.extend_from_slice(text.as_bytes());
}

fn latency_ms(out: &mut Vec<u8>, latency: Duration) {
    let micros = latency.as_micros() as u64;
    digits(out, micros / 1000, 1);
    out.push(b'.');
    digits(out, micros % 1000, 3);
}

/// `127.0.0.1:50660`, `[::1]:50660`: as `SocketAddr` displays itself.
fn remote(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                digits(out, u64::from(*octet), 1);
            }
            out.push(b':');
            digits(out, u64::from(v4.port()), 1);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

fn text_line(out: &mut Vec<u8>, at: SystemTime, e: &Entry) {
    timestamp(out, at);
    for (name, value) in [
        (&b"  INFO access: request method="[..], e.method),
        (b" path=", e.path),
        (b" params=", e.params),
        (b" code=", e.code),
    ] {
        out.extend_from_slice(name);
        escaped(out, value);
    }
    out.extend_from_slice(b" status=");
    digits(out, u64::from(e.status), 1);
    out.extend_from_slice(b" latency_ms=");
    latency_ms(out, e.latency);
    out.extend_from_slice(b" remote=");
    if let Some(r) = e.remote {
        remote(out, r);
    }
    out.push(b'\n');
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_line(out: &mut Vec<u8>, at: SystemTime, e: &Entry) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, at);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":");
    json_string(out, e.method);
    out.extend_from_slice(b",\"path\":");
    json_string(out, e.path);
    out.extend_from_slice(b",\"params\":");
    json_string(out, e.params);
    out.extend_from_slice(b",\"code\":");
    json_string(out, e.code);
    out.extend_from_slice(b",\"status\":");
    digits(out, u64::from(e.status), 1);
    out.extend_from_slice(b",\"latency_ms\":");
    latency_ms(out, e.latency);
    // An address has nothing to escape.
    out.extend_from_slice(b",\"remote\":\"");
    if let Some(r) = e.remote {
        remote(out, r);
    }
    out.extend_from_slice(b"\"},\"target\":\"access\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            method: "POST",
            path: "/discovery/register",
            params: "appid=a&note=\"quoted\"",
            code: "0",
            status: 200,
            latency: Duration::from_micros(1643),
            remote: Some("127.0.0.1:50660".parse().unwrap()),
        }
    }

    #[test]
    fn a_text_line_reads_like_the_other_log_lines() {
        let at = UNIX_EPOCH + Duration::from_micros(1_795_789_409_947_663);
        let mut out = Vec::new();
        text_line(&mut out, at, &entry());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-27T14:23:29.947663Z  INFO access: request method=POST path=/discovery/register \
             params=appid=a&note=\"quoted\" code=0 status=200 latency_ms=1.643 remote=127.0.0.1:50660\n"
        );
    }

    #[test]
    fn a_text_line_cannot_be_forged_by_what_a_client_sent() {
        let forged = Entry {
            params: "appid=a\r\n2026-11-27T14:23:29Z  INFO access: request method=GET\\x0A\x7f",
            path: "/discovery/fetch\n",
            ..entry()
        };
        let mut out = Vec::new();
        text_line(&mut out, UNIX_EPOCH, &forged);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(
            text.contains("path=/discovery/fetch\\x0A params=appid=a\\x0D\\x0A2026"),
            "{text}"
        );
        assert!(text.contains("method=GET\\x5Cx0A\\x7F code="), "{text}");
    }

    #[test]
    fn secret_parameters_are_redacted() {
        assert_eq!(redact("appid=a&env=dev".into()), "appid=a&env=dev");
        assert_eq!(
            redact("appid=a&token=s3cret&Password=x&tokens=keep".into()),
            "appid=a&token=<redacted>&Password=<redacted>&tokens=keep"
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_escaped_fields() {
        let mut out = Vec::new();
        json_line(&mut out, UNIX_EPOCH, &entry());
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["target"], "access");
        assert_eq!(v["fields"]["params"], "appid=a&note=\"quoted\"");
        assert_eq!(v["fields"]["latency_ms"], 1.643);
        assert_eq!(v["fields"]["remote"], "127.0.0.1:50660");
    }

    #[test]
    fn numbers_and_addresses_read_as_their_display() {
        for (latency, shown) in [
            (0, "0.000"),
            (7, "0.007"),
            (1_043, "1.043"),
            (61_000_250, "61000.250"),
        ] {
            let mut out = Vec::new();
            latency_ms(&mut out, Duration::from_micros(latency));
            assert_eq!(String::from_utf8(out).unwrap(), shown);
        }
        for addr in [
            "127.0.0.1:50660",
            "10.200.3.0:1",
            "255.255.255.255:65535",
            "[::1]:8080",
            "[fe80::1%2]:7171",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            remote(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
        let mut out = Vec::new();
        timestamp(&mut out, UNIX_EPOCH + Duration::from_micros(5));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000005Z"
        );
    }

    #[test]
    fn dates_come_out_right_across_leap_years() {
        for (secs, date) in [
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_164_800, "2024-02-29T00:00:00"),
            (4_107_542_399, "2100-02-28T23:59:59"),
        ] {
            let mut out = Vec::new();
            timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(secs));
            assert!(String::from_utf8(out).unwrap().starts_with(date), "{secs}");
        }
    }
}
