//! The pass-through fast path on Linux: bytes move between stdin/stdout and a TCP socket inside
//! the kernel. A regular file goes out with `sendfile(2)`; a pipe with `splice(2)`; received
//! bytes are spliced into stdout (directly when it is a pipe, through an intermediate pipe when
//! it is a file or /dev/null). Anything else falls back to `read`/`write` with a large buffer.
//!
//! These functions block, waiting in poll(2) when the non-blocking socket says EAGAIN; the
//! session runs each direction on its own thread, so the two directions never wait for each
//! other. The socket must be non-blocking: a blocking splice from TCP into a pipe may keep what
//! it has already moved until more arrives (seen on Linux 6.18), which would delay a typed line
//! until the next one. The `copy` fallback expects a blocking socket and is not used with one.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SpliceFFlags, fcntl, splice};
use nix::sys::stat::{SFlag, fstat};
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Bytes moved per system call.
const CHUNK: usize = 1 << 20;

fn kind(fd: BorrowedFd<'_>) -> Option<SFlag> {
    fstat(fd)
        .ok()
        .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))
}

/// Copies `input` (stdin) to `sock` until EOF; returns the byte count. `progress` is told of
/// each step, so an idle timer can see progress.
pub fn send(input: BorrowedFd<'_>, sock: &TcpStream, progress: &dyn Fn(usize)) -> io::Result<u64> {
    let mut total = 0u64;
    match kind(input) {
        Some(SFlag::S_IFREG) => loop {
            match nix::sys::sendfile::sendfile(sock.as_fd(), input, None, CHUNK * 4) {
                Ok(0) => return Ok(total),
                Ok(n) => advance(&mut total, progress, n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => wait_writable(sock.as_fd())?,
                // Not every file system supports sendfile: copy what is left by hand.
                Err(Errno::EINVAL | Errno::ENOSYS) if total == 0 => break,
                Err(e) => return Err(e.into()),
            }
        },
        Some(SFlag::S_IFIFO) => loop {
            match splice(
                input,
                None,
                sock.as_fd(),
                None,
                CHUNK,
                SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE,
            ) {
                Ok(0) => return Ok(total),
                Ok(n) => advance(&mut total, progress, n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => wait_send(input, sock.as_fd())?,
                Err(Errno::EINVAL) if total == 0 => break,
                Err(e) => return Err(e.into()),
            }
        },
        _ => {}
    }
    total += copy(input, sock.as_fd(), progress)?;
    Ok(total)
}

/// Copies from `sock` to `output` (stdout) until the peer's EOF; returns the byte count.
pub fn receive(
    sock: &TcpStream,
    output: BorrowedFd<'_>,
    progress: &dyn Fn(usize),
) -> io::Result<u64> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut total = 0u64;
    if kind(output) == Some(SFlag::S_IFIFO) {
        loop {
            match splice(sock.as_fd(), None, output, None, CHUNK, flags) {
                Ok(0) => return Ok(total),
                Ok(n) => advance(&mut total, progress, n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => wait_either(sock.as_fd(), output)?,
                Err(Errno::EINVAL) if total == 0 => return fallback(sock, output, progress),
                Err(e) => return Err(e.into()),
            }
        }
    }
    // A file, /dev/null or a device: go through a pipe of our own.
    let (pipe_r, pipe_w) = nix::unistd::pipe().map_err(io::Error::from)?;
    let _ = fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    loop {
        let n = match splice(sock.as_fd(), None, &pipe_w, None, CHUNK, flags) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                wait_readable(sock.as_fd())?;
                continue;
            }
            Err(Errno::EINVAL) if total == 0 => return fallback(sock, output, progress),
            Err(e) => return Err(e.into()),
        };
        drain(&pipe_r, output, n)?;
        advance(&mut total, progress, n);
    }
}

/// Moves `n` bytes that sit in our pipe on to `output`, by splice or, if the output refuses it,
/// by read and write, so that nothing already taken from the socket is lost.
fn drain(pipe_r: &OwnedFd, output: BorrowedFd<'_>, mut n: usize) -> io::Result<()> {
    while n > 0 {
        match splice(pipe_r, None, output, None, n, SpliceFFlags::SPLICE_F_MOVE) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => n -= m,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_writable(output)?,
            Err(Errno::EINVAL) => {
                let mut src = std::fs::File::from(pipe_r.try_clone()?);
                let mut buf = vec![0u8; n];
                src.read_exact(&mut buf)?;
                let mut done = 0;
                while done < n {
                    match nix::unistd::write(output, &buf[done..]) {
                        Ok(m) => done += m,
                        Err(Errno::EINTR) => {}
                        Err(Errno::EAGAIN) => wait_writable(output)?,
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn fallback(sock: &TcpStream, output: BorrowedFd<'_>, progress: &dyn Fn(usize)) -> io::Result<u64> {
    copy(sock.as_fd(), output, progress)
}

/// A plain copy with a large buffer, for inputs and outputs that splice cannot serve; either
/// descriptor may be non-blocking.
pub fn copy(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, progress: &dyn Fn(usize)) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match nix::unistd::read(src, &mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                wait_readable(src)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut done = 0;
        while done < n {
            match nix::unistd::write(dst, &buf[done..n]) {
                Ok(m) => done += m,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => wait_writable(dst)?,
                Err(e) => return Err(e.into()),
            }
        }
        advance(&mut total, progress, n);
    }
}

fn advance(total: &mut u64, progress: &dyn Fn(usize), n: usize) {
    *total += n as u64;
    progress(n);
}

fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    wait(fd, nix::poll::PollFlags::POLLIN)
}

fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    wait(fd, nix::poll::PollFlags::POLLOUT)
}

/// After EAGAIN on the way out: wait for the socket to take more, or, if it already can, for
/// input (a pipe somebody left non-blocking) to have some.
fn wait_send(input: BorrowedFd<'_>, sock: BorrowedFd<'_>) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(sock, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => wait_writable(sock),
        Ok(_) => wait_readable(input),
        Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the socket has data, or, if it already has, until the output pipe has room.
fn wait_either(sock: BorrowedFd<'_>, output: BorrowedFd<'_>) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(sock, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => wait_readable(sock),
        Ok(_) => wait_writable(output),
        Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Waits for a descriptor to become ready.
fn wait(fd: BorrowedFd<'_>, events: nix::poll::PollFlags) -> io::Result<()> {
    let mut fds = [nix::poll::PollFd::new(fd, events)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
