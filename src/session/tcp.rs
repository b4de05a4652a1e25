//! TCP conversations: the pump over any terminal side, the zero-copy pass-through on Linux, and
//! the `tcp listen` / `tcp connect` commands built from them.

use super::outbound::Flow;
use super::terminal::Terminal;
use super::{
    Activity, End, Eol, Error, Event, Events, Inbound, Options, Outbound, RecvEnd, SendEnd, drive,
    is_closed_output,
};
use crate::transport::{self, HostPort};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Holds one conversation on `stream`: `input` goes through `outbound` to the peer, what
/// arrives is written to `output`. The caller owns `outbound` so that a line half read when one
/// conversation ends is finished in the next (`tcp listen --keep-open`).
pub async fn converse<R, W>(
    stream: TcpStream,
    mut input: R,
    outbound: &mut Outbound,
    mut output: W,
    opts: &Options,
    events: &Events,
    activity: &Activity,
) -> Result<End, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Only used to tag output: a connection reset before we look still gets its error from
    // the first read, not from here.
    let peer = stream.peer_addr().unwrap_or(super::UNKNOWN_PEER);
    let (mut rd, mut wr) = stream.into_split();
    let send = async {
        // What was typed while nobody was connected, or left unsent by the last client, goes
        // first.
        send_queued(&mut wr, outbound, activity).await?;
        // The last turn (`-k`) ended after its input's quit word was queued but before all of
        // it was written: it has gone out now, and ends this conversation.
        if outbound.flow() == Flow::Quit {
            let _ = wr.shutdown().await;
            return Ok(SendEnd::Quit);
        }
        // Taken only once what was held has gone out: a turn that fails before that keeps the
        // end of input (Ctrl-D typed between clients) for the next client.
        let mut ended_before = outbound.take_held_end();
        let mut buf = vec![0u8; 64 * 1024];
        let mut msgs = Vec::new();
        loop {
            let n = if std::mem::take(&mut ended_before) {
                0
            } else {
                input.read(&mut buf).await.map_err(Error::Input)?
            };
            let flow = match n {
                0 => outbound.finish(&mut msgs),
                n => outbound.feed(&buf[..n], &mut msgs),
            };
            // Each line goes out in a write of its own with `--eol none` (a message boundary
            // where possible); otherwise a read's lines go out in one write.
            if opts.eol != Eol::None && msgs.len() > 1 {
                let wire = msgs.concat();
                msgs.clear();
                msgs.push(wire);
            }
            // Queued before writing, and taken off the queue as written: if the conversation
            // ends in the middle (a client of `-k` closed its side), the rest is the next
            // client's, not lost.
            outbound.queue(&mut msgs);
            send_queued(&mut wr, outbound, activity).await?;
            if flow == Flow::Quit {
                // FIN right after the quit word, so the peer sees a clean close.
                let _ = wr.shutdown().await;
                return Ok(SendEnd::Quit);
            }
            if n == 0 {
                // The tutorial's four-way close begins here: our FIN, and we keep reading.
                wr.shutdown().await.map_err(Error::Socket)?;
                events.emit(Event::SentFin);
                return Ok(SendEnd::Eof);
            }
        }
    };
    // Outside the receiving half, so that a line held for its rest is shown however the
    // conversation ends (a quit word typed here, the idle timeout).
    let mut inbound = Inbound::new(opts);
    let recv = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            out.clear();
            // A line held for its rest is shown once LINE_HOLD has passed without it (reading
            // is cancel-safe: nothing is lost when the time-out wins).
            let read = rd.read(&mut buf);
            let read = if let Some(deadline) = inbound.hold_deadline() {
                match tokio::time::timeout_at(deadline.into(), read).await {
                    Ok(r) => r,
                    Err(_) => {
                        inbound.release_line(&mut out);
                        match show(&mut output, &out).await {
                            Ok(()) => continue,
                            Err(e) if is_closed_output(&e) => return Ok(RecvEnd::OutputClosed),
                            Err(e) => return Err(Error::Output(e)),
                        }
                    }
                }
            } else {
                read.await
            };
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    // A reset: what was held still reaches the screen before the error.
                    inbound.release_line(&mut out);
                    let _ = show(&mut output, &out).await;
                    return Err(Error::Socket(e));
                }
            };
            let flow = if n == 0 {
                inbound.finish_stream(peer, &mut out);
                Flow::Continue
            } else {
                activity.received(n);
                inbound.stream(&buf[..n], peer, &mut out)
            };
            if !out.is_empty() {
                match show(&mut output, &out).await {
                    Ok(()) => {}
                    Err(e) if is_closed_output(&e) => return Ok(RecvEnd::OutputClosed),
                    Err(e) => return Err(Error::Output(e)),
                }
            }
            if n == 0 {
                return Ok(RecvEnd::PeerClosed);
            }
            if flow == Flow::Quit {
                return Ok(RecvEnd::Quit);
            }
        }
    };
    let end = drive(send, recv, activity, opts, events).await;
    let mut out = Vec::new();
    inbound.release_line(&mut out);
    if !out.is_empty() {
        let _ = show(&mut output, &out).await;
    }
    end
}

