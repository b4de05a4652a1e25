//! Wire decoding: one captured frame (Ethernet, Linux cooked, BSD loopback or bare IP) into
//! typed, owned headers with etherparse. Anything truncated, corrupt, fragmented or neither TCP
//! nor UDP becomes a [`DecodeError`] that says why, so the caller can report it and go on.
//!
//! A frame that the capture cut short on purpose (a snap length: `tcpdump -s 96`) is not
//! damage: [`decode_frame`] decodes its headers laxly and takes the payload's length on the
//! wire from the IP header, so the ladder's sequence numbers stay right.

use etherparse::{
    Ethernet2Header, Ipv4Header, Ipv6Header, LaxNetSlice, LaxSlicedPacket, LinkSlice, NetSlice,
    SlicedPacket, TcpHeader, TransportSlice, UdpHeader, err,
};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How a frame begins: the capture's link-layer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Ethernet II, also what Linux gives for `lo` (a 14-byte header of zero addresses).
    Ethernet,
    /// Linux "cooked" capture (SLL), as `tshark -i any` writes.
    LinuxSll,
    /// Its second version (SLL2), as `tcpdump -i any` writes with libpcap 1.10 and later.
    LinuxSll2,
    /// A 4-byte address family, then IP: BSD and macOS loopback captures.
    Null,
    /// The IP header straight away (tun devices, `LINKTYPE_RAW`).
    Raw,
}

/// One captured frame as it came from a source.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Capture time since the Unix epoch.
    pub ts: Duration,
    /// How the bytes begin.
    pub link: Link,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: Vec<u8>,
    /// The length on the wire.
    pub orig_len: u32,
}

/// The link-layer header of a decoded packet.
#[derive(Clone, Debug)]
pub enum LinkHeader {
    /// Ethernet II.
    Ethernet(Ethernet2Header),
    /// Linux cooked capture, version 1 or 2.
    Cooked(Cooked),
    /// BSD loopback: the address family.
    Null(u32),
    /// No link header.
    Raw,
}

/// The network-layer header.
#[derive(Clone, Debug)]
pub enum IpHeader {
    /// IPv4 with its options.
    V4(Ipv4Header),
    /// IPv6 (extension headers are skipped over, not kept).
    V6(Ipv6Header),
}

/// The transport-layer header.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TCP with its options.
    Tcp(TcpHeader),
    /// UDP.
    Udp(UdpHeader),
}

/// A decoded TCP or UDP packet.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Link layer.
    pub link: LinkHeader,
    /// Network layer.
    pub ip: IpHeader,
    /// Transport layer.
    pub transport: Transport,
    /// The transport payload (what the application sent), as far as the capture kept it.
    pub payload: Vec<u8>,
    /// The payload's length on the wire: more than `payload.len()` when the capture's snap
    /// length cut the frame.
    pub wire_len: usize,
}

/// Why a frame was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends inside a header.
    #[error("truncated: {0}")]
    Truncated(String),
    /// A header field is impossible (bad version, header length, ...).
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    #[error("not an IP packet ({0})")]
    NotIp(String),
    /// IP, but neither TCP nor UDP (ICMP, ...).
    #[error("neither TCP nor UDP (IP protocol {0})")]
    NotTcpUdp(u8),
    /// An IP fragment: the transport header is in another fragment.
    #[error("an IP fragment (not reassembled)")]
    Fragment,
}

impl DecodeError {
    /// Damaged packets are worth a report; other protocols are just not ours.
    pub fn is_damage(&self) -> bool {
        matches!(self, DecodeError::Truncated(_) | DecodeError::Corrupt(_))
    }
}

fn slice_error(e: err::packet::SliceError) -> DecodeError {
    use err::packet::SliceError as S;
    match e {
        S::Len(l) => DecodeError::Truncated(l.to_string()),
        other => DecodeError::Corrupt(other.to_string()),
    }
}

/// A Linux cooked capture header (tcpdump.org, LINKTYPE_LINUX_SLL and LINKTYPE_LINUX_SLL2).
///
/// Read here rather than with etherparse, which takes only some hardware types: a capture of
/// `lo` with `-i any` has ARPHRD_LOOPBACK (772), and etherparse has no SLL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cooked {
    /// 1 (16 bytes) or 2 (20 bytes).
    pub version: u8,
    /// To us, broadcast, multicast, to another host, or sent by us (0-4).
    pub packet_type: u16,
    /// The ARPHRD_ type of the interface (1 Ethernet, 772 loopback, ...).
    pub arphrd: u16,
    /// What follows, as an Ethernet type (0x0800 IPv4, 0x86dd IPv6).
    pub protocol: u16,
}

