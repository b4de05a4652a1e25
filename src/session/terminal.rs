//! The terminal side of a conversation as the process has it: plain stdin/stdout (pipes, files,
//! a terminal without the editor), or, when both are terminals, a line editor (rustyline) whose
//! external printer shows incoming messages and events above the line being typed, so they
//! never tear it.

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
        Terminal {
            input: Box::pin(tokio::io::stdin()),
            output,
            events: Events::stderr(quiet),
            spliceable: !stdin_is_tty && !stdout_is_tty,
            stdout_is_tty,
            stdin_is_tty,
        }
    }
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

/// Waits, at most `limit`, until the line editor has shown everything given to its printer.
/// The editor's thread prints messages after they are handed over, so without this the last
/// ones (`closed: ...`) could be lost when the process exits.
///
/// rustyline has no flush: the printer hands messages over through a queue of one, so the
/// second of two marker messages is taken only after the editor has finished with everything
/// before the first. The marker moves the cursor up a line and back down, which shows nothing.
pub fn flush_editor_output(limit: std::time::Duration) {
    let Some(printer) = PRINTER.get().cloned() else {
        return;
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // On a thread of its own: a terminal that is not being read (stopped with Ctrl-S) must
    // not keep wirechat from exiting.
    std::thread::spawn(move || {
        if let Ok(mut p) = printer.lock() {
            for _ in 0..2 {
                if p.print("\x1b[1A\n".to_string()).is_err() {
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
    // message is an end of input that the editor survives (see [`EditorInput`]).
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
    let events_printer = printer.clone();
    let events = Events::new(move |e: &super::Event| {
        if !quiet || e.always_shown() {
            if let Ok(mut p) = events_printer.lock() {
                let _ = p.print(format!("wirechat: {e}\n"));
            }
        }
    });
    Ok(Terminal {
        input: Box::pin(EditorInput {
            lines: line_rx,
            rest: Bytes::new(),
        }),
        output: Box::pin(PrinterWriter(printer)),
        events,
        spliceable: false,
        stdout_is_tty: true,
        stdin_is_tty: true,
    })
}

/// The lines the editor's thread sends, as a byte stream. An empty message is one end of input
/// (a read of 0 bytes), after which reading goes on, as from a terminal after Ctrl-D; the
/// editor's thread ending is the end for good.
struct EditorInput {
    lines: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    /// What the last line did not fit into the reader's buffer.
    rest: Bytes,
}

impl AsyncRead for EditorInput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.rest.is_empty() {
            match self.lines.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // The end of input, for good or once.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(line)) if line.is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Some(line)) => self.rest = line,
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
pub struct TtyGuard(#[cfg(unix)] Option<nix::sys::termios::Termios>);

#[cfg(not(unix))]
impl TtyGuard {
    /// Elsewhere the console's mode is the line editor's own business.
    pub fn save() -> TtyGuard {
        TtyGuard()
    }

    /// Nothing to restore.
    pub fn restore(&self, _: Option<&mut std::fs::File>) {}
}

#[cfg(unix)]
impl TtyGuard {
    /// Saves stdin's terminal mode, if stdin is a terminal.
    pub fn save() -> TtyGuard {
        TtyGuard(nix::sys::termios::tcgetattr(io::stdin()).ok())
    }

    /// Restores the saved mode. If the editor was in the middle of reading a line (raw mode),
    /// its prompt line is cleared on `screen` (the terminal [`silence_editor`] gave, or stdout)
    /// so the shell's prompt takes its place; a redraw the editor left half done (inside a
    /// synchronized update) is ended first.
    pub fn restore(&self, screen: Option<&mut std::fs::File>) {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        use std::io::Write;
        if let Some(saved) = &self.0 {
            let was_reading = tcgetattr(io::stdin()).is_ok_and(|now| {
                saved.local_flags.contains(LocalFlags::ICANON)
                    && !now.local_flags.contains(LocalFlags::ICANON)
            });
            let _ = tcsetattr(io::stdin(), SetArg::TCSANOW, saved);
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
