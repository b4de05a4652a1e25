//! TCP conversations of the tutorial, in both roles, against peers written here (Rust and
//! Python the tutorial's way, GBK on the wire) and against nc, ncat and socat.

use crate::util::{Proc, gbk, have, payload, python, sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};

/// The tutorial's continuous TCP chat on the wire: GBK, ending on "end", each line one send
/// with no line ending.
const GBK_END: [&str; 6] = ["-e", "gbk", "--quit", "end", "--eol", "none"];

/// wirechat connected to a tutorial-style Python server on `port`: GBK, "end" ends it, and each
/// line goes out as one send with no line ending (the server compares whole recv()s).
fn gbk_end_client(port: &str) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    Proc::wirechat(&[&["tcp", "connect", addr.as_str()][..], &GBK_END].concat())
}

fn addr(p: &Proc) -> String {
    p.listening().to_string()
}

/// The tutorial's TCP server, written here: bind, listen, accept, recv(1024), print, close.
#[test]
fn wirechat_client_to_tutorial_server_in_gbk() {
    if !have("python3") {
        return;
    }
    let server = python(
        r#"
from socket import *
s = socket(AF_INET, SOCK_STREAM)
s.bind(("127.0.0.1", 0)); s.listen(5)
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
c, info = s.accept()
data = b""
while True:
    chunk = c.recv(1024)
    if not chunk: break
    data += chunk
print("收到信息:" + data.decode("gbk"))
c.close(); s.close()
"#,
        &[],
    );
    let port = server.printed_port();
    let mut client = Proc::wirechat(&["tcp", "connect", &format!("127.0.0.1:{port}"), "-e", "gbk"]);
    client.send("haha 你好\n".as_bytes());
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    server.stdout.wait_text("收到信息:haha 你好\n");
}

/// The tutorial's TCP client: connect, send "haha" in GBK, close.
#[test]
fn tutorial_client_to_wirechat_server_in_gbk() {
    if !have("python3") {
        return;
    }
    let mut server = Proc::wirechat(&["tcp", "listen", "127.0.0.1:0", "-e", "gbk"]);
    let port = server.port().to_string();
    let client = python(
        r#"
import sys
from socket import *
c = socket(AF_INET, SOCK_STREAM)
c.connect(("127.0.0.1", int(sys.argv[1])))
c.send("haha 中文".encode("gbk"))
c.close()
"#,
        &[&port],
    );
    server.close_stdin();
    assert_eq!(server.wait_exit(), 0, "{}", server.stderr.text());
    assert_eq!(server.stdout.text(), "haha 中文");
    assert!(server.stderr.text().contains("peer closed its side"));
    drop(client);
}

/// The tutorial's continuous chat: the Python client sends, waits for the reply, and stops
/// after "end"; wirechat serves with --eol none because the tutorial's peer compares
/// whole recv() results with "end".
#[test]
fn continuous_chat_until_end_with_python_client() {
    if !have("python3") {
        return;
    }
    let mut server = Proc::wirechat(&[&["tcp", "listen", "127.0.0.1:0"][..], &GBK_END].concat());
    let port = server.port().to_string();
    let client = python(
        r#"
import sys
from socket import *
c = socket(AF_INET, SOCK_STREAM)
c.connect(("127.0.0.1", int(sys.argv[1])))
for msg in ["你好", "第二句", "end"]:
    c.send(msg.encode("gbk"))
    if msg == "end":
        break
    print("服务器端说:", c.recv(1024).decode("gbk"), flush=True)
c.close()
"#,
        &[&port],
    );
    server.stdout.wait_text("你好");
    server.send("收到一\n".as_bytes());
    client.stdout.wait_text("服务器端说: 收到一\n");
    server.stdout.wait_text("第二句");
    server.send("收到二\n".as_bytes());
    client.stdout.wait_text("服务器端说: 收到二\n");
    assert_eq!(server.wait_exit(), 0, "{}", server.stderr.text());
    assert!(server.stderr.text().contains("peer said \"end\""));
}

