//! UDP conversations: one typed line is one datagram, one datagram received is one message.
//! There is no connection, so a peer policy says where typed lines go: the address we
//! connected to, a fixed `--peer`, or whoever sent the last datagram.

use super::outbound::Flow;
use super::terminal::Terminal;
use super::{
    Activity, End, Error, Event, Events, Inbound, Options, Outbound, RecvEnd, SendEnd, drive,
    is_closed_output,
};
use crate::transport::{self, HostPort, datagrams::Batch};
use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

/// Where typed lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerPolicy {
    /// The socket is connected: `send` reaches that address and only it is heard.
    Connected,
    /// Always this address (`udp listen --peer`).
    Fixed(SocketAddr),
    /// Whoever sent the last datagram (`udp listen` without `--peer`).
    LastSender,
}

/// Output is written once this much is buffered, even if more datagrams are waiting.
const FLUSH_AT: usize = 256 * 1024;

/// The largest UDP payload over IPv4 (65,535 less the IPv4 and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// Holds one UDP conversation on `socket`. With [`PeerPolicy::LastSender`] and input from a
/// script or pipe ([`Options::wait_for_input`]), input is not sent until a datagram has
/// arrived, so its lines go to the last sender instead of nowhere, as with nc (only its first
/// read is made before, to learn whether there is any input at all). Typed lines are
/// read at once, and one with nowhere to go is reported as such.
pub async fn converse<R, W>(
    socket: &UdpSocket,
    policy: PeerPolicy,
    mut input: R,
    mut output: W,
    opts: &Options,
    events: &Events,
    activity: &Activity,
) -> Result<End, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Both directions run in this one task, so a Cell is enough to share the last sender.
    let last_sender: Cell<Option<SocketAddr>> = Cell::new(None);
    let first_sender = tokio::sync::Notify::new();
    let connected_peer = socket.peer_addr().ok();
    let holding = opts.wait_for_input && policy == PeerPolicy::LastSender;
    // The first read of the input brought data: if nobody sends, it had nowhere to go.
    let input_had_data = Cell::new(false);
    let send = async {
        // With --raw a read is a datagram, so a read is at most the largest UDP payload.
        let mut buf = vec![0u8; if opts.raw { MAX_DATAGRAM } else { 64 * 1024 }];
        // Input held for the first sender: its first read is made at once, and kept, so that
        // an empty input is known as such; the rest is read once someone has sent a datagram.
        let mut first_read = None;
        if holding {
            let n = input.read(&mut buf).await.map_err(Error::Input)?;
            input_had_data.set(n > 0);
            first_read = Some(n);
            first_sender.notified().await;
        }
        let mut outbound = Outbound::new(opts, true, events.clone());
        let mut msgs = Vec::new();
        loop {
            let n = match first_read.take() {
                Some(n) => n,
                None => input.read(&mut buf).await.map_err(Error::Input)?,
            };
            let flow = match n {
                0 if opts.raw => Flow::Continue,
                n if opts.raw => {
                    msgs.push(buf[..n].to_vec());
                    Flow::Continue
                }
                0 => outbound.finish(&mut msgs),
                n => outbound.feed(&buf[..n], &mut msgs),
            };
            let mut unsent = false;
            for m in msgs.drain(..) {
                unsent = false;
                let dest = match policy {
                    PeerPolicy::Connected => connected_peer,
                    PeerPolicy::Fixed(a) => Some(a),
                    PeerPolicy::LastSender => last_sender.get(),
                };
                let Some(dest) = dest else {
                    events.warn(
                        "nobody has sent a datagram yet, so this line has nowhere to go \
                         (use --peer HOST:PORT); not sent",
                    );
                    unsent = true;
                    continue;
                };
                if send_one(socket, policy, dest, &m, events, activity).await? {
                    activity.sent(m.len());
                } else {
                    unsent = true;
                }
            }
            if flow == Flow::Quit {
                // The quit word is the last message.
                return Ok(if unsent {
                    SendEnd::QuitUnsent
                } else {
                    SendEnd::Quit
                });
            }
            if n == 0 {
                return Ok(SendEnd::Eof);
            }
        }
    };
    let recv = async {
        let mut inbound = Inbound::new(opts);
        let mut batch = Batch::default();
        let mut out = Vec::with_capacity(FLUSH_AT * 2);
        loop {
            // Wait for a datagram, then take everything already queued before writing: one
            // write per burst, not one per wake-up.
            let mut got = batch.recv(socket).await;
            loop {
                match got {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        refused(events, connected_peer);
                        activity.refused();
                        break;
                    }
                    Err(e) => return Err(Error::Socket(e)),
                }
                let mut quit = false;
                let first = last_sender.get().is_none();
                activity.received(batch.iter().map(|(p, _)| p.len()).sum());
                for (payload, from) in batch.iter() {
                    let from = from.or(connected_peer).unwrap_or(super::UNKNOWN_PEER);
                    if policy == PeerPolicy::LastSender && last_sender.get() != Some(from) {
                        last_sender.set(Some(from));
                        events.emit(Event::NewPeer(from));
                    }
                    if inbound.datagram(payload, from, &mut out) == Flow::Quit {
                        quit = true;
                        break;
                    }
                }
                if quit {
                    write_out(&mut output, &mut out).await?;
                    return Ok(RecvEnd::Quit);
                }
                // Held input is let go once the first datagrams are taken, unless they ended
                // the conversation: a peer that said the quit word is not sent more.
                if first && last_sender.get().is_some() {
                    first_sender.notify_one();
                }
                if out.len() >= FLUSH_AT && !write_out(&mut output, &mut out).await? {
                    return Ok(RecvEnd::OutputClosed);
                }
                got = batch.try_recv(socket);
            }
            if !write_out(&mut output, &mut out).await? {
                return Ok(RecvEnd::OutputClosed);
            }
        }
    };
    let end = drive(send, recv, activity, opts, events).await;
    if holding && last_sender.get().is_none() && input_had_data.get() {
        events.warn("nobody sent a datagram, so the input had nowhere to go and nothing was sent");
    }
    end
}

