//! The `--log` transcript: timestamped lines appended to a file by a thread of its own.
//!
//! The room's side, [`Transcript`], lives under the room's lock, so it never touches the file:
//! it puts lines in a buffer and hands the buffer to the writing thread through a bounded
//! queue, at least once a second (or whenever 64 KiB are buffered). A file that does not keep
//! up (a pipe nobody reads, a stalled network file system) therefore cannot stall the chat:
//! while the queue is full, lines are dropped and counted, and memory stays bounded.
//!
//! A failed write (a full disk, a quota) does not end the transcript either. The lines that
//! could not be written are counted and dropped, and the writer tries again every second. When
//! a write gets through, the file says how many lines are missing and where, and the
//! transcript goes on. The operator hears of a failure (or of the queue filling) once and of
//! the recovery once.
//!
//! A file that does not end in a newline when it is opened (an earlier run's write was cut
//! short) gets one before the first line, so that line starts a line of its own.
//!
//! At shutdown the writer gets [`CLOSE_GRACE`] to write what is queued. A writer still stuck
//! then is left behind, and the operator is told how many lines did not reach the file; so is
//! one that still cannot write.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Bytes buffered before they are handed to the writer without waiting for the next flush.
const BUFFER: usize = 64 << 10;

/// Bytes queued for the writer, at most: beyond this (or [`QUEUE_BATCHES`]) lines are dropped.
/// A burst of chat while the file is slow for a moment fits; a file that is stuck costs no more.
const QUEUE_BYTES: usize = 1 << 20;

/// Buffers queued for the writer, at most: bounds the queue when they are small (one a second).
const QUEUE_BATCHES: usize = 64;

/// How often a writer whose writes fail tries again when no new lines come.
const RETRY: Duration = Duration::from_secs(1);

/// How long the room waits at shutdown for the writer to finish: the grace the project gives
/// a stuck conversation after Ctrl-C.
pub const CLOSE_GRACE: Duration = crate::exit::INTERRUPT_GRACE;

/// Why lines dropped because the queue was full are missing, as the note in the file says.
const FELL_BEHIND: &str = "the log was not written fast enough";

/// The room's side of the transcript: kept under the room's lock, and never waits for the file.
pub struct Transcript {
    /// Lines not yet handed to the writer.
    buf: Vec<u8>,
    lines: u64,
    /// Lines dropped because the queue was full, since the last buffer it took; the writer
    /// notes them in the file before the next buffer it takes.
    dropped: u64,
    shared: Arc<Shared>,
    /// The writer's last word, when it has written everything it was given.
    finished: tokio::sync::oneshot::Receiver<Option<News>>,
}

/// What the room's side and the writer share.
struct Shared {
    queue: Mutex<Queue>,
    /// Told when a buffer is queued or the queue is closed.
    ready: Condvar,
    /// Lines that the file has neither received nor got a note of: what is lost if the writer
    /// never finishes.
    unnoted: AtomicU64,
    /// Whether the operator was told of lines being dropped from a full queue; the writer
    /// clears it when it has caught up and noted them.
    stall_told: AtomicBool,
    /// Where the news goes, from either side, as it happens.
    report: Box<dyn Fn(News) + Send + Sync>,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    /// Bytes in `batches`.
    bytes: usize,
    /// No more buffers will come.
    closed: bool,
}

/// Lines handed to the writer.
struct Batch {
    /// Lines dropped just before these because the queue was full.
    dropped_before: u64,
    text: Vec<u8>,
}

/// What the operator should hear of the transcript (on stderr, as a warning).
#[derive(Debug, PartialEq, Eq)]
pub enum News {
    /// Writing failed: `missing` lines are lost so far and later ones are dropped until a write
    /// gets through again.
    Failed { error: String, missing: u64 },
    /// The writer does not keep up: `missing` lines are lost so far and later ones are dropped
    /// until it catches up.
    Stalled { missing: u64 },
    /// Writing works again, after `missing` lines were lost; the file says so where they are.
    Resumed { missing: u64 },
    /// At shutdown, writing still fails: `missing` lines never reached the file.
    Unfinished { error: String, missing: u64 },
    /// At shutdown, the writer had not finished after `waited`: up to `missing` lines never
    /// reached the file (those in a write that is stuck may be in a pipe's buffer).
    Stuck { waited: Duration, missing: u64 },
}