/// The tutorial's continuous chat server (recv, print, reply, until "end") with wirechat as
/// the client typing.
#[test]
fn continuous_chat_until_end_with_python_server() {
    if !have("python3") {
        return;
    }
    let server = python(
        r#"
from socket import *
s = socket(AF_INET, SOCK_STREAM)
s.bind(("127.0.0.1", 0)); s.listen()
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
c, host = s.accept()
while True:
    re_data = c.recv(1024).decode("gbk")
    print("客户端说:", re_data, flush=True)
    if re_data == "end":
        break
    c.send(("回复:" + re_data).encode("gbk"))
c.close(); s.close()
"#,
        &[],
    );
    let port = server.printed_port();
    let mut client = gbk_end_client(&port);
    client.send("早上好\n".as_bytes());
    client.stdout.wait_text("回复:早上好");
    client.send(b"end\n");
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    server.stdout.wait_text("客户端说: end\n");
}

/// The tutorial's free chat with threads: the Python server's receive thread prints until
/// "end" while its send thread talks at the same time; wirechat connects and does both too.
#[test]
fn free_chat_with_threaded_python_server() {
    if !have("python3") {
        return;
    }
    let server = python(
        r#"
from socket import *
from threading import Thread
s = socket(AF_INET, SOCK_STREAM)
s.bind(("127.0.0.1", 0)); s.listen()
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
c, host = s.accept()
def recv_data():
    while True:
        re_data = c.recv(1024).decode("gbk")
        print(f"客户端说:{re_data}", flush=True)
        if re_data == "end" or not re_data:
            break
def send_data():
    for msg in ["一", "二", "三"]:
        c.send(msg.encode("gbk"))
t1 = Thread(target=send_data); t2 = Thread(target=recv_data)
t2.start(); t1.start(); t1.join(); t2.join()
c.close(); s.close()
"#,
        &[],
    );
    let port = server.printed_port();
    let mut client = gbk_end_client(&port);
    client.send("你好\n".as_bytes());
    client.stdout.wait_text("三");
    server.stdout.wait_text("客户端说:你好\n");
    client.send(b"end\n");
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    server.stdout.wait_text("客户端说:end\n");
}

/// Full duplex, wirechat on both sides: both type at once, both receive, "end" from either ends
/// both.
#[test]
fn free_chat_between_two_wirechats() {
    let mut server = Proc::wirechat(&["tcp", "listen", "127.0.0.1:0", "--quit", "end"]);
    let mut client = Proc::wirechat(&["tcp", "connect", &addr(&server), "--quit", "end"]);
    server.stderr.wait_text("connection from");
    server.send(b"from server 1\nfrom server 2\n");
    client.send(b"from client 1\n");
    client.stdout.wait_text("from server 2\n");
    server.stdout.wait_text("from client 1\n");
    server.send(b"end\n");
    assert_eq!(server.wait_exit(), 0);
    assert_eq!(client.wait_exit(), 0);
    assert!(client.stderr.text().contains("peer said \"end\""));
}

/// `-q` keeps the conversation's events off stderr, but not the listening line: with port 0
/// it is the only way to learn the port (tcp and udp alike).
#[test]
fn quiet_listeners_still_say_where_they_listen() {
    let mut server = Proc::wirechat(&["-q", "tcp", "listen", "127.0.0.1:0"]);
    let mut client = Proc::wirechat(&["tcp", "connect", &addr(&server)]);
    client.send(b"hi\n");
    server.stdout.wait_text("hi\n");
    client.close_stdin();
    server.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    assert_eq!(server.wait_exit(), 0);
    let err = server.stderr.text();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("wirechat: listening on 127.0.0.1:"),
        "{err}"
    );

    // Dropping it ends it.
    let udp = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "-q"]);
    assert!(udp.listening().port() > 0);
}

