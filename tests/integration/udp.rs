//! UDP conversations of the tutorial: receive, send, continuous chat ending on "88", two-way
//! chat between two bound peers; against Python peers (GBK, recvfrom/sendto), nc and socat.

use crate::util::{Proc, gbk, have, python};
use std::net::UdpSocket;
use std::process::{Command, Stdio};

/// The next datagram's bytes and sender, waiting at most the tests' deadline.
fn recv_bytes(sock: &UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    sock.set_read_timeout(Some(crate::util::DEADLINE)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("a datagram before the deadline");
    (buf[..n].to_vec(), from)
}

fn recv_text(sock: &UdpSocket) -> (String, std::net::SocketAddr) {
    let (bytes, from) = recv_bytes(sock);
    (String::from_utf8_lossy(&bytes).into_owned(), from)
}

/// The tutorial's continuous UDP sender (GBK, ending on "88") to `wirechat udp listen`.
#[test]
fn tutorial_sender_to_wirechat_listener() {
    if !have("python3") {
        return;
    }
    let mut listener =
        Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "-e", "gbk", "--quit", "88"]);
    let port = listener.port().to_string();
    let _sender = python(
        r#"
import sys
from socket import *
s = socket(AF_INET, SOCK_DGRAM)
addr = ("127.0.0.1", int(sys.argv[1]))
for data in ["你好", "UDP 不需要连接", "88"]:
    s.sendto(data.encode("gbk"), addr)
s.close()
"#,
        &[&port],
    );
    assert_eq!(listener.wait_exit(), 0, "{}", listener.stderr.text());
    assert_eq!(listener.stdout.text(), "你好\nUDP 不需要连接\n88\n");
    assert!(listener.stderr.text().contains("peer said \"88\""));
}

/// `wirechat udp connect` as the tutorial's sender, to the tutorial's receiver, which prints
/// each datagram decoded as GBK with its sender and stops at "88".
#[test]
fn wirechat_sender_to_tutorial_receiver() {
    if !have("python3") {
        return;
    }
    let receiver = python(
        r#"
from socket import *
s = socket(AF_INET, SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
while True:
    data, addr = s.recvfrom(1024)
    text = data.decode("gbk")
    print(f"收到远程信息:{text},from {addr[0]}", flush=True)
    if text == "88":
        break
s.close()
"#,
        &[],
    );
    let port = receiver.printed_port();
    let mut sender = Proc::wirechat(&[
        "udp",
        "connect",
        &format!("127.0.0.1:{port}"),
        "-e",
        "gbk",
        "--quit",
        "88",
    ]);
    // Python's gbk has no €: it goes as '?' with a warning, not as WHATWG's 0x80, on which
    // the receiver would die.
    sender.send("第一条\n第二条\n价格€5\n88\n不会发送\n".as_bytes());
    assert_eq!(sender.wait_exit(), 0, "{}", sender.stderr.text());
    let out = receiver.stdout.wait_text("收到远程信息:88,");
    assert!(
        out.contains(
            "收到远程信息:第一条,from 127.0.0.1\n收到远程信息:第二条,from 127.0.0.1\n\
             收到远程信息:价格?5,from 127.0.0.1\n"
        ),
        "{out}"
    );
    assert!(!out.contains("不会发送"));
    let err = sender.stderr.text();
    assert!(
        err.contains("1 character(s) have no GBK form and were sent as '?'"),
        "{err}"
    );
}

/// The tutorial's two-way chat with threads: two peers bound to their own ports, each sending
/// to the other. One side is `udp listen --peer`, the other `udp connect --bind`.
#[test]
fn two_way_chat_between_bound_peers() {
    // Side B binds first so that side A can be told where B is.
    let mut b = Proc::wirechat(&["udp", "listen", "127.0.0.1:0"]);
    let pb = b.port();
    let mut a = Proc::wirechat(&[
        "udp",
        "connect",
        &format!("127.0.0.1:{pb}"),
        "--bind",
        "127.0.0.1:0",
    ]);
    a.stderr.wait_text("sending to");
    a.send(b"hello from a\n");
    b.stdout.wait_text("hello from a\n");
    b.stderr.wait_text("replies go there");
    b.send(b"hello from b\n");
    a.stdout.wait_text("hello from b\n");
    // Both directions at once, several lines each.
    for i in 0..20 {
        a.send(format!("a{i}\n").as_bytes());
        b.send(format!("b{i}\n").as_bytes());
    }
    b.stdout.wait_text("a19\n");
    a.stdout.wait_text("b19\n");

    // The tutorial's exact shape: both peers `udp listen` with a fixed --peer.
    let mut c = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "-e", "gbk"]);
    let pc = c.port();
    let mut d = Proc::wirechat(&[
        "udp",
        "listen",
        "127.0.0.1:0",
        "--peer",
        &format!("127.0.0.1:{pc}"),
        "-e",
        "gbk",
    ]);
    let pd = d.port();
    d.send("你好 c\n".as_bytes());
    c.stdout.wait_text("你好 c\n");
    c.send("你好 d\n".as_bytes());
    d.stdout.wait_text("你好 d\n");
    c.stderr.wait_text(&format!("datagram from 127.0.0.1:{pd}"));
}

