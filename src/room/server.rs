//! The listener task (accept, cap, back off) and the operator's keyboard.

use super::state::Room;
use super::{Config, EventSink, RoomEvent, client};
use crate::codec::{Encoding, LineSplitter, Piece, sanitize_into};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The longest back-off after an accept error (out of descriptors, out of memory).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections and starts a client task for each, up to `max_clients` at once.
pub struct Listener {
    listener: TcpListener,
    room: Arc<Room>,
    config: Arc<Config>,
    events: EventSink,
    /// One permit per connection being served; a task gives its permit back when it ends.
    permits: Arc<Semaphore>,
}

impl Listener {
    /// A listener for `room`.
    pub fn new(
        listener: TcpListener,
        room: Arc<Room>,
        config: Arc<Config>,
        events: EventSink,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_clients));
        Listener {
            listener,
            room,
            config,
            events,
            permits,
        }
    }

    /// Accepts until `token` is cancelled. Client tasks are spawned on `tracker`.
    pub async fn run(self, token: CancellationToken, tracker: TaskTracker) {
        // A descriptor kept in reserve: when the process runs out (EMFILE), giving it back lets
        // one waiting connection be accepted and told why it cannot come in, rather than
        // leaving every such client hanging in the backlog.
        let mut spare = std::fs::File::open("/dev/null").ok();
        let mut next_id = 0u64;
        let mut backoff = Duration::from_millis(1);
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                () = token.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(1);
                    a
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) if is_out_of_descriptors(&e) && spare.is_some() => {
                    drop(spare.take());
                    // Linux's accept4 fails with EMFILE before it looks at the backlog, so
                    // there may be nobody waiting: try once, without waiting. (Not a zero
                    // timeout: that waits for the timer's next tick, and a client arriving in
                    // that millisecond was refused even if others had left meanwhile.)
                    let next = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(match self.listener.poll_accept(cx) {
                            std::task::Poll::Ready(r) => r.ok(),
                            std::task::Poll::Pending => None,
                        })
                    })
                    .await;
                    if let Some((stream, peer)) = next {
                        let reason = "room full (the server is out of file descriptors)";
                        self.events.emit(RoomEvent::Refused {
                            peer,
                            reason: reason.into(),
                        });
                        // Best effort and at once: the descriptor is needed back.
                        let _ =
                            stream.try_write(format!("! {reason}; try again later\n").as_bytes());
                        drop(stream);
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                    continue;
                }
                Err(e) => {
                    // The reserve is put back as soon as a descriptor is free again.
                    if spare.is_none() {
                        spare = std::fs::File::open("/dev/null").ok();
                    }
                    // Usually EMFILE: wait for clients to leave rather than spin.
                    self.events.emit(RoomEvent::Warning(format!(
                        "accept failed: {e}; retrying in {} ms",
                        backoff.as_millis()
                    )));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = token.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    next_id += 1;
                    let room = self.room.clone();
                    let config = self.config.clone();
                    let token = token.clone();
                    tracker.spawn(async move {
                        client::serve(room, config, stream, peer, next_id, token).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    let reason = format!(
                        "room full ({})",
                        super::count(self.config.max_clients, "client")
                    );
                    self.events.emit(RoomEvent::Refused {
                        peer,
                        reason: reason.clone(),
                    });
                    tracker.spawn(refuse(stream, reason));
                }
            }
        }
    }
}

/// The process or the system has no descriptor left for a new connection.
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        use nix::errno::Errno;
        matches!(e.raw_os_error(), Some(n) if n == Errno::EMFILE as i32 || n == Errno::ENFILE as i32)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused
    )
}

/// Tells a connection over the cap why it is closed. Bounded in time: the peer may not read.
async fn refuse(mut stream: TcpStream, reason: String) {
    use tokio::io::AsyncWriteExt;
    let line = format!("! {reason}; try again later\n");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(line.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The operator's keyboard: each line typed goes to everyone as `<server> text`; a last line
/// without a newline too, when the input ends. A line longer than [`KEYBOARD_LINE`] goes out
/// in parts, cut between characters. The end of input only stops this; the room keeps running.
pub async fn keyboard(
    room: Arc<Room>,
    mut input: impl AsyncRead + Unpin,
    token: CancellationToken,
) {
    let mut splitter = LineSplitter::new(KEYBOARD_LINE);
    let mut decoder = Encoding::UTF8.decoder();
    let mut buf = vec![0u8; 4096];
    let mut lines: Vec<String> = Vec::new();
    let mut ended = false;
    while !ended {
        let mut take = |p: Piece<'_>| {
            let mut text = String::new();
            match p {
                Piece::Partial(bytes) => decoder.decode(bytes, false, &mut text),
                Piece::Line { text: bytes, .. } => decoder.decode(bytes, true, &mut text),
            }
            let mut clean = String::new();
            sanitize_into(&text, &mut clean);
            lines.push(clean);
        };
        match token.run_until_cancelled(input.read(&mut buf)).await {
            Some(Ok(n)) if n > 0 => splitter.push(&buf[..n], &mut take),
            Some(_) => {
                splitter.finish(&mut take);
                ended = true;
            }
            None => return,
        }
        for line in lines.drain(..) {
            if !line.trim().is_empty() {
                room.server_say(&line);
                room.wait_for_flushers().await;
            }
        }
    }
}

/// The longest line from the operator's keyboard sent as one.
pub const KEYBOARD_LINE: usize = 64 << 10;
