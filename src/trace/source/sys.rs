//! The three packet-socket calls that neither socket2 nor nix wraps safely: binding to one
//! interface (a `sockaddr_ll`), `PACKET_IGNORE_OUTGOING`, and reading `PACKET_STATISTICS`.
//!
//! `unsafe` is allowed in this module only; each block fills or reads a plain C struct of the
//! size handed to the kernel, with no pointers kept beyond the call.

#![allow(unsafe_code)]

use socket2::{SockAddr, SockAddrStorage, Socket};
use std::io;
use std::os::fd::AsRawFd;

/// Binds a packet socket to interface `ifindex` for all protocols.
pub fn bind_interface(sock: &Socket, ifindex: u32) -> io::Result<()> {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_ll fits in sockaddr_storage, which is zeroed and suitably aligned.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    ll.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised sockaddr_ll of `len` bytes.
    let addr = unsafe { SockAddr::new(storage, len) };
    sock.bind(&addr)
}

/// Asks the kernel not to deliver the packets this host sends. On `lo` every packet is seen
/// twice, leaving and arriving; this halves the work (Linux 4.20 and later).
pub fn ignore_outgoing(sock: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Packets received and dropped since the last call (the kernel resets the counters).
pub fn take_statistics(sock: &Socket) -> io::Result<(u32, u32)> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `stats`, a plain struct we own.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok((stats.tp_packets, stats.tp_drops))
    } else {
        Err(io::Error::last_os_error())
    }
}