/// With no --peer and nobody heard from yet, a typed line has nowhere to go: say so, and keep
/// going: once someone sends, lines go to them.
/// Piped input to a listener without `--peer` waits for the first datagram and goes to its
/// sender, as with nc, rather than being read at once with nowhere to go. (At a terminal the
/// line is reported unsent instead: `terminal::a_udp_listener_at_a_terminal_says_a_line_has_nowhere_to_go`.)
#[test]
fn piped_input_to_a_listener_waits_for_the_first_sender() {
    let mut l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0"]);
    let addr = l.listening();
    l.send(b"reply1\nreply2\n");
    l.close_stdin();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"hi", addr).unwrap();
    assert_eq!(recv_text(&s).0, "reply1");
    assert_eq!(recv_text(&s).0, "reply2");
    l.stdout.wait_text("hi\n");
    assert!(
        !l.stderr.text().contains("nowhere to go"),
        "{}",
        l.stderr.text()
    );
}

/// Hex both ways: typed hex becomes one datagram; a datagram is shown as a hexdump.
#[test]
fn hex_datagrams() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let paddr = peer.local_addr().unwrap().to_string();
    let mut w = Proc::wirechat(&["udp", "connect", &paddr, "--hex"]);
    w.send(b"de ad be ef\nxyz\n00\n");
    let (got, from) = recv_bytes(&peer);
    assert_eq!(got, [0xde, 0xad, 0xbe, 0xef]);
    // Which line was not sent, for input that comes from a file or a pipe.
    w.stderr.wait_text("input line 2: bad hex");
    let (zero, _) = recv_text(&peer);
    assert_eq!(zero, "\0");
    peer.send_to(b"AB\x00", from).unwrap();
    w.stdout.wait_text("3 bytes\n00000000  41 42 00");
}

/// `-e latin1` and `-e ascii` are windows-1252, as WHATWG reads them: said once at the start,
/// with what it means for the bytes; `-e windows-1252` itself needs no such note.
#[test]
fn latin1_and_ascii_are_said_to_be_windows_1252() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let paddr = peer.local_addr().unwrap().to_string();
    for (label, note) in [
        ("latin1", Some("€ is sent as 0x80")),
        (
            "US-ASCII",
            Some("characters outside ASCII are sent as windows-1252 bytes"),
        ),
        ("windows-1252", None),
    ] {
        let mut w = Proc::wirechat(&["udp", "connect", &paddr, "-e", label]);
        w.send("é€\n".as_bytes());
        let (got, _) = recv_bytes(&peer);
        assert_eq!(got, [0xe9, 0x80], "{label}");
        w.close_stdin();
        assert_eq!(w.wait_exit(), 0);
        let err = w.stderr.text();
        match note {
            Some(n) => assert!(
                err.contains(&format!("-e {label} is windows-1252")) && err.contains(n),
                "{err}"
            ),
            None => assert!(!err.contains("is windows-1252"), "{err}"),
        }
    }
}

