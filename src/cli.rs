//! Command-line flags (argh) -> [`Config`].
//!
//! Every error names the flag it is about; `main` prints it on one line and
//! exits with status 2.

use crate::config::{
    self, AddFields, Balance, Cidr, Config, Credentials, ForwardConfig, HealthConfig, HttpConfig,
    ListenerConfig, Mode, Probe, SpliceMode,
};
use crate::forward::{acl, auth};
use argh::FromArgs;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[derive(FromArgs, Debug)]
/// ferry: a TCP and HTTP/1.1 proxy on a per-core, edge-triggered event loop.
/// Relays every connection to LISTEN:PORT to the backends.
#[argh(help_triggers("-h", "--help"))]
pub struct Args {
    /// address to listen on, IPv4 or IPv6 (default 0.0.0.0)
    #[argh(option, short = 'l', default = "config::DEFAULT_LISTEN.to_string()")]
    pub listen: String,
    /// port to listen on; 0 picks a free one (default 8080)
    #[argh(option, short = 'p', default = "config::DEFAULT_PORT")]
    pub port: u16,
    /// tcp (relay bytes), http (HTTP/1.1 reverse proxy) or forward (HTTP
    /// forward proxy with CONNECT) (default tcp)
    #[argh(option, short = 'm', default = "Mode::Tcp")]
    pub mode: Mode,
    /// backend HOST or HOST:PORT, resolved at start; repeat for several
    /// (default 127.0.0.1, port from --backend-port)
    #[argh(option, short = 'b')]
    pub backend: Vec<String>,
    /// backend port (default 8081)
    #[argh(option, short = 'P', default = "config::DEFAULT_BACKEND_PORT")]
    pub backend_port: u16,
    /// worker threads, one event loop each (default: the number of CPUs)
    #[argh(option, short = 'w')]
    pub workers: Option<usize>,
    /// client connections for the whole process (default 10000)
    #[argh(option, default = "config::DEFAULT_MAX_CONNS")]
    pub max_conns: usize,
    /// bytes in each relay buffer (default 16384)
    #[argh(option, default = "config::DEFAULT_BUFFER_SIZE")]
    pub buffer_size: usize,
    /// zero-copy relay with splice(2): auto, on or off (default auto)
    #[argh(option, default = "SpliceMode::Auto")]
    pub splice: SpliceMode,
    /// seconds allowed for a backend connect (default 5)
    #[argh(option, default = "config::DEFAULT_CONNECT_TIMEOUT", from_str_fn(secs))]
    pub connect_timeout: f64,
    /// seconds a pair may pass with no traffic either way (default 300)
    #[argh(option, default = "config::DEFAULT_IDLE_TIMEOUT", from_str_fn(secs))]
    pub idle_timeout: f64,
    /// listen backlog (default 1024)
    #[argh(option, default = "config::DEFAULT_BACKLOG")]
    pub backlog: i32,
    /// seconds live connections may take to finish after SIGTERM (default 10)
    #[argh(option, default = "config::DEFAULT_GRACE", from_str_fn(secs))]
    pub grace: f64,
    /// http: round-robin, least-conn or p2c (default round-robin)
    #[argh(option, default = "Balance::RoundRobin")]
    pub balance: Balance,
    /// http: active health check, tcp or http:/PATH (default tcp)
    #[argh(option, default = "Probe::Tcp")]
    pub health_check: Probe,
    /// http: seconds between health checks (default 2)
    #[argh(option, default = "config::DEFAULT_HEALTH_INTERVAL", from_str_fn(secs))]
    pub health_interval: f64,
    /// http: passed checks that bring a backend back (default 2)
    #[argh(option, default = "config::DEFAULT_HEALTH_RISE")]
    pub health_rise: u32,
    /// http: failed checks that take a backend down (default 3)
    #[argh(option, default = "config::DEFAULT_HEALTH_FALL")]
    pub health_fall: u32,
    /// http: seconds from a request's first byte to its complete head (default 10)
    #[argh(option, default = "config::DEFAULT_HEADER_TIMEOUT", from_str_fn(secs))]
    pub header_timeout: f64,
    /// http: seconds an idle client may wait between requests (default 60)
    #[argh(
        option,
        default = "config::DEFAULT_KEEPALIVE_TIMEOUT",
        from_str_fn(secs)
    )]
    pub keepalive_timeout: f64,
    /// http: seconds until the backend's first response byte (default 60)
    #[argh(option, default = "config::DEFAULT_BACKEND_TIMEOUT", from_str_fn(secs))]
    pub backend_timeout: f64,
    /// http: seconds an idle backend connection stays pooled (default 4)
    #[argh(
        option,
        default = "config::DEFAULT_POOL_IDLE_TIMEOUT",
        from_str_fn(secs)
    )]
    pub pool_idle_timeout: f64,
    /// http: idle connections kept per backend per worker (default 32)
    #[argh(option, default = "config::DEFAULT_POOL_SIZE")]
    pub pool_size: usize,
    /// http: requests a backend connection carries before it is closed (default 100)
    #[argh(option, default = "config::DEFAULT_POOL_MAX_REQUESTS")]
    pub pool_max_requests: u32,
    /// http: bytes a request head may take, at most --buffer-size
    /// (default 16384, or --buffer-size if smaller)
    #[argh(option)]
    pub max_header_size: Option<usize>,
    /// http: header fields a request may have (default 100)
    #[argh(option, default = "config::DEFAULT_MAX_HEADERS")]
    pub max_headers: usize,
    /// http: write an access log (combined format + backend and request
    /// time) to PATH, or to stderr with -
    #[argh(option)]
    pub access_log: Option<String>,
    /// http: do not add X-Forwarded-For
    #[argh(switch)]
    pub no_x_forwarded_for: bool,
    /// http: do not add X-Forwarded-Proto
    #[argh(switch)]
    pub no_x_forwarded_proto: bool,
    /// http: do not add Via
    #[argh(switch)]
    pub no_via: bool,
    /// forward: accept proxy credentials USER:PASS (Basic); repeat for several
    #[argh(option)]
    pub auth: Vec<String>,
    /// forward: read credentials from FILE, one user:password per line
    #[argh(option)]
    pub auth_file: Option<String>,
    /// forward: ports CONNECT may reach, comma-separated (default 443)
    #[argh(option, from_str_fn(ports))]
    pub connect_ports: Option<Vec<u16>>,
    /// forward: only reach origins in this network (CIDR); repeat for several
    #[argh(option)]
    pub allow: Vec<Cidr>,
    /// forward: never reach origins in this network (CIDR); repeat for several
    #[argh(option)]
    pub deny: Vec<Cidr>,
    /// forward: serve without credentials on a non-loopback address
    #[argh(switch)]
    pub open: bool,
    /// admin listener ADDR:PORT for /metrics, /stats and /health (default off)
    #[argh(option)]
    pub admin: Option<String>,
    /// bearer token the admin listener requires
    #[argh(option)]
    pub admin_token: Option<String>,
    /// log every connection error
    #[argh(switch, short = 'v')]
    pub verbose: bool,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
    /// print the version, build profile, rustc, features and defaults, and exit
    #[argh(switch)]
    pub info: bool,
}

