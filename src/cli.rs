//! Command-line flags (argh) -> [`Config`].
//!
//! Only the flags that appear become settings (defaults are applied in
//! `settings.rs`), so that they can override a config file's values. Every
//! error names the flag it is about; `main` prints it on one line and exits
//! with status 2.

use crate::config::{Balance, Cidr, Config, Mode, Probe, SpliceMode};
use crate::forward::acl;
use crate::settings::{self, Given, GlobalSettings, ListenerSettings, Settings};
use argh::FromArgs;
use std::net::IpAddr;

#[derive(FromArgs, Debug)]
/// ferry: a TCP and HTTP/1.1 proxy on a per-core, edge-triggered event loop.
/// Relays every connection to LISTEN:PORT to the backends.
#[argh(help_triggers("-h", "--help"))]
pub struct Args {
    /// load the configuration from a TOML FILE; flags given as well override
    /// its globals and its first listener; SIGHUP reads it again
    #[argh(option, short = 'c')]
    pub config: Option<String>,
    /// with -c: check the file (and flags), print every problem or
    /// `FILE: ok`, and exit (1 if any problem)
    #[argh(switch)]
    pub check: bool,
    /// address to listen on, IPv4 or IPv6 (default 0.0.0.0)
    #[argh(option, short = 'l')]
    pub listen: Option<String>,
    /// port to listen on; 0 picks a free one (default 8080)
    #[argh(option, short = 'p')]
    pub port: Option<u16>,
    /// tcp (relay bytes), http (HTTP/1.1 reverse proxy) or forward (HTTP
    /// forward proxy with CONNECT) (default tcp)
    #[argh(option, short = 'm')]
    pub mode: Option<Mode>,
    /// backend HOST or HOST:PORT, resolved at start; repeat for several
    /// (default 127.0.0.1, port from --backend-port)
    #[argh(option, short = 'b')]
    pub backend: Vec<String>,
    /// backend port (default 8081)
    #[argh(option, short = 'P')]
    pub backend_port: Option<u16>,
    /// worker threads, one event loop each (default: the number of CPUs)
    #[argh(option, short = 'w')]
    pub workers: Option<usize>,
    /// client connections for the whole process (default 10000)
    #[argh(option)]
    pub max_conns: Option<usize>,
    /// bytes in each relay buffer (default 16384)
    #[argh(option)]
    pub buffer_size: Option<usize>,
    /// bytes of kernel receive buffer (SO_RCVBUF) for each backend socket;
    /// 0 leaves it to the kernel's autotuning (default 1048576)
    #[argh(option)]
    pub backend_rcvbuf: Option<usize>,
    /// microseconds a worker keeps polling without sleeping after its last
    /// event, 0-10000; trades proxy CPU for fewer wakeups (default 0: off)
    #[argh(option)]
    pub busy_poll: Option<u64>,
    /// zero-copy relay with splice(2): auto, on or off (default auto)
    #[argh(option)]
    pub splice: Option<SpliceMode>,
    /// seconds allowed for a backend connect (default 5)
    #[argh(option, from_str_fn(secs))]
    pub connect_timeout: Option<f64>,
    /// seconds a pair may pass with no traffic either way (default 300)
    #[argh(option, from_str_fn(secs))]
    pub idle_timeout: Option<f64>,
    /// listen backlog (default 1024)
    #[argh(option)]
    pub backlog: Option<i32>,
    /// seconds live connections may take to finish after SIGTERM (default 10)
    #[argh(option, from_str_fn(secs))]
    pub grace: Option<f64>,
    /// seconds the connections of a configuration replaced by a reload may
    /// take to finish before they are closed (default: no limit)
    #[argh(option, from_str_fn(secs))]
    pub reload_grace: Option<f64>,
    /// http: round-robin, least-conn or p2c (default round-robin)
    #[argh(option)]
    pub balance: Option<Balance>,
    /// http: active health check, tcp or http:/PATH (default tcp)
    #[argh(option)]
    pub health_check: Option<Probe>,
    /// http: seconds between health checks (default 2)
    #[argh(option, from_str_fn(secs))]
    pub health_interval: Option<f64>,
    /// http: passed checks that bring a backend back (default 2)
    #[argh(option)]
    pub health_rise: Option<u32>,
    /// http: failed checks that take a backend down (default 3)
    #[argh(option)]
    pub health_fall: Option<u32>,
    /// http: seconds from a request's first byte to its complete head (default 10)
    #[argh(option, from_str_fn(secs))]
    pub header_timeout: Option<f64>,
    /// http: seconds an idle client may wait between requests (default 60)
    #[argh(option, from_str_fn(secs))]
    pub keepalive_timeout: Option<f64>,
    /// http: seconds until the backend's first response byte (default 60)
    #[argh(option, from_str_fn(secs))]
    pub backend_timeout: Option<f64>,
    /// http: seconds an idle backend connection stays pooled (default 4)
    #[argh(option, from_str_fn(secs))]
    pub pool_idle_timeout: Option<f64>,
    /// http: idle connections kept per backend per worker (default 32)
    #[argh(option)]
    pub pool_size: Option<usize>,
    /// connections one client address may have open at once through this
    /// listener; more are refused (TCP: reset; HTTP and forward: 429)
    /// (default: no limit)
    #[argh(option)]
    pub max_conns_per_client: Option<usize>,
    /// http: requests a backend connection carries before it is closed (default 100)
    #[argh(option)]
    pub pool_max_requests: Option<u32>,
    /// http: bytes a request head may take, at most --buffer-size
    /// (default 16384, or --buffer-size if smaller)
    #[argh(option)]
    pub max_header_size: Option<usize>,
    /// http: header fields a request may have (default 100)
    #[argh(option)]
    pub max_headers: Option<usize>,
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
    settings::seconds(value.parse::<f64>().unwrap_or(f64::NAN), value)
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

/// `value` given by `flag`, if it was given.
fn flag<T>(flag: &str, value: Option<T>) -> Option<Given<T>> {
    value.map(|v| Given::new(v, flag))
}

/// A switch: given (as `value`) only when present.
fn switch(flag: &str, on: bool, value: bool) -> Option<Given<bool>> {
    on.then(|| Given::new(value, flag))
}

/// A repeatable flag: given only when it appears at least once.
fn list<T: Clone>(flag: &str, values: &[T]) -> Option<Given<Vec<T>>> {
    (!values.is_empty()).then(|| Given::new(values.to_vec(), flag))
}

impl Args {
    /// The settings these flags give: only the flags that appear, so that
    /// they can be laid over a config file's.
    pub fn settings(&self) -> Result<Settings, CliError> {
        let ip = match &self.listen {
            None => None,
            Some(host) => {
                let ip = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| {
                        CliError(format!("--listen: '{host}' is not an IPv4 or IPv6 address"))
                    })?;
                Some(Given::new(ip, "--listen"))
            }
        };
        let global = GlobalSettings {
            workers: flag("--workers", self.workers),
            max_conns: flag("--max-conns", self.max_conns),
            buffer_size: flag("--buffer-size", self.buffer_size),
            backend_rcvbuf: flag("--backend-rcvbuf", self.backend_rcvbuf),
            busy_poll: flag("--busy-poll", self.busy_poll),
            splice: flag("--splice", self.splice),
            connect_timeout: flag("--connect-timeout", self.connect_timeout),
            idle_timeout: flag("--idle-timeout", self.idle_timeout),
            backlog: flag("--backlog", self.backlog),
            grace: flag("--grace", self.grace),
            reload_grace: flag("--reload-grace", self.reload_grace),
            verbose: switch("--verbose", self.verbose, true),
            admin: flag("--admin", self.admin.clone()),
            admin_token: flag("--admin-token", self.admin_token.clone()),
        };
        let listener = ListenerSettings {
            declared: None,
            broken: false,
            name: None,
            ip,
            port: flag("--port", self.port),
            mode: flag("--mode", self.mode),
            backends: list("--backend", &self.backend),
            backend_port: flag("--backend-port", self.backend_port),
            balance: flag("--balance", self.balance),
            health_check: flag("--health-check", self.health_check.clone()),
            health_interval: flag("--health-interval", self.health_interval),
            health_rise: flag("--health-rise", self.health_rise),
            health_fall: flag("--health-fall", self.health_fall),
            header_timeout: flag("--header-timeout", self.header_timeout),
            keepalive_timeout: flag("--keepalive-timeout", self.keepalive_timeout),
            backend_timeout: flag("--backend-timeout", self.backend_timeout),
            pool_idle_timeout: flag("--pool-idle-timeout", self.pool_idle_timeout),
            pool_size: flag("--pool-size", self.pool_size),
            max_conns_per_client: flag("--max-conns-per-client", self.max_conns_per_client),
            pool_max_requests: flag("--pool-max-requests", self.pool_max_requests),
            max_header_size: flag("--max-header-size", self.max_header_size),
            max_headers: flag("--max-headers", self.max_headers),
            access_log: flag("--access-log", self.access_log.clone()),
            x_forwarded_for: switch("--no-x-forwarded-for", self.no_x_forwarded_for, false),
            x_forwarded_proto: switch("--no-x-forwarded-proto", self.no_x_forwarded_proto, false),
            via: switch("--no-via", self.no_via, false),
            auth: list("--auth", &self.auth),
            auth_file: flag("--auth-file", self.auth_file.clone()),
            connect_ports: flag("--connect-ports", self.connect_ports.clone()),
            allow: list("--allow", &self.allow),
            deny: list("--deny", &self.deny),
            open: switch("--open", self.open, true),
        };
        Ok(Settings {
            global,
            listeners: vec![listener],
        })
    }

    /// Validate the flags and build the configuration (no config file).
    pub fn into_config(self) -> Result<Config, CliError> {
        self.settings()?
            .build()
            .map_err(|problems| CliError(problems.into_iter().next().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