/// Datagrams keep their boundaries: two sends are two lines, and an invalid GBK byte shows as
/// U+FFFD without ending anything.
#[test]
fn datagram_boundaries_and_invalid_bytes() {
    let l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "-e", "gbk", "--show-peer"]);
    let addr = l.listening();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    s.send_to(&gbk("一"), addr).unwrap();
    s.send_to(b"\xff\xfe", addr).unwrap();
    s.send_to(&gbk("二\n"), addr).unwrap();
    let out = l.stdout.wait_text("二\n");
    assert_eq!(
        out,
        format!("[{me}] 一\n[{me}] \u{fffd}\u{fffd}\n[{me}] 二\n")
    );
}

/// IPv6 loopback.
#[test]
fn ipv6_datagrams() {
    if !crate::util::have_ipv6() {
        return;
    }
    let mut l = Proc::wirechat(&["udp", "listen", "[::1]:0"]);
    let addr = l.listening();
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.send_to(b"v6 datagram", addr).unwrap();
    l.stdout.wait_text("v6 datagram\n");
    l.send(b"v6 reply\n");
    assert_eq!(recv_text(&s).0, "v6 reply");
}

/// A loopback UDP address where nothing listens (a socket bound and closed again), so datagrams
/// sent there are refused.
fn nothing_listening() -> std::net::SocketAddr {
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    gone.local_addr().unwrap()
}

/// The refusal of the only datagram is reported too: the kernel signals it as an error event
/// alone, with no later send to pick it up. A sender whose last datagram was refused ends with
/// the refused status, so a script can tell that nothing was listening.
#[test]
fn a_refused_only_datagram_is_reported() {
    let addr = nothing_listening();
    let mut w = Proc::wirechat(&["udp", "connect", &addr.to_string()]);
    w.send(b"hi\n");
    w.close_stdin();
    assert_eq!(w.wait_exit(), 4);
    let err = w.stderr.text();
    assert_eq!(err.matches("refused a datagram").count(), 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "wirechat: error: sending to {addr}: connection refused"
        )),
        "{err}"
    );
}

/// Refusals that a later datagram or a reply outdates do not make the end an error.
#[test]
fn a_refusal_followed_by_a_reply_ends_normally() {
    let addr = nothing_listening();
    let mut w = Proc::wirechat(&["udp", "connect", &addr.to_string()]);
    w.send(b"one\n");
    w.stderr.wait_text("refused a datagram");
    let Ok(back) = UdpSocket::bind(addr) else {
        eprintln!("SKIPPED: the port was taken meanwhile");
        return;
    };
    w.send(b"two\n");
    let (got, from) = recv_text(&back);
    assert_eq!(got, "two");
    back.send_to(b"reply", from).unwrap();
    w.stdout.wait_text("reply");
    w.close_stdin();
    assert_eq!(w.wait_exit(), 0, "{}", w.stderr.text());
}

/// A refused datagram (nothing listening) is reported and the conversation goes on: a later
/// line still goes out once something listens there.
#[test]
fn refused_datagram_is_reported() {
    let addr = nothing_listening();
    let mut w = Proc::wirechat(&["udp", "connect", &addr.to_string()]);
    w.send(b"one\n");
    w.send(b"two\n");
    w.stderr.wait_text("refused a datagram");
    let Ok(back) = UdpSocket::bind(addr) else {
        eprintln!("SKIPPED (last step): the port was taken meanwhile");
        return;
    };
    w.send(b"three\n");
    // "two" may still arrive first: its retry can reach the new socket.
    let mut got = recv_text(&back).0;
    if got == "two" {
        got = recv_text(&back).0;
    }
    assert_eq!(got, "three");
}

/// Without --encoding, bytes that are not UTF-8 reach the peer untouched.
#[test]
fn binary_lines_pass_untouched() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut w = Proc::wirechat(&["udp", "connect", &peer.local_addr().unwrap().to_string()]);
    w.send(b"\xc4\xe3\xff\x00\n");
    assert_eq!(recv_bytes(&peer).0, b"\xc4\xe3\xff\x00");
}

