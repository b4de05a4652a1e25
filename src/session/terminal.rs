//! The terminal side of a conversation as the process has it: plain stdin/stdout (pipes, files,
//! a terminal without the editor), or, when both are terminals, a line editor (rustyline) whose
//! external printer shows incoming messages and events above the line being typed, so they
//! never tear it.
//!
//! Started in the background of a shell (`wirechat tcp listen 5000 > file.bin &`), wirechat
//! neither reads the terminal nor changes its mode, either of which would stop the whole
//! process (SIGTTIN, SIGTTOU): the conversation runs, and typing works once it is brought to
//! the foreground (`fg`). The room reads its stdin the same way (`stdin_reader`).

use super::Events;
use bytes::Bytes;
use std::io::{self, IsTerminal};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The process's input, output and event sink for conversations.
pub struct Terminal {
    /// Typed or piped input.
    pub input: Pin<Box<dyn AsyncRead + Send>>,
    /// Where received data goes.
    pub output: Pin<Box<dyn AsyncWrite + Send>>,
    /// Where events go.
    pub events: Events,
    /// stdin and stdout are plain descriptors that the pass-through may splice.
    pub spliceable: bool,
    /// stdout is a terminal (sanitise, end each message with a newline).
    pub stdout_is_tty: bool,
    /// stdin is a terminal: a person is typing.
    pub stdin_is_tty: bool,
}

/// What Ctrl-D typed in the line editor means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlD {
    /// The end of all input: the editor stops.
    EndsInput,
    /// The end of one client's turn (`tcp listen -k`): the input ends once, and the editor goes
    /// on for the next client, as a plain terminal's input does.
    EndsTurn,
}

impl Terminal {
    /// The process's stdio; with `editor` and both ends terminals, the line editor.
    pub fn stdio(editor: bool, quiet: bool, ctrl_d: CtrlD) -> Terminal {
        let stdin_is_tty = io::stdin().is_terminal();
        let stdout_is_tty = io::stdout().is_terminal();
        if editor && stdin_is_tty && stdout_is_tty {
            match start_editor(quiet, ctrl_d) {
                Ok(t) => return t,
                Err(e) => Events::stderr(quiet).warn(format!(
                    "line editor unavailable ({e}); reading stdin plainly"
                )),
            }
        }
        let output: Pin<Box<dyn AsyncWrite + Send>> = if stdout_never_blocks() {
            Box::pin(DirectStdout)
        } else {
            Box::pin(tokio::io::stdout())
        };
        // A terminal is read by a thread that leaves it alone while wirechat is in the
        // background; after Ctrl-D it goes on reading, as a terminal does. Pipes and files
        // need none of this.
        let input: Pin<Box<dyn AsyncRead + Send>> = match stdin_is_tty {
            true => match stdin_reader(true) {
                Ok(reader) => Box::pin(reader),
                Err(_) => Box::pin(tokio::io::stdin()),
            },
            false => Box::pin(tokio::io::stdin()),
        };
        Terminal {
            input,
            output,
            events: Events::stderr(quiet),
            spliceable: !stdin_is_tty && !stdout_is_tty,
            stdout_is_tty,
            stdin_is_tty,
        }
    }
}

