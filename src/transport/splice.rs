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
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::{SFlag, fstat};
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Bytes moved per system call.
const CHUNK: usize = 1 << 20;

/// Which end of a copy failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// Our own side: stdin, stdout, or a pipe of our own.
    Local,
    /// The TCP socket.
    Socket,
}

/// A failed copy: the error and the side it came from.
#[derive(Debug)]
pub struct Failure {
    /// The side that failed.
    pub blame: Blame,
    /// What the system said.
    pub error: io::Error,
}

type Result<T> = std::result::Result<T, Failure>;

fn on(blame: Blame) -> impl Fn(io::Error) -> Failure {
    move |error| Failure { blame, error }
}

fn local(e: impl Into<io::Error>) -> Failure {
    on(Blame::Local)(e.into())
}

fn socket(e: impl Into<io::Error>) -> Failure {
    on(Blame::Socket)(e.into())
}

/// Blames an error of a call that moves bytes between the socket and our side (splice,
/// sendfile), where the errno alone says which end it was: connection errors are the socket's,
/// a broken pipe belongs to the destination `dest`, anything else (EIO, ENOSPC) to our side.
fn between(e: Errno, dest: Blame) -> Failure {
    let blame = match e {
        Errno::EPIPE => dest,
        Errno::ECONNRESET
        | Errno::ECONNABORTED
        | Errno::ECONNREFUSED
        | Errno::ETIMEDOUT
        | Errno::ENOTCONN
        | Errno::ENETRESET
        | Errno::ENETDOWN
        | Errno::ENETUNREACH
        | Errno::EHOSTDOWN
        | Errno::EHOSTUNREACH
        | Errno::ENOBUFS => Blame::Socket,
        _ => Blame::Local,
    };
    Failure {
        blame,
        error: e.into(),
    }
}

fn kind(fd: BorrowedFd<'_>) -> Option<SFlag> {
    fstat(fd)
        .ok()
        .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))
}

/// Copies `input` (stdin) to `sock` until EOF; returns the byte count. `progress` is told of
/// each step, so an idle timer can see progress.
pub fn send(input: BorrowedFd<'_>, sock: &TcpStream, progress: &dyn Fn(usize)) -> Result<u64> {
    let mut total = 0u64;
    match kind(input) {
        Some(SFlag::S_IFREG) => loop {
            match nix::sys::sendfile::sendfile(sock.as_fd(), input, None, CHUNK * 4) {
                Ok(0) => return Ok(total),
                Ok(n) => advance(&mut total, progress, n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => wait_writable(sock.as_fd()).map_err(socket)?,
                // Not every file system supports sendfile: copy what is left by hand.
                Err(Errno::EINVAL | Errno::ENOSYS) if total == 0 => break,
                Err(e) => return Err(between(e, Blame::Socket)),
            }
        },
        Some(SFlag::S_IFIFO) => loop {
            match splice(
                input,
                None,
                sock.as_fd(),
                None,
                CHUNK,
                SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Ok(0) => return Ok(total),
                Ok(n) => advance(&mut total, progress, n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => wait_send(input, sock.as_fd())?,
                Err(Errno::EINVAL) if total == 0 => break,
                Err(e) => return Err(between(e, Blame::Socket)),
            }
        },
        _ => {}
    }
    total += copy(
        (input, Blame::Local),
        (sock.as_fd(), Blame::Socket),
        progress,
    )?;
    Ok(total)
}

/// Copies from `sock` to `output` (stdout) until the peer's EOF; returns the byte count.
pub fn receive(sock: &TcpStream, output: BorrowedFd<'_>, progress: &dyn Fn(usize)) -> Result<u64> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut total = 0u64;
    if kind(output) == Some(SFlag::S_IFIFO) {
        loop {
            match splice(sock.as_fd(), None, output, None, CHUNK, flags) {
                Ok(0) => return Ok(total),
                Ok(n) => advance(&mut total, progress, n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    if !ready_now(sock.as_fd(), PollFlags::POLLIN) {
                        wait_readable(sock.as_fd()).map_err(socket)?;
                    } else if !ready_now(output, PollFlags::POLLOUT) {
                        wait_writable(output).map_err(local)?;
                    } else {
                        // Readable and writable, yet splice refuses: the urgent mark.
                        match read_once(sock, output)? {
                            0 => return Ok(total),
                            n => advance(&mut total, progress, n),
                        }
                    }
                }
                Err(Errno::EINVAL) if total == 0 => return fallback(sock, output, progress),
                Err(e) => return Err(between(e, Blame::Local)),
            }
        }
    }
    // A file, /dev/null or a device: go through a pipe of our own.
    let (pipe_r, pipe_w) = nix::unistd::pipe().map_err(local)?;
    let _ = fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    loop {
        let n = match splice(sock.as_fd(), None, &pipe_w, None, CHUNK, flags) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                // Our pipe is always empty here, so EAGAIN is about the socket.
                if ready_now(sock.as_fd(), PollFlags::POLLIN) {
                    match read_once(sock, output)? {
                        0 => return Ok(total),
                        n => advance(&mut total, progress, n),
                    }
                } else {
                    wait_readable(sock.as_fd()).map_err(socket)?;
                }
                continue;
            }
            Err(Errno::EINVAL) if total == 0 => return fallback(sock, output, progress),
            Err(e) => return Err(between(e, Blame::Local)),
        };
        drain(&pipe_r, output, n).map_err(local)?;
        advance(&mut total, progress, n);
    }
}