/// `echo hi | wirechat udp connect ...` sends, waits a moment for a reply, and exits by itself.
#[test]
fn piped_sender_exits_after_replies() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut w = Proc::wirechat(&["udp", "connect", &peer.local_addr().unwrap().to_string()]);
    w.send(b"ping\n");
    w.close_stdin();
    let (text, from) = recv_text(&peer);
    assert_eq!(text, "ping");
    peer.send_to(b"pong", from).unwrap();
    assert_eq!(w.wait_exit(), 0, "{}", w.stderr.text());
    assert_eq!(w.stdout.text(), "pong\n");
}

/// Held input is not sent to a peer whose first datagram is the quit word; and input that was
/// never let go (nobody sent anything before `--idle-timeout`) is said to be unsent.
#[test]
fn held_input_is_not_sent_after_the_quit_word_and_unsent_input_is_reported() {
    let mut l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "--quit", "88"]);
    let addr = l.listening();
    l.send(b"pending\n");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"88", addr).unwrap();
    assert_eq!(l.wait_exit(), 0, "{}", l.stderr.text());
    // Loopback delivers a datagram within the send call, so one sent before the exit is here.
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let got = s.recv_from(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{got:?}"
    );

    let mut l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "-w", "0.2"]);
    l.listening();
    l.send(b"lost line\n");
    assert_eq!(l.wait_exit(), 0);
    let err = l.stderr.text();
    assert!(
        err.contains("nobody sent a datagram, so the input had nowhere to go and nothing was sent"),
        "{err}"
    );
}

/// An input that brought nothing, empty (`< /dev/null`) or a pipe nobody has written to yet,
/// kept nothing from anyone: a listener that nobody sent a datagram does not say that its
/// input was not sent.
#[test]
fn an_input_without_data_is_not_reported_unsent() {
    for empty in [true, false] {
        let mut cmd = crate::util::wirechat();
        cmd.args(["udp", "listen", "127.0.0.1:0", "-w", "0.5"])
            .stdout(Stdio::null());
        if empty {
            cmd.stdin(Stdio::null());
        }
        let mut l = if empty {
            Proc::spawn_stderr(cmd)
        } else {
            // Piped and kept open, with nothing written.
            Proc::spawn(cmd)
        };
        l.listening();
        assert_eq!(l.wait_exit(), 0, "{}", l.stderr.text());
        let err = l.stderr.text();
        assert!(err.contains("idle for 0.5 s"), "{err}");
        assert!(!err.contains("nobody sent a datagram"), "{empty}: {err}");
        assert!(!err.contains("warning"), "{empty}: {err}");
    }
}

/// `-C` puts CRLF at the end of each datagram, as nc -u -C does, and after a hex line's bytes.
#[test]
fn crlf_goes_into_datagrams_when_asked_for() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = peer.local_addr().unwrap().to_string();
    let mut w = Proc::wirechat(&["udp", "connect", &to, "-C"]);
    w.send(b"hi\n");
    assert_eq!(recv_text(&peer).0, "hi\r\n");
    w.close_stdin();
    let mut x = Proc::wirechat(&["udp", "connect", &to, "-x", "--eol", "lf"]);
    x.send(b"48 69\n");
    assert_eq!(recv_text(&peer).0, "Hi\n");
    x.close_stdin();
    assert_eq!(w.wait_exit(), 0);
    assert_eq!(x.wait_exit(), 0);
}

/// OpenBSD nc -u and socat as UDP peers.
#[test]
fn interop_with_nc_and_socat() {
    if !have("nc") || !have("socat") {
        return;
    }
    let mut l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0"]);
    let port = l.port().to_string();
    let mut cmd = Command::new("nc");
    cmd.args(["-u", "127.0.0.1", &port]);
    let mut nc = Proc::spawn(cmd);
    nc.send(b"from nc\n");
    l.stdout.wait_text("from nc\n");
    l.send(b"to nc\n");
    // A typed line is one datagram, without its line ending.
    nc.stdout.wait_for("the datagram", |b| b == b"to nc");

    // socat as a UDP client of a wirechat listener: datagrams both ways.
    let mut l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "-e", "gbk"]);
    let port = l.port().to_string();
    let mut cmd = Command::new("socat");
    cmd.args(["STDIO", &format!("UDP:127.0.0.1:{port}")]);
    let mut socat = Proc::spawn(cmd);
    socat.send(&gbk("来自 socat\n"));
    l.stdout.wait_text("来自 socat\n");
    l.send("回复\n".as_bytes());
    socat.stdout.wait_for("the GBK reply", |b| b == gbk("回复"));
}

