//! Opening sockets from what the user typed: `[HOST:]PORT` specs, name resolution, TCP listeners
//! and connections, UDP sockets, with the socket options a tool like this needs (reuse, a large
//! backlog, dual-stack, no Nagle, large buffers). On Linux it also holds the fast paths:
//! zero-copy pass-through (`splice`) and batched UDP receive (`datagrams`).

mod address;
pub mod datagrams;
#[cfg(target_os = "linux")]
pub mod splice;

pub use address::HostPort;

use crate::exit::Status;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Listen backlog: large, so a burst of connects is never refused or delayed by a short queue
/// (the kernel caps it at net.core.somaxconn).
pub const BACKLOG: i32 = 4096;

/// What can go wrong opening a socket. Each variant names the address involved.
///
/// The I/O error of `Bind` and `Connect` is part of the message, in the words of [`describe`],
/// and is not the error's `source()`: a chain printed in full (`{:#}`) would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host name did not resolve.
    #[error("unknown host {host:?}: {reason}")]
    UnknownHost { host: String, reason: String },
    /// Binding a local address failed.
    #[error("cannot {what} {addr}: {}", describe_bind(.error))]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: io::Error,
    },
    /// Connecting failed on every address the host resolved to.
    #[error("cannot connect to {addr}: {}", describe(.error))]
    Connect { addr: String, error: io::Error },
    /// A local address of one IP version and a peer of the other: no datagram can go between
    /// them.
    #[error(
        "cannot reach {peer} from {local}: an {local_version} address reaches only {local_version} \
         addresses (bind without a host, or to [::], to reach both)"
    )]
    Family {
        local: SocketAddr,
        peer: SocketAddr,
        local_version: &'static str,
    },
    /// The connect timeout expired.
    #[error("connecting to {addr} timed out after {secs:.1} s")]
    ConnectTimeout { addr: String, secs: f64 },
}

impl Error {
    /// The exit status for this error.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::UnknownHost { .. } => Some(Status::UnknownHost),
            Error::ConnectTimeout { .. } => Some(Status::TimedOut),
            Error::Family { .. } => Some(Status::Usage),
            // An address that is not this machine's is a bad argument, as a bad port is.
            Error::Bind { error, .. } if error.kind() == io::ErrorKind::AddrNotAvailable => {
                Some(Status::Usage)
            }
            Error::Bind { error, .. } | Error::Connect { error, .. } => {
                Status::from_io(error.kind())
            }
        }
    }
}

/// The first of `candidates` (the addresses a peer's name resolved to) that a socket bound to
/// `local` can send to, written as that socket needs it: an IPv4-mapped address becomes plain
/// IPv4 for an IPv4 socket, and an IPv4 address becomes mapped for a socket on `::`. An IPv4
/// socket cannot reach an IPv6 address, nor an IPv6 address other than `::` an IPv4 one; when
/// no candidate fits, the error names the first.
pub fn reachable(local: SocketAddr, candidates: &[SocketAddr]) -> Result<SocketAddr, Error> {
    reachable_pair(&[local], candidates).map(|(_, peer)| peer)
}

/// [`reachable`] when the local address is a name too (`--bind HOST:PORT`): the first local
/// address that reaches one of `candidates`, and that one. When none does, the error names the
/// first of each.
pub fn reachable_pair(
    locals: &[SocketAddr],
    candidates: &[SocketAddr],
) -> Result<(SocketAddr, SocketAddr), Error> {
    for &local in locals {
        if let Some(peer) = candidates.iter().find_map(|&p| seen_from(local, p)) {
            return Ok((local, peer));
        }
    }
    let local = locals.first().copied().unwrap_or(SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        0,
    ));
    Err(Error::Family {
        local: display_addr(local),
        peer: candidates.first().copied().map_or(local, display_addr),
        local_version: if local.is_ipv4() { "IPv4" } else { "IPv6" },
    })
}

