//! The `--log` transcript: timestamped lines appended to a file, buffered and written out at
//! least once a second.
//!
//! A failed write (a full disk, a quota) does not end it. The lines that could not be written
//! are counted and dropped, so memory stays bounded, and every flush tries again. When a write
//! gets through, the file says how many lines are missing and where, and the transcript goes
//! on. The operator hears of the failure once and of the recovery once.

use std::io::{self, Write};

/// Bytes buffered before they are written without waiting for the next flush.
const BUFFER: usize = 64 << 10;

/// The room's transcript.
pub struct Transcript {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    /// Whether the last byte that reached the file ended a line.
    at_line_start: bool,
    broken: Option<Broken>,
}

/// The transcript since a write failed.
struct Broken {
    error: String,
    /// Lines not written since then.
    missing: u64,
    reported: bool,
}

/// What a flush has to tell the operator.
#[derive(Debug, PartialEq, Eq)]
pub enum News {
    /// Writing failed: `missing` lines are lost so far and later ones are dropped until a write
    /// gets through again.
    Failed { error: String, missing: u64 },
    /// Writing works again, after `missing` lines were lost; `error` is why, if the failure
    /// was not told yet (it came and went between two flushes).
    Resumed { missing: u64, error: Option<String> },
}

impl Transcript {
    /// A transcript appended to `out` (the `--log` file, opened for appending).
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Transcript {
            out: Box::new(out),
            buf: Vec::with_capacity(BUFFER),
            at_line_start: true,
            broken: None,
        }
    }

    /// Appends `line` with the current time, or counts it as missing while writing fails.
    pub fn line(&mut self, line: &str) {
        if let Some(b) = self.broken.as_mut() {
            b.missing += 1;
            return;
        }
        // Writing into a Vec cannot fail.
        let _ = writeln!(self.buf, "{} {line}", now());
        if self.buf.len() >= BUFFER {
            self.write_buffer();
        }
    }

    /// Writes what is buffered; if writing had failed, tries again, first with a line that
    /// says how many lines are missing. Returns what the operator should hear, if anything.
    pub fn flush(&mut self) -> Option<News> {
        let retrying = self.broken.take();
        if let Some(b) = &retrying {
            // A line cut short by the failure is ended first.
            let cut = if self.at_line_start { "" } else { "\n" };
            self.buf = format!(
                "{cut}{} * {} missing from the transcript here ({})\n",
                now(),
                super::count(b.missing, "line"),
                b.error
            )
            .into_bytes();
        }
        self.write_buffer();
        if self.broken.is_none() {
            if let Err(e) = self.out.flush() {
                self.fail(&e, 0);
            }
        }
        match (retrying, self.broken.as_mut()) {
            (None, None) => None,
            (Some(old), None) => Some(News::Resumed {
                missing: old.missing,
                error: (!old.reported).then_some(old.error),
            }),
            (old, Some(now)) => {
                if let Some(old) = old {
                    // The note is not a chat line: what is missing is what was missing.
                    now.missing = old.missing;
                    now.reported = old.reported;
                }
                (!std::mem::replace(&mut now.reported, true)).then(|| News::Failed {
                    error: now.error.clone(),
                    missing: now.missing,
                })
            }
        }
    }

    /// Writes the buffer out and empties it. On a failure the lines not written (a line
    /// written in part among them) are counted as missing.
    fn write_buffer(&mut self) {
        let mut done = 0;
        while done < self.buf.len() {
            match self.out.write(&self.buf[done..]) {
                Ok(0) => {
                    let missing = lines_in(&self.buf[done..]);
                    self.fail(&io::ErrorKind::WriteZero.into(), missing);
                    break;
                }
                Ok(n) => {
                    done += n;
                    self.at_line_start = self.buf[done - 1] == b'\n';
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let missing = lines_in(&self.buf[done..]);
                    self.fail(&e, missing);
                    break;
                }
            }
        }
        self.buf.clear();
    }

    fn fail(&mut self, e: &io::Error, missing: u64) {
        self.broken = Some(Broken {
            error: crate::transport::describe(e),
            missing,
            reported: false,
        });
    }
}

