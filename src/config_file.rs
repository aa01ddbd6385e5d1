//! The config file: TOML read into [`Settings`], every value with its
//! place (`FILE:LINE:COLUMN: key`), then built and checked like the
//! command line's (see `settings.rs`, which holds the defaults and checks).
//!
//! The layout is global keys, then `[[listener]]` tables. The file is read
//! from toml's spanned parse tree rather than through serde, so that one pass
//! finds every problem (a syntax error, an unknown key, a value of the wrong
//! type or out of range) with its line and column, instead of the first.
//! Docs: docs/CONFIG.md, which lists the same keys as [`GLOBAL_KEYS`] and
//! [`LISTENER_KEYS`].

use crate::config::Config;
use crate::settings::{self, Given, ListenerSettings, Settings};
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The keys a file may hold outside `[[listener]]` tables.
pub const GLOBAL_KEYS: [&str; 15] = [
    "workers",
    "max_conns",
    "buffer_size",
    "backend_rcvbuf",
    "busy_poll",
    "splice",
    "connect_timeout",
    "idle_timeout",
    "backlog",
    "grace",
    "reload_grace",
    "verbose",
    "admin",
    "admin_token",
    "listener",
];

/// The keys of a `[[listener]]` table.
pub const LISTENER_KEYS: [&str; 29] = [
    "name",
    "listen",
    "mode",
    "backends",
    "balance",
    "health_check",
    "health_interval",
    "health_rise",
    "health_fall",
    "header_timeout",
    "keepalive_timeout",
    "backend_timeout",
    "pool_idle_timeout",
    "pool_size",
    "pool_max_requests",
    "max_header_size",
    "max_headers",
    "access_log",
    "x_forwarded_for",
    "x_forwarded_proto",
    "via",
    "auth",
    "auth_file",
    "connect_ports",
    "allow",
    "deny",
    "open",
    "backend_port",
    "max_conns_per_client",
];

/// Load and check `path`: the configuration, or every problem.
pub fn load(path: &str) -> Result<Config, Vec<String>> {
    load_under(path, &Settings::default())
}

/// Load `path` with `flags` (the command line's settings) laid over its
/// globals and its first listener.
pub fn load_under(path: &str, flags: &Settings) -> Result<Config, Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| vec![format!("{path}: {e}")])?;
    let text = String::from_utf8(bytes).map_err(|e| {
        // Say where: the text before the first bad byte is valid.
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let good = std::str::from_utf8(good).unwrap_or_default();
        let reader = Reader {
            file: path,
            text: good,
            problems: Vec::new(),
            unreadable: 0,
        };
        vec![format!(
            "{}: the file is not UTF-8 text (TOML must be)",
            reader.place(good.len())
        )]
    })?;
    let mut settings = parse(path, &text)?;
    settings.overlay(flags);
    settings.build().map_err(|mut problems| {
        // In the file's order; a flag's problems (no line) come last.
        problems.sort_by_key(|p| line_and_column(path, p));
        problems
    })
}

