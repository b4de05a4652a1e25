//! Running `wirechat` and peers as child processes: wait for what they print (with a deadline),
//! feed their stdin, collect their stdout, and kill them when the test ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Accepts one connection on `listener`, failing the test if none comes within [`DEADLINE`];
/// reads on the stream fail after the same deadline rather than hang.
pub fn accept(listener: &std::net::TcpListener) -> std::net::TcpStream {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(DEADLINE.as_millis()).unwrap_or(u16::MAX);
    let ready = poll(&mut fds, PollTimeout::from(ms)).expect("poll the listener");
    assert!(ready > 0, "no connection within {DEADLINE:?}");
    let (stream, _) = listener.accept().expect("accept");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    stream
}

/// `text` in GBK, the tutorial's wire encoding.
pub fn gbk(text: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(text).0.into_owned()
}

/// A directory of the test's own under the system's temporary directory, named after `tag`.
/// It is removed when dropped, so also when the test fails or returns early.
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("wirechat-{tag}-"))
        .tempdir()
        .expect("a temporary directory")
}

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A TCP socket bound to an ephemeral port on 127.0.0.1 and not yet listening, for tests that
/// set options or a backlog of their own.
pub fn bound_loopback_socket() -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).expect("bind 127.0.0.1:0");
    socket
}

/// The built executable.
pub fn wirechat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wirechat"))
}

/// Says why a test cannot run on this machine: with WIRECHAT_REQUIRE_PEERS=1 (CI, where
/// everything is installed) the test fails; otherwise it prints `SKIPPED: why` and the caller
/// returns.
pub fn cannot_run(why: &str) {
    if std::env::var("WIRECHAT_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{why}, and WIRECHAT_REQUIRE_PEERS=1 requires it");
    }
    eprintln!("SKIPPED: {why}");
}

/// True if `program` is on PATH (see [`cannot_run`] when it is not).
pub fn have(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if !found {
        cannot_run(&format!("{program} is not installed"));
    }
    found
}

/// True if this machine has an IPv6 loopback (see [`cannot_run`] when it has not).
pub fn have_ipv6() -> bool {
    let found = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !found {
        cannot_run("no IPv6 loopback on this machine");
    }
    found
}

/// Output collected from a child's pipe, with a way to wait for it to satisfy a condition.
#[derive(Clone, Default)]
pub struct Collected(Arc<(Mutex<Output>, Condvar)>);

/// The bytes so far and whether the stream has closed.
type Output = (Vec<u8>, bool);

impl Collected {
    /// Nothing to collect: for a stream the test reads itself.
    pub fn empty() -> Collected {
        Collected::start(std::io::empty())
    }

    fn start(mut from: impl Read + Send + 'static) -> Collected {
        let c = Collected::default();
        let inner = c.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                let n = from.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*inner;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    g.1 = true;
                    cv.notify_all();
                    return;
                }
                g.0.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        c
    }

    /// Everything so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.0.lock().unwrap().0.clone()
    }

    /// Everything so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until `pred` holds for the collected bytes; panics with them at the deadline.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let (lock, cv) = &*self.0;
        let end = Instant::now() + DEADLINE;
        let mut g = lock.lock().unwrap();
        loop {
            if pred(&g.0) {
                return g.0.clone();
            }
            let now = Instant::now();
            if now >= end || (g.1 && !pred(&g.0)) {
                panic!(
                    "waiting for {what}: {}; got {:?}",
                    if g.1 {
                        "stream closed"
                    } else {
                        "deadline passed"
                    },
                    String::from_utf8_lossy(&g.0)
                );
            }
            g = cv.wait_timeout(g, end - now).unwrap().0;
        }
    }

    /// Waits for `needle` to appear in the text.
    pub fn wait_text(&self, needle: &str) -> String {
        let out = self.wait_for(needle, |b| String::from_utf8_lossy(b).contains(needle));
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Waits until the stream is closed and returns everything.
    pub fn wait_closed(&self) -> Vec<u8> {
        let (lock, cv) = &*self.0;
        let end = Instant::now() + DEADLINE;
        let mut g = lock.lock().unwrap();
        while !g.1 {
            let now = Instant::now();
            assert!(
                now < end,
                "stream not closed by the deadline: {:?}",
                String::from_utf8_lossy(&g.0)
            );
            g = cv.wait_timeout(g, end - now).unwrap().0;
        }
        g.0.clone()
    }
}

