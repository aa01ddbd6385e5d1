//! The figures as the admin listener serves them: Prometheus text (format
//! 0.0.4) for `/metrics` and JSON for `/stats`. Both are made from a
//! [`Snapshot`] and from [`METRICS`], so a metric added there appears here.
//!
//! Prometheus names: `ferry_` + the metric's name; counters end in
//! `_total`, times are seconds (`_seconds_total`, as floats). A listener's
//! metrics carry `listener="NAME"`; the five `http_responses_Nxx` counters
//! are one family, `ferry_http_responses_total`, with `class="2xx"` and so
//! on; a worker's metrics (loop, pools) are summed over workers and carry no
//! label. Backends are `ferry_upstream_*{listener, backend}`: a separate
//! family, since a listener's `ferry_backend_connect_failures_total` also
//! counts forward-mode origins, which have no per-backend figures.

use super::{seconds, BackendFigures, Counters, Kind, Scope, Snapshot, METRICS};
use std::fmt::Write as _;

/// The media type of [`prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `http_responses_Nxx` counters: the family and the class.
fn status_class(name: &str) -> Option<&str> {
    let class = name.strip_prefix("http_responses_")?;
    (class.len() == 3 && class.ends_with("xx")).then_some(class)
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn family_name(name: &str, kind: Kind) -> String {
    match kind {
        Kind::Counter | Kind::Nanos => format!("ferry_{name}_total"),
        Kind::Gauge => format!("ferry_{name}"),
    }
}

fn sample_value(out: &mut String, kind: Kind, value: u64) {
    let _ = match kind {
        Kind::Nanos => writeln!(out, " {}", seconds(value)),
        _ => writeln!(out, " {value}"),
    };
}

/// The Prometheus exposition of a snapshot.
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let listeners: Vec<(String, [u64; METRICS.len()])> = s
        .figures
        .listeners
        .iter()
        .map(|(name, c)| (label(name), c.values()))
        .collect();
    let workers = s.figures.workers.values();

    family(
        &mut out,
        "ferry_uptime_seconds",
        "gauge",
        "seconds since the process started",
    );
    let _ = writeln!(out, "ferry_uptime_seconds {}", s.uptime.as_secs_f64());
    family(
        &mut out,
        "ferry_reloads_total",
        "counter",
        "configuration reloads (SIGHUP) by outcome",
    );
    let _ = writeln!(
        out,
        "ferry_reloads_total{{outcome=\"ok\"}} {}",
        s.reloads_ok
    );
    let _ = writeln!(
        out,
        "ferry_reloads_total{{outcome=\"failed\"}} {}",
        s.reloads_failed
    );
    family(
        &mut out,
        "ferry_connections_max_concurrent",
        "gauge",
        "the most client connections open at once",
    );
    let _ = writeln!(out, "ferry_connections_max_concurrent {}", s.max_concurrent);

    for (i, m) in METRICS.iter().enumerate() {
        if let Some(class) = status_class(m.name) {
            // One family for the five classes, written at the first.
            if class != "1xx" {
                continue;
            }
            family(
                &mut out,
                "ferry_http_responses_total",
                "counter",
                "HTTP responses sent, by status class",
            );
            for (name, values) in &listeners {
                for (j, c) in METRICS.iter().enumerate().skip(i).take(5) {
                    let class = status_class(c.name).expect("the five classes follow");
                    let _ = writeln!(
                        out,
                        "ferry_http_responses_total{{listener=\"{name}\",class=\"{class}\"}} {}",
                        values[j]
                    );
                }
            }
            continue;
        }
        let fname = family_name(m.name, m.kind);
        let kind = if m.kind == Kind::Gauge {
            "gauge"
        } else {
            "counter"
        };
        family(&mut out, &fname, kind, m.help);
        match m.scope {
            Scope::Listener => {
                for (name, values) in &listeners {
                    let _ = write!(out, "{fname}{{listener=\"{name}\"}}");
                    sample_value(&mut out, m.kind, values[i]);
                }
            }
            Scope::Worker => {
                out.push_str(&fname);
                sample_value(&mut out, m.kind, workers[i]);
            }
        }
    }

    family(
        &mut out,
        "ferry_acceleration_ratio",
        "gauge",
        "HTTP client time over backend time (http_client_seconds / http_backend_seconds); NaN before any exchange",
    );
    for ((name, _), (_, c)) in listeners.iter().zip(&s.figures.listeners) {
        let ratio = c.acceleration().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "ferry_acceleration_ratio{{listener=\"{name}\"}} {ratio}"
        );
    }

    let backends: Vec<(String, &BackendFigures)> = s
        .figures
        .backends
        .iter()
        .map(|b| {
            let labels = format!(
                "{{listener=\"{}\",backend=\"{}\"}}",
                label(&b.listener),
                b.addr
            );
            (labels, b)
        })
        .collect();
    family(
        &mut out,
        "ferry_upstream_up",
        "gauge",
        "1 if the backend is in rotation, 0 if it is down",
    );
    for (labels, b) in &backends {
        if let Some(up) = b.up {
            let _ = writeln!(out, "ferry_upstream_up{labels} {}", u8::from(up));
        }
    }
    family(
        &mut out,
        "ferry_upstream_health_checks_total",
        "counter",
        "active health checks by result",
    );
    for (labels, b) in &backends {
        let inner = &labels[..labels.len() - 1];
        let _ = writeln!(
            out,
            "ferry_upstream_health_checks_total{inner},result=\"passed\"}} {}",
            b.checks_passed
        );
        let _ = writeln!(
            out,
            "ferry_upstream_health_checks_total{inner},result=\"failed\"}} {}",
            b.checks_failed
        );
    }
    type Read = fn(&BackendFigures) -> u64;
    let per_backend: [(&str, &str, Read); 6] = [
        (
            "ferry_upstream_marked_down_total",
            "times the backend was taken out of rotation",
            |b| b.marked_down,
        ),
        (
            "ferry_upstream_connect_failures_total",
            "connects to the backend that failed",
            |b| b.connect_failures,
        ),
        (
            "ferry_upstream_connect_timeouts_total",
            "connects to the backend that timed out",
            |b| b.connect_timeouts,
        ),
        (
            "ferry_upstream_pool_hits_total",
            "requests sent on a pooled connection to the backend",
            |b| b.pool.hits,
        ),
        (
            "ferry_upstream_pool_misses_total",
            "requests that needed a new connection to the backend",
            |b| b.pool.misses,
        ),
        (
            "ferry_upstream_pool_evictions_total",
            "pooled connections to the backend closed by it or timed out",
            |b| b.pool.evictions,
        ),
    ];
    for (name, help, value) in per_backend {
        family(&mut out, name, "counter", help);
        for (labels, b) in &backends {
            let _ = writeln!(out, "{name}{labels} {}", value(b));
        }
    }
    out
}