impl Cooked {
    /// Reads the header at the start of `data`; returns it and its length.
    fn parse(version: u8, data: &[u8]) -> Result<(Cooked, usize), DecodeError> {
        let len = if version == 1 { 16 } else { 20 };
        let Some(h) = data.get(..len) else {
            return Err(DecodeError::Truncated(format!(
                "Linux cooked header v{version} needs {len} bytes, got {}",
                data.len()
            )));
        };
        let be = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let cooked = if version == 1 {
            Cooked {
                version,
                packet_type: be(0),
                arphrd: be(2),
                protocol: be(14),
            }
        } else {
            Cooked {
                version,
                protocol: be(0),
                arphrd: be(8),
                packet_type: u16::from(h[10]),
            }
        };
        Ok((cooked, len))
    }

    /// The packet type's name.
    pub fn direction(&self) -> &'static str {
        match self.packet_type {
            0 => "to us",
            1 => "broadcast",
            2 => "multicast",
            3 => "to another host",
            4 => "sent by us",
            _ => "other",
        }
    }
}

/// Where the frame's headers start once the capture's own link header is read.
enum AfterLink<'a> {
    Ethernet(&'a [u8]),
    Ip(&'a [u8]),
}

/// Reads what etherparse does not (cooked and BSD loopback headers) and says where the rest
/// begins.
fn start(link: Link, data: &[u8]) -> Result<(Option<Cooked>, AfterLink<'_>), DecodeError> {
    match link {
        Link::Ethernet => Ok((None, AfterLink::Ethernet(data))),
        Link::LinuxSll | Link::LinuxSll2 => {
            let (c, len) = Cooked::parse(if link == Link::LinuxSll { 1 } else { 2 }, data)?;
            if !matches!(c.protocol, 0x0800 | 0x86dd) {
                return Err(DecodeError::NotIp(format!("protocol {:#06x}", c.protocol)));
            }
            Ok((Some(c), AfterLink::Ip(&data[len..])))
        }
        Link::Raw => Ok((None, AfterLink::Ip(data))),
        Link::Null => match data.get(4..) {
            Some(rest) => Ok((None, AfterLink::Ip(rest))),
            None => Err(DecodeError::Truncated(format!(
                "loopback header needs 4 bytes, got {}",
                data.len()
            ))),
        },
    }
}

/// The link-layer header as decoded.
fn link_header(
    sliced: Option<&LinkSlice<'_>>,
    link: Link,
    cooked: Option<Cooked>,
    data: &[u8],
) -> Result<LinkHeader, DecodeError> {
    Ok(match (sliced, link, cooked) {
        (_, _, Some(c)) => LinkHeader::Cooked(c),
        (Some(LinkSlice::Ethernet2(e)), _, _) => LinkHeader::Ethernet(e.to_header()),
        (_, Link::Null, _) => {
            // The family is in the capturing host's byte order; both orders are small numbers.
            let Some(&fam) = data.first_chunk::<4>() else {
                return Err(DecodeError::Truncated("loopback header".into()));
            };
            let le = u32::from_le_bytes(fam);
            LinkHeader::Null(if le < 256 {
                le
            } else {
                u32::from_be_bytes(fam)
            })
        }
        _ => LinkHeader::Raw,
    })
}

fn not_ip(link: Option<&LinkSlice<'_>>) -> DecodeError {
    DecodeError::NotIp(match link {
        Some(LinkSlice::Ethernet2(e)) => format!("ethertype {:#06x}", e.ether_type().0),
        _ => "no IP header".into(),
    })
}

/// Decodes `data` that begins as `link` says; the frame must be whole.
pub fn decode(link: Link, data: &[u8]) -> Result<Packet, DecodeError> {
    let (cooked, rest) = start(link, data)?;
    let sliced = match rest {
        AfterLink::Ethernet(d) => SlicedPacket::from_ethernet(d),
        AfterLink::Ip(d) => SlicedPacket::from_ip(d),
    }
    .map_err(slice_error)?;
    let link_header = link_header(sliced.link.as_ref(), link, cooked, data)?;
    let (ip, fragmented, proto) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            IpHeader::V4(v4.header().to_header()),
            v4.is_payload_fragmented(),
            v4.payload().ip_number.0,
        ),
        Some(NetSlice::Ipv6(v6)) => (
            IpHeader::V6(v6.header().to_header()),
            v6.is_payload_fragmented(),
            v6.payload().ip_number.0,
        ),
        Some(NetSlice::Arp(_)) => return Err(DecodeError::NotIp("ARP".into())),
        None => return Err(not_ip(sliced.link.as_ref())),
    };
    if fragmented {
        return Err(DecodeError::Fragment);
    }
    let (transport, payload) = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => (Transport::Tcp(t.to_header()), t.payload()),
        Some(TransportSlice::Udp(u)) => (Transport::Udp(u.to_header()), u.payload()),
        _ => return Err(DecodeError::NotTcpUdp(proto)),
    };
    Ok(Packet {
        link: link_header,
        ip,
        transport,
        payload: payload.to_vec(),
        wire_len: payload.len(),
    })
}

