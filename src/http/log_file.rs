//! An append-only log file that follows its path across rotation.
//!
//! logrotate (and most tools like it) renames the file and expects the
//! writer to start a new one. [`LogFile`] checks, at most once per
//! [`CHECK_EVERY`] and only when it has something to write, whether its path
//! still names the file it holds open (same device and inode); if not (the
//! file was renamed or removed) it opens the path afresh, so the next lines
//! go to the new file and no signal is needed. `copytruncate` works too: the
//! file is opened for appending.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the path is compared with the open file, at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct LogFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// Device and inode of the open file.
    id: (u64, u64),
    checked: Instant,
    /// A reopen failed: said once, until one succeeds.
    complained: bool,
}

fn open(path: &PathBuf) -> io::Result<(BufWriter<File>, (u64, u64))> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let meta = file.metadata()?;
    Ok((
        BufWriter::with_capacity(64 * 1024, file),
        (meta.dev(), meta.ino()),
    ))
}

impl LogFile {
    pub fn open(path: &str) -> io::Result<LogFile> {
        let path = PathBuf::from(path);
        let (out, id) = open(&path)?;
        Ok(LogFile {
            path,
            out,
            id,
            checked: Instant::now(),
            complained: false,
        })
    }

    /// Before a batch of lines: if the path names another file than the one
    /// open (or none), start writing to the path afresh.
    pub fn follow(&mut self, now: Instant) {
        if now.duration_since(self.checked) < CHECK_EVERY {
            return;
        }
        self.checked = now;
        let same = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if same {
            return;
        }
        let _ = self.out.flush();
        match open(&self.path) {
            Ok((out, id)) => {
                self.out = out;
                self.id = id;
                self.complained = false;
            }
            Err(e) if !self.complained => {
                self.complained = true;
                eprintln!(
                    "ferry: cannot reopen the access log {} after it moved: {e}; still writing to the old file",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_file_is_followed_by_a_new_one_at_the_path() {
        let dir = std::env::temp_dir().join(format!("ferry-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let rotated = dir.join("access.log.1");
        let mut log = LogFile::open(path.to_str().unwrap()).unwrap();
        log.write_all(b"one\n").unwrap();
        log.flush().unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        // Checked too soon: still the old file.
        let t0 = log.checked;
        log.follow(t0);
        log.write_all(b"two\n").unwrap();
        log.flush().unwrap();
        log.follow(t0 + CHECK_EVERY);
        log.write_all(b"three\n").unwrap();
        log.flush().unwrap();
        assert_eq!(std::fs::read(&rotated).unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"three\n");
        // Unmoved: the same file goes on.
        log.follow(t0 + 2 * CHECK_EVERY);
        log.write_all(b"four\n").unwrap();
        log.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three\nfour\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
