//! One connection: a reader (bounded lines -> decode -> rate limit -> command or chat) and a
//! writer that takes over from the flushers while the client's socket is full, run together in
//! one task. At the end the task writes what the client is still owed, then closes.

use super::Config;
use super::commands::{HELP, Input, parse};
use super::limits::RateLimit;
use super::outbox::{ClientId, Conn, Flushed};
use super::state::Room;
use crate::codec::{Encoding, LineSplitter, Piece, sanitize_into};
use crate::transport::describe;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Bytes read from a client at a time.
const READ_SIZE: usize = 4096;

/// What the line framing produced.
enum Framed {
    Line(Vec<u8>),
    /// A line longer than `--max-line`; its bytes are dropped, not kept.
    TooLong,
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
/// reads.
#[derive(Default)]
struct LineEnds {
    after_cr: bool,
}

impl LineEnds {
    /// Rewrites `buf` in place; returns the length of what is left.
    fn normalize(&mut self, buf: &mut [u8]) -> usize {
        let mut w = 0;
        for r in 0..buf.len() {
            let b = buf[r];
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            if (b == b'\n' || b == 0) && after_cr {
                continue;
            }
            buf[w] = if b == b'\r' { b'\n' } else { b };
            w += 1;
        }
        w
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
    // One byte over the limit, for the '\r' of a CRLF line of exactly --max-line bytes; a line
    // that is longer without it is refused below.
    let mut splitter = LineSplitter::new(config.max_line + 1);
    let mut ends = LineEnds::default();
    let mut framed: Vec<Framed> = Vec::new();
    let mut discarding = false;
    let mut encoding = config.encoding;
    let mut wait_for = None;
    let mut rate = config.rate.map(|(r, burst)| RateLimit::new(r, burst));
    let mut throttled = false;
    loop {
        // Wait for data, then read it into a buffer on the stack: no buffer is held while a
        // client is idle, which is most of the time for most of thousands of clients.
        let read = async {
            match config.idle_timeout {
                Some(t) => tokio::time::timeout(t, rd.readable()).await.ok(),
                None => Some(rd.readable().await),
            }
        };
        tokio::select! {
            biased;
            () = &mut cut => return kick.reason(),
            () = &mut closing => return "server shutting down".into(),
            r = read => match r {
                None => {
                    let secs = config.idle_timeout.unwrap_or_default().as_secs_f64();
                    // The client is leaving: its own queue has room or it is cut off anyway.
                    room.tell(id, &format!("! idle for {secs} s: closing\n"));
                    return format!("idle for {secs} s");
                }
                Some(Ok(())) => (),
                Some(Err(e)) => return describe(&e),
            },
        };
        let mut buf = [0u8; READ_SIZE];
        let n = match rd.try_read(&mut buf) {
            Ok(0) => 0,
            Ok(n) => match ends.normalize(&mut buf[..n]) {
                // Only the LF of a CRLF split across reads: nothing new.
                0 => continue,
                n => n,
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return describe(&e),
        };
        let mut frame = |p: Piece<'_>| match p {
            Piece::Partial(_) => {
                if !discarding {
                    framed.push(Framed::TooLong);
                }
                discarding = true;
            }
            Piece::Line { text, .. } => {
                if std::mem::take(&mut discarding) {
                } else if text.len() > config.max_line {
                    framed.push(Framed::TooLong);
                } else {
                    framed.push(Framed::Line(text.to_vec()));
                }
            }
        };
        if n == 0 {
            // A last line without a newline is still delivered, as a line of its own.
            splitter.finish(&mut frame);
        } else {
            splitter.push(&buf[..n], &mut frame);
        }
        for item in framed.drain(..) {
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
        if n == 0 {
            return "connection closed".into();
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

    #[test]
    fn line_ends_lf_crlf_and_bare_cr_become_one_lf() {
        let mut ends = LineEnds::default();
        let mut all = Vec::new();
        // A CRLF split across two reads, then bare CRs, then a read that is only the LF.
        for piece in [&b"a\r\nb\r"[..], b"\nc\rd\r\re", b"\r", b"\n", b"f\r\0g\n"] {
            let mut buf = piece.to_vec();
            let n = ends.normalize(&mut buf);
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(all, b"a\nb\nc\nd\n\ne\nf\ng\n");
    }
}