/// Writes the messages `outbound` has queued, in order, taking each piece off the queue as it
/// is written. Each write is cancel-safe, so a conversation that ends in the middle leaves
/// exactly what was not written.
async fn send_queued<W: AsyncWrite + Unpin>(
    wr: &mut W,
    outbound: &mut Outbound,
    activity: &Activity,
) -> Result<(), Error> {
    while let Some(next) = outbound.next_unsent() {
        let n = wr.write(next).await.map_err(Error::Socket)?;
        if n == 0 {
            return Err(Error::Socket(std::io::ErrorKind::WriteZero.into()));
        }
        outbound.sent(n);
        activity.sent(n);
    }
    Ok(())
}

/// Writes what arrived to the output, at once.
async fn show<W: AsyncWrite + Unpin>(output: &mut W, out: &[u8]) -> std::io::Result<()> {
    output.write_all(out).await?;
    output.flush().await
}

/// The pass-through on Linux: each direction on a thread of its own moving bytes inside the
/// kernel (sendfile or splice).
#[cfg(target_os = "linux")]
async fn converse_spliced(
    stream: TcpStream,
    opts: &Options,
    events: &Events,
    activity: std::sync::Arc<Activity>,
) -> Result<End, Error> {
    use std::os::fd::AsFd;
    use tokio::sync::oneshot;
    use transport::splice::Blame;

    // The socket stays non-blocking; the copy threads wait in poll (see transport::splice).
    let sock = stream.into_std().map_err(Error::Socket)?;
    let reader = sock.try_clone().map_err(Error::Socket)?;
    let (send_tx, send_rx) = oneshot::channel();
    let (recv_tx, recv_rx) = oneshot::channel();
    let (act, ev) = (activity.clone(), events.clone());
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let r = transport::splice::send(stdin.as_fd(), &sock, &|n| act.sent(n))
            .map_err(|f| match f.blame {
                Blame::Local => Error::Input(f.error),
                Blame::Socket => Error::Socket(f.error),
            })
            .and_then(|_| {
                sock.shutdown(std::net::Shutdown::Write)
                    .map_err(Error::Socket)
            })
            .map(|()| {
                ev.emit(Event::SentFin);
                SendEnd::Eof
            });
        let _ = send_tx.send(r);
    });
    let act = activity.clone();
    std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let r = match transport::splice::receive(&reader, stdout.as_fd(), &|n| act.received(n)) {
            Ok(_) => Ok(RecvEnd::PeerClosed),
            Err(f) => match f.blame {
                Blame::Local if is_closed_output(&f.error) => Ok(RecvEnd::OutputClosed),
                Blame::Local => Err(Error::Output(f.error)),
                Blame::Socket => Err(Error::Socket(f.error)),
            },
        };
        let _ = recv_tx.send(r);
    });
    let died = || Error::Socket(std::io::Error::other("copy thread ended unexpectedly"));
    let send = async { send_rx.await.unwrap_or_else(|_| Err(died())) };
    let recv = async { recv_rx.await.unwrap_or_else(|_| Err(died())) };
    drive(send, recv, &activity, opts, events).await
}