/// Decodes a captured frame. One that the capture cut short (its snap length) keeps its
/// headers, the payload bytes that were kept, and in `wire_len` the payload's length on the
/// wire, from the IP header; it is damage only when a header itself was cut.
pub fn decode_frame(frame: &Frame) -> Result<Packet, DecodeError> {
    let kept = frame.data.len();
    let cut = (kept as u64) < u64::from(frame.orig_len);
    match decode(frame.link, &frame.data) {
        Err(DecodeError::Truncated(_)) if cut => {
            let missing = frame.orig_len as usize - kept;
            decode_cut(frame.link, &frame.data, missing).map_err(|e| match e {
                DecodeError::Truncated(why) => DecodeError::Truncated(format!(
                    "{why} (the capture kept {kept} of {} bytes)",
                    frame.orig_len
                )),
                other => other,
            })
        }
        r => r,
    }
}

/// [`decode`] for a frame cut short by the capture, `missing` bytes of it not kept:
/// etherparse's lax slicing, which takes what is there when the IP header promises more. An
/// IP or UDP length that promises more than the frame had on the wire is damage.
fn decode_cut(link: Link, data: &[u8], missing: usize) -> Result<Packet, DecodeError> {
    let (cooked, rest) = start(link, data)?;
    let sliced = match rest {
        AfterLink::Ethernet(d) => {
            LaxSlicedPacket::from_ethernet(d).map_err(|e| DecodeError::Truncated(e.to_string()))?
        }
        AfterLink::Ip(d) => LaxSlicedPacket::from_ip(d).map_err(|e| match e {
            err::ip::LaxHeaderSliceError::Len(l) => DecodeError::Truncated(l.to_string()),
            other => DecodeError::Corrupt(other.to_string()),
        })?,
    };
    let stopped = |what: &str| match &sliced.stop_err {
        Some((e, _)) => slice_error(e.clone()),
        None => DecodeError::Truncated(what.into()),
    };
    let link_header = link_header(sliced.link.as_ref(), link, cooked, data)?;
    // The IP payload's length as the header gives it, not as captured.
    let (ip, fragmented, proto, ip_payload) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let auth = v4.extensions().auth.map_or(0, |a| a.slice().len());
            (
                IpHeader::V4(h.to_header()),
                v4.is_payload_fragmented(),
                v4.payload().ip_number.0,
                usize::from(h.total_len()).checked_sub(h.slice().len() + auth),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => (
            IpHeader::V6(v6.header().to_header()),
            v6.is_payload_fragmented(),
            v6.payload().ip_number.0,
            usize::from(v6.header().payload_length()).checked_sub(v6.extensions().slice().len()),
        ),
        Some(LaxNetSlice::Arp(_)) => return Err(DecodeError::NotIp("ARP".into())),
        None if sliced.stop_err.is_some() => return Err(stopped("IP header")),
        None => return Err(not_ip(sliced.link.as_ref())),
    };
    if fragmented {
        return Err(DecodeError::Fragment);
    }
    let corrupt = |what: &str| DecodeError::Corrupt(format!("IP length too short for its {what}"));
    let (transport, payload, wire_len) = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            let wire = ip_payload
                .and_then(|n| n.checked_sub(h.header_len()))
                .ok_or_else(|| corrupt("TCP header"))?;
            (Transport::Tcp(h), t.payload(), wire)
        }
        Some(TransportSlice::Udp(u)) => {
            let wire = usize::from(u.length())
                .checked_sub(UdpHeader::LEN)
                .ok_or_else(|| corrupt("UDP header"))?;
            (Transport::Udp(u.to_header()), u.payload(), wire)
        }
        _ if matches!(proto, 6 | 17) => return Err(stopped("transport header")),
        _ => return Err(DecodeError::NotTcpUdp(proto)),
    };
    if wire_len > payload.len() + missing {
        return Err(DecodeError::Corrupt(format!(
            "the IP header promises {wire_len} payload bytes, but the frame had only {} on \
             the wire",
            payload.len() + missing
        )));
    }
    Ok(Packet {
        link: link_header,
        ip,
        transport,
        payload: payload.to_vec(),
        wire_len: wire_len.max(payload.len()),
    })
}

