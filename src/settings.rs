//! Settings as they were given, before defaults: the command line and the
//! config file both fill a [`Settings`], the command line's can be laid over
//! a file's (its globals and its first listener), and [`Settings::build`]
//! applies the documented defaults and checks everything into a [`Config`].
//!
//! Every value carries where it was given ([`Given::at`]): a flag such as
//! `--max-conns`, or `FILE:LINE:COLUMN: key`. Every problem is one line that
//! starts with that place, and `build` reports all of them, not the first.
//! A setting nobody gave is named after its listener's place in the file
//! (`FILE:LINE:COLUMN: listener 'web': listen`) or, on the command line,
//! after its flag. Defaults and checks exist once, here, for both sources.

use crate::config::{
    self, AddFields, Balance, Cidr, Config, Credentials, ForwardConfig, HealthConfig, HttpConfig,
    ListenerConfig, Mode, Probe, SpliceMode,
};
use crate::forward::auth;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The most idle connections a listener may pool per backend per worker.
/// A worker reserves room for `pool_size` connections of each backend up
/// front, so an unbounded value would make it reserve more memory than
/// exists (and the process abort, even on a reload).
pub const MAX_POOL_SIZE: usize = 65536;

/// The shortest time between health checks. The checker sleeps the
/// interval between rounds and gives each probe at most the interval, so a
/// microsecond made a thread spin on connects and took healthy backends down.
pub const MIN_HEALTH_INTERVAL: f64 = 0.1;

/// A value and where it was given, which every message about it starts with.
#[derive(Clone, Debug)]
pub struct Given<T> {
    pub value: T,
    pub at: String,
}

impl<T> Given<T> {
    pub fn new(value: T, at: impl Into<String>) -> Given<T> {
        Given {
            value,
            at: at.into(),
        }
    }
}

/// Process-wide settings.
#[derive(Clone, Debug, Default)]
pub struct GlobalSettings {
    pub workers: Option<Given<usize>>,
    pub max_conns: Option<Given<usize>>,
    pub buffer_size: Option<Given<usize>>,
    pub backend_rcvbuf: Option<Given<usize>>,
    pub busy_poll: Option<Given<u64>>,
    pub splice: Option<Given<SpliceMode>>,
    pub connect_timeout: Option<Given<f64>>,
    pub idle_timeout: Option<Given<f64>>,
    pub backlog: Option<Given<i32>>,
    pub grace: Option<Given<f64>>,
    pub reload_grace: Option<Given<f64>>,
    pub verbose: Option<Given<bool>>,
    pub admin: Option<Given<String>>,
    pub admin_token: Option<Given<String>>,
}

/// One listener's settings. Seconds are `f64` already checked by
/// [`seconds`]; everything else is checked by `build`.
#[derive(Clone, Debug, Default)]
pub struct ListenerSettings {
    /// Where a file declared this listener (`FILE:LINE:COLUMN`); `None` on
    /// the command line, where each setting is named by its flag.
    pub declared: Option<String>,
    /// A value of this listener could not be read (that problem is already
    /// reported): it is not built, so that defaults standing in for the
    /// unreadable values cannot make up further problems.
    pub broken: bool,
    pub name: Option<Given<String>>,
    pub ip: Option<Given<IpAddr>>,
    pub port: Option<Given<u16>>,
    pub mode: Option<Given<Mode>>,
    pub backends: Option<Given<Vec<String>>>,
    pub backend_port: Option<Given<u16>>,
    pub balance: Option<Given<Balance>>,
    pub health_check: Option<Given<Probe>>,
    pub health_interval: Option<Given<f64>>,
    pub health_rise: Option<Given<u32>>,
    pub health_fall: Option<Given<u32>>,
    pub header_timeout: Option<Given<f64>>,
    pub keepalive_timeout: Option<Given<f64>>,
    pub backend_timeout: Option<Given<f64>>,
    pub pool_idle_timeout: Option<Given<f64>>,
    pub pool_size: Option<Given<usize>>,
    pub max_conns_per_client: Option<Given<usize>>,
    pub pool_max_requests: Option<Given<u32>>,
    pub max_header_size: Option<Given<usize>>,
    pub max_headers: Option<Given<usize>>,
    pub access_log: Option<Given<String>>,
    pub x_forwarded_for: Option<Given<bool>>,
    pub x_forwarded_proto: Option<Given<bool>>,
    pub via: Option<Given<bool>>,
    pub auth: Option<Given<Vec<String>>>,
    pub auth_file: Option<Given<String>>,
    pub connect_ports: Option<Given<Vec<u16>>>,
    pub allow: Option<Given<Vec<Cidr>>>,
    pub deny: Option<Given<Vec<Cidr>>>,
    pub open: Option<Given<bool>>,
}