fn secs(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 1e6 => Ok(v),
        _ => Err(format!(
            "'{value}' is not a number of seconds above 0 (such as 5 or 0.5)"
        )),
    }
}

fn ports(value: &str) -> Result<Vec<u16>, String> {
    acl::parse_ports(value)
}

/// A flag's value that passed parsing but not validation.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(flag: &str, what: impl std::fmt::Display) -> CliError {
    CliError(format!("{flag}: {what}"))
}

fn listen_addr(host: &str, port: u16) -> Result<SocketAddr, CliError> {
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            err(
                "--listen",
                format!("'{host}' is not an IPv4 or IPv6 address"),
            )
        })?;
    Ok(SocketAddr::new(ip, port))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, CliError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (bare, port)
        .to_socket_addrs()
        .map_err(|e| err("--backend", format!("cannot resolve '{host}': {e}")))?
        .next()
        .ok_or_else(|| err("--backend", format!("'{host}' has no address")))
}

/// A backend given as HOST or HOST:PORT (IPv6 as [::1]:80, or a bare literal).
fn backend_addr(value: &str, default_port: u16) -> Result<SocketAddr, CliError> {
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
                .ok_or_else(|| err("--backend", format!("'{value}' has no valid port")))?;
            resolve(host, port)
        }
        _ => resolve(value, default_port),
    }
}