/// Holds a conversation on `stream` with the process's terminal side, choosing the
/// pass-through when nothing needs to look at the bytes.
/// Converses over `stream`; a socket error names the peer (`connection with ADDR: connection
/// reset by peer`), which a message about the socket alone would not.
async fn talk(
    (stream, peer): (TcpStream, SocketAddr),
    term: &mut Terminal,
    outbound: &mut Outbound,
    opts: &Options,
    single: bool,
) -> anyhow::Result<End> {
    match talk_with(stream, term, outbound, opts, single).await {
        Err(e @ Error::Socket(_)) => Err(anyhow::Error::new(e)
            .context(format!("connection with {}", transport::display_addr(peer)))),
        r => Ok(r?),
    }
}

async fn talk_with(
    stream: TcpStream,
    term: &mut Terminal,
    outbound: &mut Outbound,
    opts: &Options,
    single: bool,
) -> Result<End, Error> {
    let events = term.events.clone();
    let activity = std::sync::Arc::new(Activity::default());
    #[cfg(target_os = "linux")]
    if single && term.spliceable && opts.is_passthrough() {
        tracing::debug!("pass-through: both directions copied inside the kernel (splice)");
        let end = converse_spliced(stream, opts, &events, activity.clone()).await;
        return super::report_end(end, &activity, opts, &events);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = single;
    tracing::debug!(
        encoding = opts.encoding.map_or("UTF-8", |e| e.name()),
        hex = opts.hex,
        quit = ?opts.quit,
        eol = ?opts.eol,
        "conversation through the terminal side"
    );
    let end = converse(
        stream,
        &mut term.input,
        outbound,
        &mut term.output,
        opts,
        &events,
        &activity,
    )
    .await;
    let _ = term.output.flush().await;
    // Before the closing line: how many input lines had a warning given only for the first.
    outbound.summarize();
    super::report_end(end, &activity, opts, &events)
}

/// `wirechat tcp connect`: connect, converse, exit.
pub async fn connect(
    target: &HostPort,
    timeout: Option<Duration>,
    opts: &Options,
    term: &mut Terminal,
) -> anyhow::Result<End> {
    let (stream, peer) = transport::tcp_connect(target, timeout).await?;
    let local = stream.local_addr().unwrap_or(super::UNKNOWN_PEER);
    term.events.emit(Event::Connected { peer, local });
    let mut outbound = Outbound::new(opts, false, term.events.clone());
    talk((stream, peer), term, &mut outbound, opts, true).await
}

/// `wirechat tcp listen`: accept a client and converse; with `keep_open`, one client after
/// another until the quit word is typed, the output is closed, or the process is stopped.
pub async fn listen(
    spec: &HostPort,
    keep_open: bool,
    opts: &Options,
    term: &mut Terminal,
) -> anyhow::Result<End> {
    let listener = transport::tcp_listen(spec).await?;
    term.events.emit(Event::Listening {
        addr: listener.local_addr()?,
        proto: "tcp",
    });
    let mut opts = opts.clone();
    if keep_open {
        // Input is shared by the clients in turn, so a client's EOF ends its turn.
        opts.wait_for_input = false;
    }
    let mut outbound = Outbound::new(&opts, false, term.events.clone());
    if keep_open {
        outbound.keep_lines_whole();
    }
    // At a terminal, input is read while waiting for a client, so that the quit word typed
    // then ends the listener at once; what else is typed, and the end of input (Ctrl-D), is
    // held for the client. Piped input is read only in a conversation: a script's quit word
    // is for a client.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // A terminal's end of input (Ctrl-D) is read once per wait: what is typed after it is
        // for the client after the next, so it is read only once the next one's turn is over.
        let mut input_ended = !term.stdin_is_tty;
        let stream = loop {
            let read_more = !input_ended && outbound.held_bytes() < HELD_MAX;
            tokio::select! {
                stream = accept(&listener, &term.events) => break stream,
                n = term.input.read(&mut buf), if read_more => {
                    let n = n.map_err(Error::Input)?;
                    let flow = if n == 0 {
                        input_ended = true;
                        outbound.hold_end()
                    } else {
                        outbound.hold(&buf[..n])
                    };
                    if flow == Flow::Quit {
                        term.events.emit(Event::QuitUnsent {
                            word: opts.quit.clone().unwrap_or_default(),
                        });
                        return Ok(End::QuitUnsent);
                    }
                }
            }
        };
        if !keep_open {
            // One conversation: stop listening so nobody else queues up behind it.
            drop(listener);
            return talk(stream, term, &mut outbound, &opts, true).await;
        }
        match talk(stream, term, &mut outbound, &opts, false).await {
            // The quit word typed, or nobody left to show the next client's data to.
            Ok(end @ (End::Quit(super::Side::Local) | End::OutputClosed)) => return Ok(end),
            Ok(_) => {}
            // Our own input or output failed: every later client would meet the same.
            Err(e) if matches!(e.downcast_ref(), Some(Error::Input(_) | Error::Output(_))) => {
                return Err(e);
            }
            // The client's connection failed: with its causes, as main shows an error that
            // ends wirechat, and on to the next client.
            Err(e) => term.events.warn(format!("{e:#}")),
        }
    }
}