/// `peer` as a socket bound to `local` must write it, if that socket can reach it at all.
fn seen_from(local: SocketAddr, peer: SocketAddr) -> Option<SocketAddr> {
    // A socket on `::` (or on a mapped address) reaches IPv4 through mapped addresses.
    let reaches_v4 =
        |l: &std::net::SocketAddrV6| l.ip().is_unspecified() || l.ip().to_ipv4_mapped().is_some();
    match (local, peer) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => Some(peer),
        (SocketAddr::V4(_), SocketAddr::V6(p)) => p
            .ip()
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::new(IpAddr::V4(v4), p.port())),
        (SocketAddr::V6(l), SocketAddr::V4(p)) => {
            reaches_v4(&l).then(|| SocketAddr::new(IpAddr::V6(p.ip().to_ipv6_mapped()), p.port()))
        }
        (SocketAddr::V6(l), SocketAddr::V6(p)) => {
            (p.ip().to_ipv4_mapped().is_none() || reaches_v4(&l)).then_some(peer)
        }
    }
}

/// An I/O error in words a user can act on: what happened and, where it helps, what to check.
/// It replaces the system's text for the same error; a kind without words of its own keeps the
/// system's text, which says more than the kind.
pub fn describe(err: &io::Error) -> String {
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused => {
            "connection refused (nothing is listening on that port; is the server running?)".into()
        }
        K::HostUnreachable => "no route to host".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::TimedOut => "timed out".into(),
        K::ConnectionReset => "connection reset by peer".into(),
        _ => {
            let s = err.to_string();
            // Strip std's " (os error N)" suffix; the words are enough.
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

/// [`describe`] for an error binding a local address, where some errors have a likely cause
/// that the system's words do not give.
pub fn describe_bind(err: &io::Error) -> String {
    use io::ErrorKind as K;
    match err.kind() {
        K::AddrInUse => "address already in use (another program is bound to it)".into(),
        K::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".into()
        }
        K::AddrNotAvailable => "address not available on this machine".into(),
        _ => describe(err),
    }
}

/// Resolves `host:port` to socket addresses, IPv4 first when both exist.
pub async fn resolve(target: &HostPort) -> Result<Vec<SocketAddr>, Error> {
    let host = target.host.as_deref().unwrap_or("localhost");
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let unknown = |reason: String| Error::UnknownHost {
        host: host.to_string(),
        reason,
    };
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, target.port))
        .await
        .map_err(|e| unknown(resolver_reason(&e)))?
        .collect();
    if addrs.is_empty() {
        return Err(unknown("no addresses".into()));
    }
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    tracing::debug!(host, ?addrs, "resolved");
    Ok(addrs)
}

fn resolver_reason(e: &io::Error) -> String {
    let s = e.to_string();
    if s.contains("not known") || s.contains("No address") || s.contains("not found") {
        "name not found".into()
    } else {
        s
    }
}

/// The local addresses to bind for a listen spec: the named host, or all interfaces.
/// All interfaces means `[::]` with IPv4 mapped in (dual-stack), or `0.0.0.0` without IPv6.
async fn local_addrs(spec: &HostPort) -> Result<Vec<SocketAddr>, Error> {
    match &spec.host {
        Some(_) => resolve(spec).await,
        None => Ok(vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), spec.port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), spec.port),
        ]),
    }
}

fn new_socket(addr: &SocketAddr, ty: Type, proto: Protocol, all: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), ty, Some(proto))?;
    if addr.is_ipv6() && all {
        // One socket serves both families when the wildcard was asked for.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds and listens on `spec` with SO_REUSEADDR and a large backlog.
pub async fn tcp_listen(spec: &HostPort) -> Result<TcpListener, Error> {
    bind_first(spec, "listen on", |addr, all| {
        let socket = new_socket(&addr, Type::STREAM, Protocol::TCP, all)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(BACKLOG)?;
        TcpListener::from_std(socket.into())
    })
    .await
}

/// Runs `bind` on each local address `spec` names until one works (`all`: the wildcard was
/// asked for, so an IPv6 wildcard the kernel does not support falls back to IPv4).
async fn bind_first<T>(
    spec: &HostPort,
    what: &'static str,
    bind: impl Fn(SocketAddr, bool) -> io::Result<T>,
) -> Result<T, Error> {
    let all = spec.host.is_none();
    let mut last = None;
    for addr in local_addrs(spec).await? {
        tracing::debug!(%addr, dual_stack = all && addr.is_ipv6(), "trying to {what}");
        match bind(addr, all) {
            Ok(t) => return Ok(t),
            // Without IPv6 in this kernel, fall back to the IPv4 wildcard.
            Err(e) if all && addr.is_ipv6() && is_family_unsupported(&e) => {
                tracing::debug!(%addr, error = %e, "no IPv6 here: trying IPv4");
                last = Some(e)
            }
            Err(error) => return Err(Error::Bind { what, addr, error }),
        }
    }
    Err(Error::Bind {
        what,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), spec.port),
        error: last.unwrap_or_else(|| io::Error::other("no address to bind")),
    })
}