/// `udp connect --raw` from a binary file: each read is one datagram, nothing removed, at most
/// the largest UDP payload; together they are the file.
#[test]
fn raw_connect_sends_a_binary_file_untouched() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(crate::util::DEADLINE))
        .unwrap();
    let data = crate::util::payload(150_000);
    let scratch = crate::util::scratch("raw");
    let file = scratch.path().join("payload.bin");
    std::fs::write(&file, &data).unwrap();
    let mut cmd = crate::util::wirechat();
    cmd.args([
        "udp",
        "connect",
        &receiver.local_addr().unwrap().to_string(),
        "--raw",
        "-q",
    ]);
    cmd.stdin(std::fs::File::open(&file).unwrap());
    let mut sender = Proc::spawn_stderr(cmd);
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while got.len() < data.len() {
        let n = receiver.recv(&mut buf).expect("the next datagram in time");
        sizes.push(n);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(sender.wait_exit(), 0, "{}", sender.stderr.text());
    assert!(got == data, "the datagrams are not the file");
    assert!(
        sizes.len() >= 3 && sizes.iter().all(|&n| n <= 65_507),
        "{sizes:?}"
    );
}

/// `udp listen --raw`: each datagram is written as it is, with no line ending added or
/// removed, nothing escaped, whatever the bytes.
#[test]
fn raw_listen_writes_datagrams_as_they_are() {
    let l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "--raw"]);
    let port = l.port();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagrams: [&[u8]; 3] = [b"\x00\x01\nab", b"cd\r\n", b"\x1b[2J\xff"];
    for d in datagrams {
        s.send_to(d, ("127.0.0.1", port)).unwrap();
    }
    let want = datagrams.concat();
    let got = l
        .stdout
        .wait_for("the three datagrams", |b| b.len() >= want.len());
    assert_eq!(got, want);
}

/// `--raw` moves bytes as they are, so it cannot be combined with options that change them.
#[test]
fn raw_refuses_options_that_change_bytes() {
    // Refused before anything is sent; the address is still one of ours, not a fixed port.
    let nobody = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = nobody.local_addr().unwrap().to_string();
    for other in [
        ["--hex"].as_slice(),
        &["-e", "gbk"],
        &["--quit", "88"],
        &["-t"],
    ] {
        let out = crate::util::wirechat()
            .args(["udp", "connect", &addr, "--raw"])
            .args(other)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{other:?}: {err}");
        assert!(err.contains("--raw"), "{other:?}: {err}");
    }
}

/// nc -u as the peer of `--raw` in both directions: binary both ways.
#[test]
fn raw_with_nc() {
    if !have("nc") {
        return;
    }
    let mut l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "--raw"]);
    let port = l.port().to_string();
    let mut cmd = Command::new("nc");
    cmd.args(["-u", "127.0.0.1", &port]);
    let mut nc = Proc::spawn(cmd);
    nc.send(b"\x00bin\xfe\n");
    l.stdout
        .wait_for("nc's datagram", |b| b == b"\x00bin\xfe\n");
    // Back to nc (the last sender), the line ending included.
    l.send(b"\x01\x02 reply\n");
    nc.stdout
        .wait_for("the reply", |b| b == b"\x01\x02 reply\n");
}