/// Moves one read's worth from the socket to `output` the ordinary way. splice(2) stops at a
/// TCP urgent mark (a peer's MSG_OOB byte) and keeps saying EAGAIN while the socket polls
/// readable; a plain read steps past it. Returns 0 at EOF.
fn read_once(sock: &TcpStream, output: BorrowedFd<'_>) -> Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = loop {
        match nix::unistd::read(sock.as_fd(), &mut buf) {
            Ok(n) => break n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_readable(sock.as_fd()).map_err(socket)?,
            Err(e) => return Err(socket(e)),
        }
    };
    write_all(output, &buf[..n]).map_err(local)?;
    Ok(n)
}

/// Writes all of `data`, waiting in poll if `output` is non-blocking and full.
fn write_all(output: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(output, &data[done..]) {
            Ok(m) => done += m,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_writable(output)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// True if `fd` is ready for `events` right now.
fn ready_now(fd: BorrowedFd<'_>, events: PollFlags) -> bool {
    let mut fds = [PollFd::new(fd, events)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
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
                return write_all(output, &buf);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn fallback(sock: &TcpStream, output: BorrowedFd<'_>, progress: &dyn Fn(usize)) -> Result<u64> {
    copy(
        (sock.as_fd(), Blame::Socket),
        (output, Blame::Local),
        progress,
    )
}

/// A plain copy with a large buffer, for inputs and outputs that splice cannot serve; either
/// descriptor may be non-blocking. Each descriptor comes with the side it stands for.
fn copy(
    (src, src_side): (BorrowedFd<'_>, Blame),
    (dst, dst_side): (BorrowedFd<'_>, Blame),
    progress: &dyn Fn(usize),
) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match nix::unistd::read(src, &mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                wait_readable(src).map_err(on(src_side))?;
                continue;
            }
            Err(e) => return Err(on(src_side)(e.into())),
        };
        write_all(dst, &buf[..n]).map_err(on(dst_side))?;
        advance(&mut total, progress, n);
    }
}

fn advance(total: &mut u64, progress: &dyn Fn(usize), n: usize) {
    *total += n as u64;
    progress(n);
}

fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    wait(fd, PollFlags::POLLIN)
}

fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    wait(fd, PollFlags::POLLOUT)
}

/// After EAGAIN on the way out: wait for the socket to take more, or, if it already can, for
/// input (a pipe somebody left non-blocking) to have some.
fn wait_send(input: BorrowedFd<'_>, sock: BorrowedFd<'_>) -> Result<()> {
    if ready_now(sock, PollFlags::POLLOUT) {
        wait_readable(input).map_err(local)
    } else {
        wait_writable(sock).map_err(socket)
    }
}

/// Waits for a descriptor to become ready.
fn wait(fd: BorrowedFd<'_>, events: PollFlags) -> io::Result<()> {
    let mut fds = [PollFd::new(fd, events)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