/// Binary data both ways at once through the pass-through path, identical by hash.
#[test]
fn binary_round_trip_both_directions() {
    let to_client = payload(6 << 20);
    let to_server = payload(5 << 20).into_iter().rev().collect::<Vec<u8>>();
    let mut server = Proc::wirechat(&["tcp", "listen", "127.0.0.1:0"]);
    let mut client = Proc::wirechat(&["tcp", "connect", &addr(&server)]);
    let (a, b) = (to_client.clone(), to_server.clone());
    let mut s_in = server.stdin.take().unwrap();
    let mut c_in = client.stdin.take().unwrap();
    let w1 = std::thread::spawn(move || s_in.write_all(&a));
    let w2 = std::thread::spawn(move || c_in.write_all(&b));
    w1.join().unwrap().unwrap();
    w2.join().unwrap().unwrap();
    assert_eq!(server.wait_exit(), 0, "{}", server.stderr.text());
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    assert_eq!(sha256(&client.stdout.wait_closed()), sha256(&to_client));
    assert_eq!(sha256(&server.stdout.wait_closed()), sha256(&to_server));
}

/// stdin from a regular file (sendfile on Linux) and stdout to a regular file.
#[test]
fn binary_file_to_file() {
    let scratch = crate::util::scratch("test");
    let dir = scratch.path();
    let (src, dst) = (dir.join("in.bin"), dir.join("out.bin"));
    let data = payload(3 << 20);
    std::fs::write(&src, &data).unwrap();
    let mut cmd = crate::util::wirechat();
    cmd.args(["tcp", "listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dst).unwrap());
    let mut server = crate::util::Proc::spawn_stderr(cmd);
    let addr = server.listening().to_string();
    let status = crate::util::wirechat()
        .args(["tcp", "connect", &addr])
        .stdin(std::fs::File::open(&src).unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(server.wait_exit(), 0);
    assert_eq!(sha256(&std::fs::read(&dst).unwrap()), sha256(&data));
}

/// The peer reads until EOF and only then replies: wirechat's FIN must not end the
/// conversation before the reply arrives.
#[test]
fn half_close_reply_after_our_fin() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || {
        let mut s = crate::util::accept(&listener);
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("you sent {} bytes\n", got.len()).as_bytes())
            .unwrap();
        got
    });
    let mut client = Proc::wirechat(&["tcp", "connect", &addr]);
    client.send(b"twelve bytes");
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    assert_eq!(client.stdout.text(), "you sent 12 bytes\n");
    assert!(client.stderr.text().contains("sent FIN"));
    assert_eq!(peer.join().unwrap(), b"twelve bytes");
}

/// The same with the line-processing path (an encoding), not the pass-through.
#[test]
fn half_close_reply_after_our_fin_in_gbk() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || {
        let mut s = crate::util::accept(&listener);
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&gbk("收到了")).unwrap();
        got
    });
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "--encoding", "gbk"]);
    client.send("你好\n".as_bytes());
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    assert_eq!(client.stdout.text(), "收到了");
    assert_eq!(peer.join().unwrap(), gbk("你好\n"));
}

/// The peer closes first: wirechat says so, finishes sending its input, and exits.
#[test]
fn peer_closes_first() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr]);
    let mut s = crate::util::accept(&listener);
    s.write_all(b"bye\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    client.stderr.wait_text("peer closed its side");
    client.send(b"still heard\n");
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "still heard\n");
    assert_eq!(client.stdout.text(), "bye\n");
}

