//! Config files for tests: a temporary directory removed on drop, and the
//! proxy's side of a reload (SIGHUP, then the outcome and the addresses the
//! new configuration listens on, read from its log).

use super::{parse_listening, Proxy, DEADLINE};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system's temp dir, removed (with its files) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ferry-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
        TempDir { path }
    }

    /// Write `name` (replacing it whole, by a rename, so that a reload
    /// never reads half a file); returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {tmp:?}: {e}"));
        std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {path:?}: {e}"));
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How a SIGHUP ended.
#[derive(Debug)]
pub enum Reloaded {
    /// The new configuration serves, on these addresses (in file order).
    Ok(Vec<SocketAddr>),
    /// It was refused: the log lines about it.
    Failed(Vec<String>),
}

impl Proxy {
    /// Lines of stderr so far.
    pub fn line_count(&self) -> usize {
        self.log.len()
    }

    /// Wait until the log holds `n` `listening on` lines from line `from`
    /// on; their addresses.
    pub fn listening_since(&self, from: usize, n: usize) -> Vec<SocketAddr> {
        let found = self.log.wait_for(from, DEADLINE, |lines| {
            let addrs: Vec<SocketAddr> = lines.iter().filter_map(|l| parse_listening(l)).collect();
            (addrs.len() >= n).then_some(addrs)
        });
        found.unwrap_or_else(|| {
            panic!(
                "fewer than {n} `listening on` lines within {DEADLINE:?}; stderr:\n{}",
                self.log.text()
            )
        })
    }

    /// SIGHUP, then wait for the outcome.
    pub fn reload(&self) -> Reloaded {
        let from = self.log.len();
        self.signal(libc::SIGHUP);
        let outcome = self.log.wait_for(from, DEADLINE, |lines| {
            if lines
                .iter()
                .any(|l| l.contains("ferry: reloaded the configuration"))
            {
                Some(Reloaded::Ok(
                    lines.iter().filter_map(|l| parse_listening(l)).collect(),
                ))
            } else if lines.iter().any(|l| l.contains("ferry: reload failed")) {
                Some(Reloaded::Failed(
                    lines
                        .iter()
                        .filter(|l| l.contains("reload"))
                        .cloned()
                        .collect(),
                ))
            } else {
                None
            }
        });
        outcome.unwrap_or_else(|| {
            panic!(
                "no reload outcome within {DEADLINE:?} of SIGHUP; stderr:\n{}",
                self.log.text()
            )
        })
    }

    /// SIGHUP that must succeed; the new addresses.
    pub fn reload_ok(&self) -> Vec<SocketAddr> {
        match self.reload() {
            Reloaded::Ok(addrs) => addrs,
            Reloaded::Failed(lines) => panic!("reload failed: {lines:#?}"),
        }
    }
}