/// Writes and empties `out`; false when the output has been closed (nobody reads any more).
async fn write_out<W: AsyncWrite + Unpin>(
    output: &mut W,
    out: &mut Vec<u8>,
) -> Result<bool, Error> {
    if out.is_empty() {
        return Ok(true);
    }
    let written = async {
        output.write_all(out).await?;
        output.flush().await
    };
    match written.await {
        Ok(()) => {
            out.clear();
            Ok(true)
        }
        Err(e) if is_closed_output(&e) => Ok(false),
        Err(e) => Err(Error::Output(e)),
    }
}

/// Sends one datagram; false if it was not sent (too long, or refused twice), which has been
/// reported.
async fn send_one(
    socket: &UdpSocket,
    policy: PeerPolicy,
    dest: SocketAddr,
    msg: &[u8],
    events: &Events,
    activity: &Activity,
) -> Result<bool, Error> {
    // A refusal reported here belongs to an earlier datagram; this one was not sent, so retry.
    for _ in 0..2 {
        let r = match policy {
            PeerPolicy::Connected => socket.send(msg).await,
            _ => socket.send_to(msg, dest).await,
        };
        match r {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                refused(events, Some(dest));
                activity.refused();
            }
            Err(e) if e.raw_os_error() == Some(transport::EMSGSIZE) => {
                events.warn(format!(
                    "{} bytes is too long for one datagram; not sent",
                    msg.len()
                ));
                return Ok(false);
            }
            Err(e) => return Err(Error::Socket(e)),
        }
    }
    Ok(false)
}