/// stdin and stdout as they were given: wirechat reads and writes them as blocking files (on
/// threads of their own, or through splice), so one that a parent left non-blocking (Node's
/// child processes, some test harnesses) is made blocking for the run, which would otherwise
/// fail with "resource temporarily unavailable" as soon as a pipe is empty or full; the flags
/// are put back on the way out, since other processes may share them.
#[derive(Clone)]
pub struct BlockingStdio(#[cfg(unix)] Vec<(i32, nix::fcntl::OFlag)>);

impl BlockingStdio {
    /// Clears O_NONBLOCK on stdin and stdout where it is set.
    #[cfg(unix)]
    pub fn take() -> BlockingStdio {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
        let (stdin, stdout) = (io::stdin(), io::stdout());
        let fds: [BorrowedFd<'_>; 2] = [stdin.as_fd(), stdout.as_fd()];
        let mut changed = Vec::new();
        for fd in fds {
            let Ok(bits) = fcntl(fd, FcntlArg::F_GETFL) else {
                continue;
            };
            let flags = OFlag::from_bits_truncate(bits);
            if flags.contains(OFlag::O_NONBLOCK)
                && fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).is_ok()
            {
                tracing::debug!(fd = fd.as_raw_fd(), "made blocking for the run");
                changed.push((fd.as_raw_fd(), flags));
            }
        }
        BlockingStdio(changed)
    }

    /// Elsewhere there is nothing to change.
    #[cfg(not(unix))]
    pub fn take() -> BlockingStdio {
        BlockingStdio()
    }

    /// Puts the flags back.
    pub fn restore(&self) {
        #[cfg(unix)]
        {
            use nix::fcntl::{FcntlArg, fcntl};
            use std::os::fd::AsFd;
            let (stdin, stdout) = (io::stdin(), io::stdout());
            for (raw, flags) in &self.0 {
                let fd = match raw {
                    0 => stdin.as_fd(),
                    _ => stdout.as_fd(),
                };
                let _ = fcntl(fd, FcntlArg::F_SETFL(*flags));
            }
        }
    }
}

/// How often a reader in the background looks again whether it has been brought to the
/// foreground: there is no signal for that which every shell sends.
const FOREGROUND_POLL: std::time::Duration = std::time::Duration::from_millis(300);

/// True when stdin is a terminal whose foreground job is not ours: wirechat was started with
/// `&` or sent to the background. A read of the terminal from there stops the whole process
/// with SIGTTIN, a change of its mode (the line editor's raw mode) with SIGTTOU.
#[cfg(unix)]
pub fn in_background() -> bool {
    let stdin = io::stdin();
    stdin.is_terminal()
        && nix::unistd::tcgetpgrp(&stdin).is_ok_and(|fg| fg != nix::unistd::getpgrp())
}

/// Elsewhere there is no job control to keep out of the way of.
#[cfg(not(unix))]
pub fn in_background() -> bool {
    false
}

/// Returns once wirechat is not in the background of its terminal (at once if it never was).
fn wait_for_foreground() {
    while in_background() {
        std::thread::sleep(FOREGROUND_POLL);
    }
}

/// The process's stdin as an `AsyncRead`, read on a detached thread of its own: tokio's stdin
/// would keep the runtime from shutting down while a read is blocked, and it stops the process
/// when it reads a terminal from the background. Here SIGTTIN is blocked in the reading thread,
/// so such a read fails (EIO) instead, and the thread looks again later: `fg` gives the keyboard
/// back. With `eof_once`, an end of input read from a terminal (Ctrl-D) is one end, after which
/// reading goes on; otherwise it is the end. Fails when the thread cannot start.
pub(crate) fn stdin_reader(eof_once: bool) -> io::Result<ThreadInput> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let tty = stdin.is_terminal();
            #[cfg(unix)]
            if tty {
                use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
                let mut ttin = SigSet::empty();
                ttin.add(Signal::SIGTTIN);
                let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttin), None);
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let item = match stdin.read(&mut buf) {
                    Ok(0) if eof_once && tty => Ok(Bytes::new()),
                    Ok(0) => return,
                    Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    #[cfg(unix)]
                    Err(e)
                        if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32)
                            && in_background() =>
                    {
                        // The keyboard is the foreground job's until `fg`.
                        wait_for_foreground();
                        continue;
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        })?;
    Ok(ThreadInput {
        chunks: Chunks::Read(rx),
        rest: Bytes::new(),
    })
}

/// True when stdout is a regular file or a device that is not a terminal (/dev/null): writes
/// there complete at once, so they need no hand-off to a blocking thread.
#[cfg(unix)]
fn stdout_never_blocks() -> bool {
    use nix::sys::stat::{SFlag, fstat};
    let stdout = io::stdout();
    if stdout.is_terminal() {
        return false;
    }
    fstat(&stdout).is_ok_and(|st| {
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        kind == SFlag::S_IFREG || kind == SFlag::S_IFCHR
    })
}

/// Elsewhere every output goes through tokio's stdout.
#[cfg(not(unix))]
fn stdout_never_blocks() -> bool {
    false
}