fn at_least(flag: &str, value: u64, min: u64) -> Result<(), CliError> {
    if value < min {
        return Err(err(flag, format!("{value} is not at least {min}")));
    }
    Ok(())
}

impl Args {
    /// Validate the flags and build the configuration.
    pub fn into_config(self) -> Result<Config, CliError> {
        let workers = self.workers.unwrap_or_else(config::default_workers);
        if workers == 0 || workers > 1024 {
            return Err(err(
                "--workers",
                format!("{workers} is not between 1 and 1024"),
            ));
        }
        if self.max_conns == 0 || self.max_conns > 1 << 24 {
            return Err(err(
                "--max-conns",
                format!("{} is not between 1 and 16777216", self.max_conns),
            ));
        }
        if !(config::MIN_BUFFER_SIZE..=config::MAX_BUFFER_SIZE).contains(&self.buffer_size) {
            return Err(err(
                "--buffer-size",
                format!(
                    "{} is not between {} and {}",
                    self.buffer_size,
                    config::MIN_BUFFER_SIZE,
                    config::MAX_BUFFER_SIZE
                ),
            ));
        }
        if self.backlog < 1 {
            return Err(err(
                "--backlog",
                format!("{} is not at least 1", self.backlog),
            ));
        }
        if self.backend_port == 0 {
            return Err(err(
                "--backend-port",
                "0 is not a port a backend can listen on",
            ));
        }
        let listen = listen_addr(&self.listen, self.port)?;
        let forward = self.forward_config()?;
        check_open_proxy(self.mode, listen, &forward, "--listen", "--auth")?;
        let admin = match &self.admin {
            None => None,
            Some(v) => Some(v.parse::<std::net::SocketAddr>().map_err(|_| {
                err(
                    "--admin",
                    format!("'{v}' is not an ADDRESS:PORT such as 127.0.0.1:9100"),
                )
            })?),
        };
        check_admin(
            admin,
            self.admin_token.as_deref(),
            "--admin",
            "--admin-token",
        )?;
        let mut backends = Vec::new();
        if self.mode == Mode::Forward {
            // A forward proxy goes where each request says: no backends.
        } else if self.backend.is_empty() {
            backends.push(resolve(config::DEFAULT_BACKEND, self.backend_port)?);
        }
        for value in self.backend.iter().filter(|_| self.mode != Mode::Forward) {
            backends.push(backend_addr(value, self.backend_port)?);
        }
        if self.mode == Mode::Tcp && backends.len() > 1 {
            return Err(err(
                "--backend",
                "tcp mode relays to one backend; give one, or use -m http",
            ));
        }
        if backends.len() > config::MAX_BACKENDS {
            return Err(err(
                "--backend",
                format!("at most {} backends", config::MAX_BACKENDS),
            ));
        }
        let max_header_size = self
            .max_header_size
            .unwrap_or(config::DEFAULT_MAX_HEADER_SIZE.min(self.buffer_size));
        if max_header_size < 64 || max_header_size > self.buffer_size {
            return Err(err(
                "--max-header-size",
                format!(
                    "{max_header_size} is not between 64 and --buffer-size ({})",
                    self.buffer_size
                ),
            ));
        }
        if self.max_headers == 0 || self.max_headers > crate::http::head::HEADER_SLOTS {
            return Err(err(
                "--max-headers",
                format!(
                    "{} is not between 1 and {}",
                    self.max_headers,
                    crate::http::head::HEADER_SLOTS
                ),
            ));
        }
        at_least("--health-rise", self.health_rise as u64, 1)?;
        at_least("--health-fall", self.health_fall as u64, 1)?;
        at_least("--pool-max-requests", self.pool_max_requests as u64, 1)?;
        let http = HttpConfig {
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            keepalive_timeout: Duration::from_secs_f64(self.keepalive_timeout),
            backend_timeout: Duration::from_secs_f64(self.backend_timeout),
            pool_idle_timeout: Duration::from_secs_f64(self.pool_idle_timeout),
            pool_size: self.pool_size,
            pool_max_requests: self.pool_max_requests,
            max_header_size,
            max_headers: self.max_headers,
            access_log: self.access_log,
            add: AddFields {
                x_forwarded_for: !self.no_x_forwarded_for,
                x_forwarded_proto: !self.no_x_forwarded_proto,
                via: !self.no_via,
            },
        };
        let health = HealthConfig {
            probe: self.health_check,
            interval: Duration::from_secs_f64(self.health_interval),
            rise: self.health_rise,
            fall: self.health_fall,
        };
        Ok(Config {
            workers,
            max_conns: self.max_conns,
            buffer_size: self.buffer_size,
            splice: self.splice,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout),
            backlog: self.backlog,
            grace: Duration::from_secs_f64(self.grace),
            verbose: self.verbose,
            listeners: vec![ListenerConfig {
                name: "main".into(),
                listen,
                mode: self.mode,
                backends,
                balance: self.balance,
                health,
                http,
                forward,
            }],
            admin,
            admin_token: self.admin_token,
        })
    }

    fn forward_config(&self) -> Result<ForwardConfig, CliError> {
        let mut pairs = Vec::new();
        for value in &self.auth {
            pairs.push(auth::parse_credential(value).map_err(|e| err("--auth", e))?);
        }
        if let Some(path) = &self.auth_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err("--auth-file", format!("cannot read {path}: {e}")))?;
            pairs.extend(
                auth::parse_file(&text).map_err(|e| err("--auth-file", format!("{path}: {e}")))?,
            );
        }
        Ok(ForwardConfig {
            auth: Credentials::new(pairs),
            connect_ports: self
                .connect_ports
                .clone()
                .unwrap_or_else(|| config::DEFAULT_CONNECT_PORTS.to_vec()),
            acl: config::Acl {
                allow: self.allow.clone(),
                deny: self.deny.clone(),
            },
            open: self.open,
        })
    }
}