fn refused(events: &Events, peer: Option<SocketAddr>) {
    let who = peer.map_or("the peer".to_string(), |p| {
        transport::display_addr(p).to_string()
    });
    events.warn(format!(
        "{who} refused a datagram (ICMP port unreachable: nothing listening there yet?)"
    ));
}

async fn run(
    socket: UdpSocket,
    policy: PeerPolicy,
    term: &mut Terminal,
    opts: &Options,
) -> anyhow::Result<End> {
    let events = term.events.clone();
    let activity = Activity::default();
    let end = converse(
        &socket,
        policy,
        &mut term.input,
        &mut term.output,
        opts,
        &events,
        &activity,
    )
    .await;
    let _ = term.output.flush().await;
    let end = super::report_end(end, &activity, opts, &events)?;
    if activity.ended_refused() {
        // Only a connected socket hears of refusals, so it has a peer address.
        let peer = socket.peer_addr().unwrap_or(super::UNKNOWN_PEER);
        let refused = Error::Socket(io::ErrorKind::ConnectionRefused.into());
        return Err(anyhow::Error::new(refused)
            .context(format!("sending to {}", transport::display_addr(peer))));
    }
    Ok(end)
}

/// `wirechat udp listen`: bind, show each datagram and its sender, send typed lines to `--peer`
/// or to the last sender.
pub async fn listen(
    spec: &HostPort,
    peer: Option<&HostPort>,
    opts: &Options,
    term: &mut Terminal,
) -> anyhow::Result<End> {
    let socket = transport::udp_bind(spec).await?;
    let local = socket.local_addr()?;
    let policy = match peer {
        Some(p) => PeerPolicy::Fixed(transport::reachable(local, &resolve(p).await?)?),
        None => PeerPolicy::LastSender,
    };
    term.events.emit(Event::Listening {
        addr: local,
        proto: "udp",
    });
    if let PeerPolicy::Fixed(p) = policy {
        term.events.emit(Event::UdpReady {
            local,
            peer: Some(p),
        });
    }
    run(socket, policy, term, opts).await
}

/// `wirechat udp connect`: send typed lines to `target` and show its replies; `--bind` fixes
/// the local address, as the tutorial's two peers on 8989 and 8080 do.
pub async fn connect(
    target: &HostPort,
    bind: Option<&HostPort>,
    opts: &Options,
    term: &mut Terminal,
) -> anyhow::Result<End> {
    let dests = resolve(target).await?;
    // Without a local host the socket takes the family of the peer's first address.
    let (local, dest) = match bind {
        Some(b) if b.host.is_some() => transport::reachable_pair(&resolve(b).await?, &dests)?,
        _ => (
            SocketAddr::new(unspecified(dests[0]), bind.map_or(0, |b| b.port)),
            dests[0],
        ),
    };
    let socket =
        transport::udp_bind_addr(local, false).map_err(|error| transport::Error::Bind {
            what: "bind",
            addr: local,
            error,
        })?;
    socket
        .connect(dest)
        .await
        .map_err(|error| transport::Error::Connect {
            addr: dest.to_string(),
            error,
        })?;
    if dests.len() > 1 {
        tracing::debug!(
            %dest,
            not_tried = ?&dests[1..],
            "datagrams go to the first address: UDP has no handshake to tell which one answers"
        );
    }
    term.events.emit(Event::UdpReady {
        local: socket.local_addr()?,
        peer: Some(dest),
    });
    run(socket, PeerPolicy::Connected, term, opts).await
}

/// The addresses `spec` resolves to; never empty.
async fn resolve(spec: &HostPort) -> Result<Vec<SocketAddr>, transport::Error> {
    let addrs = transport::resolve(spec).await?;
    if addrs.is_empty() {
        return Err(transport::Error::UnknownHost {
            host: spec.to_string(),
            reason: "no addresses".into(),
        });
    }
    Ok(addrs)
}

fn unspecified(like: SocketAddr) -> IpAddr {
    match like {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}