/// The most typed bytes `tcp listen -k` holds for the next client; beyond that it stops reading
/// its input until one connects.
const HELD_MAX: usize = 1 << 20;

/// Accepts the next client, reporting it; passing accept errors back off instead of spinning.
async fn accept(listener: &tokio::net::TcpListener, events: &Events) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                events.emit(Event::Accepted { peer });
                return (stream, peer);
            }
            Err(e) => {
                // EMFILE, ECONNABORTED and friends pass; a short pause keeps this from spinning.
                events.warn(format!("accept failed: {}", transport::describe(&e)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Events, Side};
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair on loopback: (our side, the client's).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (ours, _) = l.accept().await.unwrap();
        (ours, client)
    }

    /// `tcp listen -k` with `--quit zzz`, and its outbound side.
    fn keep_open() -> (Options, Events, Outbound) {
        let opts = Options {
            wait_for_input: false,
            quit: Some("zzz".into()),
            ..Options::default()
        };
        let events = Events::new(|_| {});
        let mut outbound = Outbound::new(&opts, false, events.clone());
        outbound.keep_lines_whole();
        (opts, events, outbound)
    }

    /// A turn of `tcp listen -k` with input that never ends, within a deadline.
    async fn turn(
        ours: TcpStream,
        outbound: &mut Outbound,
        opts: &Options,
        events: &Events,
    ) -> Result<End, Error> {
        let (input, _open) = tokio::io::duplex(64);
        let activity = Activity::default();
        let turn = converse(
            ours,
            input,
            outbound,
            tokio::io::sink(),
            opts,
            events,
            &activity,
        );
        tokio::time::timeout(Duration::from_secs(10), turn)
            .await
            .expect("the turn ends")
    }

    /// A quit word that a turn queued but had not finished writing when it ended goes to the
    /// next client, and then ends the listener, as it would have ended the turn.
    #[tokio::test]
    async fn a_quit_word_left_queued_ends_the_next_turn() {
        let (opts, events, mut outbound) = keep_open();
        // As a turn cut short leaves it: the quit word queued, part of the line before it sent.
        assert_eq!(outbound.hold(b"hello\nzzz\n"), Flow::Quit);
        outbound.sent(2);
        let (ours, mut client) = pair().await;
        let end = turn(ours, &mut outbound, &opts, &events).await;
        assert!(matches!(end, Ok(End::Quit(Side::Local))), "{end:?}");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"llo\nzzz\n");
    }

    /// An end of input held for the next client (Ctrl-D typed between clients) is kept when
    /// that client's turn fails before what was held went out: the one after gets it.
    #[tokio::test]
    async fn a_held_end_of_input_outlives_a_turn_that_fails() {
        let (opts, events, mut outbound) = keep_open();
        outbound.hold(b"hello\n");
        outbound.hold_end();
        // The first client is gone with a reset before its turn begins.
        let (ours, client) = pair().await;
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        assert!(turn(ours, &mut outbound, &opts, &events).await.is_err());
        // The next one gets the line, then the end of input: our FIN.
        let (ours, mut client) = pair().await;
        let read = async {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            drop(client);
            got
        };
        let (end, got) = tokio::join!(turn(ours, &mut outbound, &opts, &events), read);
        assert_eq!(got, b"hello\n");
        assert!(matches!(end, Ok(End::Closed)), "{end:?}");
    }
}