/// GBK and GB18030 both ways, a character split across two TCP segments, and invalid bytes
/// that show as U+FFFD without stopping the conversation.
#[test]
fn gbk_and_gb18030_round_trip_and_invalid_bytes() {
    for label in ["gbk", "gb18030"] {
        let enc = encoding_rs::Encoding::for_label(label.as_bytes()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut client = Proc::wirechat(&["tcp", "connect", &addr, "-e", label]);
        let mut s = crate::util::accept(&listener);
        s.set_nodelay(true).unwrap();
        // GB18030 covers all of Unicode; GBK lacks the snowman and U+20000.
        let text = if label == "gb18030" {
            "中文测试：網絡 ☃ 𠀀"
        } else {
            "中文测试：網絡"
        };
        let (wire, _, unmappable) = enc.encode(text);
        assert!(!unmappable);
        let (a, b) = wire.split_at(1);
        s.write_all(a).unwrap();
        s.write_all(&[]).unwrap();
        s.write_all(b).unwrap();
        s.write_all(b"\n\xff|after\n").unwrap();
        let shown = client.stdout.wait_text("|after\n");
        assert_eq!(shown, format!("{text}\n\u{fffd}|after\n"));
        let typed = format!("{text} 😀");
        client.send(format!("{typed}\n").as_bytes());
        client.close_stdin();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let mut expected = wire.into_owned();
        if label == "gbk" {
            // No GBK form: sent as '?' with a warning, as network assistants do.
            expected.extend_from_slice(b" ?\n");
            client.stderr.wait_text("no GBK form");
        } else {
            expected.extend_from_slice(&enc.encode(" 😀\n").0);
        }
        assert_eq!(got, expected, "{label}");
        drop(s);
        assert_eq!(client.wait_exit(), 0);
    }
}

/// A pipe of many lines that are not UTF-8 (Latin-1 here) with `-e gbk` gets one warning
/// naming the first line and one line with the count at the end, not a warning per line, also
/// with `-q`, which keeps warnings; each bad byte still goes out as `?`, as it always did.
#[test]
fn input_that_is_not_utf8_is_warned_of_once_with_a_count() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "-e", "gbk", "-q"]);
    let mut s = crate::util::accept(&listener);
    let mut input = b"ok\n".to_vec();
    let mut expected = input.clone();
    for n in 0..1000 {
        input.extend_from_slice(format!("{n} caf").as_bytes());
        input.extend_from_slice(b"\xe9\n");
        expected.extend_from_slice(format!("{n} caf?\n").as_bytes());
    }
    let mut stdin = client.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap().unwrap();
    drop(s);
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    assert!(got == expected, "the bytes sent changed");
    let err = client.stderr.text();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("wirechat: warning: input line 2 is not UTF-8")
            && lines[0].contains("leave out -e"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        "wirechat: warning: in all, 1000 input lines were not UTF-8 (1000 pieces replaced)",
        "{err}"
    );
}

/// Hex in: typed hex lines become bytes; a bad line is refused with a message and the
/// conversation goes on. Hex out: a hexdump with offsets continuing across reads.
#[test]
fn hex_in_and_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "--hex"]);
    let mut s = crate::util::accept(&listener);
    client.send(b"48 65 6c 6c 6f\nnot hex\n0x0a,FF\n");
    client.stderr.wait_text("bad hex");
    let mut got = [0u8; 7];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"Hello\n\xff");
    s.write_all(b"Hi there\x00\x01").unwrap();
    let dump = client.stdout.wait_text("|");
    client.stdout.wait_text("|Hi there..|\n");
    assert!(
        dump.starts_with("00000000  48 69 20 74 68 65 72 65  00 01"),
        "{dump}"
    );
    s.write_all(b"!").unwrap();
    client.stdout.wait_text("0000000a  21 ");
    drop(s);
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0);
}

/// The quit word typed ends the conversation after it is sent; received from a line-based
/// peer (nc style, with a newline) it ends it too.
#[test]
fn quit_word_typed_and_received() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "--quit", "bye"]);
    let mut s = crate::util::accept(&listener);
    client.send(b"hello\nbye\nnever sent\n");
    assert_eq!(client.wait_exit(), 0);
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello\nbye\n");

    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "--quit", "bye"]);
    let mut s = crate::util::accept(&listener);
    s.write_all(b"byebye\nbye\r\n").unwrap();
    assert_eq!(client.wait_exit(), 0);
    assert!(client.stderr.text().contains("peer said \"bye\""));
    assert_eq!(client.stdout.text(), "byebye\nbye\r\n");
}