/// A forward proxy without credentials serves only loopback clients unless
/// the user opts in: an open proxy on the internet is abused within hours.
pub fn check_open_proxy(
    mode: Mode,
    listen: std::net::SocketAddr,
    forward: &ForwardConfig,
    listen_key: &str,
    auth_key: &str,
) -> Result<(), CliError> {
    if mode == Mode::Forward
        && forward.auth.is_empty()
        && !forward.open
        && !listen.ip().is_loopback()
    {
        return Err(err(
            listen_key,
            format!(
                "forward mode on {listen} without credentials would be an open proxy; \
                 give {auth_key} USER:PASS (or an auth file), listen on a loopback address, \
                 or pass --open to serve anyone who can reach it"
            ),
        ));
    }
    Ok(())
}

/// The admin listener shows the proxy's insides: off loopback it needs a token.
pub fn check_admin(
    admin: Option<std::net::SocketAddr>,
    token: Option<&str>,
    admin_key: &str,
    token_key: &str,
) -> Result<(), CliError> {
    if let Some(addr) = admin {
        if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
            return Err(err(
                admin_key,
                format!(
                    "the admin listener on {addr} is not loopback-only; give {token_key} \
                     or bind it to 127.0.0.1 or ::1"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::from_args(&["proxy"], args).map_err(|e| e.output)?;
        args.into_config().map_err(|e| e.0)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listeners[0].listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.listeners[0].backends[0].to_string(), "127.0.0.1:8081");
        assert_eq!(c.listeners[0].mode, Mode::Tcp);
        assert_eq!(c.max_conns, 10_000);
        assert_eq!(c.buffer_size, 16384);
        assert_eq!(c.splice, SpliceMode::Auto);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn ipv6_literals_are_accepted() {
        let c = parse(&["-l", "::1", "-b", "::1", "-p", "0"]).unwrap();
        assert_eq!(c.listeners[0].listen.to_string(), "[::1]:0");
        assert_eq!(c.listeners[0].backends[0].to_string(), "[::1]:8081");
    }

    #[test]
    fn http_mode_takes_several_backends() {
        let c = parse(&[
            "-m",
            "http",
            "--backend",
            "127.0.0.1:80",
            "-b",
            "[::1]:81",
            "-b",
            "127.0.0.2",
        ])
        .unwrap();
        let b: Vec<String> = c.listeners[0]
            .backends
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(b, ["127.0.0.1:80", "[::1]:81", "127.0.0.2:8081"]);
        assert!(parse(&["-b", "127.0.0.1:80", "-b", "127.0.0.1:81"])
            .unwrap_err()
            .contains("--backend"));
        assert!(parse(&["-m", "http", "--health-check", "http:x"])
            .unwrap_err()
            .contains("--health-check"));
        assert!(parse(&["--max-header-size", "99999"])
            .unwrap_err()
            .contains("--max-header-size"));
    }

    #[test]
    fn forward_mode_refuses_to_be_an_open_proxy() {
        let e = parse(&["-m", "forward", "-l", "0.0.0.0"]).unwrap_err();
        assert!(e.contains("--auth") && e.contains("--open"), "{e}");
        assert!(parse(&["-m", "forward", "-l", "127.0.0.1"]).is_ok());
        assert!(parse(&["-m", "forward", "-l", "::1"]).is_ok());
        assert!(parse(&["-m", "forward", "-l", "0.0.0.0", "--open"]).is_ok());
        let c = parse(&["-m", "forward", "-l", "0.0.0.0", "--auth", "u:p"]).unwrap();
        assert!(c.listeners[0].backends.is_empty());
        assert_eq!(c.listeners[0].forward.connect_ports, [443]);
        let c = parse(&["-m", "forward", "-l", "::1", "--connect-ports", "443,8443"]).unwrap();
        assert_eq!(c.listeners[0].forward.connect_ports, [443, 8443]);
        assert!(parse(&["-m", "forward", "--auth", "nocolon"])
            .unwrap_err()
            .contains("--auth"));
        assert!(parse(&["--deny", "10.0.0.0/40"]).is_err());
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let e = parse(&["--admin", "0.0.0.0:9100"]).unwrap_err();
        assert!(e.contains("--admin-token"), "{e}");
        assert!(parse(&["--admin", "0.0.0.0:9100", "--admin-token", "t"]).is_ok());
        assert!(parse(&["--admin", "127.0.0.1:9100"]).is_ok());
        assert!(parse(&["--admin", "nowhere"])
            .unwrap_err()
            .contains("--admin"));
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--splice", "maybe"][..], "--splice"),
            (&["--workers", "0"][..], "--workers"),
            (&["--buffer-size", "10"][..], "--buffer-size"),
            (&["--port", "99999"][..], "--port"),
            (&["--connect-timeout", "-1"][..], "--connect-timeout"),
            (&["-l", "nowhere"][..], "--listen"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }
}
