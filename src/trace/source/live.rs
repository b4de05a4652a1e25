//! Live capture on Linux: a raw `AF_PACKET` socket (socket2) bound to one interface, or to all
//! of them for `any`, with kernel receive timestamps (`SO_TIMESTAMPNS`, read through nix).
//!
//! The loopback quirk: a packet sent on `lo` passes the capture point twice, once leaving
//! (`PACKET_OUTGOING`) and once arriving. Like libpcap we keep only the arrival; on `lo` the
//! kernel is asked to drop the outgoing copies itself, and they are skipped here as well.

use super::super::Error;
use super::super::decode::{Frame, Link};
use super::{Next, PacketSource, sys};
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, LinkAddr, MsgFlags, SockaddrLike, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one read waits before the loop checks its stop conditions.
pub const POLL: Duration = Duration::from_millis(100);
/// The largest frame kept (lo's MTU is 65536; anything longer is truncated, as by a snaplen).
const SNAPLEN: usize = 65_536 + 64;
/// Socket receive buffer asked for (a limit, not an allocation): about half a second of
/// 150k small packets/s, so a capture thread that the scheduler starves briefly loses nothing.
const RCVBUF: usize = 64 * 1024 * 1024;

// Linux `if_packet.h` / `if_arp.h` numbers.
const PACKET_OUTGOING: u8 = 4;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_PPP: u16 = 512;
const ARPHRD_RAWIP: u16 = 519;
const ARPHRD_NONE: u16 = 0xfffe;

/// A live capture socket.
pub struct LiveSource {
    sock: Socket,
    /// `lo`'s index, to skip its outgoing copies.
    lo_index: Option<u32>,
    /// Bound to every interface: frames are written as bare IP.
    any: bool,
    link: Link,
    buf: Vec<u8>,
    cmsg: Vec<u8>,
    drops: u64,
}

fn is_privilege(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

impl LiveSource {
    /// Opens a capture on interface `iface` (`any` for all of them).
    pub fn open(iface: &str) -> Result<LiveSource, Error> {
        // Held until this socket asks for stamps too (see `receive_timestamps_on`).
        let _stamps_on = receive_timestamps_on(Duration::from_millis(200));
        let any = iface == "any";
        let ifindex = if any {
            0
        } else {
            nix::net::if_::if_nametoindex(iface)
                .map_err(|_| Error::NoInterface(iface.to_string()))?
        };
        let proto = Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
        let sock = Socket::new(Domain::PACKET, Type::RAW, Some(proto)).map_err(|e| {
            if is_privilege(&e) {
                Error::NoPrivilege(e)
            } else {
                Error::Capture(e)
            }
        })?;
        let lo_index = nix::net::if_::if_nametoindex("lo").ok();
        if !any {
            sys::bind_interface(&sock, ifindex).map_err(Error::Capture)?;
            if Some(ifindex) == lo_index {
                // Older kernels lack the option: the pkttype check below still applies.
                let _ = sys::ignore_outgoing(&sock);
            }
        }
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true)
            .map_err(|e| Error::Capture(e.into()))?;
        if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = sock.set_recv_buffer_size(RCVBUF);
        }
        sock.set_read_timeout(Some(POLL)).map_err(Error::Capture)?;
        let link = if any { Link::Raw } else { link_of_iface(iface) };
        // Counters start at zero for this socket; clear what accrued while setting up.
        let _ = sys::take_statistics(&sock);
        Ok(LiveSource {
            sock,
            lo_index,
            any,
            link,
            buf: vec![0; SNAPLEN],
            cmsg: nix::cmsg_space!(TimeSpec),
            drops: 0,
        })
    }
}