/// Everything given, from one source or laid over another.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub global: GlobalSettings,
    pub listeners: Vec<ListenerSettings>,
}

/// Replace each field of `$base` that `$top` gives.
macro_rules! overlay_fields {
    ($base:expr, $top:expr; $($field:ident),* $(,)?) => {
        $( if $top.$field.is_some() { $base.$field = $top.$field.clone(); } )*
    };
}

impl Settings {
    /// Lay `top` (the command line) over these settings: its globals over
    /// the globals, its listener over the first listener.
    pub fn overlay(&mut self, top: &Settings) {
        let (b, t) = (&mut self.global, &top.global);
        overlay_fields!(b, t; workers, max_conns, buffer_size, backend_rcvbuf, busy_poll, splice, connect_timeout,
            idle_timeout, backlog, grace, reload_grace, verbose, admin, admin_token);
        let (Some(b), Some(t)) = (self.listeners.first_mut(), top.listeners.first()) else {
            return;
        };
        overlay_fields!(b, t; name, ip, port, mode, backends, backend_port, balance,
            health_check, health_interval, health_rise, health_fall, header_timeout,
            keepalive_timeout, backend_timeout, pool_idle_timeout, pool_size, max_conns_per_client, pool_max_requests,
            max_header_size, max_headers, access_log, x_forwarded_for, x_forwarded_proto, via,
            auth, auth_file, connect_ports, allow, deny, open);
    }