/// The time stamp that begins each line.
fn now() -> impl std::fmt::Display {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
}

/// Lines begun in `bytes` (a partial last line counts).
fn lines_in(bytes: &[u8]) -> u64 {
    bytes.split_inclusive(|&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A file that takes `room` more bytes, then fails as a full disk does.
    #[derive(Clone, Default)]
    struct Disk {
        data: Arc<Mutex<Vec<u8>>>,
        room: Arc<AtomicUsize>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.room.load(Ordering::SeqCst);
            if room == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(room);
            self.room.fetch_sub(n, Ordering::SeqCst);
            self.data.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Disk {
        fn text(&self) -> String {
            String::from_utf8(self.data.lock().unwrap().clone()).unwrap()
        }
        /// The lines written, without their timestamps.
        fn lines(&self) -> Vec<String> {
            self.text()
                .lines()
                .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
                .collect()
        }
    }

    #[test]
    fn lines_are_timestamped_and_written_on_flush() {
        let disk = Disk::default();
        disk.room.store(usize::MAX, Ordering::SeqCst);
        let mut t = Transcript::new(disk.clone());
        t.line("<a> hi");
        assert_eq!(disk.text(), "");
        assert_eq!(t.flush(), None);
        let text = disk.text();
        assert!(text.ends_with("Z <a> hi\n"), "{text}");
        assert_eq!(text.len(), "2026-11-25T09:00:00.000Z <a> hi\n".len());
    }

    #[test]
    fn a_full_disk_is_reported_once_and_the_transcript_resumes_with_a_count() {
        let disk = Disk::default();
        let mut t = Transcript::new(disk.clone());
        let first = "<a> one";
        // Room for the first line and part of the second: its time stamp and "<a".
        disk.room.store(
            "2026-11-25T09:00:00.000Z <a> one\n".len() + 27,
            Ordering::SeqCst,
        );
        t.line(first);
        t.line("<a> two");
        t.line("<a> three");
        let news = t.flush();
        assert_eq!(
            news,
            Some(News::Failed {
                error: "no space left on device".into(),
                missing: 2
            })
        );
        t.line("<a> four");
        // Still full: nothing more to say, and the count goes on.
        assert_eq!(t.flush(), None);
        assert_eq!(t.flush(), None);
        t.line("<a> five");
        disk.room.store(usize::MAX, Ordering::SeqCst);
        assert_eq!(
            t.flush(),
            Some(News::Resumed {
                missing: 4,
                error: None
            })
        );
        t.line("<a> six");
        assert_eq!(t.flush(), None);
        let lines = disk.lines();
        assert_eq!(lines[0], first);
        // The line cut short stays cut short, and the note starts a line of its own.
        assert!(lines[1].ends_with("<a"), "{lines:?}");
        assert_eq!(
            lines[2..],
            [
                "* 4 lines missing from the transcript here (no space left on device)",
                "<a> six"
            ]
        );
    }

    /// A failure met while buffering (not at a flush) that is over by the next flush is still
    /// told, with the recovery.
    #[test]
    fn a_failure_over_before_the_next_flush_is_still_told() {
        let disk = Disk::default();
        let mut t = Transcript::new(disk.clone());
        for _ in 0..1000 {
            t.line(&"x".repeat(100));
        }
        disk.room.store(usize::MAX, Ordering::SeqCst);
        match t.flush() {
            Some(News::Resumed {
                missing,
                error: Some(error),
            }) => {
                assert!(missing > 0);
                assert_eq!(error, "no space left on device");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn memory_stays_bounded_while_writing_fails() {
        let disk = Disk::default();
        let mut t = Transcript::new(disk.clone());
        for _ in 0..100_000 {
            t.line(&"x".repeat(100));
        }
        assert!(t.buf.capacity() <= 2 * BUFFER, "{}", t.buf.capacity());
        assert!(matches!(
            t.flush(),
            Some(News::Failed {
                missing: 100_000,
                ..
            })
        ));
    }
}