impl IpHeader {
    /// Source address.
    pub fn src(&self) -> IpAddr {
        match self {
            IpHeader::V4(h) => IpAddr::from(h.source),
            IpHeader::V6(h) => IpAddr::from(h.source),
        }
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        match self {
            IpHeader::V4(h) => IpAddr::from(h.destination),
            IpHeader::V6(h) => IpAddr::from(h.destination),
        }
    }
}

impl Packet {
    /// Where the packet came from.
    pub fn src(&self) -> SocketAddr {
        let port = match &self.transport {
            Transport::Tcp(t) => t.source_port,
            Transport::Udp(u) => u.source_port,
        };
        SocketAddr::new(self.ip.src(), port)
    }

    /// Where the packet goes.
    pub fn dst(&self) -> SocketAddr {
        let port = match &self.transport {
            Transport::Tcp(t) => t.destination_port,
            Transport::Udp(u) => u.destination_port,
        };
        SocketAddr::new(self.ip.dst(), port)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::Ethernet => "Ethernet",
            Link::LinuxSll => "Linux cooked",
            Link::LinuxSll2 => "Linux cooked v2",
            Link::Null => "BSD loopback",
            Link::Raw => "raw IP",
        })
    }
}

#[cfg(test)]
impl Packet {
    fn link_cooked(&self) -> Option<Cooked> {
        match self.link {
            LinkHeader::Cooked(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(40000, 8899, 1000, 65535)
            .syn();
        let mut out = Vec::new();
        builder
            .write(&mut out, payload)
            .expect("writing to a Vec cannot fail");
        out
    }

    #[test]
    fn decodes_tcp_over_ethernet() {
        let p = decode(Link::Ethernet, &tcp_frame(b"hi")).expect("valid frame");
        assert_eq!(p.src(), "127.0.0.1:40000".parse().unwrap());
        assert_eq!(p.dst(), "127.0.0.1:8899".parse().unwrap());
        assert_eq!(p.payload, b"hi");
        assert!(matches!(p.transport, Transport::Tcp(ref t) if t.syn && t.sequence_number == 1000));
    }

    /// `-i any` captures of loopback: SLL with ARPHRD_LOOPBACK (as tshark writes) and SLL2
    /// (as tcpdump writes), on top of the same IPv4/TCP bytes.
    #[test]
    fn decodes_cooked_captures_of_loopback() {
        let ip = &tcp_frame(b"hi")[14..];
        let mut v1 = vec![0, 4, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        v1.extend_from_slice(ip);
        let p = decode(Link::LinuxSll, &v1).expect("SLL with ARPHRD 772");
        assert_eq!(p.payload, b"hi");
        assert_eq!(
            p.link_cooked(),
            Some(Cooked {
                version: 1,
                packet_type: 4,
                arphrd: 772,
                protocol: 0x0800
            })
        );
        let mut v2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        v2.extend_from_slice(ip);
        let p = decode(Link::LinuxSll2, &v2).expect("SLL2");
        assert_eq!(p.dst(), "127.0.0.1:8899".parse().unwrap());
        assert_eq!(
            p.link_cooked()
                .map(|c| (c.version, c.packet_type, c.arphrd)),
            Some((2, 0, 772))
        );
        // Not IP: said so, not called damage.
        v1[14] = 0x08;
        v1[15] = 0x06;
        assert!(matches!(
            decode(Link::LinuxSll, &v1),
            Err(DecodeError::NotIp(_))
        ));
        for n in 0..20 {
            assert!(decode(Link::LinuxSll2, &v2[..n]).unwrap_err().is_damage());
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let frame = tcp_frame(b"");
        for n in 0..frame.len() {
            let e = decode(Link::Ethernet, &frame[..n]).expect_err("truncated frame");
            assert!(e.is_damage(), "{n} bytes: {e}");
        }
    }

    /// A frame the capture cut at its snap length keeps its headers and tells the payload's
    /// length on the wire; a cut inside a header is still damage, and says what was kept.
    #[test]
    fn frames_cut_by_a_snap_length() {
        let whole = tcp_frame(&[b'x'; 100]);
        let frame = |kept: usize| Frame {
            ts: Duration::ZERO,
            link: Link::Ethernet,
            data: whole[..kept].to_vec(),
            orig_len: whole.len() as u32,
        };
        let p = decode_frame(&frame(whole.len())).expect("whole");
        assert_eq!((p.payload.len(), p.wire_len), (100, 100));
        let p = decode_frame(&frame(14 + 20 + 20 + 10)).expect("payload cut");
        assert_eq!((p.payload.len(), p.wire_len), (10, 100));
        let p = decode_frame(&frame(14 + 20 + 20)).expect("all the payload cut");
        assert_eq!((p.payload.len(), p.wire_len), (0, 100));
        let e = decode_frame(&frame(14 + 20 + 10)).expect_err("TCP header cut");
        assert!(
            e.is_damage() && e.to_string().contains("kept 44 of 154 bytes"),
            "{e}"
        );
        // An IP length beyond what the frame had on the wire is damage, not a longer payload.
        let mut bogus = frame(14 + 20 + 20 + 10);
        bogus.data[16..18].copy_from_slice(&60_000u16.to_be_bytes());
        let e = decode_frame(&bogus).expect_err("IP length beyond the frame");
        assert!(matches!(e, DecodeError::Corrupt(_)), "{e}");
        // Raw IP cut inside its header: truncated, with what was kept.
        let raw = Frame {
            ts: Duration::ZERO,
            link: Link::Raw,
            data: whole[14..24].to_vec(),
            orig_len: (whole.len() - 14) as u32,
        };
        let e = decode_frame(&raw).expect_err("IP header cut");
        assert!(
            matches!(e, DecodeError::Truncated(ref w) if w.contains("kept 10 of")),
            "{e}"
        );
        // Cut without the capture saying so (orig_len no larger): damage, as before.
        let mut lying = frame(60);
        lying.orig_len = 60;
        assert!(decode_frame(&lying).unwrap_err().is_damage());
        // UDP and IPv6, cut the same way.
        let mut udp = Vec::new();
        PacketBuilder::ipv6([0; 16], [1; 16], 64)
            .udp(5000, 6000)
            .write(&mut udp, &[7; 50])
            .unwrap();
        let p = decode_frame(&Frame {
            ts: Duration::ZERO,
            link: Link::Raw,
            data: udp[..40 + 8 + 5].to_vec(),
            orig_len: udp.len() as u32,
        })
        .expect("UDP cut");
        assert_eq!((p.payload.len(), p.wire_len), (5, 50));
    }

    #[test]
    fn reports_other_protocols() {
        let builder =
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).icmpv4_echo_request(1, 1);
        let mut out = Vec::new();
        builder.write(&mut out, b"ping").unwrap();
        assert_eq!(
            decode(Link::Raw, &out).unwrap_err(),
            DecodeError::NotTcpUdp(1)
        );
        assert!(matches!(
            decode(Link::Ethernet, &[0u8; 14]),
            Err(DecodeError::NotIp(_)) | Err(DecodeError::Truncated(_))
        ));
    }

    proptest! {
        /// The fuzz target: any bytes with any link type decode or fail cleanly.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), link in 0u8..5) {
            let link = [Link::Ethernet, Link::LinuxSll, Link::LinuxSll2, Link::Null, Link::Raw][link as usize];
            let _ = decode(link, &data);
            let _ = decode_frame(&Frame { ts: Duration::ZERO, link, data, orig_len: u32::MAX });
        }

        /// A valid frame with random bytes flipped decodes or fails cleanly.
        #[test]
        fn corrupted_frames_never_panic(flips in proptest::collection::vec((0usize..80, any::<u8>()), 1..8), cut in 0usize..90) {
            let mut frame = tcp_frame(b"hello world");
            for (at, b) in flips {
                if let Some(x) = frame.get_mut(at) { *x = b; }
            }
            let orig_len = frame.len() as u32;
            frame.truncate(cut.min(frame.len()));
            let _ = decode(Link::Ethernet, &frame);
            // As a frame the capture cut: the lax path must not panic either.
            let _ = decode_frame(&Frame { ts: Duration::ZERO, link: Link::Ethernet, data: frame, orig_len });
        }
    }
}
