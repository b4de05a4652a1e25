//! Receiving UDP datagrams in batches: `recvmmsg(2)` on Linux takes up to [`BATCH`] datagrams in
//! one system call, which is what lets a listener keep up with a sender blasting small datagrams.
//! Elsewhere one `recv_from` per call.

use std::io;
use std::net::SocketAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken per system call.
pub const BATCH: usize = 64;
/// The largest UDP payload (IPv6 jumbograms aside), and so the size of each receive buffer.
pub const MAX_DATAGRAM: usize = 65_536;

/// What a receive waits for: data, or an error to report.
const WAIT: Interest = Interest::READABLE.add(Interest::ERROR);

/// Preallocated buffers for one batch of received datagrams.
pub struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    from: Vec<Option<SocketAddr>>,
    count: usize,
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bufs: (0..BATCH).map(|_| vec![0; MAX_DATAGRAM]).collect(),
            lens: vec![0; BATCH],
            from: vec![None; BATCH],
            count: 0,
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl Batch {
    /// The datagrams of the last receive with their senders.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        (0..self.count).map(|i| (&self.bufs[i][..self.lens[i]], self.from[i]))
    }

    /// Waits for at least one datagram and takes as many as are queued (up to [`BATCH`]).
    /// A pending socket error (an ICMP port unreachable for what was sent) comes back as the
    /// error: the kernel signals it as an error event alone, which waiting for readable data
    /// would never see.
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            let ready = socket.ready(WAIT).await?;
            if ready.is_error() {
                // tokio's `try_io` runs its closure only for a single interest, and clears
                // that interest's readiness when the closure says `WouldBlock`: so the error
                // is taken inside one, which then clears the error readiness too.
                let mut pending = None;
                let _ = socket.try_io(Interest::ERROR, || {
                    pending = socket.take_error()?;
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
                if let Some(e) = pending {
                    return Err(e);
                }
            }
            match self.try_recv(socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Takes what is queued without waiting; `WouldBlock` when nothing is.
    pub fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let n = socket.try_io(Interest::READABLE, || self.take(socket))?;
        self.count = n;
        Ok(n)
    }

    #[cfg(target_os = "linux")]
    fn take(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, SockaddrLike, recvmmsg};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        let Batch {
            bufs,
            lens,
            from,
            headers,
            ..
        } = self;
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(b.as_mut_slice())])
            .collect();
        let msgs = recvmmsg(
            socket.as_raw_fd(),
            headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for msg in msgs {
            lens[n] = msg.bytes;
            from[n] = msg.address.and_then(|a| {
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(SocketAddr::V4((*v4).into()))
                } else {
                    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
                }
                .filter(|_| a.family().is_some())
            });
            n += 1;
        }
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    fn take(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let (len, addr) = socket.try_recv_from(&mut self.bufs[0])?;
        self.lens[0] = len;
        self.from[0] = Some(addr);
        Ok(1)
    }
}