    /// Apply the defaults and check everything: the configuration, or every
    /// problem found.
    pub fn build(&self) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let g = &self.global;
        let workers = value_or(&g.workers, config::default_workers());
        if let Some(w) = &g.workers {
            in_range(&mut problems, w, 1, 1024);
        }
        let max_conns = value_or(&g.max_conns, config::DEFAULT_MAX_CONNS);
        if let Some(m) = &g.max_conns {
            in_range(&mut problems, m, 1, 1 << 24);
        }
        let buffer_size = value_or(&g.buffer_size, config::DEFAULT_BUFFER_SIZE);
        if let Some(b) = &g.buffer_size {
            in_range(
                &mut problems,
                b,
                config::MIN_BUFFER_SIZE,
                config::MAX_BUFFER_SIZE,
            );
        }
        let backend_rcvbuf = value_or(&g.backend_rcvbuf, config::DEFAULT_BACKEND_RCVBUF);
        if let Some(b) = g.backend_rcvbuf.as_ref() {
            if b.value != 0 && !(4096..=config::MAX_BACKEND_RCVBUF).contains(&b.value) {
                problems.push(format!(
                    "{}: {} is neither 0 (the kernel's autotuning) nor between 4096 and {}",
                    b.at,
                    b.value,
                    config::MAX_BACKEND_RCVBUF
                ));
            }
        }
        if let Some(b) = &g.busy_poll {
            in_range(&mut problems, b, 0, config::MAX_BUSY_POLL_US);
        }
        let backlog = value_or(&g.backlog, config::DEFAULT_BACKLOG);
        if let Some(b) = g.backlog.as_ref().filter(|b| b.value < 1) {
            problems.push(format!("{}: {} is not at least 1", b.at, b.value));
        }
        let admin = g.admin.as_ref().and_then(|a| {
            let addr = a.value.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{}: '{}' is not an ADDRESS:PORT such as 127.0.0.1:9100",
                    a.at, a.value
                )
            });
            addr.map_err(|e| problems.push(e)).ok()
        });
        let admin_token = g.admin_token.as_ref().map(|t| t.value.clone());
        if let Some(t) = g.admin_token.as_ref().filter(|t| t.value.is_empty()) {
            // An empty token could never be presented: every request would get 401.
            problems.push(format!(
                "{}: the token is empty; give one, or leave the token out on a loopback admin address",
                t.at
            ));
        }
        if let (Some(addr), Some(a)) = (admin, &g.admin) {
            let token_key = name_of(&a.at, "--admin-token", "admin_token");
            if let Err(e) = check_admin(Some(addr), admin_token.as_deref(), &a.at, token_key) {
                problems.push(e);
            }
        }
        let built: Vec<Option<ListenerConfig>> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, ls)| {
                (!ls.broken)
                    .then(|| ls.build(i, buffer_size, &mut problems))
                    .flatten()
            })
            .collect();
        check_listeners_apart(&self.listeners, &mut problems);
        if let (Some(addr), Some(a)) = (admin, &g.admin) {
            check_admin_apart(addr, &a.at, &self.listeners, &mut problems);
        }
        if let Some(extra) = self.listeners.get(crate::token::MAX_LISTENERS) {
            problems.push(format!(
                "{}: more than {} listeners; a worker tells at most {} apart",
                extra.declared.as_deref().unwrap_or("the command line"),
                crate::token::MAX_LISTENERS,
                crate::token::MAX_LISTENERS,
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let listeners = built.into_iter().flatten().collect();
        Ok(Config {
            workers,
            max_conns,
            buffer_size,
            backend_rcvbuf,
            busy_poll: Duration::from_micros(value_or(&g.busy_poll, 0)),
            splice: value_or(&g.splice, SpliceMode::Auto),
            connect_timeout: secs_or(&g.connect_timeout, config::DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: secs_or(&g.idle_timeout, config::DEFAULT_IDLE_TIMEOUT),
            backlog,
            grace: secs_or(&g.grace, config::DEFAULT_GRACE),
            reload_grace: g
                .reload_grace
                .as_ref()
                .map(|g| Duration::from_secs_f64(g.value)),
            verbose: value_or(&g.verbose, false),
            listeners,
            admin,
            admin_token,
        })
    }
}

impl ListenerSettings {
    /// Where a problem with an unset `key` (flag `flag`) is reported.
    fn place(&self, flag: &str, key: &str) -> String {
        match &self.declared {
            Some(at) => format!("{at}: {key}"),
            None => flag.to_string(),
        }
    }

    /// Where a setting was given, or would have been.
    fn at<T>(&self, given: &Option<Given<T>>, flag: &str, key: &str) -> String {
        given
            .as_ref()
            .map_or_else(|| self.place(flag, key), |g| g.at.clone())
    }

    /// The name this listener is known by: given, `main` on the command
    /// line, `listenerN` (from 1) in a file.
    fn name(&self, index: usize) -> String {
        match (&self.name, &self.declared) {
            (Some(n), _) => n.value.clone(),
            (None, None) => "main".into(),
            (None, Some(_)) => format!("listener{}", index + 1),
        }
    }

    fn listen(&self) -> SocketAddr {
        let ip = self.ip.as_ref().map_or_else(
            || config::DEFAULT_LISTEN.parse().expect("a valid default"),
            |g| g.value,
        );
        SocketAddr::new(ip, value_or(&self.port, config::DEFAULT_PORT))
    }

    fn build(
        &self,
        index: usize,
        buffer_size: usize,
        problems: &mut Vec<String>,
    ) -> Option<ListenerConfig> {
        let before = problems.len();
        let name = self.name(index);
        if let Some(n) = self.name.as_ref().filter(|n| !valid_name(&n.value)) {
            problems.push(format!(
                "{}: '{}' is not a name of letters, digits, '-', '_' and '.'",
                n.at, n.value
            ));
        }
        let mode = value_or(&self.mode, Mode::Tcp);
        let listen = self.listen();
        let backends = self.backends(mode, problems);
        let forward = self.forward(problems);
        if let Some(forward) = &forward {
            let at = self.at(&self.ip, "--listen", "listen");
            let auth = name_of(&at, "--auth USER:PASS", "auth = [\"USER:PASS\"]");
            let open = name_of(&at, "pass --open", "set open = true");
            if let Err(e) = check_open_proxy(mode, listen, forward, &at, auth, open) {
                problems.push(e);
            }
        }
        let max_header_size = value_or(
            &self.max_header_size,
            config::DEFAULT_MAX_HEADER_SIZE.min(buffer_size),
        );
        if let Some(m) = &self.max_header_size {
            if m.value < 64 || m.value > buffer_size {
                problems.push(format!(
                    "{}: {} is not between 64 and the buffer size ({buffer_size})",
                    m.at, m.value
                ));
            }
        }
        if let Some(m) = &self.max_headers {
            in_range(problems, m, 1, crate::http::head::HEADER_SLOTS);
        }
        if let Some(p) = &self.pool_size {
            in_range(problems, p, 0, MAX_POOL_SIZE);
        }
        if let Some(m) = &self.max_conns_per_client {
            in_range(problems, m, 1, 1 << 24);
        }
        for n in [
            &self.health_rise,
            &self.health_fall,
            &self.pool_max_requests,
        ]
        .into_iter()
        .flatten()
        .filter(|n| n.value < 1)
        {
            problems.push(format!("{}: {} is not at least 1", n.at, n.value));
        }
        self.check_mode_keys(mode, problems);
        if let Some(h) = self
            .health_interval
            .as_ref()
            .filter(|h| h.value < MIN_HEALTH_INTERVAL)
        {
            problems.push(format!(
                "{}: {} s is below {MIN_HEALTH_INTERVAL} s: checks that often keep a thread \
                 connecting without a pause, and a probe (given the interval to answer) \
                 fails a healthy backend",
                h.at, h.value
            ));
        }
        if let Some(p) = self.backend_port.as_ref().filter(|p| p.value == 0) {
            problems.push(format!("{}: 0 is not a port a backend can listen on", p.at));
        }
        if problems.len() > before {
            return None;
        }
        let http = HttpConfig {
            header_timeout: secs_or(&self.header_timeout, config::DEFAULT_HEADER_TIMEOUT),
            keepalive_timeout: secs_or(&self.keepalive_timeout, config::DEFAULT_KEEPALIVE_TIMEOUT),
            backend_timeout: secs_or(&self.backend_timeout, config::DEFAULT_BACKEND_TIMEOUT),
            pool_idle_timeout: secs_or(&self.pool_idle_timeout, config::DEFAULT_POOL_IDLE_TIMEOUT),
            pool_size: value_or(&self.pool_size, config::DEFAULT_POOL_SIZE),
            pool_max_requests: value_or(&self.pool_max_requests, config::DEFAULT_POOL_MAX_REQUESTS),
            max_header_size,
            max_headers: value_or(&self.max_headers, config::DEFAULT_MAX_HEADERS),
            access_log: self.access_log.as_ref().map(|a| a.value.clone()),
            add: AddFields {
                x_forwarded_for: value_or(&self.x_forwarded_for, true),
                x_forwarded_proto: value_or(&self.x_forwarded_proto, true),
                via: value_or(&self.via, true),
            },
        };
        let health = HealthConfig {
            probe: value_or(&self.health_check, Probe::Tcp),
            interval: secs_or(&self.health_interval, config::DEFAULT_HEALTH_INTERVAL),
            rise: value_or(&self.health_rise, config::DEFAULT_HEALTH_RISE),
            fall: value_or(&self.health_fall, config::DEFAULT_HEALTH_FALL),
        };
        Some(ListenerConfig {
            name,
            listen,
            mode,
            backends: backends?,
            balance: value_or(&self.balance, Balance::RoundRobin),
            max_conns_per_client: self.max_conns_per_client.as_ref().map(|m| m.value),
            health,
            http,
            forward: forward?,
        })
    }

    /// A setting this listener's mode has no use for is a problem, not a
    /// silent no-op (an `access_log` on a TCP listener would log nothing).
    fn check_mode_keys(&self, mode: Mode, problems: &mut Vec<String>) {
        macro_rules! given {
            ($($field:ident),*) => { [$(self.$field.as_ref().map(|g| g.at.as_str())),*] };
        }
        let http = given!(
            header_timeout,
            keepalive_timeout,
            backend_timeout,
            pool_idle_timeout,
            pool_size,
            pool_max_requests,
            max_header_size,
            max_headers,
            access_log,
            x_forwarded_for,
            x_forwarded_proto,
            via
        );
        let backends = given!(
            balance,
            health_check,
            health_interval,
            health_rise,
            health_fall
        );
        let forward = given!(auth, auth_file, connect_ports, allow, deny, open);
        let backend_port = given!(backend_port);
        let (unused, why): (Vec<&str>, &str) = match mode {
            Mode::Tcp => (
                http.into_iter().chain(backends).flatten().collect(),
                "tcp mode relays bytes and does not use this HTTP setting",
            ),
            Mode::Http => (Vec::new(), ""),
            Mode::Forward => (
                backends.into_iter().chain(backend_port).flatten().collect(),
                "forward mode has no backends to balance, check or give a port",
            ),
        };
        for at in unused {
            let fix = name_of(at, "-m http", "mode = \"http\"");
            let fix = if mode == Mode::Tcp {
                format!("; remove it, or use {fix}")
            } else {
                "; remove it".to_string()
            };
            problems.push(format!("{at}: {why}{fix}"));
        }
        if mode != Mode::Forward {
            for at in forward.into_iter().flatten() {
                let fix = name_of(at, "-m forward", "mode = \"forward\"");
                problems.push(format!(
                    "{at}: only forward mode uses this; remove it, or use {fix}"
                ));
            }
        }
    }

    /// The backends, resolved: the default one when none is given, none in
    /// forward mode (which goes where each request says).
    fn backends(&self, mode: Mode, problems: &mut Vec<String>) -> Option<Vec<SocketAddr>> {
        let port = value_or(&self.backend_port, config::DEFAULT_BACKEND_PORT);
        let Some(given) = &self.backends else {
            if mode == Mode::Forward {
                return Some(Vec::new());
            }
            return match resolve(config::DEFAULT_BACKEND, port) {
                Ok(addr) => Some(vec![addr]),
                Err(e) => {
                    problems.push(format!("{}: {e}", self.place("--backend", "backends")));
                    None
                }
            };
        };
        let at = &given.at;
        if mode == Mode::Forward {
            problems.push(format!(
                "{at}: forward mode goes to the origin each request names; it takes no backends"
            ));
            return None;
        }
        if given.value.is_empty() {
            problems.push(format!(
                "{at}: the backend list is empty; {mode} mode needs at least one backend"
            ));
            return None;
        }
        if mode == Mode::Tcp && given.value.len() > 1 {
            let more = name_of(at, "-m http", "mode = \"http\"");
            problems.push(format!(
                "{at}: tcp mode relays to one backend; give one, or use {more}"
            ));
            return None;
        }
        if given.value.len() > config::MAX_BACKENDS {
            problems.push(format!("{at}: at most {} backends", config::MAX_BACKENDS));
            return None;
        }
        let mut out = Vec::new();
        for value in &given.value {
            match backend_addr(value, port) {
                Ok(addr) => out.push(addr),
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        (out.len() == given.value.len()).then_some(out)
    }

    fn forward(&self, problems: &mut Vec<String>) -> Option<ForwardConfig> {
        let mut pairs = Vec::new();
        let mut ok = true;
        for value in self
            .auth
            .iter()
            .flat_map(|a| a.value.iter().map(move |v| (a, v)))
        {
            match auth::parse_credential(value.1) {
                Ok(p) => pairs.push(p),
                Err(e) => {
                    problems.push(format!("{}: {e}", value.0.at));
                    ok = false;
                }
            }
        }
        if let Some(f) = &self.auth_file {
            let path = &f.value;
            match std::fs::read_to_string(path) {
                Err(e) => {
                    problems.push(format!("{}: cannot read {path}: {e}", f.at));
                    ok = false;
                }
                Ok(text) => match auth::parse_file(&text) {
                    Ok(more) => pairs.extend(more),
                    Err(e) => {
                        problems.push(format!("{}: {path}: {e}", f.at));
                        ok = false;
                    }
                },
            }
        }
        ok.then(|| ForwardConfig {
            auth: Credentials::new(pairs),
            connect_ports: self.connect_ports.as_ref().map_or_else(
                || config::DEFAULT_CONNECT_PORTS.to_vec(),
                |p| p.value.clone(),
            ),
            acl: config::Acl {
                allow: self
                    .allow
                    .as_ref()
                    .map_or_else(Vec::new, |a| a.value.clone()),
                deny: self
                    .deny
                    .as_ref()
                    .map_or_else(Vec::new, |d| d.value.clone()),
            },
            open: value_or(&self.open, false),
        })
    }
}

/// Names must be unique, and no two listeners may ask for the same socket.
/// Port 0 on one address twice is refused too: listeners are told apart by
/// address across reloads. A listener that could not be read takes part
/// only with what was read of it.
fn check_listeners_apart(given: &[ListenerSettings], problems: &mut Vec<String>) {
    let seen: Vec<(String, Option<SocketAddr>, &ListenerSettings)> = given
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let listen = (!l.broken || l.port.is_some()).then(|| l.listen());
            (l.name(i), listen, l)
        })
        .collect();
    for (j, (name_j, listen_j, lj)) in seen.iter().enumerate() {
        for (name_i, listen_i, li) in &seen[..j] {
            if name_i == name_j && (!lj.broken || lj.name.is_some()) {
                problems.push(format!(
                    "{}: listener name '{name_j}' is taken by the listener at {}",
                    lj.at(&lj.name, "--name", "name"),
                    li.declared.as_deref().unwrap_or("the command line"),
                ));
            }
            let (Some(a), Some(b)) = (listen_i, listen_j) else {
                continue;
            };
            if a.port() == b.port() && overlaps(a.ip(), b.ip()) {
                let at = lj.at(&lj.port, "--port", "listen");
                let what = if a.port() == 0 {
                    format!(
                        "listeners '{name_i}' and '{name_j}' both ask for port 0 on {}; ferry \
                         tells listeners apart by address, so give each its own address or port",
                        b.ip()
                    )
                } else {
                    format!("{b} clashes with {a} of listener '{name_i}'")
                };
                problems.push(format!("{at}: {what}"));
            }
        }
    }
}

/// The admin listener may not take a listener's address: the first one
/// bound would make the other fail at start (or on a reload). Port 0 picks
/// a free port for each, so it never clashes.
fn check_admin_apart(
    admin: SocketAddr,
    admin_at: &str,
    given: &[ListenerSettings],
    problems: &mut Vec<String>,
) {
    for (i, l) in given.iter().enumerate() {
        if l.broken && l.port.is_none() {
            continue;
        }
        let listen = l.listen();
        if admin.port() != 0 && admin.port() == listen.port() && overlaps(admin.ip(), listen.ip()) {
            problems.push(format!(
                "{admin_at}: the admin listener {admin} clashes with {listen} of listener '{}'",
                l.name(i)
            ));
        }
    }
}

/// Whether two listening addresses on the same port take the same
/// connections: equal, or one is a wildcard that covers the other (a `::`
/// socket is dual-stack and covers IPv4 too). An IPv4-mapped IPv6 address
/// (`::ffff:127.0.0.1`) listens on its IPv4 address.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    let covers = |w: IpAddr, o: IpAddr| w.is_unspecified() && (w.is_ipv6() || o.is_ipv4());
    a == b || covers(a, b) || covers(b, a)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The flag or the file key, whichever the place `at` is written in (flags
/// start with `-`).
fn name_of<'a>(at: &str, flag: &'a str, key: &'a str) -> &'a str {
    if at.starts_with('-') {
        flag
    } else {
        key
    }
}

fn value_or<T: Clone>(given: &Option<Given<T>>, default: T) -> T {
    given.as_ref().map_or(default, |g| g.value.clone())
}

fn secs_or(given: &Option<Given<f64>>, default: f64) -> Duration {
    Duration::from_secs_f64(value_or(given, default))
}

fn in_range<T>(problems: &mut Vec<String>, given: &Given<T>, min: T, max: T)
where
    T: PartialOrd + std::fmt::Display,
{
    if given.value < min || given.value > max {
        problems.push(format!(
            "{}: {} is not between {min} and {max}",
            given.at, given.value
        ));
    }
}

/// A number of seconds: above 0, at most 1e6. `as_given` is the value as
/// written, for the message.
pub fn seconds(v: f64, as_given: &str) -> Result<f64, String> {
    if v > 0.0 && v.is_finite() && v <= 1e6 {
        Ok(v)
    } else {
        Err(format!(
            "'{as_given}' is not a number of seconds above 0 (such as 5 or 0.5)"
        ))
    }
}

pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{host}' has no address"))
}

/// A backend given as HOST or HOST:PORT (IPv6 as [::1]:80, or a bare
/// literal); a HOST alone gets `default_port`.
pub fn backend_addr(value: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if value.parse::<IpAddr>().is_ok() || value.starts_with('[') {
        return resolve(value, default_port);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("'{value}' has no valid port"))?;
            resolve(host, port)
        }
        _ => resolve(value, default_port),
    }
}

/// A forward proxy without credentials serves only loopback clients unless
/// the user opts in: an open proxy on the internet is abused within hours.
pub fn check_open_proxy(
    mode: Mode,
    listen: SocketAddr,
    forward: &ForwardConfig,
    listen_at: &str,
    auth: &str,
    open: &str,
) -> Result<(), String> {
    if mode == Mode::Forward
        && forward.auth.is_empty()
        && !forward.open
        && !listen.ip().is_loopback()
    {
        return Err(format!(
            "{listen_at}: forward mode on {listen} without credentials would be an open proxy; \
             give {auth} (or an auth file), listen on a loopback address, \
             or {open} to serve anyone who can reach it"
        ));
    }
    Ok(())
}

/// The admin listener shows the proxy's insides: off loopback it needs a token.
pub fn check_admin(
    admin: Option<SocketAddr>,
    token: Option<&str>,
    admin_at: &str,
    token_key: &str,
) -> Result<(), String> {
    if let Some(addr) = admin {
        if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
            return Err(format!(
                "{admin_at}: the admin listener on {addr} is not loopback-only; give {token_key} \
                 or bind it to 127.0.0.1 or ::1"
            ));
        }
    }
    Ok(())
}