/// Read the settings a file's text gives; `file` names it in messages. A
/// syntax error stops there; any other problem is collected and reading
/// goes on.
pub fn parse(file: &str, text: &str) -> Result<Settings, Vec<String>> {
    let mut r = Reader {
        file,
        text,
        problems: Vec::new(),
        unreadable: 0,
    };
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let at = span.start;
            let message = e.message().trim_end().replace('\n', "; ");
            let message = match key_before(text, &span, &message) {
                Some(key) => format!("{key}: {message}"),
                None => message,
            };
            r.problem(at, format!("{}: {message}", r.place(at)));
        }
        return Err(r.finish());
    }
    let mut settings = Settings::default();
    let mut listeners_seen = false;
    for (k, v) in root.get_ref().iter() {
        let key = k.get_ref().as_ref();
        let g = &mut settings.global;
        match key {
            "workers" => g.workers = r.uint(k, v),
            "max_conns" => g.max_conns = r.uint(k, v),
            "buffer_size" => g.buffer_size = r.uint(k, v),
            "backend_rcvbuf" => g.backend_rcvbuf = r.uint(k, v),
            "busy_poll" => g.busy_poll = r.uint(k, v),
            "splice" => g.splice = r.parsed(k, v),
            "connect_timeout" => g.connect_timeout = r.seconds(k, v),
            "idle_timeout" => g.idle_timeout = r.seconds(k, v),
            "backlog" => g.backlog = r.uint(k, v),
            "grace" => g.grace = r.seconds(k, v),
            "reload_grace" => g.reload_grace = r.seconds(k, v),
            "verbose" => g.verbose = r.boolean(k, v),
            "admin" => g.admin = r.string(k, v),
            "admin_token" => g.admin_token = r.string(k, v),
            "listener" => {
                listeners_seen = true;
                settings.listeners = r.listeners(k, v);
            }
            _ if LISTENER_KEYS.contains(&key) => r.problem(
                k.span().start,
                format!(
                    "{}: '{key}' is a listener setting; put it in a [[listener]] table",
                    r.at(k)
                ),
            ),
            _ => r.unknown(k, &GLOBAL_KEYS),
        }
    }
    if !listeners_seen {
        r.problem(
            0,
            format!(
                "{}: no [[listener]] table; a file needs at least one",
                r.place(0)
            ),
        );
    }
    if r.problems.is_empty() {
        Ok(settings)
    } else {
        // What was read may still be built, to report problems of other
        // kinds (port clashes, empty backend lists) in the same pass.
        let mut problems = r.finish();
        if let Err(more) = settings.build() {
            problems.extend(more);
            problems.sort_by_key(|p| line_and_column(file, p));
        }
        Err(problems)
    }
}

type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Reads values out of the parse tree, collecting problems with their place.
struct Reader<'a> {
    file: &'a str,
    text: &'a str,
    /// (byte offset, message): sorted by offset when done.
    problems: Vec<(usize, String)>,
    /// Values that could not be read (not counting unknown keys).
    unreadable: usize,
}