impl fmt::Display for News {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = |n: &u64| super::count(*n, "line");
        match self {
            News::Failed { error, missing } => write!(
                f,
                "cannot write the log: {error}; {} lost so far, and lines are dropped (and \
                 counted) until it can be written again",
                lines(missing)
            ),
            News::Stalled { missing } => write!(
                f,
                "the log is not being written fast enough (a pipe nobody reads?); {} lost so \
                 far, and lines are dropped (and counted) until it catches up",
                lines(missing)
            ),
            News::Resumed { missing } => write!(
                f,
                "the log is written again; {} {} missing from it",
                lines(missing),
                if *missing == 1 { "is" } else { "are" }
            ),
            News::Unfinished { error, missing } => write!(
                f,
                "the log still cannot be written ({error}); {} did not reach it",
                lines(missing)
            ),
            News::Stuck { waited, missing } => write!(
                f,
                "the log was still being written {} s after shutting down began, so it is left \
                 unfinished; up to {} did not reach it",
                waited.as_secs_f32(),
                lines(missing)
            ),
        }
    }
}

/// The `--log` file, opened.
pub struct Opened {
    /// Where the writer writes.
    pub out: Box<dyn Write + Send>,
    /// The file ends at the end of a line (or is empty, or is not a regular file), as the
    /// writer must know.
    pub at_line_start: bool,
    /// A FIFO that nobody reads yet: the writer opens it, once a reader comes.
    pub waits_for_reader: bool,
}

/// Opens `path` for appending, creating it.
///
/// Opening a FIFO for writing waits until someone opens it for reading; that wait must not
/// happen here, where it would hold up the room before it even listens. So the file is opened
/// without waiting, and a FIFO with no reader yet (ENXIO) is opened by the writer's thread
/// instead, where lines queue (and, past the queue's bound, are counted as missing) until a
/// reader comes.
pub fn open(path: &Path) -> io::Result<Opened> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
    }
    let file = match options.open(path) {
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENXIO as i32) => {
            return Ok(Opened {
                out: Box::new(Fifo {
                    path: path.to_path_buf(),
                    file: None,
                }),
                at_line_start: true,
                waits_for_reader: true,
            });
        }
        r => r?,
    };
    // Writes wait again: the writer has a thread of its own for that.
    #[cfg(unix)]
    {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
        fcntl(&file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    }
    let at_line_start = !ends_mid_line(path, &file);
    Ok(Opened {
        out: Box::new(file),
        at_line_start,
        waits_for_reader: false,
    })
}

/// A FIFO opened on the first write, in the writer's thread: opening waits for a reader.
#[cfg(unix)]
struct Fifo {
    path: std::path::PathBuf,
    file: Option<File>,
}

