//! What a worker reserves when it starts, sized from the configuration:
//! relay buffers, pair slots, backend-connection slots (serving or pooled)
//! and access-log records.
//!
//! `Worker::new` allocates all of it up front, and an allocation the system
//! refuses there aborts the process. So the server asks first: [`Reserve::check`]
//! maps (and unmaps) each reservation's size, letting the kernel's
//! overcommit policy judge it as it will judge the allocator, and a
//! configuration it would refuse is refused at start (exit 1) or on reload
//! (the running configuration stays). Both use [`Reserve::of`], so the sizes
//! checked are the sizes allocated.

use crate::config::{Config, Mode};

/// Counts of what one worker reserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserve {
    /// Pair slots (and run-queue entries): one per connection.
    pub pairs: usize,
    /// Backend-connection slots: one per connection plus the pools.
    pub conns: usize,
    /// Relay buffers: two per connection, four when a listener speaks HTTP
    /// (a rewritten head besides each direction's buffer). Address space;
    /// pages are used only by buffers in flight.
    pub buffers: usize,
    /// Access-log records in progress: one per connection when logging.
    pub records: usize,
}

impl Reserve {
    pub fn of(config: &Config) -> Reserve {
        let listeners = &config.listeners;
        let http = listeners.iter().any(|l| l.mode != Mode::Tcp);
        let logging = listeners
            .iter()
            .any(|l| l.mode != Mode::Tcp && l.http.access_log.is_some());
        let pooled = config.pooled_per_worker();
        let n = config.max_conns;
        Reserve {
            pairs: n,
            conns: n.saturating_add(pooled),
            buffers: n.saturating_mul(if http { 4 } else { 2 }),
            records: if logging { n } else { 0 },
        }
    }

    /// Whether the system would give a worker these reservations now; if
    /// not, which one it refuses and what to lower.
    pub fn check(&self, config: &Config) -> Result<(), String> {
        let slot = |count: usize, size: usize| count.checked_mul(size + 8);
        let needs = [
            (
                self.buffers.checked_mul(config.buffer_size),
                format!(
                    "max_conns {} with buffer_size {} needs {} buffers per connection",
                    config.max_conns,
                    config.buffer_size,
                    self.buffers / self.pairs.max(1)
                ),
                "lower max_conns or buffer_size",
            ),
            (
                slot(self.pairs, std::mem::size_of::<crate::pair::Pair>()),
                format!("max_conns {} needs a slot per connection", config.max_conns),
                "lower max_conns",
            ),
            (
                slot(self.conns, std::mem::size_of::<crate::conn::Conn>()),
                "the listeners' pool_size times their backends needs a slot per pooled connection"
                    .to_string(),
                "lower pool_size",
            ),
            (
                slot(
                    self.records,
                    std::mem::size_of::<crate::http::access_log::Record>(),
                ),
                format!(
                    "max_conns {} with an access log needs a log record per connection",
                    config.max_conns
                ),
                "lower max_conns",
            ),
        ];
        for (bytes, what, fix) in needs {
            if !bytes.is_some_and(can_map) {
                let size = bytes.map_or_else(
                    || "more than the address space".to_string(),
                    |b| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
                );
                return Err(format!(
                    "{what}: {size} per worker, more memory than the system will reserve; {fix}"
                ));
            }
        }
        Ok(())
    }
}

/// Whether the kernel would map `bytes` of fresh anonymous memory now: the
/// overcommit policy's verdict on an allocation that large, which the
/// allocator makes with the same kind of mapping.
fn can_map(bytes: usize) -> bool {
    if bytes == 0 {
        return true;
    }
    // SAFETY: a new private anonymous mapping at an address the kernel
    // chooses touches no existing memory; it is unmapped at once, whole.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        libc::munmap(p, bytes);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use argh::FromArgs;

    fn config(args: &[&str]) -> Config {
        let args = Args::from_args(&["proxy"], args).unwrap();
        args.into_config().map_err(|e| e.0).unwrap()
    }

    #[test]
    fn tcp_takes_two_buffers_a_connection_and_http_four_with_its_pools() {
        let tcp = Reserve::of(&config(&["--max-conns", "100"]));
        assert_eq!(
            tcp,
            Reserve {
                pairs: 100,
                conns: 100,
                buffers: 200,
                records: 0
            }
        );
        let http = config(&[
            "-m",
            "http",
            "--max-conns",
            "100",
            "--backend",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--pool-size",
            "8",
            "--access-log",
            "-",
        ]);
        let r = Reserve::of(&http);
        assert_eq!(
            r,
            Reserve {
                pairs: 100,
                conns: 100 + 2 * 8,
                buffers: 400,
                records: 100
            }
        );
        assert_eq!(r.check(&http), Ok(()));
    }
}