fn is_family_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

/// The system's error code for an address family it does not support.
#[cfg(unix)]
const EAFNOSUPPORT: i32 = nix::errno::Errno::EAFNOSUPPORT as i32;
#[cfg(windows)]
const EAFNOSUPPORT: i32 = 10047; // WSAEAFNOSUPPORT

/// The system's error code for a datagram too long to send.
#[cfg(unix)]
pub const EMSGSIZE: i32 = nix::errno::Errno::EMSGSIZE as i32;
#[cfg(windows)]
pub const EMSGSIZE: i32 = 10040; // WSAEMSGSIZE

/// Connects to `target`, trying each resolved address in turn within `timeout`; returns the
/// stream and the address it reached.
pub async fn tcp_connect(
    target: &HostPort,
    timeout: Option<Duration>,
) -> Result<(TcpStream, SocketAddr), Error> {
    let attempt = async {
        let addrs = resolve(target).await?;
        let mut last = None;
        for addr in &addrs {
            tracing::debug!(%addr, "connecting");
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    // Interactive lines go out at once; bulk data comes in large writes anyway.
                    let _ = s.set_nodelay(true);
                    tracing::debug!(%addr, local = ?s.local_addr().ok(), "connected");
                    return Ok((s, *addr));
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connect failed");
                    last = Some((addr, e))
                }
            }
        }
        let (addr, error) = match last {
            Some((addr, e)) => (addr.to_string(), e),
            None => (target.to_string(), io::Error::other("no address")),
        };
        Err(Error::Connect { addr, error })
    };
    match timeout {
        None => attempt.await,
        Some(t) => tokio::time::timeout(t, attempt)
            .await
            .map_err(|_| Error::ConnectTimeout {
                addr: target.to_string(),
                secs: t.as_secs_f64(),
            })?,
    }
}

/// Receive buffer asked for on UDP sockets: large, so a burst is queued rather than dropped.
pub const UDP_RCVBUF: usize = 32 << 20;

/// Binds a UDP socket on `spec` (all interfaces when it names no host), with a large receive
/// buffer: SO_RCVBUFFORCE when privileged, else as much as net.core.rmem_max allows.
pub async fn udp_bind(spec: &HostPort) -> Result<UdpSocket, Error> {
    bind_first(spec, "bind", udp_bind_addr).await
}

/// Binds a UDP socket on exactly `addr`.
pub fn udp_bind_addr(addr: SocketAddr, dual_stack: bool) -> io::Result<UdpSocket> {
    let socket = new_socket(&addr, Type::DGRAM, Protocol::UDP, dual_stack)?;
    grow_receive_buffer(&socket);
    socket.bind(&SockAddr::from(addr))?;
    UdpSocket::from_std(socket.into())
}

fn grow_receive_buffer(socket: &Socket) {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
        if setsockopt(socket, RcvBufForce, &UDP_RCVBUF).is_ok() {
            tracing::debug!(asked = UDP_RCVBUF, got = ?socket.recv_buffer_size().ok(), "UDP receive buffer (forced)");
            return;
        }
    }
    // Unprivileged: the kernel clamps this to net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RCVBUF);
    tracing::debug!(
        asked = UDP_RCVBUF,
        got = ?socket.recv_buffer_size().ok(),
        "UDP receive buffer (as much as net.core.rmem_max allows)"
    );
}