impl Reader<'_> {
    /// `FILE:LINE:COLUMN` of a byte offset (both from 1; columns in characters).
    fn place(&self, offset: usize) -> String {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[start..].chars().count() + 1;
        format!("{}:{line}:{column}", self.file)
    }

    /// The place of a key, and its name.
    fn at(&self, key: &Key) -> String {
        format!("{}: {}", self.place(key.span().start), key.get_ref())
    }

    /// The place of a value, and its key's name.
    fn at_value(&self, key: &Key, span: Range<usize>) -> String {
        format!("{}: {}", self.place(span.start), key.get_ref())
    }

    fn problem(&mut self, offset: usize, message: String) {
        self.problems.push((offset, message));
    }

    fn finish(&mut self) -> Vec<String> {
        let mut p = std::mem::take(&mut self.problems);
        p.sort_by_key(|(offset, _)| *offset);
        p.into_iter().map(|(_, m)| m).collect()
    }

    fn unknown(&mut self, key: &Key, known: &[&str]) {
        let name = key.get_ref().as_ref();
        let hint = known
            .iter()
            .filter(|k| edit_distance(k, name) <= 2)
            .min_by_key(|k| edit_distance(k, name))
            .map_or(String::new(), |k| format!(" (did you mean '{k}'?)"));
        let message = format!(
            "{}: unknown key '{name}'{hint}",
            self.place(key.span().start)
        );
        self.problem(key.span().start, message);
    }

    fn wrong_type(&mut self, key: &Key, value: &Value, expected: &str) {
        self.unreadable += 1;
        let message = format!(
            "{}: expected {expected}, found {}",
            self.at_value(key, value.span()),
            describe(value.get_ref())
        );
        self.problem(value.span().start, message);
    }

    fn bad_value(&mut self, key: &Key, span: Range<usize>, what: impl std::fmt::Display) {
        self.unreadable += 1;
        let message = format!("{}: {what}", self.at_value(key, span.clone()));
        self.problem(span.start, message);
    }

    fn given<T>(&self, key: &Key, value: &Value, v: T) -> Option<Given<T>> {
        Some(Given::new(v, self.at_value(key, value.span())))
    }

    fn string(&mut self, key: &Key, value: &Value) -> Option<Given<String>> {
        match value.get_ref() {
            DeValue::String(s) => self.given(key, value, s.to_string()),
            _ => {
                self.wrong_type(key, value, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, key: &Key, value: &Value) -> Option<Given<bool>> {
        match value.get_ref() {
            DeValue::Boolean(b) => self.given(key, value, *b),
            _ => {
                self.wrong_type(key, value, "true or false");
                None
            }
        }
    }

    /// A string parsed by the same parser as the command line's.
    fn parsed<T: FromStr<Err = String>>(&mut self, key: &Key, value: &Value) -> Option<Given<T>> {
        let s = self.string(key, value)?;
        match s.value.parse::<T>() {
            Ok(v) => Some(Given::new(v, s.at)),
            Err(e) => {
                self.bad_value(key, value.span(), e);
                None
            }
        }
    }

    fn integer(&mut self, key: &Key, value: &Value) -> Option<i64> {
        match value.get_ref() {
            DeValue::Integer(i) => {
                let v = i64::from_str_radix(i.as_str(), i.radix()).ok();
                if v.is_none() {
                    self.bad_value(key, value.span(), format!("{i} is too large"));
                }
                v
            }
            _ => {
                self.wrong_type(key, value, "a whole number");
                None
            }
        }
    }

    /// A whole number that fits `T` (its range is checked by `build`).
    fn uint<T: TryFrom<i64>>(&mut self, key: &Key, value: &Value) -> Option<Given<T>> {
        let n = self.integer(key, value)?;
        match T::try_from(n) {
            Ok(v) => self.given(key, value, v),
            Err(_) => {
                let why = if n < 0 {
                    format!("{n} is negative; a count or size is 0 or more")
                } else {
                    format!("{n} is too large")
                };
                self.bad_value(key, value.span(), why);
                None
            }
        }
    }

    /// Seconds: a whole number or a decimal one.
    fn seconds(&mut self, key: &Key, value: &Value) -> Option<Given<f64>> {
        let (v, text) = match value.get_ref() {
            DeValue::Integer(i) => (
                i64::from_str_radix(i.as_str(), i.radix()).map_or(f64::NAN, |n| n as f64),
                i.to_string(),
            ),
            DeValue::Float(f) => (f.as_str().parse().unwrap_or(f64::NAN), f.to_string()),
            _ => {
                self.wrong_type(key, value, "a number of seconds");
                return None;
            }
        };
        match settings::seconds(v, &text) {
            Ok(v) => self.given(key, value, v),
            Err(e) => {
                self.bad_value(key, value.span(), e);
                None
            }
        }
    }

    /// An array whose every item `item` reads; `None` if any item is bad.
    fn array<T>(
        &mut self,
        key: &Key,
        value: &Value,
        expected: &str,
        mut item: impl FnMut(&mut Self, &Value) -> Option<T>,
    ) -> Option<Given<Vec<T>>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, expected);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for v in items.iter() {
            out.push(item(self, v));
        }
        let all: Option<Vec<T>> = out.into_iter().collect();
        self.given(key, value, all?)
    }

    fn strings(&mut self, key: &Key, value: &Value) -> Option<Given<Vec<String>>> {
        self.array(key, value, "an array of strings", |r, v| {
            r.string(key, v).map(|g| g.value)
        })
    }

    fn parsed_list<T: FromStr<Err = String>>(
        &mut self,
        key: &Key,
        value: &Value,
    ) -> Option<Given<Vec<T>>> {
        self.array(key, value, "an array of strings", |r, v| {
            r.parsed::<T>(key, v).map(|g| g.value)
        })
    }

    fn ports(&mut self, key: &Key, value: &Value) -> Option<Given<Vec<u16>>> {
        self.array(key, value, "an array of ports", |r, v| {
            let n = r.integer(key, v)?;
            match u16::try_from(n) {
                Ok(p) if p != 0 => Some(p),
                _ => {
                    r.bad_value(key, v.span(), format!("{n} is not a port (1-65535)"));
                    None
                }
            }
        })
    }

    /// `listen = "ADDRESS:PORT"`: the address and the port, both given here.
    fn listen(&mut self, key: &Key, value: &Value, l: &mut ListenerSettings) -> bool {
        let Some(s) = self.string(key, value) else {
            return false;
        };
        match s.value.parse::<SocketAddr>() {
            Ok(addr) => {
                l.ip = Some(Given::new(addr.ip(), s.at.clone()));
                l.port = Some(Given::new(addr.port(), s.at));
                true
            }
            Err(_) => {
                self.bad_value(
                    key,
                    value.span(),
                    format!(
                        "'{}' is not an ADDRESS:PORT such as 0.0.0.0:8080 or [::]:8080",
                        s.value
                    ),
                );
                false
            }
        }
    }

    /// The `[[listener]]` tables.
    fn listeners(&mut self, key: &Key, value: &Value) -> Vec<ListenerSettings> {
        let tables = match value.get_ref() {
            DeValue::Array(items) if items.is_empty() => {
                let message = format!(
                    "{}: an empty list declares no listener; a file needs at least one \
                     [[listener]] table",
                    self.at_value(key, value.span())
                );
                self.problem(value.span().start, message);
                return Vec::new();
            }
            DeValue::Array(items) if items.iter().all(|t| t.get_ref().is_table()) => items,
            _ => {
                self.wrong_type(key, value, "[[listener]] tables");
                return Vec::new();
            }
        };
        tables
            .iter()
            .filter_map(|t| Some((t.span(), t.get_ref().as_table()?)))
            .map(|(span, table)| self.listener(span, table))
            .collect()
    }

    fn listener(&mut self, span: Range<usize>, table: &DeTable) -> ListenerSettings {
        let mut l = ListenerSettings {
            declared: Some(self.place(span.start)),
            ..ListenerSettings::default()
        };
        let before = self.unreadable;
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "name" => l.name = self.string(k, v),
                "listen" => {
                    self.listen(k, v, &mut l);
                }
                "mode" => l.mode = self.parsed(k, v),
                "backends" => l.backends = self.strings(k, v),
                "backend_port" => l.backend_port = self.uint(k, v),
                "balance" => l.balance = self.parsed(k, v),
                "health_check" => l.health_check = self.parsed(k, v),
                "health_interval" => l.health_interval = self.seconds(k, v),
                "health_rise" => l.health_rise = self.uint(k, v),
                "health_fall" => l.health_fall = self.uint(k, v),
                "header_timeout" => l.header_timeout = self.seconds(k, v),
                "keepalive_timeout" => l.keepalive_timeout = self.seconds(k, v),
                "backend_timeout" => l.backend_timeout = self.seconds(k, v),
                "pool_idle_timeout" => l.pool_idle_timeout = self.seconds(k, v),
                "pool_size" => l.pool_size = self.uint(k, v),
                "max_conns_per_client" => l.max_conns_per_client = self.uint(k, v),
                "pool_max_requests" => l.pool_max_requests = self.uint(k, v),
                "max_header_size" => l.max_header_size = self.uint(k, v),
                "max_headers" => l.max_headers = self.uint(k, v),
                "access_log" => l.access_log = self.string(k, v),
                "x_forwarded_for" => l.x_forwarded_for = self.boolean(k, v),
                "x_forwarded_proto" => l.x_forwarded_proto = self.boolean(k, v),
                "via" => l.via = self.boolean(k, v),
                "auth" => l.auth = self.strings(k, v),
                "auth_file" => l.auth_file = self.string(k, v),
                "connect_ports" => l.connect_ports = self.ports(k, v),
                "allow" => l.allow = self.parsed_list(k, v),
                "deny" => l.deny = self.parsed_list(k, v),
                "open" => l.open = self.boolean(k, v),
                key if GLOBAL_KEYS.contains(&key) => {
                    let message = format!(
                        "{}: '{key}' is a global setting; put it before the first [[listener]]",
                        self.at(k)
                    );
                    self.problem(k.span().start, message);
                }
                _ => self.unknown(k, &LISTENER_KEYS),
            }
        }
        l.broken = self.unreadable > before;
        l
    }
}

