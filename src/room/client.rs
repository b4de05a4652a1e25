//! One connection: a reader (bounded lines -> decode -> rate limit -> command or chat) and a
//! writer (drain the bounded queue, coalescing everything queued into one write), run together
//! in one task over the two halves of the socket.

use super::Config;
use super::commands::{HELP, Input, parse};
use super::limits::RateLimit;
use super::state::{Chunk, ClientId, Kick, Pending, Room};
use crate::codec::{Encoding, LineSplitter, Piece, sanitize_into};
use crate::transport::describe;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bytes read from a client at a time.
const READ_SIZE: usize = 4096;

/// A writer gathers queued chunks up to about this many bytes into one write.
const COALESCE_MAX: usize = 64 << 10;

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
    mut stream: TcpStream,
    peer: SocketAddr,
    id: ClientId,
    shutdown: CancellationToken,
) {
    // Chat lines are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let (tx, rx) = mpsc::channel(config.queue);
    let kick = Arc::new(Kick::default());
    let Some(joined) = room.join(id, peer, tx, kick.clone()) else {
        let _ = stream.write_all(b"* server shutting down\n").await;
        return;
    };
    let (rd, wr) = stream.split();
    let reader = read_loop(&room, &config, rd, id, &kick, &shutdown);
    let writer = write_loop(rx, wr, &kick);
    tokio::pin!(writer);
    let reader = async {
        room.deliver(joined.pending).await;
        reader.await
    };
    tokio::select! {
        reason = reader => {
            // Leaving drops the room's end of the queue, so the writer delivers what is
            // queued (a goodbye, an error) and ends; others hear about it meanwhile.
            let pending = room.leave(id, &reason);
            let _ = tokio::join!(
                tokio::time::timeout(config.grace, &mut writer),
                room.deliver(pending)
            );
        }
        outcome = &mut writer => {
            if let Err(reason) = outcome {
                room.deliver(room.leave(id, &reason)).await;
            }
        }
    }
}

/// Reads and acts on lines; returns why the client is leaving.
async fn read_loop(
    room: &Room,
    config: &Config,
    rd: ReadHalf<'_>,
    id: ClientId,
    kick: &Kick,
    shutdown: &CancellationToken,
) -> String {
    let mut splitter = LineSplitter::new(config.max_line);
    let mut framed: Vec<Framed> = Vec::new();
    let mut discarding = false;
    let mut encoding = Encoding::UTF8;
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
            () = kick.token.cancelled() => return kicked(kick),
            () = shutdown.cancelled() => return "server shutting down".into(),
            r = read => match r {
                None => {
                    let secs = config.idle_timeout.unwrap_or_default().as_secs_f64();
                    // The client is leaving: its own queue has room or it is cut off anyway.
                    let _ = room.tell(id, &format!("! idle for {secs} s: closing\n"));
                    return format!("idle for {secs} s");
                }
                Some(Ok(())) => (),
                Some(Err(e)) => return describe(&e),
            },
        };
        let mut buf = [0u8; READ_SIZE];
        let n = match rd.try_read(&mut buf) {
            Ok(n) => n,
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
                if !std::mem::take(&mut discarding) {
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
                        let _ = room.tell(
                            id,
                            &format!(
                                "! slow down: at most {r} lines a second (bursts of {b}); \
                                 your lines are held back, not lost\n"
                            ),
                        );
                        throttled = true;
                    }
                    first = false;
                    tokio::select! {
                        biased;
                        () = kick.token.cancelled() => return kicked(kick),
                        () = shutdown.cancelled() => return "server shutting down".into(),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                if first {
                    throttled = false;
                }
            }
            let (pending, quit) = match item {
                Framed::TooLong => (
                    room.tell(
                        id,
                        &format!(
                            "! line too long (more than {} bytes): not sent\n",
                            config.max_line
                        ),
                    ),
                    None,
                ),
                Framed::Line(bytes) => handle(room, id, &mut encoding, &bytes),
            };
            if !pending.is_empty() {
                // Someone's queue is full: wait for it (bounded by the stall time), so
                // this sender is slowed down rather than a reader losing lines.
                tokio::select! {
                    biased;
                    () = kick.token.cancelled() => return kicked(kick),
                    () = shutdown.cancelled() => return "server shutting down".into(),
                    () = room.deliver(pending) => {}
                }
            }
            if let Some(reason) = quit {
                return reason;
            }
        }
        if n == 0 {
            return "connection closed".into();
        }
        // Let the writers run between one sender's reads, so a fast sender's burst does not
        // fill the queues before they get a turn.
        tokio::task::yield_now().await;
    }
}

fn kicked(kick: &Kick) -> String {
    kick.reason
        .get()
        .cloned()
        .unwrap_or_else(|| "disconnected".into())
}

/// Acts on one line; returns what is left to deliver, and a reason when the client quits.
fn handle(
    room: &Room,
    id: ClientId,
    encoding: &mut Encoding,
    bytes: &[u8],
) -> (Pending, Option<String>) {
    let mut text = String::with_capacity(bytes.len());
    encoding.decode_message(bytes, &mut text);
    let clean = |s: &str| {
        let mut out = String::with_capacity(s.len());
        sanitize_into(s, &mut out);
        out
    };
    let pending = match parse(&text) {
        Input::Empty => Pending::default(),
        Input::Say(t) => room.say(id, &clean(t)),
        Input::Me(t) => room.me(id, &clean(t)),
        Input::Nick(n) => match room.rename(id, n) {
            Ok(p) => p,
            Err(why) => room.tell(id, &format!("! cannot use that nickname: {why}\n")),
        },
        Input::Who => room.who(id),
        Input::Msg { to, text } => match room.private(id, to, &clean(text)) {
            Ok(p) => p,
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
            return (room.tell(id, "* bye\n"), Some(reason));
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
    };
    (pending, None)
}

/// Drains the queue into the socket. Ends `Ok` when the room lets go of the queue and
/// everything queued is written, `Err(reason)` when the client is cut off or the write fails.
async fn write_loop(
    mut rx: mpsc::Receiver<Chunk>,
    mut wr: WriteHalf<'_>,
    kick: &Kick,
) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            () = kick.token.cancelled() => return Err(cut_off(kick, &wr)),
            c = rx.recv() => c,
        };
        let Some(first) = first else {
            let _ = wr.shutdown().await;
            return Ok(());
        };
        buf.extend_from_slice(&first);
        // Everything already queued goes out in the same write: one syscall for many lines.
        while buf.len() < COALESCE_MAX {
            match rx.try_recv() {
                Ok(c) => buf.extend_from_slice(&c),
                Err(_) => break,
            }
        }
        tokio::select! {
            biased;
            () = kick.token.cancelled() => return Err(cut_off(kick, &wr)),
            r = wr.write_all(&buf) => {
                if let Err(e) = r {
                    return Err(describe(&e));
                }
            }
        }
        buf.clear();
        if buf.capacity() > 4096 && rx.is_empty() {
            // Between bursts, give the memory back: thousands of idle clients add up.
            buf = Vec::new();
        }
    }
}

/// The reason a client was cut off; tells the client too, if its socket has room.
fn cut_off(kick: &Kick, wr: &WriteHalf<'_>) -> String {
    let reason = kicked(kick);
    let _ = wr.try_write(format!("\n! disconnected: {reason}\n").as_bytes());
    reason
}