/// Shows an address the way people write it: IPv4-mapped IPv6 addresses as plain IPv4.
pub fn display_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use nix::errno::Errno;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Each resolved address is tried against the local one, and the one chosen is written
    /// the way the socket needs it.
    #[test]
    fn the_reachable_address_is_chosen_and_written_for_the_socket() {
        let v4 = a("127.0.0.1:5");
        let v6 = a("[::1]:5");
        let mapped = a("[::ffff:127.0.0.1]:5");
        // A name that resolves to both families: the one the local address can reach.
        assert_eq!(reachable(a("127.0.0.1:0"), &[v6, v4]).unwrap(), v4);
        assert_eq!(reachable(a("[::1]:0"), &[v4, v6]).unwrap(), v6);
        // A mapped address is IPv4 for an IPv4 socket; IPv4 is mapped for a socket on `::`.
        assert_eq!(reachable(a("127.0.0.1:0"), &[mapped]).unwrap(), v4);
        assert_eq!(reachable(a("[::]:0"), &[v4]).unwrap(), mapped);
        assert_eq!(reachable(a("[::]:0"), &[v6]).unwrap(), v6);
        // A local name with addresses of both versions: the pair that fits.
        assert_eq!(
            reachable_pair(&[a("127.0.0.1:7"), a("[::1]:7")], &[v6]).unwrap(),
            (a("[::1]:7"), v6)
        );
        // Nothing fits: the error names the first address, as people write it.
        for (local, peers) in [("127.0.0.1:0", vec![v6]), ("[::1]:0", vec![v4, mapped])] {
            let e = reachable(a(local), &peers).unwrap_err();
            assert!(
                matches!(e, Error::Family { peer, .. } if peer == v4 || peer == v6),
                "{e}"
            );
            assert_eq!(e.status(), Some(Status::Usage));
        }
    }

    /// The error as `main` prints it, with its whole chain: one clause per thing that happened.
    #[test]
    fn a_refused_connect_is_described_once() {
        let e = Error::Connect {
            addr: "127.0.0.1:9".into(),
            error: io::Error::from_raw_os_error(Errno::ECONNREFUSED as i32),
        };
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "cannot connect to 127.0.0.1:9: connection refused (nothing is listening on that \
             port; is the server running?)"
        );
    }

    /// A kind without words of its own keeps the system's text, without the error number.
    #[test]
    fn an_uncategorised_error_keeps_the_system_text() {
        let e = io::Error::from_raw_os_error(Errno::ENOPROTOOPT as i32);
        assert_eq!(describe(&e), "protocol not available");
        let e = Error::Bind {
            what: "bind",
            addr: ([127, 0, 0, 1], 9).into(),
            error: e,
        };
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "cannot bind 127.0.0.1:9: protocol not available"
        );
    }

    /// The hints about ports below 1024 and addresses of this machine are about binding; a
    /// connect refused by a firewall (EPERM) or out of local ports (EADDRNOTAVAIL) keeps the
    /// system's words.
    #[test]
    fn bind_hints_are_given_only_for_binding() {
        let eperm = || io::Error::from_raw_os_error(Errno::EPERM as i32);
        let connect = Error::Connect {
            addr: "10.0.0.1:80".into(),
            error: eperm(),
        };
        assert_eq!(
            connect.to_string(),
            "cannot connect to 10.0.0.1:80: operation not permitted"
        );
        let bind = Error::Bind {
            what: "listen on",
            addr: ([0, 0, 0, 0], 80).into(),
            error: io::Error::from_raw_os_error(Errno::EACCES as i32),
        };
        assert!(bind.to_string().contains("ports below 1024"), "{bind}");
        let e = io::Error::from_raw_os_error(Errno::EADDRNOTAVAIL as i32);
        assert_eq!(describe(&e), "cannot assign requested address");
        assert_eq!(describe_bind(&e), "address not available on this machine");
    }
}