/// A peer of the other IP version than the local address is a usage error at the start, with
/// both addresses named, not a socket error at the first line typed.
#[test]
fn a_peer_of_the_other_ip_version_is_refused_at_the_start() {
    let cases: &[&[&str]] = &[
        &["udp", "listen", "127.0.0.1:0", "--peer", "[::1]:9"],
        &["udp", "connect", "[::1]:9", "--bind", "127.0.0.1:0"],
        &["udp", "listen", "[::1]:0", "--peer", "127.0.0.1:9"],
    ];
    for (i, args) in cases.iter().enumerate() {
        if i == 2 && !crate::util::have_ipv6() {
            return;
        }
        let out = crate::util::wirechat()
            .args(*args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot reach"), "{args:?}: {err}");
        assert!(err.contains(":9 from "), "{args:?}: {err}");
    }
}

/// An IPv4-mapped IPv6 peer is an IPv4 peer to an IPv4 socket, whichever way it is named.
#[test]
fn a_mapped_peer_is_reached_from_an_ipv4_socket() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mapped = format!("[::ffff:127.0.0.1]:{}", peer.local_addr().unwrap().port());
    let cases: &[&[&str]] = &[
        &["udp", "connect", &mapped, "--bind", "127.0.0.1:0"],
        &["udp", "listen", "127.0.0.1:0", "--peer", &mapped],
    ];
    for args in cases {
        let mut w = Proc::wirechat(args);
        w.send(b"mapped\n");
        assert_eq!(recv_text(&peer).0, "mapped", "{args:?}");
        let err = w.stderr.text();
        assert!(
            !err.contains("warning") && !err.contains("error"),
            "{args:?}: {err}"
        );
        // The listener goes on listening after its input ends; the sender finishes.
        if args[1] == "connect" {
            w.close_stdin();
            assert_eq!(w.wait_exit(), 0, "{}", w.stderr.text());
        }
    }
}

/// A line too long for one datagram is refused with a warning and is not counted as sent.
#[test]
fn a_datagram_too_long_is_not_counted_as_sent() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = peer.local_addr().unwrap().to_string();
    let mut w = Proc::wirechat(&["udp", "connect", &addr]);
    let mut long = vec![b'a'; 70_000];
    long.push(b'\n');
    w.send(&long);
    w.send(b"ok\n");
    w.close_stdin();
    assert_eq!(recv_text(&peer).0, "ok");
    assert_eq!(w.wait_exit(), 0);
    let err = w.stderr.text();
    assert!(
        err.contains("70000 bytes is too long for one datagram; not sent"),
        "{err}"
    );
    assert!(err.contains("closed: sent 2 bytes"), "{err}");
}

/// SIGTERM ends wirechat even while the thread running the conversation cannot move: here it
/// is blocked writing an event line to a stderr that nobody reads.
#[cfg(target_os = "linux")]
#[test]
fn sigterm_ends_a_listener_stuck_writing_to_stderr() {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let write_syscall = if cfg!(target_arch = "x86_64") {
        "1"
    } else if cfg!(target_arch = "aarch64") {
        "64"
    } else {
        crate::util::cannot_run("write(2)'s syscall number is not known for this architecture");
        return;
    };
    let mut child = crate::util::wirechat()
        .args(["udp", "listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc {
        stdin: child.stdin.take(),
        stdout: crate::util::Collected::empty(),
        stderr: crate::util::Collected::empty(),
        child,
    };
    // Read stderr up to the "listening on" line, then never again (but keep it open).
    let mut stderr = p.child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8];
    while !String::from_utf8_lossy(&seen).contains(" (udp)\n") {
        assert_eq!(stderr.read(&mut byte).unwrap(), 1, "{seen:?}");
        seen.push(byte[0]);
    }
    let addr = crate::util::listening_addr(&String::from_utf8_lossy(&seen));
    // Two senders taking turns: each datagram is a "datagram from" line on stderr.
    let senders = [
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    let pid = p.child.id();
    // The blocked write is seen in /proc, which some machines do not let us read.
    if std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_err() {
        crate::util::cannot_run("/proc/PID/syscall cannot be read here");
        return;
    }
    let stuck = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("syscall"))
                .is_ok_and(|s| s.starts_with(&format!("{write_syscall} 0x2 ")))
        })
    };
    let end = Instant::now() + crate::util::DEADLINE;
    let mut sent = 0u64;
    while !stuck() {
        assert!(
            Instant::now() < end,
            "never blocked on stderr ({sent} datagrams)"
        );
        for s in &senders {
            s.send_to(b"x", addr).unwrap();
            sent += 1;
        }
        if sent % 200 == 0 {
            // Let the listener take what is queued before sending more.
            std::thread::yield_now();
        }
    }
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(p.wait_exit(), 130);
    assert!(signalled.elapsed() < Duration::from_secs(10));
    drop(stderr);
}
