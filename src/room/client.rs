//! One connection: a reader (telnet commands out -> line ends -> bounded lines -> decode ->
//! rate limit -> command or chat) and a writer that takes over from the flushers while the
//! client's socket is full, run together in one task. At the end the task writes what the
//! client is still owed, then closes.
//!
//! A line is what ends in a line end, or what came without one and was followed by a pause of
//! [`LINE_PAUSE`]: GUI network assistants and the tutorial's Python clients send messages
//! without a newline.

use super::Config;
use super::commands::{HELP, Input, parse};
use super::limits::RateLimit;
use super::outbox::{ClientId, Conn, Flushed};
use super::state::Room;
use crate::codec::{Encoding, LineSplitter, Piece, TelnetFilter, sanitize_into};
use crate::transport::describe;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes read from a client at a time.
const READ_SIZE: usize = 4096;

/// How long a client's unfinished line waits for more bytes before it is taken as a line of its
/// own. Long enough for the rest of a write that the network split to follow on a LAN, even
/// after one retransmission (Linux retransmits after 200 ms at the soonest); short enough that
/// a person who sent a message without a newline sees it go out at once, not glued to the next.
const LINE_PAUSE: Duration = Duration::from_millis(500);

/// What the line framing produced.
enum Framed {
    Line(Vec<u8>),
    /// A line longer than `--max-line`; its bytes are dropped, not kept.
    TooLong,
}

/// Bounded line framing for one client: lines of at most `--max-line` bytes, and one
/// [`Framed::TooLong`] for each longer line, whose bytes are dropped as they come.
struct Framer {
    splitter: LineSplitter,
    /// True while the rest of a line that was too long is being dropped.
    discarding: bool,
    /// Framed, not yet acted on.
    lines: Vec<Framed>,
}

impl Framer {
    fn new(max_line: usize) -> Self {
        Framer {
            // Line ends reach it as one LF each (see `LineEnds`), so a line is too long exactly
            // when the splitter has to pass it on in pieces.
            splitter: LineSplitter::new(max_line),
            discarding: false,
            lines: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let Framer {
            splitter,
            discarding,
            lines,
        } = self;
        splitter.push(bytes, &mut |p| frame(p, discarding, lines));
    }

    /// Takes an unfinished line as a line of its own; false if there was none.
    fn finish(&mut self) -> bool {
        let partial = self.splitter.has_partial();
        let Framer {
            splitter,
            discarding,
            lines,
        } = self;
        splitter.finish(&mut |p| frame(p, discarding, lines));
        partial
    }
}

/// Takes one piece from the splitter into `lines`.
fn frame(p: Piece<'_>, discarding: &mut bool, lines: &mut Vec<Framed>) {
    match p {
        Piece::Partial(_) => {
            if !std::mem::replace(discarding, true) {
                lines.push(Framed::TooLong);
            }
        }
        Piece::Line { text, .. } => {
            if !std::mem::take(discarding) {
                lines.push(Framed::Line(text.to_vec()));
            }
        }
    }
}

/// A client's bytes on their way to line framing: telnet commands taken out (a telnet client
/// sends them mixed with its text), then line ends made one LF each.
///
/// Telnet commands are told from text only where a 0xFF byte cannot be text: UTF-8 and the
/// multi-byte encodings (GBK, Big5, Shift_JIS, EUC-*). In a single-byte code page 0xF0-0xFF
/// are letters (windows-1251 `р`-`я`, KOI8-R capitals), so for a client in one, every byte is
/// text: `мясо` must not lose its `яс` as "IAC SB".
#[derive(Default)]
struct Incoming {
    telnet: TelnetFilter,
    ends: LineEnds,
}

impl Incoming {
    /// `data` from a client whose encoding is `enc`.
    fn push(&mut self, data: &[u8], enc: Encoding, framer: &mut Framer) {
        let Incoming { telnet, ends } = self;
        if enc.is_single_byte() {
            // A command cut short by a change of encoding ends here.
            telnet.finish(&mut |run| ends.normalize(run, &mut |run| framer.push(run)));
            ends.normalize(data, &mut |run| framer.push(run));
        } else {
            telnet.filter(data, &mut |run| {
                ends.normalize(run, &mut |run| framer.push(run))
            });
        }
    }

    /// The client has sent nothing for [`LINE_PAUSE`]: its unfinished line is a line of its
    /// own. An unfinished telnet command is no part of it and waits for the bytes that finish
    /// it; so does a lone 0xFF, which may start one (a windows-1252 'ÿ' that ends a message
    /// sent without a line end goes out with the client's next bytes).
    fn pause(&mut self, framer: &mut Framer) {
        if framer.finish() {
            self.ends.line_taken();
        }
    }