/// --crlf sends CRLF line endings.
#[test]
fn crlf_line_endings() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "--crlf"]);
    let mut s = crate::util::accept(&listener);
    client.send(b"GET / HTTP/1.0\n\n");
    client.close_stdin();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "GET / HTTP/1.0\r\n\r\n");
    drop(s);
    assert_eq!(client.wait_exit(), 0);
}

/// IPv6 loopback, listening and connecting.
#[test]
fn ipv6_loopback() {
    if !crate::util::have_ipv6() {
        return;
    }
    let mut server = Proc::wirechat(&["tcp", "listen", "[::1]:0"]);
    let a = server.listening();
    assert!(a.is_ipv6(), "{a}");
    let mut client = Proc::wirechat(&["tcp", "connect", &a.to_string()]);
    client.send(b"over v6\n");
    client.close_stdin();
    server.close_stdin();
    assert_eq!(server.wait_exit(), 0);
    assert_eq!(client.wait_exit(), 0);
    assert_eq!(server.stdout.text(), "over v6\n");
    assert!(server.stderr.text().contains("connection from [::1]:"));
}

/// A stdin and a stdout left non-blocking by whoever started wirechat (Node's child processes
/// do) are read and written all the same: an empty or full pipe is waited for, not an error
/// ("resource temporarily unavailable", and the peer's data lost). Afterwards they are
/// non-blocking again.
#[test]
fn non_blocking_stdin_and_stdout_are_waited_for() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let non_blocking = |fd: &dyn std::os::fd::AsFd| {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL).unwrap());
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
    };
    let is_non_blocking = |fd: &dyn std::os::fd::AsFd| {
        OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL).unwrap())
            .contains(OFlag::O_NONBLOCK)
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stdin, mut typed) = std::io::pipe().unwrap();
    let (mut shown, stdout) = std::io::pipe().unwrap();
    non_blocking(&stdin);
    non_blocking(&stdout);
    // Shares the input's flags; an extra reading end does not keep the input from ending.
    let stdin_flags = stdin.try_clone().unwrap();
    let mut cmd = crate::util::wirechat();
    cmd.args(["tcp", "connect", &addr, "-e", "gbk"])
        .stdin(stdin)
        .stdout(stdout);
    let mut client = Proc::spawn_stderr(cmd);
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(crate::util::DEADLINE)).unwrap();
    // The peer sends more than a pipe holds before anyone reads the output...
    let data = "数据".repeat(100_000) + "\n";
    peer.write_all(&gbk(&data)).unwrap();
    // ...and the input, empty until now, comes.
    typed.write_all("你好\n".as_bytes()).unwrap();
    let mut got = vec![0u8; gbk("你好\n").len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, gbk("你好\n"));
    drop(typed);
    peer.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    shown.read_to_end(&mut out).unwrap();
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    assert!(
        out == data.as_bytes(),
        "{} of {} bytes shown",
        out.len(),
        data.len()
    );
    assert!(is_non_blocking(&stdin_flags), "the flags are put back");
}

/// Piped text that is transcoded (`-e gbk`) or watched for a quit word goes out as it comes,
/// not held until its line ends (nc sends it at once too); a quit word that comes in two
/// pieces still ends the conversation.
#[test]
fn piped_text_goes_out_before_its_line_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "-e", "gbk", "--quit", "end"]);
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(crate::util::DEADLINE)).unwrap();
    let mut expect = |typed: &[u8], wire: &[u8]| {
        client.send(typed);
        let mut got = vec![0u8; wire.len()];
        peer.read_exact(&mut got)
            .expect("sent before its line ended");
        assert_eq!(got, wire);
    };
    expect("你好".as_bytes(), &gbk("你好"));
    expect(b"\r\nen", b"\r\nen");
    expect(b"d\n", b"d\n");
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
    assert!(client.stderr.text().contains("sent \"end\""));
}