/// `/dev/full` opened for writing (every write fails with ENOSPC); `None`, after
/// [`cannot_run`], on a machine without it.
pub fn dev_full() -> Option<std::fs::File> {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    if full.is_err() {
        cannot_run("no /dev/full on this machine");
    }
    full.ok()
}

/// The address of the "listening on ADDR" line in `text`; panics, showing `text`, without one.
pub fn listening_addr(text: &str) -> SocketAddr {
    text.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no \"listening on ADDR\" in {text:?}"))
}

/// A running child process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Collected,
    pub stderr: Collected,
}

impl Proc {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn child");
        let stdin = child.stdin.take();
        let stdout = Collected::start(child.stdout.take().expect("stdout"));
        let stderr = Collected::start(child.stderr.take().expect("stderr"));
        Proc {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Starts `cmd` with its stdin and stdout as the caller set them; only stderr is collected.
    pub fn spawn_stderr(mut cmd: Command) -> Proc {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn child");
        let stderr = Collected::start(child.stderr.take().expect("stderr"));
        Proc {
            child,
            stdin: None,
            stdout: Collected::start(std::io::empty()),
            stderr,
        }
    }

    /// Starts `wirechat` with `args`.
    pub fn wirechat(args: &[&str]) -> Proc {
        let mut cmd = wirechat();
        cmd.args(args);
        Proc::spawn(cmd)
    }

    /// Waits for the "listening on ADDR" line and returns the bound address.
    pub fn listening(&self) -> SocketAddr {
        let out = self.stderr.wait_for("a \"listening on ADDR\" line", |b| {
            let t = String::from_utf8_lossy(b);
            t.find("listening on ")
                .is_some_and(|i| t[i..].contains('\n'))
        });
        listening_addr(&String::from_utf8_lossy(&out))
    }

    /// The port a peer written here prints on stdout as `listening on HOST:PORT`.
    pub fn printed_port(&self) -> String {
        let out = self
            .stdout
            .wait_for("a \"listening on HOST:PORT\" line", |b| {
                let t = String::from_utf8_lossy(b);
                t.find("listening on ")
                    .is_some_and(|i| t[i..].contains('\n'))
            });
        let text = String::from_utf8_lossy(&out).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("listening on "))
            .unwrap_or_default();
        line.trim()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// The port of the "listening on" line.
    pub fn port(&self) -> u16 {
        self.listening().port()
    }

    /// Writes to the child's stdin.
    pub fn send(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(data).expect("write to child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Closes the child's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the child to exit and returns its status code.
    pub fn wait_exit(&mut self) -> i32 {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Everything it wrote is collected before the caller looks at it.
                self.stdout.wait_closed();
                self.stderr.wait_closed();
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "process did not exit; stderr: {}",
                self.stderr.text()
            );
            std::thread::sleep(Duration::from_millis(10)); // polling an exit, not synchronising
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs python3 with `script` (argv[1..] = `args`) as a child process.
pub fn python(script: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg("-u").arg("-c").arg(script).args(args);
    Proc::spawn(cmd)
}

/// Reads lines from a child's collected output: convenient for line-based peers.
pub fn lines(bytes: &[u8]) -> Vec<String> {
    BufReader::new(bytes)
        .lines()
        .map(|l| l.unwrap_or_default())
        .collect()
}

/// A deterministic pseudo-random payload with every byte value.
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|i| {
            if i < 256 {
                return i as u8;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// SHA-256 of `data`, hex.
pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