/// A JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"name": value, ...}` for the metrics of `scope` (all if None), with
/// the acceleration ratio when the HTTP times are in.
fn json_counters(out: &mut String, c: &Counters, scope: Option<Scope>) {
    out.push('{');
    let mut first = true;
    for (m, value) in METRICS.iter().zip(c.values()) {
        if scope.is_some_and(|s| s != m.scope) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let _ = match m.kind {
            Kind::Nanos => write!(out, "\"{}\":{}", m.name, seconds(value)),
            _ => write!(out, "\"{}\":{value}", m.name),
        };
    }
    if scope != Some(Scope::Worker) {
        match c.acceleration() {
            Some(r) => {
                let _ = write!(out, ",\"acceleration_ratio\":{r}");
            }
            None => out.push_str(",\"acceleration_ratio\":null"),
        }
    }
    out.push('}');
}

/// The JSON of `/stats`:
///
/// ```text
/// {"uptime_seconds": F, "connections_max_concurrent": N,
///  "reloads": {"ok": N, "failed": N},
///  "totals": {every metric, "acceleration_ratio": F or null},
///  "workers": {the workers' own metrics},
///  "listeners": {"NAME": {the listener's metrics, "acceleration_ratio": ...}},
///  "backends": [{"listener", "address", "up" (true, false or null),
///                "checks_passed", "checks_failed", "marked_down",
///                "connect_failures", "connect_timeouts",
///                "pool_hits", "pool_misses", "pool_evictions"}]}
/// ```
pub fn json(s: &Snapshot) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        "{{\"uptime_seconds\":{},\"connections_max_concurrent\":{},\
         \"reloads\":{{\"ok\":{},\"failed\":{}}},\"totals\":",
        s.uptime.as_secs_f64(),
        s.max_concurrent,
        s.reloads_ok,
        s.reloads_failed
    );
    json_counters(&mut out, &s.figures.total(), None);
    out.push_str(",\"workers\":");
    json_counters(&mut out, &s.figures.workers, Some(Scope::Worker));
    out.push_str(",\"listeners\":{");
    for (i, (name, c)) in s.figures.listeners.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, name);
        out.push(':');
        json_counters(&mut out, c, Some(Scope::Listener));
    }
    out.push_str("},\"backends\":[");
    for (i, b) in s.figures.backends.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"listener\":");
        json_string(&mut out, &b.listener);
        let up = b.up.map_or("null", |up| if up { "true" } else { "false" });
        let _ = write!(
            out,
            ",\"address\":\"{}\",\"up\":{up},\"checks_passed\":{},\"checks_failed\":{},\
             \"marked_down\":{},\"connect_failures\":{},\"connect_timeouts\":{},\
             \"pool_hits\":{},\"pool_misses\":{},\"pool_evictions\":{}}}",
            b.addr,
            b.checks_passed,
            b.checks_failed,
            b.marked_down,
            b.connect_failures,
            b.connect_timeouts,
            b.pool.hits,
            b.pool.misses,
            b.pool.evictions
        );
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::sample;

    #[test]
    fn prometheus_families_have_help_type_and_labelled_samples() {
        let text = prometheus(&sample());
        for line in [
            "# TYPE ferry_bytes_client_to_backend_total counter",
            "ferry_bytes_client_to_backend_total{listener=\"web\"} 20",
            "ferry_bytes_client_to_backend_total{listener=\"tls\"} 10",
            "ferry_client_read_seconds_total{listener=\"web\"} 3",
            "# TYPE ferry_connections_active gauge",
            "ferry_connections_active{listener=\"tls\"} 2",
            "ferry_loop_iterations_total 14",
            "ferry_http_responses_total{listener=\"web\",class=\"5xx\"} 2",
            "ferry_http_responses_total{listener=\"tls\",class=\"2xx\"} 0",
            "ferry_acceleration_ratio{listener=\"web\"} 4",
            "ferry_acceleration_ratio{listener=\"tls\"} NaN",
            "ferry_reloads_total{outcome=\"failed\"} 2",
            "ferry_upstream_up{listener=\"web\",backend=\"127.0.0.1:8081\"} 0",
            "ferry_upstream_health_checks_total{listener=\"web\",backend=\"127.0.0.1:8081\",result=\"passed\"} 4",
            "ferry_upstream_marked_down_total{listener=\"web\",backend=\"127.0.0.1:8081\"} 1",
            "ferry_upstream_pool_hits_total{listener=\"web\",backend=\"127.0.0.1:8081\"} 2",
            "ferry_upstream_pool_misses_total{listener=\"web\",backend=\"127.0.0.1:8081\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        // Every family is announced once, before its samples, and every
        // sample belongs to the family announced last.
        let mut current = String::new();
        let mut seen = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} announced twice");
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{l}");
                assert!(name.starts_with("ferry_"));
            }
        }
        assert_eq!(text.matches("# TYPE ferry_http_responses_total").count(), 1);
    }

    #[test]
    fn labels_and_json_strings_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut s = sample();
        s.figures.listener_mut("we\"ird\n");
        let text = prometheus(&s);
        assert!(text.contains("{listener=\"we\\\"ird\\n\"}"), "{text}");
        let mut out = String::new();
        json_string(&mut out, "q\"\\\u{1}");
        assert_eq!(out, "\"q\\\"\\\\\\u0001\"");
    }

    #[test]
    fn json_nests_totals_listeners_and_backends() {
        let text = json(&sample());
        for part in [
            "\"reloads\":{\"ok\":1,\"failed\":2}",
            "\"bytes_client_to_backend\":30",
            "\"listeners\":{\"web\":{\"connections_accepted\":0",
            "\"client_read_seconds\":3,",
            "\"acceleration_ratio\":4}",
            "\"acceleration_ratio\":null}",
            "\"workers\":{\"backend_connections\":0,\"loop_iterations\":14",
            "\"address\":\"127.0.0.1:8081\",\"up\":false,\"checks_passed\":4",
            "\"pool_hits\":2,\"pool_misses\":1,\"pool_evictions\":0}",
        ] {
            assert!(text.contains(part), "{part:?} missing from\n{text}");
        }
        // Balanced braces and brackets (outside strings there are none in names here).
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert_eq!(text.matches('[').count(), text.matches(']').count());
    }
}