/// stdout written in place, for outputs that never block (see `stdout_never_blocks`). tokio's
/// stdout hands every write to a blocking thread, which costs more than the write itself when
/// a UDP listener writes out each small batch of datagrams.
struct DirectStdout;

impl AsyncWrite for DirectStdout {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use std::io::Write;
        Poll::Ready(io::stdout().lock().write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        use std::io::Write;
        Poll::Ready(io::stdout().lock().flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

type Printer = Arc<Mutex<Box<dyn rustyline::ExternalPrinter + Send>>>;

/// The line editor's printer, once the editor has started: [`flush_editor_output`] needs it
/// at exit.
static PRINTER: std::sync::OnceLock<Printer> = std::sync::OnceLock::new();

/// stderr is the terminal the editor draws on, so what goes to stderr goes through its printer.
static STDERR_ON_EDITOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when stderr is the terminal the line editor draws on (stdout's).
#[cfg(unix)]
fn stderr_is_editors_terminal() -> bool {
    use nix::sys::stat::fstat;
    let (err, out) = (io::stderr(), io::stdout());
    err.is_terminal()
        && match (fstat(&err), fstat(&out)) {
            (Ok(e), Ok(o)) => e.st_rdev == o.st_rdev,
            _ => false,
        }
}

/// Elsewhere a terminal stderr is taken for the console the editor draws on.
#[cfg(not(unix))]
fn stderr_is_editors_terminal() -> bool {
    io::stderr().is_terminal()
}

/// Shows `last` (wirechat's last words: the error that ends it), then waits, at most `limit`,
/// until the line editor has shown everything given to its printer. The editor's thread prints
/// messages after they are handed over, so without this the last ones (`closed: ...`) could be
/// lost when the process exits. `last` goes to stderr, through the editor's printer when that
/// is the editor's terminal: written straight there, it would follow the editor's prompt on
/// its line (`> wirechat: error: ...`).
///
/// rustyline has no flush: the printer hands messages over through a queue of one, so the
/// second of two marker messages is taken only after the editor has finished with everything
/// before the first. The marker moves the cursor up a line and back down, which shows nothing.
pub fn flush_editor_output(limit: std::time::Duration, last: Option<String>) {
    let printer = PRINTER.get().cloned();
    let last = match (last, &printer) {
        (Some(line), Some(_)) if STDERR_ON_EDITOR.load(std::sync::atomic::Ordering::Relaxed) => {
            Some(line)
        }
        (Some(line), _) => {
            use std::io::Write as _;
            let _ = writeln!(io::stderr().lock(), "{line}");
            None
        }
        (None, _) => None,
    };
    let Some(printer) = printer else {
        return;
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // On a thread of its own: a terminal that is not being read (stopped with Ctrl-S) must
    // not keep wirechat from exiting.
    std::thread::spawn(move || {
        if let Ok(mut p) = printer.lock() {
            let messages = last.map(|line| format!("{line}\n")).into_iter();
            for m in messages.chain(std::iter::repeat_n("\x1b[1A\n".to_string(), 2)) {
                if p.print(m).is_err() {
                    break;
                }
            }
        }
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(limit);
}

/// At exit, after [`flush_editor_output`]: whatever the line editor's thread draws from now on
/// goes to /dev/null. It redraws its prompt after every message and may still be doing so, so
/// without this its prompt could land after wirechat's last words, and the shell's prompt after
/// that. Returns the terminal, for those last words; `None` when the editor never ran.
#[cfg(unix)]
pub fn silence_editor() -> Option<std::fs::File> {
    use std::io::Write as _;
    use std::os::fd::AsFd;
    PRINTER.get()?;
    let _ = io::stdout().flush();
    let tty = io::stdout().as_fd().try_clone_to_owned().ok()?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()?;
    nix::unistd::dup2_stdout(&null).ok()?;
    Some(std::fs::File::from(tty))
}

/// Elsewhere the editor keeps the console.
#[cfg(not(unix))]
pub fn silence_editor() -> Option<std::fs::File> {
    None
}

fn start_editor(quiet: bool, ctrl_d: CtrlD) -> Result<Terminal, String> {
    // Unbounded, so the editor never waits for the conversation: while it waits it is out of
    // raw mode, and the terminal's cooked mode echoes type-ahead and drops what does not fit
    // its 4 KiB buffer. What it holds is bounded by what the user types or pastes. An empty
    // message is an end of input that the editor survives (see [`ThreadInput`]).
    let (line_tx, line_rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Printer, String>>();
    std::thread::spawn(move || {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(e) => e,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        match editor.create_external_printer() {
            Ok(p) => {
                let boxed: Box<dyn rustyline::ExternalPrinter + Send> = Box::new(p);
                let _ = ready_tx.send(Ok(Arc::new(Mutex::new(boxed))));
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        }
        loop {
            // In the background the editor leaves the terminal alone: its raw mode would stop
            // wirechat (SIGTTOU). Until `fg` its printer writes straight to the terminal.
            wait_for_foreground();
            save_mode();
            match editor.readline("> ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    let mut bytes = line.into_bytes();
                    bytes.push(b'\n');
                    // When the conversation is over the line has nowhere to go, but the
                    // editor goes on: returning would drop a message still queued for its
                    // printer before it is shown.
                    let _ = line_tx.send(Bytes::from(bytes));
                }
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    // Ctrl-C at the prompt means what it means elsewhere: stop wirechat.
                    // The signal goes to this thread, unblocked here in case wirechat was
                    // started with SIGINT blocked: it would stay pending, and nothing would
                    // end the conversation.
                    #[cfg(unix)]
                    {
                        use nix::sys::signal::{SigSet, Signal};
                        let mut int = SigSet::empty();
                        int.add(Signal::SIGINT);
                        let _ = int.thread_unblock();
                        let _ = nix::sys::signal::raise(Signal::SIGINT);
                    }
                    #[cfg(not(unix))]
                    std::process::exit(130);
                    // The input has not ended, so `line_tx` stays open: dropping it would let
                    // the conversation take the interruption for the end of input and send
                    // FIN before the signal is handled. The editor is out of raw mode now, so
                    // its printer writes straight to the terminal and the exit does not wait
                    // for this thread.
                    #[cfg(unix)]
                    loop {
                        std::thread::park();
                    }
                }
                Err(rustyline::error::ReadlineError::Eof) if ctrl_d == CtrlD::EndsTurn => {
                    let _ = line_tx.send(Bytes::new());
                }
                // Ctrl-D, or the terminal went away: our input is over.
                Err(_) => return,
            }
        }
    });
    let printer = ready_rx
        .recv()
        .map_err(|_| "editor thread ended".to_string())??;
    let _ = PRINTER.set(printer.clone());
    // Events go where stderr goes; through the printer (above the prompt, which is redrawn)
    // only when that is the terminal the editor draws on.
    let events = if stderr_is_editors_terminal() {
        STDERR_ON_EDITOR.store(true, std::sync::atomic::Ordering::Relaxed);
        let events_printer = printer.clone();
        Events::new(move |e: &super::Event| {
            if !quiet || e.always_shown() {
                if let Ok(mut p) = events_printer.lock() {
                    let _ = p.print(format!("wirechat: {e}\n"));
                }
            }
        })
    } else {
        Events::stderr(quiet)
    };
    Ok(Terminal {
        input: Box::pin(ThreadInput {
            chunks: Chunks::Lines(line_rx),
            rest: Bytes::new(),
        }),
        output: Box::pin(PrinterWriter(printer)),
        events,
        spliceable: false,
        stdout_is_tty: true,
        stdin_is_tty: true,
    })
}

/// What a thread reading the terminal (or stdin) sends, as a byte stream. An empty chunk is one
/// end of input (a read of 0 bytes), after which reading goes on, as from a terminal after
/// Ctrl-D; the thread ending is the end for good.
pub(crate) struct ThreadInput {
    chunks: Chunks,
    /// What the last chunk did not fit into the reader's buffer.
    rest: Bytes,
}

/// Where a [`ThreadInput`] gets its chunks.
enum Chunks {
    /// From [`stdin_reader`]: bounded, so a fast pipe waits for the conversation.
    Read(tokio::sync::mpsc::Receiver<io::Result<Bytes>>),
    /// The editor's lines (see [`start_editor`] for why unbounded).
    Lines(tokio::sync::mpsc::UnboundedReceiver<Bytes>),
}

impl AsyncRead for ThreadInput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.rest.is_empty() {
            let next = match &mut self.chunks {
                Chunks::Read(rx) => rx.poll_recv(cx),
                Chunks::Lines(rx) => rx.poll_recv(cx).map(|line| line.map(Ok)),
            };
            match next {
                Poll::Pending => return Poll::Pending,
                // The end of input, for good or once.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Ok(chunk))) => self.rest = chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            }
        }
        let n = self.rest.len().min(buf.remaining());
        let part = self.rest.split_to(n);
        buf.put_slice(&part);
        Poll::Ready(Ok(()))
    }
}

/// Output through the editor's external printer: each write is printed above the prompt.
struct PrinterWriter(Printer);

impl AsyncWrite for PrinterWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let text = String::from_utf8_lossy(buf).into_owned();
        let mut p = self
            .0
            .lock()
            .map_err(|_| io::Error::other("printer lock poisoned"))?;
        p.print(text).map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The terminal's mode when wirechat started, put back on the way out: the editor may be in
/// the middle of reading a line (raw mode) when a conversation ends.
#[derive(Clone)]
pub struct TtyGuard(());

/// The mode [`TtyGuard`] puts back. Started in the background, wirechat takes it once it is in
/// the foreground, before the editor first changes it: the mode seen from the background is the
/// foreground job's (the shell's own, while it reads its next command).
#[cfg(unix)]
static SAVED_MODE: Mutex<Option<nix::sys::termios::Termios>> = Mutex::new(None);

/// Saves stdin's terminal mode for [`TtyGuard`], unless one is saved, stdin is not a terminal,
/// or wirechat is in the background of it.
#[cfg(unix)]
fn save_mode() {
    let Ok(mut saved) = SAVED_MODE.lock() else {
        return;
    };
    if saved.is_none() && !in_background() {
        *saved = nix::sys::termios::tcgetattr(io::stdin()).ok();
    }
}

/// Elsewhere the console's mode is the line editor's own business.
#[cfg(not(unix))]
fn save_mode() {}

#[cfg(not(unix))]
impl TtyGuard {
    /// Elsewhere the console's mode is the line editor's own business.
    pub fn save() -> TtyGuard {
        TtyGuard(())
    }

    /// Nothing to restore.
    pub fn restore(&self, _: Option<&mut std::fs::File>) {}
}

#[cfg(unix)]
impl TtyGuard {
    /// Saves stdin's terminal mode, if stdin is a terminal and wirechat is in the foreground
    /// (otherwise the line editor saves it once it is).
    pub fn save() -> TtyGuard {
        save_mode();
        TtyGuard(())
    }

    /// Restores the saved mode. If the editor was in the middle of reading a line (raw mode),
    /// its prompt line is cleared on `screen` (the terminal [`silence_editor`] gave, or stdout)
    /// so the shell's prompt takes its place; a redraw the editor left half done (inside a
    /// synchronized update) is ended first.
    ///
    /// In the background of the terminal nothing is done: the mode is the foreground job's,
    /// and changing it would stop wirechat (SIGTTOU) on its way out. The editor is never in
    /// raw mode there (see `start_editor`).
    pub fn restore(&self, screen: Option<&mut std::fs::File>) {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        use std::io::Write;
        if in_background() {
            return;
        }
        let saved = match SAVED_MODE.lock() {
            Ok(saved) => saved.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(saved) = saved {
            let was_reading = tcgetattr(io::stdin()).is_ok_and(|now| {
                saved.local_flags.contains(LocalFlags::ICANON)
                    && !now.local_flags.contains(LocalFlags::ICANON)
            });
            let _ = tcsetattr(io::stdin(), SetArg::TCSANOW, &saved);
            if was_reading {
                let last = b"\x1b[?2026l\r\x1b[K";
                let _ = match screen {
                    Some(tty) => tty.write_all(last),
                    None => io::stdout().write_all(last),
                };
            }
        }
    }
}