    /// The client is gone: what it sent last is a line even without a line end.
    fn end(&mut self, framer: &mut Framer) {
        let Incoming { telnet, ends } = self;
        telnet.finish(&mut |run| ends.normalize(run, &mut |run| framer.push(run)));
        framer.finish();
    }
}

/// Serves one connection until it leaves, is cut off, or the room shuts down.
pub async fn serve(
    room: Arc<Room>,
    config: Arc<Config>,
    stream: TcpStream,
    peer: SocketAddr,
    id: ClientId,
    shutdown: CancellationToken,
) {
    // Chat lines are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    // Until the socket is known to be writable, every write would be put off.
    let _ = stream.writable().await;
    let conn = match room.join(id, peer, stream) {
        Ok(conn) => conn,
        Err(mut stream) => {
            let _ = stream.write_all(b"* server shutting down\n").await;
            return;
        }
    };
    // Should this task panic (a bug), the member still leaves, instead of staying on /who
    // with nobody serving it.
    let _unwinding = LeaveIfPanicking { room: &room, id };
    let reason = tokio::select! {
        reason = read_loop(&room, &config, &conn, &shutdown) => reason,
        reason = write_loop(&room, &conn) => reason,
    };
    room.leave(id, &reason);
    if conn.kick.token.is_cancelled() {
        // Cut off: its socket is full. The reason (after a newline that ends a line it may have
        // half received) gets through if the client reads again within the grace time.
        let bye = format!("\n! disconnected: {}\n", conn.kick.reason());
        let _ = tokio::time::timeout(config.grace, write_all(&conn.stream, bye.as_bytes())).await;
    } else {
        // Whatever it is owed up to now (a goodbye, an error) goes out before the close.
        let _ = tokio::time::timeout(config.grace, drain(&room, &conn)).await;
    }
    let _ = socket2::SockRef::from(&conn.stream).shutdown(std::net::Shutdown::Write);
    room.gone(id);
}

/// Line ends as clients send them: LF, CRLF, a bare CR (old Macs, serial terminals, some
/// network assistants) or telnet's CR NUL. Each becomes one LF, also when it is split across two
/// reads. A line end that comes right after a line was taken at a pause ends that line, so it
/// is dropped instead of making an empty one.
#[derive(Default)]
struct LineEnds {
    after_cr: bool,
    after_pause: bool,
}

impl LineEnds {
    /// Passes `data` on to `emit` in runs, each line end made one LF.
    fn normalize(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        // Start of the run not yet passed on.
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            let after_pause = std::mem::take(&mut self.after_pause);
            let drop =
                (after_cr && (b == b'\n' || b == 0)) || (after_pause && (b == b'\n' || b == b'\r'));
            if b != b'\r' && !drop {
                continue;
            }
            if start < i {
                emit(&data[start..i]);
            }
            if !drop {
                emit(b"\n");
            }
            start = i + 1;
        }
        if start < data.len() {
            emit(&data[start..]);
        }
    }

    /// The unfinished line was taken at a pause: a line end next belongs to it.
    fn line_taken(&mut self) {
        self.after_pause = true;
    }
}

/// Makes a member leave when its task unwinds from a panic.
struct LeaveIfPanicking<'a> {
    room: &'a Room,
    id: ClientId,
}

impl Drop for LeaveIfPanicking<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.room.leave(self.id, "server error");
            self.room.gone(self.id);
        }
    }
}

/// Writes `bytes` whenever the socket has room, until done or it fails.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        if stream.writable().await.is_err() {
            return;
        }
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Takes over from the flushers whenever they find the socket full: waits until it is
/// writable, writes the backlog, and hands back. Returns only when the connection fails.
pub(super) async fn write_loop(room: &Room, conn: &Arc<Conn>) -> String {
    loop {
        conn.blocked.notified().await;
        loop {
            if let Err(e) = conn.stream.writable().await {
                return describe(&e);
            }
            match conn.catch_up(|c| room.snapshot(c)) {
                Ok(true) => {
                    // Lines may have arrived after the last snapshot: the flusher looks again.
                    room.mark(conn);
                    break;
                }
                Ok(false) | Err(Flushed::Blocked | Flushed::Behind | Flushed::Done) => {}
                Err(Flushed::Failed(e)) => return describe(&e),
            }
        }
    }
}