#[cfg(unix)]
impl Write for Fifo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => {
                let f = std::fs::OpenOptions::new().append(true).open(&self.path)?;
                self.file.insert(f).write(buf)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// Whether `file`, opened from `path`, is a regular file whose last byte is not a newline: an
/// earlier run's write was cut short, or something else wrote it.
fn ends_mid_line(path: &Path, file: &File) -> bool {
    // A pipe or a terminal cannot be read back; it starts afresh.
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.is_file() || meta.len() == 0 {
        return false;
    }
    // Read through a descriptor of its own: the log's is for appending only. A log that may be
    // written but not read is taken to end at a line.
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut last = [0u8];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

impl Transcript {
    /// A transcript written to `out` (the `--log` file, opened for appending) by a thread of its
    /// own. `at_line_start`: the file ends at the end of a line (see [`open`]). `report` is
    /// told what the operator should hear (failures, lines dropped, recoveries) as it happens,
    /// by the writer or under the room's lock, so it must not wait.
    pub fn start(
        out: impl Write + Send + 'static,
        at_line_start: bool,
        report: impl Fn(News) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared::new(report));
        let writer = Writer {
            out: Box::new(out),
            at_line_start,
            broken: None,
            shared: shared.clone(),
            closing: false,
        };
        let (tx, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("transcript".into())
            .spawn(move || {
                let _ = tx.send(writer.run());
            })?;
        Ok(Transcript {
            buf: Vec::with_capacity(BUFFER),
            lines: 0,
            dropped: 0,
            shared,
            finished,
        })
    }

    /// Appends `line` with the current time.
    pub fn line(&mut self, line: &str) {
        let start = self.buf.len();
        // Writing into a Vec cannot fail.
        let _ = writeln!(self.buf, "{} {line}", now());
        // Counted as the writer counts them, by newlines.
        let n = newlines(&self.buf[start..]);
        self.lines += n;
        self.shared.unnoted.fetch_add(n, Ordering::Relaxed);
        if self.buf.len() >= BUFFER {
            self.hand_over();
        }
    }

    /// Hands what is buffered to the writer.
    pub fn flush(&mut self) {
        self.hand_over();
    }

    /// Queues the buffer for the writer, or drops (and counts) its lines if the queue is full;
    /// the operator hears of the first lines dropped until the writer catches up.
    fn hand_over(&mut self) {
        if self.buf.is_empty() && self.dropped == 0 {
            return;
        }
        let mut q = self.shared.lock();
        // An empty queue takes any buffer, so a single long line always gets through. Once
        // lines are dropped, the writer must catch up (empty the queue) before any are taken
        // again: a file that is slow, not stuck, then gets one note of a gap, not a note every
        // few lines.
        let fits = q.batches.is_empty()
            || (self.dropped == 0
                && q.batches.len() < QUEUE_BATCHES
                && q.bytes + self.buf.len() <= QUEUE_BYTES);
        if fits {
            let text = std::mem::take(&mut self.buf);
            q.bytes += text.len();
            q.batches.push_back(Batch {
                dropped_before: std::mem::take(&mut self.dropped),
                text,
            });
            drop(q);
            self.shared.ready.notify_one();
        } else {
            drop(q);
            self.dropped += self.lines;
            self.buf.clear();
            if !self.shared.stall_told.swap(true, Ordering::Relaxed) {
                (self.shared.report)(News::Stalled {
                    missing: self.dropped,
                });
            }
        }
        self.lines = 0;
    }

    /// Hands over the last lines and waits, at most `grace`, for the writer to write everything.
    /// Returns what the operator should hear of the lines that did not reach the file, if any.
    pub async fn close(mut self, grace: Duration) -> Option<News> {
        self.hand_over();
        if self.dropped > 0 {
            // The count goes in however full the queue is, so that the writer notes it if it
            // can: an empty buffer costs nothing.
            self.shared.lock().batches.push_back(Batch {
                dropped_before: std::mem::take(&mut self.dropped),
                text: Vec::new(),
            });
        }
        self.shared.close();
        match tokio::time::timeout(grace, &mut self.finished).await {
            Ok(Ok(news)) => news,
            // Still writing (or its thread is gone): what it has not written is lost.
            _ => Some(News::Stuck {
                waited: grace,
                missing: self.shared.unnoted.load(Ordering::Relaxed),
            }),
        }
    }
}

impl Drop for Transcript {
    /// A transcript dropped without [`Transcript::close`] lets its writer end too.
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl Shared {
    fn new(report: impl Fn(News) + Send + Sync + 'static) -> Self {
        Shared {
            queue: Mutex::default(),
            ready: Condvar::new(),
            unnoted: AtomicU64::new(0),
            stall_told: AtomicBool::new(false),
            report: Box::new(report),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Neither side leaves the queue half-updated, so a panic elsewhere does not matter.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// `n` lines reached the file, or a note of them did.
    fn settle(&self, n: u64) {
        let _ = self
            .unnoted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// The writing thread's side.
struct Writer {
    out: Box<dyn Write + Send>,
    /// Whether the last byte that reached the file ended a line.
    at_line_start: bool,
    broken: Option<Broken>,
    shared: Arc<Shared>,
    /// The queue is closed: what is left to say goes to [`Transcript::close`] instead.
    closing: bool,
}

/// The transcript since lines went missing.
struct Broken {
    /// Why, for the note in the file: the last write error, or [`FELL_BEHIND`].
    error: String,
    /// Lines missing since then.
    missing: u64,
    /// Whether a write failed (and the operator was told); lines dropped from a full queue
    /// alone were told by the room's side.
    write_failed: bool,
}

/// What the writer does next.
enum Next {
    Write(Batch),
    /// Writes fail and no lines came for a while: try the note again.
    Retry,
    Finish,
}

impl Writer {
    /// Writes what it is given until the queue is closed and empty; returns what the operator
    /// should hear then.
    fn run(mut self) -> Option<News> {
        loop {
            match self.next() {
                Next::Write(batch) => self.write(batch),
                Next::Retry => {
                    self.note();
                }
                Next::Finish => return self.finish(),
            }
        }
    }

    fn next(&self) -> Next {
        let mut q = self.shared.lock();
        loop {
            if let Some(batch) = q.batches.pop_front() {
                q.bytes -= batch.text.len();
                return Next::Write(batch);
            }
            if q.closed {
                return Next::Finish;
            }
            let (guard, wait) = self
                .shared
                .ready
                .wait_timeout(q, RETRY)
                .unwrap_or_else(PoisonError::into_inner);
            q = guard;
            if wait.timed_out() && self.broken.is_some() {
                return Next::Retry;
            }
        }
    }

    /// Writes `batch`, after the note of the lines missing before it, if any; while the note
    /// cannot be written, the batch's lines are missing too.
    fn write(&mut self, batch: Batch) {
        if batch.dropped_before > 0 {
            self.broken
                .get_or_insert_with(|| Broken {
                    error: FELL_BEHIND.into(),
                    missing: 0,
                    write_failed: false,
                })
                .missing += batch.dropped_before;
        }
        if !self.note() {
            if let Some(b) = self.broken.as_mut() {
                b.missing += lines_in(&batch.text);
            }
            return;
        }
        if let Err((e, done)) = self.put(&batch.text, true) {
            // The lines not written, a line written in part among them.
            self.fail(&e, lines_in(&batch.text[done..]));
        }
    }

    /// Writes the note of the lines missing so far, if any are. Returns whether none are.
    fn note(&mut self) -> bool {
        let Some(b) = &self.broken else {
            return true;
        };
        let missing = b.missing;
        let note = format!(
            "{} * {} missing from the transcript here ({})\n",
            now(),
            super::count(missing, "line"),
            b.error
        );
        match self.put(note.as_bytes(), false) {
            Ok(()) => {
                self.broken = None;
                self.shared.settle(missing);
                // Caught up: lines dropped from now on are news again.
                self.shared.stall_told.store(false, Ordering::Relaxed);
                (self.shared.report)(News::Resumed { missing });
                true
            }
            Err((e, _)) => {
                // The note is not a chat line: what is missing is what was missing.
                self.fail(&e, 0);
                false
            }
        }
    }

    /// Writes all of `bytes`, starting a line first if the file does not end at one. `chat`:
    /// they are transcript lines, settled as each newline is written. On a failure, returns the
    /// error and how much of `bytes` was written.
    fn put(&mut self, bytes: &[u8], chat: bool) -> Result<(), (io::Error, usize)> {
        if !bytes.is_empty() && !self.at_line_start {
            self.put_raw(b"\n", false).map_err(|(e, _)| (e, 0))?;
        }
        self.put_raw(bytes, chat)?;
        self.out.flush().map_err(|e| (e, bytes.len()))
    }

    fn put_raw(&mut self, bytes: &[u8], chat: bool) -> Result<(), (io::Error, usize)> {
        let mut done = 0;
        while done < bytes.len() {
            match self.out.write(&bytes[done..]) {
                Ok(0) => return Err((io::ErrorKind::WriteZero.into(), done)),
                Ok(n) => {
                    // A writer cannot have taken more than it was given.
                    let n = n.min(bytes.len() - done);
                    if chat {
                        self.shared.settle(newlines(&bytes[done..done + n]));
                    }
                    done += n;
                    self.at_line_start = bytes[done - 1] == b'\n';
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((e, done)),
            }
        }
        Ok(())
    }

    /// A write failed with `e`, and `missing` more lines are missing. The operator hears of it
    /// once until writing works again.
    fn fail(&mut self, e: &io::Error, missing: u64) {
        let b = self.broken.get_or_insert_with(|| Broken {
            error: String::new(),
            missing: 0,
            write_failed: false,
        });
        b.error = crate::transport::describe(e);
        b.missing += missing;
        if !std::mem::replace(&mut b.write_failed, true) && !self.closing {
            (self.shared.report)(News::Failed {
                error: b.error.clone(),
                missing: b.missing,
            });
        }
    }

    /// Everything is written but lines may be missing: tries the note a last time, and says how
    /// many lines never reached the file if it cannot be written.
    fn finish(&mut self) -> Option<News> {
        self.closing = true;
        if self.note() {
            return None;
        }
        self.broken.take().map(|b| News::Unfinished {
            error: b.error,
            missing: b.missing,
        })
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

/// Lines ended in `bytes`.
fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A file that takes `room` more bytes, then fails as a full disk does; while `held`, a
    /// write waits (as on a pipe nobody reads).
    #[derive(Clone, Default)]
    struct Disk {
        data: Arc<(Mutex<Vec<u8>>, Condvar)>,
        room: Arc<AtomicUsize>,
        held: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (held, cv) = &*self.held;
            let mut h = held.lock().unwrap();
            while *h {
                h = cv.wait(h).unwrap();
            }
            drop(h);
            let room = self.room.load(Ordering::SeqCst);
            if room == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(room);
            self.room.fetch_sub(n, Ordering::SeqCst);
            let (data, cv) = &*self.data;
            data.lock().unwrap().extend_from_slice(&buf[..n]);
            cv.notify_all();
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Disk {
        fn unlimited() -> Disk {
            let disk = Disk::default();
            disk.room.store(usize::MAX, Ordering::SeqCst);
            disk
        }
        fn hold(&self, held: bool) {
            *self.held.0.lock().unwrap() = held;
            self.held.1.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.data.0.lock().unwrap().clone()).unwrap()
        }
        /// Waits (with a deadline) until the text contains `needle`.
        fn wait_text(&self, needle: &str) -> String {
            self.wait(needle, |text| text.contains(needle))
        }
        /// Waits (with a deadline) until `done` holds for the text; `what` is for the message.
        fn wait(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
            let end = Instant::now() + DEADLINE;
            let (data, cv) = &*self.data;
            let mut d = data.lock().unwrap();
            loop {
                let text = String::from_utf8_lossy(&d).into_owned();
                if done(&text) {
                    return text;
                }
                let left = end.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "no {what:?} in {text:?}");
                d = cv.wait_timeout(d, left).unwrap().0;
            }
        }
        /// The lines written, without their timestamps.
        fn lines(&self) -> Vec<String> {
            self.text()
                .lines()
                .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
                .collect()
        }
    }

    /// News told as it happens, kept for the test.
    #[derive(Clone, Default)]
    struct Told(Arc<(Mutex<Vec<News>>, Condvar)>);

    impl Told {
        fn reporter(&self) -> impl Fn(News) + Send + Sync + 'static {
            let told = self.0.clone();
            move |n| {
                told.0.lock().unwrap().push(n);
                told.1.notify_all();
            }
        }
        fn take(&self) -> Vec<News> {
            std::mem::take(&mut *self.0.0.lock().unwrap())
        }
        /// Waits (with a deadline) until something is told.
        fn wait(&self) {
            let end = Instant::now() + DEADLINE;
            let mut told = self.0.0.lock().unwrap();
            while told.is_empty() {
                let left = end.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "nothing told");
                told = self.0.1.wait_timeout(told, left).unwrap().0;
            }
        }
    }

    /// A writer on `disk`, driven by the test on its own thread.
    fn writer(disk: &Disk, told: &Told) -> Writer {
        Writer {
            out: Box::new(disk.clone()),
            at_line_start: true,
            broken: None,
            shared: Arc::new(Shared::new(told.reporter())),
            closing: false,
        }
    }

    /// The lines as the room's side hands them over.
    fn batch(lines: &[&str]) -> Batch {
        let mut text = Vec::new();
        for l in lines {
            writeln!(text, "{} {l}", now()).unwrap();
        }
        Batch {
            dropped_before: 0,
            text,
        }
    }

    #[tokio::test]
    async fn lines_are_timestamped_and_written_at_each_flush() {
        let disk = Disk::unlimited();
        let told = Told::default();
        let mut t = Transcript::start(disk.clone(), true, told.reporter()).unwrap();
        t.line("<a> hi");
        // Buffered until the flush: the writer has nothing yet.
        assert_eq!(disk.text(), "");
        t.flush();
        let text = disk.wait_text("<a> hi\n");
        assert!(text.ends_with("Z <a> hi\n"), "{text}");
        assert_eq!(text.len(), "2026-11-25T09:00:00.000Z <a> hi\n".len());
        t.line("<a> bye");
        assert_eq!(t.close(DEADLINE).await, None);
        assert_eq!(disk.lines(), ["<a> hi", "<a> bye"]);
        assert_eq!(told.take(), []);
    }

    #[test]
    fn a_full_disk_is_reported_once_and_the_transcript_resumes_with_a_count() {
        let disk = Disk::default();
        let told = Told::default();
        let mut w = writer(&disk, &told);
        // Room for the first line and part of the second: its time stamp and "<a".
        disk.room.store(
            "2026-11-25T09:00:00.000Z <a> one\n".len() + 27,
            Ordering::SeqCst,
        );
        w.write(batch(&["<a> one", "<a> two", "<a> three"]));
        assert_eq!(
            told.take(),
            [News::Failed {
                error: "no space left on device".into(),
                missing: 2
            }]
        );
        w.write(batch(&["<a> four"]));
        // Still full: nothing more to say, and the count goes on.
        assert!(!w.note());
        w.write(batch(&["<a> five"]));
        assert_eq!(told.take(), []);
        disk.room.store(usize::MAX, Ordering::SeqCst);
        assert!(w.note());
        assert_eq!(told.take(), [News::Resumed { missing: 4 }]);
        w.write(batch(&["<a> six"]));
        assert_eq!(w.finish(), None);
        let lines = disk.lines();
        assert_eq!(lines[0], "<a> one");
        // The line cut short stays cut short, and the note starts a line of its own.
        assert!(lines[1].ends_with("<a"), "{lines:?}");
        assert_eq!(
            lines[2..],
            [
                "* 4 lines missing from the transcript here (no space left on device)",
                "<a> six"
            ]
        );
        assert_eq!(told.take(), []);
    }

    /// One line is one line, in the file and on stderr.
    #[test]
    fn a_count_of_one_is_singular() {
        let disk = Disk::default();
        let told = Told::default();
        let mut w = writer(&disk, &told);
        w.write(batch(&["<a> one"]));
        let failed = told.take();
        assert_eq!(
            failed[0].to_string(),
            "cannot write the log: no space left on device; 1 line lost so far, and lines are \
             dropped (and counted) until it can be written again"
        );
        disk.room.store(usize::MAX, Ordering::SeqCst);
        assert!(w.note());
        let resumed = told.take();
        assert_eq!(
            resumed[0].to_string(),
            "the log is written again; 1 line is missing from it"
        );
        assert_eq!(
            disk.lines(),
            ["* 1 line missing from the transcript here (no space left on device)"]
        );
        assert_eq!(
            News::Stalled { missing: 1 }.to_string(),
            "the log is not being written fast enough (a pipe nobody reads?); 1 line lost so \
             far, and lines are dropped (and counted) until it catches up"
        );
        assert_eq!(
            News::Resumed { missing: 2 }.to_string(),
            "the log is written again; 2 lines are missing from it"
        );
        assert_eq!(
            News::Unfinished {
                error: "no space left on device".into(),
                missing: 1
            }
            .to_string(),
            "the log still cannot be written (no space left on device); 1 line did not reach it"
        );
    }

    /// Writing that still fails at shutdown: the operator is told the final count. Writing that
    /// works again by then gets the note into the file.
    #[tokio::test]
    async fn lines_missing_at_shutdown_are_counted_and_noted_if_possible() {
        let disk = Disk::default();
        let told = Told::default();
        let mut t = Transcript::start(disk.clone(), true, told.reporter()).unwrap();
        t.line("<a> one");
        t.flush();
        t.line("<a> two");
        t.line("* server shutting down");
        assert_eq!(
            t.close(DEADLINE).await,
            Some(News::Unfinished {
                error: "no space left on device".into(),
                missing: 3
            })
        );
        assert!(matches!(told.take()[..], [News::Failed { .. }]));

        let disk = Disk::default();
        let mut t = Transcript::start(disk.clone(), true, told.reporter()).unwrap();
        t.line("<a> one");
        t.flush();
        told.wait();
        disk.room.store(usize::MAX, Ordering::SeqCst);
        t.line("* server shutting down");
        assert_eq!(t.close(DEADLINE).await, None);
        assert_eq!(
            disk.lines(),
            [
                "* 1 line missing from the transcript here (no space left on device)",
                "* server shutting down"
            ]
        );
    }

    /// A file opened in the middle of a line (an earlier run's write cut short) gets a newline
    /// before the first line, so it is not glued to the partial one; other files get none.
    #[tokio::test]
    async fn a_file_cut_off_mid_line_gets_a_line_of_its_own() {
        let scratch = tempfile::Builder::new()
            .prefix("wirechat-glue-")
            .tempdir()
            .expect("a temporary directory");
        let dir = scratch.path();
        for (before, starts_line) in [("cut off mid-li", false), ("whole\n", true), ("", true)] {
            let path = dir.join("x.log");
            std::fs::write(&path, before).unwrap();
            let opened = open(&path).unwrap();
            assert_eq!(opened.at_line_start, starts_line, "{before:?}");
            assert!(!opened.waits_for_reader);
            let mut t = Transcript::start(opened.out, opened.at_line_start, |_| {}).unwrap();
            t.line("<a> hi");
            assert_eq!(t.close(DEADLINE).await, None);
            let text = std::fs::read_to_string(&path).unwrap();
            let (old, new) = text.split_at(before.len());
            assert_eq!(old, before);
            let glue = if starts_line { "" } else { "\n" };
            let new = new.strip_prefix(glue).unwrap_or_default();
            assert!(new.starts_with("20"), "{text:?}");
            assert!(
                new.ends_with("Z <a> hi\n") && new.lines().count() == 1,
                "{text:?}"
            );
        }
    }

    /// A writer that does not keep up never makes the room's side wait: lines are dropped and
    /// counted, memory stays bounded, the operator is told once, and the file gets the count
    /// when the writer catches up.
    #[tokio::test]
    async fn a_writer_that_does_not_keep_up_costs_lines_not_time() {
        let disk = Disk::unlimited();
        disk.hold(true);
        let told = Told::default();
        let mut t = Transcript::start(disk.clone(), true, told.reporter()).unwrap();
        let line = "x".repeat(1000);
        // Far more than the queue holds.
        for _ in 0..10 {
            for _ in 0..1000 {
                t.line(&line);
                let q = t.shared.lock();
                assert!(q.bytes <= QUEUE_BYTES && q.batches.len() <= QUEUE_BATCHES);
            }
            t.flush();
            assert!(t.buf.capacity() <= 4 * BUFFER, "{}", t.buf.capacity());
        }
        let stalled = told.take();
        let [News::Stalled { missing }] = stalled[..] else {
            panic!("{stalled:?}");
        };
        assert!(
            missing > 0 && t.dropped >= missing,
            "{missing} {}",
            t.dropped
        );
        let dropped = t.dropped;
        disk.hold(false);
        // Once the queue is written out, the next lines fit.
        let queued = (10_000 - dropped) as usize;
        disk.wait("the queued lines", |text| text.lines().count() == queued);
        t.line("<a> after");
        t.flush();
        disk.wait_text("<a> after\n");
        assert_eq!(t.close(DEADLINE).await, None);
        assert_eq!(told.take(), [News::Resumed { missing: dropped }]);
        let note = format!("* {dropped} lines missing from the transcript here ({FELL_BEHIND})");
        let lines = disk.lines();
        assert_eq!(lines[lines.len() - 2..], [note.as_str(), "<a> after"]);
        assert_eq!(lines.len() as u64, 10_000 - dropped + 2);
    }

    /// A writer that is stuck for good is left behind at shutdown, after the grace, with a
    /// count of the lines that never reached the file.
    #[tokio::test]
    async fn a_stuck_writer_is_left_behind_at_shutdown() {
        let disk = Disk::unlimited();
        disk.hold(true);
        let told = Told::default();
        let mut t = Transcript::start(disk.clone(), true, told.reporter()).unwrap();
        for _ in 0..5000 {
            t.line(&"y".repeat(1000));
        }
        t.flush();
        let started = Instant::now();
        let grace = Duration::from_millis(300);
        assert_eq!(
            t.close(grace).await,
            Some(News::Stuck {
                waited: grace,
                missing: 5000
            })
        );
        assert!(started.elapsed() < DEADLINE);
        assert_eq!(
            News::Stuck {
                waited: CLOSE_GRACE,
                missing: 5000
            }
            .to_string(),
            "the log was still being written 3 s after shutting down began, so it is left \
             unfinished; up to 5000 lines did not reach it"
        );
        // Let the thread end.
        disk.hold(false);
    }
}