/// The key a syntax error is about: the key itself for a duplicate key
/// (the error's span), else the key of the `key = value` line the error
/// lies in. None when the line names no key.
fn key_before<'t>(text: &'t str, span: &Range<usize>, message: &str) -> Option<&'t str> {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_alphanumeric() || "-_.\"' ".contains(c))
    };
    let clean = |k: &'t str| k.trim().trim_matches(|c| c == '"' || c == '\'');
    if message.starts_with("duplicate key") {
        return text.get(span.clone()).map(clean).filter(|k| is_key(k));
    }
    let before = text.get(..span.start)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (key, _) = line.split_once('=')?;
    let key = clean(key);
    (is_key(key) && !line.trim_start().starts_with('[')).then_some(key)
}

/// The line and column a problem starts with (`FILE:LINE:COLUMN: ...`).
fn line_and_column(file: &str, problem: &str) -> (usize, usize) {
    let mut it = problem
        .strip_prefix(file)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or("")
        .splitn(3, ':')
        .map(|n| n.parse::<usize>().unwrap_or(usize::MAX));
    (
        it.next().unwrap_or(usize::MAX),
        it.next().unwrap_or(usize::MAX),
    )
}

/// A value's type in a message, with the value when it is short.
fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) if s.len() <= 40 => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the number {i}"),
        DeValue::Float(f) => format!("the number {f}"),
        DeValue::Boolean(b) => format!("{b}"),
        other => other.type_str().to_string(),
    }
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use argh::FromArgs;

    fn problems(text: &str) -> Vec<String> {
        match parse("f.toml", text).and_then(|s| s.build()) {
            Ok(_) => Vec::new(),
            Err(p) => p,
        }
    }

    fn flags(args: &[&str]) -> Settings {
        crate::cli::Args::from_args(&["proxy"], args)
            .unwrap()
            .settings()
            .unwrap()
    }

    #[test]
    fn docs_config_md_documents_every_key() {
        let doc = include_str!("../docs/CONFIG.md");
        for key in GLOBAL_KEYS.iter().chain(&LISTENER_KEYS) {
            if *key != "listener" {
                assert!(
                    doc.contains(&format!("| `{key}` |")),
                    "docs/CONFIG.md lacks {key}"
                );
            }
        }
    }

    #[test]
    fn a_bare_listener_gets_the_command_lines_defaults() {
        let file = parse("f.toml", "[[listener]]\n").unwrap().build().unwrap();
        let cli = flags(&[]).build().unwrap();
        let mut l = file.listeners[0].clone();
        assert_eq!(l.name, "listener1");
        l.name = "main".into();
        assert_eq!(format!("{l:?}"), format!("{:?}", cli.listeners[0]));
        let (mut f, mut c) = (file.clone(), cli.clone());
        f.listeners.clear();
        c.listeners.clear();
        assert_eq!(format!("{f:?}"), format!("{c:?}"));
    }

    #[test]
    fn every_problem_names_its_line_column_and_key() {
        let p = problems(
            "workers = \"two\"\nbogus = 1\n[[listener]]\nlisten = \"127.0.0.1:80\"\n\
             backends = []\n[[listener]]\nlisten = \"127.0.0.1:80\"\nmode = \"http\"\n\
             backends = [\"127.0.0.1:1\"]\n[[listener]]\nlisten = \"nowhere\"\n\
             pool_size = -1\n",
        );
        let want = [
            "f.toml:1:11: workers: expected a whole number",
            "f.toml:2:1: unknown key 'bogus'",
            "f.toml:5:12: backends: the backend list is empty",
            "f.toml:7:10: listen: 127.0.0.1:80 clashes with 127.0.0.1:80 of listener 'listener1'",
            "f.toml:11:10: listen: 'nowhere' is not an ADDRESS:PORT",
            "f.toml:12:13: pool_size: -1 is negative; a count or size is 0 or more",
        ];
        assert_eq!(p.len(), want.len(), "{p:#?}");
        for (got, want) in p.iter().zip(want) {
            assert!(
                got.starts_with(want),
                "{got:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn values_are_checked_as_on_the_command_line() {
        for (text, want) in [
            ("max_conns = 0\n[[listener]]\n", "f.toml:1:13: max_conns: 0 is not between"),
            ("[[listener]]\nmode = \"udp\"\n", "f.toml:2:8: mode: 'udp' is not one of"),
            ("[[listener]]\nhealth_interval = -1\n", "f.toml:2:19: health_interval: '-1'"),
            ("[[listener]]\nconnect_ports = [0]\n", "f.toml:2:18: connect_ports: 0 is not a port"),
            ("[[listener]]\ndeny = [\"10/99\"]\n", "f.toml:2:9: deny: '10/99'"),
            ("[[listener]]\nmode = \"tcp\"\nbackends = [\"a:1\", \"b:2\"]\n", "tcp mode relays to one"),
            ("[[listener]]\nworkers = 2\n", "f.toml:2:1: workers: 'workers' is a global"),
            ("listen = \"1.2.3.4:5\"\n[[listener]]\n", "'listen' is a listener setting"),
            ("workers = 2\n", "no [[listener]] table"),
            ("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n[[listener]]\nname = \"a\"\n", "f.toml:5:8: name: listener name 'a' is taken"),
            ("[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n", "both ask for port 0"),
            ("[[listener]]\nlisten = \"0.0.0.0:80\"\n[[listener]]\nlisten = \"127.0.0.1:80\"\n", "clashes"),
            ("[[listener]]\nlisten = \"0.0.0.0:3128\"\nmode = \"forward\"\n", "set open = true"),
            ("admin = \"0.0.0.0:9100\"\n[[listener]]\n", "f.toml:1:9: admin: the admin listener on 0.0.0.0:9100 is not loopback-only; give admin_token"),
            ("[[listener]]\nmode = \"forward\"\nbackends = [\"127.0.0.1:1\"]\nlisten = \"127.0.0.1:1\"\n", "takes no backends"),
            ("[[listener]\n", "f.toml:1:"),
            ("[[listener]]\nmode = \"tcp\"\npool_size = 3\n", "f.toml:3:13: pool_size: tcp mode relays bytes and does not use this HTTP setting"),
            ("[[listener]]\nmode = \"forward\"\nlisten = \"127.0.0.1:1\"\nbalance = \"p2c\"\n", "f.toml:4:11: balance: forward mode has no backends"),
            ("[[listener]]\nmode = \"http\"\nhealth_interval = 0.05\n", "f.toml:3:19: health_interval: 0.05 s is below 0.1 s"),
            ("[[listener]]\nmode = \"http\"\nopen = true\n", "f.toml:3:8: open: only forward mode uses this"),
            ("[[listener]]\nmode = \"http\"\npool_size = 65537\n", "f.toml:3:13: pool_size: 65537 is not between 0 and 65536"),
            ("listener = []\n", "f.toml:1:12: listener: an empty list declares no listener"),
            ("admin = \"127.0.0.1:80\"\n[[listener]]\nlisten = \"[::]:80\"\n", "f.toml:1:9: admin: the admin listener 127.0.0.1:80 clashes with [::]:80 of listener 'listener1'"),
            ("admin = \"127.0.0.1:0\"\nadmin_token = \"\"\n[[listener]]\n", "f.toml:2:15: admin_token: the token is empty"),
            ("[[listener]]\nmode = \"http\"\nmode = \"tcp\"\n", "f.toml:3:1: mode: duplicate key"),
            ("workers = 1 2\n[[listener]]\n", "f.toml:1:11: workers: "),
        ] {
            let p = problems(text);
            assert!(p.len() == 1 && p[0].contains(want), "{text:?}: {p:#?}");
        }
        assert!(problems(
            "[[listener]]\nlisten = \"127.0.0.1:80\"\n[[listener]]\nlisten = \"127.0.0.2:80\"\n"
        )
        .is_empty());
        assert!(problems(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.2:0\"\n"
        )
        .is_empty());
    }

    #[test]
    fn syntax_errors_are_named_by_the_key_of_their_line() {
        let key = |text: &str, at: &str, message: &str| {
            let start = text.find(at).unwrap();
            key_before(text, &(start..start + at.len()), message).map(str::to_string)
        };
        let text = "a = 1\n\"b c\" = x\n[[t]]\nd.e = 2\nd.e = 3\n";
        assert_eq!(key(text, "x", "expected"), Some("b c".into()));
        assert_eq!(
            key(text, "t", "expected"),
            None,
            "a table header names no key"
        );
        let at = text.rfind("e = 3").unwrap();
        assert_eq!(key_before(text, &(at..at + 1), "duplicate key"), Some("e"));
    }

    #[test]
    fn more_than_max_listeners_are_a_problem_at_the_first_too_many() {
        let n = crate::token::MAX_LISTENERS;
        let text: String = (0..=n)
            .map(|i| {
                format!(
                    "[[listener]]\nlisten = \"127.1.{}.{}:0\"\n",
                    i / 250,
                    i % 250 + 1
                )
            })
            .collect();
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        let line = 2 * n + 1;
        assert!(
            p[0].starts_with(&format!("f.toml:{line}:1: more than {n} listeners")),
            "{p:?}"
        );
        let cut = text.rfind("[[listener]]").unwrap();
        assert!(problems(&text[..cut]).is_empty());
    }

    #[test]
    fn flags_override_the_globals_and_the_first_listener_only() {
        let text = "max_conns = 5\nbuffer_size = 4096\nbackend_rcvbuf = 65536\n[[listener]]\nlisten = \"127.0.0.1:1000\"\n\
                    mode = \"http\"\nbackends = [\"127.0.0.1:1\"]\npool_size = 3\n\
                    [[listener]]\nlisten = \"127.0.0.1:2000\"\n";
        let mut s = parse("f.toml", text).unwrap();
        s.overlay(&flags(&[
            "-p",
            "1001",
            "--max-conns",
            "7",
            "-b",
            "127.0.0.1:2",
        ]));
        let c = s.build().unwrap();
        assert_eq!(c.max_conns, 7);
        assert_eq!(c.buffer_size, 4096);
        assert_eq!(c.backend_rcvbuf, 65536);
        let (a, b) = (&c.listeners[0], &c.listeners[1]);
        assert_eq!(a.listen.to_string(), "127.0.0.1:1001");
        assert_eq!(a.mode, crate::config::Mode::Http);
        assert_eq!(a.backends[0].to_string(), "127.0.0.1:2");
        assert_eq!(a.http.pool_size, 3);
        assert_eq!(b.listen.to_string(), "127.0.0.1:2000");
        // A flag's problem is named by the flag.
        let mut s = parse("f.toml", text).unwrap();
        s.overlay(&flags(&["-p", "2000"]));
        let p = s.build().unwrap_err();
        assert!(
            p[0].starts_with("f.toml:10:10: listen: 127.0.0.1:2000 clashes"),
            "{p:?}"
        );
        let mut s = parse("f.toml", text).unwrap();
        s.overlay(&flags(&["--max-header-size", "8192"]));
        assert!(
            s.build().unwrap_err()[0].starts_with("--max-header-size: 8192 is not between 64 and")
        );
    }
}
