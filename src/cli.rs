//! Command-line flags (argh) -> [`Config`].
//!
//! Every error names the flag it is about; `main` prints it on one line and
//! exits with status 2.

use crate::config::{self, Config, ListenerConfig, Mode, SpliceMode};
use argh::FromArgs;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[derive(FromArgs, Debug)]
/// ferry: a TCP proxy on a per-core, edge-triggered event loop.
/// Relays every connection to LISTEN:PORT to BACKEND:BACKEND_PORT.
#[argh(help_triggers("-h", "--help"))]
pub struct Args {
    /// address to listen on, IPv4 or IPv6 (default 0.0.0.0)
    #[argh(option, short = 'l', default = "config::DEFAULT_LISTEN.to_string()")]
    pub listen: String,
    /// port to listen on; 0 picks a free one (default 8080)
    #[argh(option, short = 'p', default = "config::DEFAULT_PORT")]
    pub port: u16,
    /// backend address or host name, resolved at start (default 127.0.0.1)
    #[argh(option, short = 'b', default = "config::DEFAULT_BACKEND.to_string()")]
    pub backend: String,
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
        let backend = resolve(&self.backend, self.backend_port)?;
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
                listen,
                mode: Mode::Tcp,
                backend,
            }],
        })
    }
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
        assert_eq!(c.listeners[0].backend.to_string(), "127.0.0.1:8081");
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
        assert_eq!(c.listeners[0].backend.to_string(), "[::1]:8081");
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