/// Writes everything the client is still owed (up to where it left), waiting for room.
pub(super) async fn drain(room: &Room, conn: &Conn) {
    loop {
        match conn.catch_up(|c| room.snapshot(c)) {
            Ok(true) | Err(Flushed::Failed(_)) => return,
            // A long backlog: let the other tasks run between writes.
            Ok(false) => tokio::task::yield_now().await,
            Err(_) => {
                if conn.stream.writable().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the reader waited for.
enum Woke {
    /// The socket has something (data, its end or an error).
    Readable,
    /// No bytes for [`LINE_PAUSE`] after part of a line.
    Pause,
    /// Nothing for `--idle-timeout`.
    Idle,
}

/// Reads and acts on lines; returns why the client is leaving.
async fn read_loop(
    room: &Room,
    config: &Config,
    conn: &Conn,
    shutdown: &CancellationToken,
) -> String {
    let (rd, id, kick) = (&conn.stream, conn.id, &conn.kick);
    // Registered once for the connection's life, not on every read: the shutdown token is
    // shared by every client.
    let cut = kick.token.cancelled();
    let closing = shutdown.cancelled();
    tokio::pin!(cut, closing);
    let mut framer = Framer::new(config.max_line);
    let mut incoming = Incoming::default();
    let mut encoding = config.encoding;
    let mut wait_for = None;
    let mut rate = config.rate.map(|(r, burst)| RateLimit::new(r, burst));
    let mut throttled = false;
    let mut idle_at = None;
    let mut woke = Woke::Readable;
    // The last read, taken in one line at a time: a line may change the client's encoding
    // (`/encoding windows-1251`), and the text after it in the same read must be taken in the
    // new one (whether a 0xFF byte is a telnet command depends on it). Empty between reads,
    // so it holds no memory while a client is idle.
    let mut read_bytes: Vec<u8> = Vec::new();
    loop {
        // The idle time counts from when the reader began to wait after the client's last
        // bytes: taking its unfinished line at a pause does not start it again.
        if !matches!(woke, Woke::Pause) {
            // A timeout too long to count (`--idle-timeout inf`) is none.
            idle_at = config
                .idle_timeout
                .and_then(|t| Instant::now().checked_add(t));
        }
        let read = async {
            match idle_at {
                Some(at) => tokio::time::timeout_at(at, rd.readable()).await.ok(),
                None => Some(rd.readable().await),
            }
        };
        // Made only when polled, so a client whose bytes are waiting costs no timer.
        let pause = async {
            if framer.splitter.has_partial() {
                tokio::time::sleep(LINE_PAUSE).await
            } else {
                std::future::pending().await
            }
        };
        woke = tokio::select! {
            biased;
            () = &mut cut => return kick.reason(),
            () = &mut closing => return "server shutting down".into(),
            r = read => match r {
                None => Woke::Idle,
                Some(Ok(())) => Woke::Readable,
                Some(Err(e)) => return describe(&e),
            },
            () = pause => Woke::Pause,
        };
        // Why the client leaves once its last lines are acted on.
        let leaving = match woke {
            Woke::Pause => {
                incoming.pause(&mut framer);
                None
            }
            Woke::Idle => {
                incoming.end(&mut framer);
                Some(format!(
                    "idle for {} s",
                    config.idle_timeout.unwrap_or_default().as_secs_f64()
                ))
            }
            Woke::Readable => {
                // A buffer on the stack, in a block with no await in it, so that it is not part
                // of the task: nothing is held for a client while it is idle, which is most of
                // the time for most of thousands of clients.
                let mut buf = [0u8; READ_SIZE];
                match rd.try_read(&mut buf) {
                    Ok(0) => {
                        // A last line without a newline is still delivered, as a line of its own.
                        incoming.end(&mut framer);
                        Some("connection closed".into())
                    }
                    Ok(n) => {
                        read_bytes.extend_from_slice(&buf[..n]);
                        None
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return describe(&e),
                }
            }
        };
        let mut taken = 0;
        loop {
            // Up to and including the next line end (a CR or LF: telnet's CR NUL and a CRLF
            // split here are put together again by `LineEnds`).
            if taken < read_bytes.len() {
                let end = read_bytes[taken..]
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .map_or(read_bytes.len(), |i| taken + i + 1);
                incoming.push(&read_bytes[taken..end], encoding, &mut framer);
                taken = end;
            }
            for item in framer.lines.drain(..) {
                if let Some(limit) = rate.as_mut() {
                    let mut first = true;
                    while let Some(wait) = limit.take() {
                        if !throttled {
                            let (r, b) = config.rate.unwrap_or_default();
                            room.tell(
                                id,
                                &format!(
                                    "! slow down: at most {} a second (bursts of {b}); \
                                 your lines are held back, not lost\n",
                                    super::count(r, "line")
                                ),
                            );
                            throttled = true;
                        }
                        first = false;
                        tokio::select! {
                            biased;
                            () = &mut cut => return kick.reason(),
                            () = &mut closing => return "server shutting down".into(),
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                    if first {
                        throttled = false;
                    }
                }
                let quit = match item {
                    Framed::TooLong => {
                        room.tell(
                            id,
                            &format!(
                                "! line too long (more than {} bytes): not sent\n",
                                config.max_line
                            ),
                        );
                        None
                    }
                    Framed::Line(bytes) => handle(room, id, &mut encoding, &bytes, &mut wait_for),
                };
                if let Some(reason) = quit {
                    return reason;
                }
                if let Some(target) = wait_for.take() {
                    tokio::select! {
                        biased;
                        () = &mut cut => return kick.reason(),
                        () = &mut closing => return "server shutting down".into(),
                        () = room.wait_for_private_reader(target) => {}
                    }
                }
            }
            if taken >= read_bytes.len() {
                break;
            }
        }
        read_bytes = Vec::new();
        if let Some(reason) = leaving {
            if let Woke::Idle = woke {
                // The client is leaving: its own queue has room or it is cut off anyway.
                room.tell(id, &format!("! {reason}: closing\n"));
            }
            return reason;
        }
        // A sender faster than the flushers waits for them (and its socket fills), so the
        // log never holds more than the queue allows for members that are reading.
        tokio::select! {
            biased;
            () = &mut cut => return kick.reason(),
            () = &mut closing => return "server shutting down".into(),
            () = room.wait_for_flushers() => {}
        }
    }
}

/// Acts on one line from member `id`; returns a reason when the client quits. A private line
/// to a member that is behind sets `wait_for`: the caller waits for it before the next line.
fn handle(
    room: &Room,
    id: ClientId,
    encoding: &mut Encoding,
    bytes: &[u8],
    wait_for: &mut Option<ClientId>,
) -> Option<String> {
    let mut text = String::with_capacity(bytes.len());
    encoding.decode_message(bytes, &mut text);
    let clean = |s: &str| {
        let mut out = String::with_capacity(s.len());
        sanitize_into(s, &mut out);
        out
    };
    match parse(&text) {
        Input::Empty => {}
        Input::Say(t) => room.say(id, &clean(t)),
        Input::Me(t) => {
            if let Err(why) = room.me(id, &clean(t)) {
                room.tell(id, &format!("! {why}\n"));
            }
        }
        Input::Nick(n) => {
            if let Err(why) = room.rename(id, n) {
                room.tell(id, &format!("! cannot use that nickname: {why}\n"));
            }
        }
        Input::Who => room.who(id),
        Input::Msg { to, text } => match room.private(id, to, &clean(text)) {
            Ok(behind) => *wait_for = behind,
            Err(why) => room.tell(id, &format!("! {}\n", clean(&why))),
        },
        Input::Encoding(None) => room.tell(
            id,
            &format!(
                "* your encoding is {} (/encoding LABEL changes it)\n",
                encoding.name()
            ),
        ),
        Input::Encoding(Some(label)) => match Encoding::from_label(label) {
            Ok(e) => {
                *encoding = e;
                room.set_encoding(id, e);
                room.tell(id, &format!("* your encoding is now {}\n", e.name()))
            }
            Err(e) => room.tell(id, &format!("! {}\n", clean(&e.to_string()))),
        },
        Input::Quit(reason) => {
            let reason = match reason {
                Some(r) => format!("quit: {}", clean(r)),
                None => "quit".into(),
            };
            room.tell(id, "* bye\n");
            return Some(reason);
        }
        Input::Help => {
            let mut help = HELP.join("\n");
            help.push('\n');
            room.tell(id, &help)
        }
        Input::Usage(u) => room.tell(id, &format!("! {u}\n")),
        Input::Unknown(name) => room.tell(
            id,
            &format!(
                "! unknown command /{} (/help lists the commands)\n",
                clean(name)
            ),
        ),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pieces` through one client's input; `None` stands for a pause. Returns the lines, with
    /// `!` for one that was too long.
    fn lines(max_line: usize, pieces: &[Option<&[u8]>]) -> Vec<String> {
        let mut framer = Framer::new(max_line);
        let mut incoming = Incoming::default();
        for p in pieces {
            match p {
                Some(bytes) => incoming.push(bytes, Encoding::UTF8, &mut framer),
                None => incoming.pause(&mut framer),
            }
        }
        incoming.end(&mut framer);
        framer
            .lines
            .drain(..)
            .map(|l| match l {
                Framed::Line(b) => String::from_utf8_lossy(&b).into_owned(),
                Framed::TooLong => "!".into(),
            })
            .collect()
    }

    #[test]
    fn line_ends_lf_crlf_and_bare_cr_become_one_lf() {
        let mut ends = LineEnds::default();
        let mut all = Vec::new();
        // A CRLF split across two reads, then bare CRs, then a read that is only the LF.
        for piece in [&b"a\r\nb\r"[..], b"\nc\rd\r\re", b"\r", b"\n", b"f\r\0g\n"] {
            ends.normalize(piece, &mut |run| {
                assert!(!run.is_empty());
                all.extend_from_slice(run)
            });
        }
        assert_eq!(all, b"a\nb\nc\nd\n\ne\nf\ng\n");
    }

    /// Telnet commands go before line ends are looked at, so a CR NUL or a CRLF with a command
    /// between its halves is still one line end; an option byte that is a CR or LF is no line
    /// end.
    #[test]
    fn telnet_commands_come_out_before_line_ends() {
        let putty = b"\xff\xfb\x1f\xff\xfb\x20\xff\xfb\x18\xff\xfb\x27\xff\xfd\x01";
        assert_eq!(
            lines(
                64,
                &[
                    Some(putty),
                    Some(b"/nick alice\r\0hi\r"),
                    Some(b"\xff\xf1\n")
                ]
            ),
            ["/nick alice", "hi"]
        );
        assert_eq!(
            lines(64, &[Some(b"a\xff\xfd\rb\xff\xfa\x18\n\r\xff\xf0c\n")]),
            ["abc"]
        );
    }

    #[test]
    fn an_unfinished_line_is_taken_at_a_pause() {
        assert_eq!(
            lines(64, &[Some(b"hello"), None, Some(b"how are you"), None]),
            ["hello", "how are you"]
        );
        // The line end that comes after the pause ends the line already taken, whichever it is.
        for end in [&b"\n"[..], b"\r\n", b"\r", b"\r\0"] {
            let rest = [end, b"next\n"].concat();
            assert_eq!(
                lines(64, &[Some(b"hello"), None, Some(&rest)]),
                ["hello", "next"],
                "{end:?}"
            );
            // Split after its first byte too.
            assert_eq!(
                lines(
                    64,
                    &[Some(b"hello"), None, Some(&rest[..1]), Some(&rest[1..])]
                ),
                ["hello", "next"],
                "{end:?}"
            );
        }
        // Only one: a second line end is an empty line, as it always was.
        assert_eq!(
            lines(64, &[Some(b"hello"), None, Some(b"\n\nx\n")]),
            ["hello", "", "x"]
        );
        // A pause with nothing unfinished changes nothing.
        assert_eq!(
            lines(64, &[Some(b"a\n"), None, Some(b"\nb\n")]),
            ["a", "", "b"]
        );
        // Without a pause, bytes are one line however they came.
        assert_eq!(lines(64, &[Some(b"hel"), Some(b"lo\n")]), ["hello"]);
    }

    /// --max-line holds for a line taken at a pause, and a too-long line taken so is refused
    /// once, with the bytes after the pause a line of their own.
    #[test]
    fn max_line_holds_at_a_pause() {
        let long = [b'x'; 20];
        assert_eq!(lines(16, &[Some(&long[..16]), None]), ["x".repeat(16)]);
        assert_eq!(lines(16, &[Some(&long[..17]), None]), ["!"]);
        assert_eq!(
            lines(16, &[Some(&long), Some(&long), None, Some(b"ok"), None]),
            ["!", "ok"]
        );
        assert_eq!(
            lines(16, &[Some(&long), None, Some(b"\nok\n")]),
            ["!", "ok"]
        );
    }

    /// A 0xFF the stream ended on is passed on as the byte it was.
    #[test]
    fn an_iac_at_the_end_is_data() {
        assert_eq!(lines(64, &[Some(b"caf\xe9\xff")]), ["caf\u{fffd}\u{fffd}"]);
    }
}