/// `-v` tells what happens underneath: each address tried, the way the bytes are moved, how
/// the conversation ended; in plain text when stderr is not a terminal.
#[test]
fn verbose_tells_the_steps() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["-v", "tcp", "connect", &addr, "-e", "gbk"]);
    let (mut peer, _) = listener.accept().unwrap();
    client.send("你好\n".as_bytes());
    client.close_stdin();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, gbk("你好\n"));
    drop(peer);
    assert_eq!(client.wait_exit(), 0);
    let err = client.stderr.text();
    for step in [
        &format!("DEBUG wirechat::transport: connecting addr={addr}"),
        &format!("DEBUG wirechat::transport: connected addr={addr}"),
        "conversation through the terminal side encoding=\"GBK\"",
        "conversation over end=Ok(Closed)",
    ] {
        assert!(err.contains(step), "{step:?} not in {err}");
    }
    assert!(!err.contains('\x1b'), "{err}");
}

/// `tcp listen -k` with no input and `stdout` as its output; one client connects and sends
/// `data`. Returns the server, its port and the client's connection (kept open by the caller).
fn keep_open_with_one_client(stdout: Stdio, data: &[u8]) -> (Proc, u16, TcpStream) {
    let mut cmd = crate::util::wirechat();
    cmd.args(["tcp", "listen", "127.0.0.1:0", "-k"])
        .stdin(Stdio::null())
        .stdout(stdout);
    let server = Proc::spawn_stderr(cmd);
    let port = server.port();
    let mut first = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    first.write_all(data).unwrap();
    (server, port, first)
}

/// `tcp listen -k` fed from a file: a turn that ends while the listener is in the middle of
/// writing to its client (here by the idle timeout, with a client that stopped reading; a
/// client that closes its side, as `nc -N` does, ends it the same way) leaves what was not
/// written to the next client. Every byte reaches one of them, once and in order; the rest of a 64 KiB piece used
/// to be lost, and the byte count was short.
#[test]
fn keep_open_loses_nothing_when_a_turn_ends_mid_write() {
    let data = payload(16 << 20);
    let scratch = crate::util::scratch("keep-open");
    let file = scratch.path().join("input.bin");
    std::fs::write(&file, &data).unwrap();
    let mut cmd = crate::util::wirechat();
    cmd.args(["tcp", "listen", "127.0.0.1:0", "-k", "-w", "1"])
        .stdin(std::fs::File::open(&file).unwrap())
        .stdout(Stdio::null());
    let server = Proc::spawn_stderr(cmd);
    let port = server.port();
    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    first.set_read_timeout(Some(crate::util::DEADLINE)).unwrap();
    // A part is read, then no more: the listener's writes fill the socket, wait, and the
    // turn ends idle in the middle of one.
    let mut got = vec![0u8; 1 << 20];
    first.read_exact(&mut got).unwrap();
    let text = server.stderr.wait_text(" bytes, received 0 bytes");
    let sent: usize = text
        .split("closed: sent ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a byte count");
    first.read_to_end(&mut got).unwrap();
    assert_eq!(
        got.len(),
        sent,
        "what the first client got is what it was sent"
    );
    let mut second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    second
        .set_read_timeout(Some(crate::util::DEADLINE))
        .unwrap();
    second.read_to_end(&mut got).unwrap();
    let same = got.iter().zip(&data).take_while(|(a, b)| a == b).count();
    assert!(
        got.len() == data.len() && same == data.len(),
        "{} of {} bytes arrived, the first {same} in order; the first client got {sent}",
        got.len(),
        data.len()
    );
}

/// `tcp listen -k | head -1`: once nobody reads the output, the listener ends (status 0)
/// instead of taking the next clients' data and dropping it.
#[test]
fn keep_open_ends_when_its_output_is_closed() {
    // The reading end is gone before the first client's data arrives.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let (mut server, port, _first) =
        keep_open_with_one_client(writer.into(), b"nobody reads this\n");
    assert_eq!(server.wait_exit(), 0, "{}", server.stderr.text());
    // Nothing listens any more: a second client is refused, not silently swallowed.
    assert!(TcpStream::connect(format!("127.0.0.1:{port}")).is_err());
}