/// Waits, at most `limit`, until the kernel stamps packets when they arrive. Linux turns
/// receive timestamps on for the whole system a moment after the first socket asks for them
/// (a static key flipped by a deferred work item); until then a packet is stamped when it is
/// read. A capture opened just before the traffic it follows (`tcp connect --trace`, or a
/// script that starts `trace` and then its traffic) would then give its first segments the
/// time they were read, later than the ones after them.
/// The probe: a datagram to itself on loopback, delivered within `send`, whose stamp must be
/// earlier than the moment it is read. It runs before the capture socket exists, so the
/// capture does not see it, and the socket it returns keeps the stamps on until the capture
/// socket asks for them too.
fn receive_timestamps_on(limit: Duration) -> Option<std::net::UdpSocket> {
    let probe = || -> io::Result<Option<std::net::UdpSocket>> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true)?;
        sock.connect(sock.local_addr()?)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let end = std::time::Instant::now() + limit;
        let mut buf = [0u8; 8];
        let mut cmsg = nix::cmsg_space!(TimeSpec);
        loop {
            sock.send(b"probe")?;
            let before = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let mut iov = [IoSliceMut::new(&mut buf)];
            let m = recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let stamped = m.cmsgs().ok().and_then(|mut c| {
                c.find_map(|cm| match cm {
                    ControlMessageOwned::ScmTimestampns(t) => Some(Duration::new(
                        t.tv_sec().max(0) as u64,
                        t.tv_nsec().max(0) as u32,
                    )),
                    _ => None,
                })
            });
            if stamped.is_some_and(|t| t < before) {
                return Ok(Some(sock));
            }
            if std::time::Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    probe().ok().flatten()
}

/// The link type of an interface, from its hardware type in sysfs.
fn link_of_iface(iface: &str) -> Link {
    let hw = std::fs::read_to_string(format!("/sys/class/net/{iface}/type")).unwrap_or_default();
    match hw.trim().parse::<u16>() {
        Ok(ARPHRD_NONE | ARPHRD_RAWIP | ARPHRD_PPP) => Link::Raw,
        _ => Link::Ethernet,
    }
}

impl PacketSource for LiveSource {
    fn next(&mut self) -> Result<Next, Error> {
        let fd = self.sock.as_raw_fd();
        let (len, addr, ts) = {
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            // MSG_TRUNC: the return value is the frame's real length even when it is longer.
            match recvmsg::<LinkAddr>(fd, &mut iov, Some(&mut self.cmsg), MsgFlags::MSG_TRUNC) {
                Ok(m) => {
                    let ts = m.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|cm| match cm {
                            ControlMessageOwned::ScmTimestampns(t) => Some(Duration::new(
                                t.tv_sec().max(0) as u64,
                                t.tv_nsec().clamp(0, 999_999_999) as u32,
                            )),
                            _ => None,
                        })
                    });
                    (m.bytes, m.address, ts)
                }
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(Next::Idle),
                Err(e) => return Err(Error::Capture(e.into())),
            }
        };
        let ts = ts.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        });
        let captured = len.min(self.buf.len());
        let (hatype, pkttype, ifindex) = match &addr {
            Some(a) if a.len() > 0 => (a.hatype(), a.pkttype(), a.ifindex() as u32),
            _ => (ARPHRD_ETHER, 0, 0),
        };
        if pkttype == PACKET_OUTGOING && Some(ifindex) == self.lo_index {
            return Ok(Next::Idle);
        }
        let mut data = &self.buf[..captured];
        let link = match hatype {
            ARPHRD_ETHER | ARPHRD_LOOPBACK if self.any => {
                // Interfaces differ under `any`: keep only the IP packet.
                data = data.get(14..).unwrap_or(&[]);
                Link::Raw
            }
            ARPHRD_ETHER | ARPHRD_LOOPBACK => Link::Ethernet,
            ARPHRD_NONE | ARPHRD_RAWIP | ARPHRD_PPP => Link::Raw,
            other => return Ok(Next::Skipped(format!("unsupported hardware type {other}"))),
        };
        let orig_len = (len - (captured - data.len())) as u32;
        Ok(Next::Frame(Frame {
            ts,
            link,
            data: data.to_vec(),
            orig_len,
        }))
    }

    fn link(&self) -> Link {
        self.link
    }

    fn dropped(&mut self) -> Option<u64> {
        let (_, drops) = sys::take_statistics(&self.sock).ok()?;
        self.drops += u64::from(drops);
        Some(self.drops)
    }
}