/// `tcp listen -k` fed from a pipe: the script's lines, its quit word included, are for the
/// first client, however early they were written (at a terminal, the quit word typed between
/// clients ends the listener at once; see the terminal tests).
#[test]
fn keep_open_gives_piped_input_and_its_quit_word_to_the_client() {
    let mut server = Proc::wirechat(&["tcp", "listen", "127.0.0.1:0", "-k", "--quit", "end"]);
    let port = server.port();
    server.send(b"hello\nend\n");
    server.close_stdin();
    let mut first = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    let mut got = Vec::new();
    first.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello\nend\n");
    assert_eq!(server.wait_exit(), 0, "{}", server.stderr.text());
    let err = server.stderr.text();
    assert!(err.contains("sent \"end\""), "{err}");
}

/// `tcp listen -k` whose output cannot be written (a full disk) ends with the error: every
/// later client's data would be lost the same way.
#[test]
fn keep_open_ends_when_its_output_fails() {
    let Some(full) = crate::util::dev_full() else {
        return;
    };
    let (mut server, _, _first) = keep_open_with_one_client(full.into(), b"lost\n");
    assert_eq!(server.wait_exit(), 1, "{}", server.stderr.text());
    let err = server.stderr.text();
    assert!(
        err.contains("error: writing output: no space left on device"),
        "{err}"
    );
}

/// Listening without a host takes both IPv4 and IPv6 clients; --keep-open serves one after
/// another, and a line typed half before a client leaves is finished for the next one.
#[test]
fn all_interfaces_and_keep_open() {
    let mut server = Proc::wirechat(&["tcp", "listen", "0", "-k", "--crlf"]);
    let port = server.port();
    let mut first = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    server.stderr.wait_text("connection from 127.0.0.1:");
    server.send(b"A\nB");
    let mut got = [0u8; 3];
    first.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"A\r\n");
    first.write_all(b"client 0\n").unwrap();
    server.stdout.wait_text("client 0\n");
    drop(first);
    server.stderr.wait_text("closed:");
    let hosts: &[&str] = if TcpListener::bind("[::1]:0").is_ok() {
        &["127.0.0.1", "[::1]"]
    } else {
        &["127.0.0.1"]
    };
    for (i, host) in hosts.iter().enumerate() {
        let mut c = TcpStream::connect(format!("{host}:{port}")).unwrap();
        if i == 0 {
            server.send(b"C\n");
            let mut got = [0u8; 4];
            c.read_exact(&mut got).unwrap();
            assert_eq!(
                &got, b"BC\r\n",
                "the half line B was kept for the next client"
            );
        }
        c.write_all(format!("client {host}\n").as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        server.stdout.wait_text(&format!("client {host}\n"));
    }
}

/// A peer's urgent (MSG_OOB) byte must not stall the pass-through or lose what follows it.
#[test]
fn urgent_byte_does_not_stall_the_pass_through() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr]);
    let mut s = crate::util::accept(&listener);
    s.write_all(b"abc\n").unwrap();
    client.stdout.wait_text("abc\n");
    socket2::SockRef::from(&s).send_out_of_band(b"X").unwrap();
    s.write_all(b"def\n").unwrap();
    client.stdout.wait_text("def\n");
    drop(s);
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0);
}

/// Piped lines reach the peer when they are written, not held back (no corking).
#[test]
fn piped_lines_are_not_held_back() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr]);
    let mut s = crate::util::accept(&listener);
    for line in [&b"one\n"[..], b"two\n"] {
        client.send(line);
        let started = std::time::Instant::now();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, line);
        // Corked sends wait about 200 ms for more; an uncorked one arrives at once.
        assert!(
            started.elapsed() < std::time::Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }
}

/// A huge idle timeout is no timeout, not a crash; zero is refused.
#[test]
fn extreme_idle_timeouts() {
    // Beyond what a Duration holds too (1e30, inf): as good as none.
    for huge in ["1e19", "1e30", "inf"] {
        let l = Proc::wirechat(&["udp", "listen", "127.0.0.1:0", "-w", huge]);
        let addr = l.listening();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"still alive", addr).unwrap();
        l.stdout.wait_text("still alive\n");
    }
    let (mut server, port) = {
        let p = Proc::wirechat(&["tcp", "listen", "127.0.0.1:0", "-w", "1e30"]);
        let port = p.port();
        (p, port)
    };
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"alive too\n").unwrap();
    server.stdout.wait_text("alive too\n");
    drop(c);
    server.close_stdin();
    assert_eq!(server.wait_exit(), 0, "{}", server.stderr.text());
    let out = crate::util::wirechat()
        .args(["udp", "listen", "127.0.0.1:0", "-w", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Idle timeout ends a quiet conversation.
#[test]
fn idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "--idle-timeout", "0.3"]);
    let _s = crate::util::accept(&listener);
    assert_eq!(client.wait_exit(), 0);
    assert!(client.stderr.text().contains("idle for 0.3 s"));
}

fn port_of(line: &str) -> String {
    line.split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())
        .unwrap()
        .to_string()
}

/// OpenBSD nc as the client of `wirechat tcp listen`, and as the server for `tcp connect`.
#[test]
fn interop_with_nc() {
    if !have("nc") {
        return;
    }
    let mut server = Proc::wirechat(&["tcp", "listen", "127.0.0.1:0"]);
    let port = server.port().to_string();
    let mut cmd = Command::new("nc");
    cmd.args(["-N", "127.0.0.1", &port]);
    let mut nc = Proc::spawn(cmd);
    nc.send(b"from nc\n");
    server.stdout.wait_text("from nc\n");
    server.send(b"from wirechat\n");
    nc.stdout.wait_text("from wirechat\n");
    nc.close_stdin();
    server.close_stdin();
    assert_eq!(server.wait_exit(), 0);

    let mut cmd = Command::new("nc");
    cmd.args(["-v", "-l", "127.0.0.1", "0"]);
    let mut nc = Proc::spawn(cmd);
    let port = port_of(&nc.stderr.wait_text("Listening on"));
    let mut client = Proc::wirechat(&["tcp", "connect", &format!("127.0.0.1:{port}")]);
    client.send(b"hello nc\n");
    nc.stdout.wait_text("hello nc\n");
    nc.send(b"hello wirechat\n");
    client.stdout.wait_text("hello wirechat\n");
    drop(nc);
    client.close_stdin();
    assert_eq!(client.wait_exit(), 0);
}

/// ncat as a client (with --send-only half-close) and socat as a server.
#[test]
fn interop_with_ncat_and_socat() {
    if !have("ncat") || !have("socat") {
        return;
    }
    let mut server = Proc::wirechat(&["tcp", "listen", "127.0.0.1:0", "-e", "gbk"]);
    let port = server.port().to_string();
    let mut cmd = Command::new("ncat");
    cmd.args(["127.0.0.1", &port]);
    let mut ncat = Proc::spawn(cmd);
    ncat.send(&gbk("来自 ncat\n"));
    server.stdout.wait_text("来自 ncat\n");
    server.send("来自 wirechat\n".as_bytes());
    ncat.stdout
        .wait_for("gbk reply", |b| b == gbk("来自 wirechat\n"));
    ncat.close_stdin();
    server.close_stdin();
    assert_eq!(server.wait_exit(), 0, "{}", server.stderr.text());

    let mut cmd = Command::new("socat");
    cmd.args(["-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1", "STDIO"]);
    let mut socat = Proc::spawn(cmd);
    let port = port_of(&socat.stderr.wait_text("listening on"));
    let data = payload(1 << 20);
    let mut client = Proc::wirechat(&["tcp", "connect", &format!("127.0.0.1:{port}")]);
    client.send(&data);
    client.close_stdin();
    let got = socat
        .stdout
        .wait_for("1 MiB at socat", |b| b.len() >= data.len());
    assert_eq!(sha256(&got), sha256(&data));
    socat.close_stdin();
    assert_eq!(client.wait_exit(), 0, "{}", client.stderr.text());
}
