//! `wirechat room`: several kinds of client in one room (raw sockets, `wirechat tcp connect`,
//! python3), every command, encodings, each limit, slow and killed clients, and shutdown.

use crate::util::{DEADLINE, Proc, have, python};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

/// Starts a room on an ephemeral loopback port with `extra` options; returns it and its port.
fn room(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["room", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = Proc::wirechat(&args);
    let port = p.port();
    (p, port)
}

/// A line-based client on a raw socket, reading with a deadline.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    nick: String,
}

impl Client {
    /// Connects and reads the greeting, so the client is a member when this returns.
    fn join(port: u16) -> Client {
        Client::join_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    fn join_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut c = Client {
            stream,
            reader,
            nick: String::new(),
        };
        let greeting = c.wait("you are ");
        let after = &greeting[greeting.find("you are ").unwrap() + 8..];
        c.nick = after.split_whitespace().next().unwrap().to_string();
        c
    }

    /// Joins and takes the nickname `nick`.
    fn named(port: u16, nick: &str) -> Client {
        let mut c = Client::join(port);
        c.send(&format!("/nick {nick}"));
        c.wait(&format!("is now known as {nick}"));
        c.nick = nick.to_string();
        c
    }

    fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next line as bytes, without the newline; panics at EOF or the deadline.
    fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => panic!("{}: connection closed while waiting for a line", self.nick),
            Ok(_) => {}
            Err(e) => panic!("{}: no line by the deadline: {e}", self.nick),
        }
        assert_eq!(line.pop(), Some(b'\n'), "unterminated line {line:?}");
        line
    }

    fn line(&mut self) -> String {
        String::from_utf8_lossy(&self.raw_line()).into_owned()
    }

    /// Reads lines until one contains `needle`; returns it.
    fn wait(&mut self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while Instant::now() < end {
            let l = self.line();
            if l.contains(needle) {
                return l;
            }
            seen.push(l);
        }
        panic!("{}: no line with {needle:?}; saw {seen:?}", self.nick);
    }

    /// Reads until the server closes the connection; returns what came before.
    fn wait_closed(&mut self) -> String {
        let mut rest = Vec::new();
        loop {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return String::from_utf8_lossy(&rest).into_owned(),
                Ok(_) => rest.extend_from_slice(&buf),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return String::from_utf8_lossy(&rest).into_owned();
                }
                Err(e) => panic!("{}: not closed by the deadline: {e}", self.nick),
            }
        }
    }
}

#[test]
fn three_kinds_of_client_and_every_command() {
    if !have("python3") {
        return;
    }
    let (mut server, port) = room(&[]);
    let mut alice = Client::named(port, "alice");

    // `wirechat tcp connect` as a client.
    let mut wc = Proc::wirechat(&["tcp", "connect", &format!("127.0.0.1:{port}")]);
    wc.stdout.wait_text("you are guest-");
    wc.send(b"/nick wire\n");
    alice.wait("is now known as wire");

    // A python3 socket client, as the tutorial's readers write them.
    let mut py = python(
        "import socket,sys,threading\n\
         s=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n\
         def rx():\n\
         \x20   while True:\n\
         \x20       d=s.recv(4096)\n\
         \x20       if not d: break\n\
         \x20       sys.stdout.write(d.decode()); sys.stdout.flush()\n\
         threading.Thread(target=rx,daemon=True).start()\n\
         for line in sys.stdin:\n\
         \x20   s.sendall(line.encode())\n\
         s.close()\n",
        &[&port.to_string()],
    );
    py.stdout.wait_text("you are guest-");
    py.send(b"/nick py\n");
    alice.wait("is now known as py");

    alice.send("hello from alice");
    py.stdout.wait_text("<alice> hello from alice\n");
    wc.stdout.wait_text("<alice> hello from alice\n");
    wc.send(b"hello from wire\n");
    assert_eq!(alice.wait("<wire>"), "<wire> hello from wire");
    py.stdout.wait_text("<wire> hello from wire\n");
    py.send(b"hello from py\n");
    assert_eq!(alice.wait("<py>"), "<py> hello from py");
    wc.stdout.wait_text("<py> hello from py\n");

    // The server's keyboard.
    server.send(b"hello from the server\n");
    assert_eq!(alice.wait("<server>"), "<server> hello from the server");
    py.stdout.wait_text("<server> hello from the server\n");
    // The end of the server's stdin stops only that: the room goes on (the rest of this test).
    server.close_stdin();

    alice.send("/who");
    assert_eq!(alice.wait("online"), "* 3 online: alice, py, wire");
    alice.send("/msg PY just for you");
    assert_eq!(alice.line(), "-> *py* just for you");
    py.stdout.wait_text("*alice* just for you\n");
    assert!(!wc.stdout.text().contains("just for you"));
    alice.send("/msg ALICE note to self");
    assert_eq!(alice.line(), "! that is you: /msg is for someone else");
    alice.send("/msg nobody hi");
    assert!(
        alice
            .line()
            .starts_with("! no one here is called \"nobody\"")
    );
    // The name is escaped once, as everything from a client is.
    alice.send("/msg no\x1bbody\\ hi");
    assert_eq!(
        alice.line(),
        "! no one here is called \"no\\x1bbody\\\" (/who lists who is)"
    );
    alice.send("/msg");
    assert_eq!(alice.line(), "! usage: /msg NICK text");
    alice.send("/me waves");
    py.stdout.wait_text("* alice waves\n");
    alice.send("/frobnicate");
    assert_eq!(
        alice.line(),
        "! unknown command /frobnicate (/help lists the commands)"
    );
    alice.send("/help");
    assert_eq!(alice.line(), "* commands:");
    assert!(alice.wait("/quit").contains("leave the room"));
    alice.send("//slash");
    py.stdout.wait_text("<alice> /slash\n");
    alice.send("/encoding");
    assert_eq!(
        alice.wait("encoding"),
        "* your encoding is UTF-8 (/encoding LABEL changes it)"
    );
    alice.send("/encoding klingon");
    assert!(alice.line().starts_with("! unknown encoding \"klingon\""));

    // Escape sequences never reach another terminal.
    alice.send("\x1b[2J\x1b]0;pwned\x07red\u{202e}txt");
    let shown = py.stdout.wait_text("red\\u{202e}txt\n");
    assert!(shown.contains("<alice> \\x1b[2J\\x1b]0;pwned\\x07red\\u{202e}txt"));
    assert!(!shown.contains('\x1b'));

    py.send(b"/quit gotta go\n");
    py.stdout.wait_text("* bye\n");
    assert_eq!(alice.wait("py left"), "* py left (quit: gotta go)");
    wc.close_stdin();
    assert_eq!(alice.wait("wire left"), "* wire left (connection closed)");
    assert_eq!(wc.wait_exit(), 0);
    server.stderr.wait_text("py left (quit: gotta go)");
}

#[test]
fn gbk_and_utf8_clients_read_each_other() {
    let (_server, port) = room(&[]);
    let mut utf = Client::named(port, "utf");
    let mut gbk = Client::named(port, "gbk");
    gbk.send("/encoding gbk");
    assert_eq!(gbk.line(), "* your encoding is now GBK");
    // 你好 in GBK on the wire, 你好 in UTF-8 for the other.
    gbk.send_bytes(b"\xc4\xe3\xba\xc3\n");
    assert_eq!(utf.wait("<gbk>"), "<gbk> 你好");
    utf.send("世界 /nick 张三");
    assert_eq!(
        gbk.raw_line(),
        b"<utf> \xca\xc0\xbd\xe7 /nick \xd5\xc5\xc8\xfd"
    );
    // Nicknames travel through the encoding too.
    gbk.send_bytes(b"/nick \xd5\xc5\xc8\xfd\n");
    assert_eq!(utf.wait("known as"), "* gbk is now known as 张三");
    // A character GBK cannot carry arrives escaped, not as a '?' that a real '?' would match.
    utf.send("smile 😀?");
    assert_eq!(gbk.raw_line(), b"* gbk is now known as \xd5\xc5\xc8\xfd");
    assert_eq!(gbk.raw_line(), b"<utf> smile \\u{1f600}?");
}

/// `--encoding gbk`: the tutorial's GBK clients need no /encoding, and a joiner's history comes
/// in GBK too; a UTF-8 client switches with /encoding.
#[test]
fn a_gbk_room_speaks_gbk_from_the_greeting_on() {
    let (_server, port) = room(&["--encoding", "gbk", "--history", "2"]);
    let mut a = Client::named(port, "a");
    a.send_bytes(b"\xc4\xe3\xba\xc3\n");
    a.send("/who");
    a.wait("online");
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut b = Client::join_stream(stream);
    assert_eq!(b.raw_line(), b"<a> \xc4\xe3\xba\xc3");
    b.send("/encoding utf-8");
    assert_eq!(b.line(), "* your encoding is now UTF-8");
    a.send_bytes(b"\xca\xc0\xbd\xe7\n");
    assert_eq!(b.wait("<a>"), "<a> 世界");
}

#[test]
fn nickname_rules() {
    let (_server, port) = room(&[]);
    let mut a = Client::named(port, "Bob");
    let mut b = Client::join(port);
    for (nick, why) in [
        ("bob", "bob is taken"),
        (&"x".repeat(33), "33 characters is too long (at most 32)"),
        ("server", "reserved"),
        ("a\x07b", "not allowed"),
        ("server\u{fe0f}", "not allowed"),
        // Look-alikes: a Cyrillic о for an o, in a name of either case.
        (
            "b\u{43e}b",
            "b\u{43e}b looks too much like Bob, who is here",
        ),
        ("B\u{43e}b", "looks too much like Bob"),
        ("\u{455}erver", "looks like \"server\", which is reserved"),
    ] {
        b.send(&format!("/nick {nick}"));
        let l = b.line();
        assert!(l.starts_with("! cannot use that nickname:"), "{l}");
        assert!(l.contains(why), "{nick:?}: {l}");
    }
    b.send("/nick a b");
    assert!(b.line().contains("not allowed"));
    b.send(&format!("/nick {}", "é".repeat(32)));
    assert!(a.wait("known as").ends_with(&"é".repeat(32)));
    // Only the case changes: allowed for yourself.
    a.send("/nick BOB");
    assert_eq!(a.wait("known as"), "* Bob is now known as BOB");
    // No change at all is not announced.
    a.send("/nick BOB");
    assert_eq!(a.line(), "! cannot use that nickname: you are already BOB");
    // The same name composed or decomposed is the same name.
    let mut c = Client::named(port, "\u{e9}mile");
    let mut d = Client::join(port);
    d.send("/nick e\u{301}mile");
    assert!(d.line().contains("e\u{301}mile is taken"));
    // A private line goes to the name typed, never to a look-alike of it.
    d.send("/msg BOB hi");
    assert_eq!(d.line(), "-> *BOB* hi");
    assert_eq!(a.wait("hi"), format!("*{}* hi", d.nick));
    d.send("/msg B0B psst");
    assert_eq!(
        d.line(),
        "! no one here is called \"B0B\"; BOB only looks like it (/who lists who is)"
    );
    d.send("/msg e\u{301}MILE hello");
    assert_eq!(d.line(), "-> *\u{e9}mile* hello");
    assert_eq!(c.wait("hello"), format!("*{}* hello", d.nick));
    // /me cannot fake a leave or a new name, even with a zero-width space or a capital I.
    for fake in [
        "left (quit)",
        "\u{200b}left (quit)",
        "Ieft (quit)",
        "is now known as BOB",
    ] {
        d.send(&format!("/me {fake}"));
        assert_eq!(
            d.line(),
            "! /me cannot make a line that reads like one of the room's notices"
        );
    }
    d.send("/me waves");
    assert_eq!(a.wait("waves"), format!("* {} waves", d.nick));
}

#[test]
fn long_lines_are_refused_and_memory_stays_bounded() {
    let (server, port) = room(&["--max-line", "64", "--rate", "0"]);
    let mut a = Client::join(port);
    let mut b = Client::join(port);
    a.send(&"y".repeat(65));
    assert_eq!(
        a.wait("too long"),
        "! line too long (more than 64 bytes): not sent"
    );
    a.send(&"z".repeat(64));
    assert_eq!(
        b.wait(&a.nick.clone()),
        format!("<{}> {}", a.nick, "z".repeat(64))
    );
    // The limit is the same with CRLF (telnet, Windows), whether or not the CR comes alone.
    a.send_bytes(format!("{}\r\n", "c".repeat(65)).as_bytes());
    assert_eq!(
        a.wait("too long"),
        "! line too long (more than 64 bytes): not sent"
    );
    a.send_bytes(format!("{}\r\n", "w".repeat(64)).as_bytes());
    assert_eq!(b.wait("www"), format!("<{}> {}", a.nick, "w".repeat(64)));
    a.send_bytes(format!("{}\r", "v".repeat(64)).as_bytes());
    a.send_bytes(b"\n");
    assert_eq!(b.wait("vvv"), format!("<{}> {}", a.nick, "v".repeat(64)));
    // A bare CR ends a line too (serial terminals, some network assistants).
    a.send_bytes(b"cr one\rcr two\r");
    assert_eq!(b.wait("cr one"), format!("<{}> cr one", a.nick));
    assert_eq!(b.line(), format!("<{}> cr two", a.nick));
    // 64 MiB without a newline: refused once, and the server's memory does not follow.
    let chunk = vec![b'q'; 1 << 20];
    for _ in 0..64 {
        a.send_bytes(&chunk);
    }
    a.send("after");
    assert_eq!(a.line(), "! line too long (more than 64 bytes): not sent");
    a.send("fine again");
    assert_eq!(b.wait("fine"), format!("<{}> fine again", a.nick));
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()));
    if let Ok(status) = status {
        let hwm: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmHWM");
        assert!(
            hwm < 32 * 1024,
            "server peak memory {hwm} kB after a 64 MiB line"
        );
    }
}

#[test]
fn rate_limit_holds_lines_back_without_losing_them() {
    let (_server, port) = room(&["--rate", "20", "--burst", "5"]);
    let mut a = Client::join(port);
    let mut b = Client::join(port);
    let start = Instant::now();
    let burst: String = (0..25).map(|i| format!("r{i}\n")).collect();
    a.send_bytes(burst.as_bytes());
    assert!(
        a.wait("slow down")
            .starts_with("! slow down: at most 20 lines a second (bursts of 5)")
    );
    for i in 0..25 {
        assert_eq!(b.wait("<"), format!("<{}> r{i}", a.nick));
    }
    // 5 at once, then 20 at 20 a second.
    let took = start.elapsed().as_secs_f64();
    assert!(took > 0.9, "25 lines went through in {took:.2} s");
}

#[test]
fn idle_clients_are_disconnected() {
    let (server, port) = room(&["--idle-timeout", "0.5"]);
    let start = Instant::now();
    let mut idle = Client::join(port);
    let nick = idle.nick.clone();
    assert!(idle.wait_closed().contains("! idle for 0.5 s: closing\n"));
    assert!(start.elapsed().as_secs_f64() >= 0.5);
    server
        .stderr
        .wait_text(&format!("{nick} left (idle for 0.5 s)"));
}

#[test]
fn a_full_room_says_so() {
    let (server, port) = room(&["--max-clients", "2"]);
    let mut a = Client::join(port);
    let _b = Client::join(port);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut c, &mut text).unwrap();
    assert_eq!(text, "! room full (2 clients); try again later\n");
    server.stderr.wait_text("room full (2 clients)");
    // When someone leaves there is room again.
    a.send("/quit");
    a.wait_closed();
    // The slot frees when a's task ends, just after its socket closed: retry until then.
    let end = Instant::now() + DEADLINE;
    loop {
        let mut d = TcpStream::connect(("127.0.0.1", port)).unwrap();
        d.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut first = String::new();
        BufReader::new(&mut d).read_line(&mut first).unwrap();
        if first.contains("you are guest-") {
            break;
        }
        assert!(
            first.starts_with("! room full") && Instant::now() < end,
            "{first}"
        );
    }
}

/// A client named `slow` with a small receive buffer, which the test then does not read.
fn slow_client(port: u16) -> Client {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut c = Client::join_stream(s.into());
    c.send("/nick slow");
    c.wait("known as slow");
    c
}

/// `--queue-bytes` cuts off a client that does not read once the room holds that many bytes
/// for it, however many lines `--queue` would allow: 4 MB of lines against a 64 KiB budget.
#[test]
fn queue_bytes_bounds_what_a_non_reader_may_fall_behind() {
    let (server, port) = room(&[
        "--rate",
        "0",
        "--queue",
        "1000000",
        "--queue-bytes",
        "65536",
    ]);
    let slow = slow_client(port);
    let mut sender = Client::named(port, "sender");
    let pad = "p".repeat(190);
    let mut batch = String::new();
    for i in 0..20_000 {
        batch.push_str(&format!("{i}-{pad}\n"));
        if batch.len() > 32 << 10 {
            sender.send_bytes(batch.as_bytes());
            batch.clear();
        }
    }
    sender.send_bytes(batch.as_bytes());
    server.stderr.wait_text("slow left (send queue full)");
    drop(slow);
}

/// Two senders push 20,000 lines each while a third client reads everything and a fourth
/// never reads: the reader gets every line, whole and in order; the fourth is cut off.
#[test]
fn a_client_that_never_reads_is_cut_off_and_nobody_else_loses_anything() {
    const LINES: usize = 20_000;
    let (server, port) = room(&["--rate", "0"]);
    let mut checker = Client::named(port, "checker");
    let slow = slow_client(port);
    checker.wait("known as slow");
    // As soon as the server says it cut the slow client off, that client reads again: the
    // reason comes last.
    let slow_tail = {
        let mut rx = slow.stream.try_clone().unwrap();
        let events = server.stderr.clone();
        std::thread::spawn(move || {
            events.wait_text("slow left (send queue full)");
            let mut all = Vec::new();
            let _ = std::io::Read::read_to_end(&mut rx, &mut all);
            all
        })
    };
    let pad = "p".repeat(180);
    let clients = [Client::named(port, "s1"), Client::named(port, "s2")];
    checker.wait("known as s2");
    let senders: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let nick = c.nick.clone();
            let pad = pad.clone();
            let mut rx = c.stream.try_clone().unwrap();
            // Senders also receive each other's lines: drain them so they stay readers.
            let drain = std::thread::spawn(move || {
                let mut sink = [0u8; 65536];
                while matches!(std::io::Read::read(&mut rx, &mut sink), Ok(n) if n > 0) {}
            });
            std::thread::spawn(move || {
                let mut batch = String::new();
                for i in 0..LINES {
                    batch.push_str(&format!("{nick}-{i}-{pad}\n"));
                    if batch.len() > 32 << 10 {
                        c.send_bytes(batch.as_bytes());
                        batch.clear();
                    }
                }
                c.send_bytes(batch.as_bytes());
                (c, drain)
            })
        })
        .collect();
    let mut next = [0usize; 2];
    let mut cut_off = false;
    while next != [LINES, LINES] {
        let l = checker.line();
        if l == "* slow left (send queue full)" {
            cut_off = true;
            continue;
        }
        let (who, rest) = l
            .strip_prefix("<s1> s1-")
            .map(|r| (0, r))
            .or_else(|| l.strip_prefix("<s2> s2-").map(|r| (1, r)))
            .unwrap_or_else(|| panic!("unexpected line {l:?} after {next:?}"));
        assert_eq!(rest, format!("{}-{pad}", next[who]), "sender s{}", who + 1);
        next[who] += 1;
    }
    assert!(cut_off, "the client that never reads was not cut off");
    server.stderr.wait_text("slow left (send queue full)");
    let tail = slow_tail.join().unwrap();
    assert!(
        tail.ends_with(b"\n! disconnected: send queue full\n"),
        "the slow client's last bytes: {:?}",
        String::from_utf8_lossy(&tail[tail.len().saturating_sub(120)..])
    );
    for s in senders {
        let (c, drain) = s.join().unwrap();
        c.stream.shutdown(Shutdown::Both).unwrap();
        drain.join().unwrap();
    }
    drop(slow);
}

#[test]
fn a_client_killed_mid_line() {
    let (_server, port) = room(&["--rate", "0"]);
    let mut a = Client::named(port, "a");
    // A process killed after half a line: the kernel closes its socket (FIN). The half line
    // arrives as a line of its own, never glued to someone else's.
    if have("python3") {
        let mut victim = python(
            "import socket,sys\n\
             s=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n\
             s.sendall(b'/nick victim\\nwhole line\\nhalf a li')\n\
             while True:\n\
             \x20   d=s.recv(4096)\n\
             \x20   if not d: break\n\
             \x20   sys.stdout.write(d.decode()); sys.stdout.flush()\n",
            &[&port.to_string()],
        );
        assert_eq!(a.wait("victim"), "* guest-2 is now known as victim");
        assert_eq!(a.line(), "<victim> whole line");
        // It has read all that was sent to it, so closing sends FIN rather than RST.
        victim.stdout.wait_text("known as victim");
        victim.child.kill().unwrap();
        assert_eq!(a.line(), "<victim> half a li");
        assert_eq!(a.line(), "* victim left (connection closed)");
    }

    // A connection reset right after half a line (before the pause that would make it a line):
    // the half line is dropped.
    let mut r = Client::named(port, "resetter");
    a.wait("known as resetter");
    r.send_bytes(b"never fini");
    socket2::SockRef::from(&r.stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(r);
    assert_eq!(a.line(), "* resetter left (connection reset by peer)");
    let mut b = Client::join(port);
    b.send("still whole");
    assert_eq!(a.wait("still"), format!("<{}> still whole", b.nick));
}

#[test]
fn sigterm_says_goodbye_flushes_the_log_and_exits_0() {
    let scratch = crate::util::scratch("room");
    let dir = scratch.path();
    let log = dir.join("room.log");
    let _ = std::fs::remove_file(&log);
    let log_arg = log.to_str().unwrap();
    let (mut server, port) = room(&["--log", log_arg, "--history", "2"]);
    let mut a = Client::named(port, "a");
    let mut b = Client::named(port, "b");
    a.send("one");
    a.send("two");
    a.send("three");
    b.wait("three");
    says_goodbye_on(
        &mut server,
        nix::sys::signal::Signal::SIGTERM,
        [&mut a, &mut b],
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" <a> three\n"), "{text}");
    assert!(text.ends_with(" * server shutting down\n"), "{text}");

    // The transcript survives a restart: the next room appends to it.
    let (mut server, port) = room(&["--log", log_arg, "--history", "2"]);
    let mut c = Client::named(port, "c");
    c.send("four");
    // The reply to /who comes after "four" has gone round: one reader, in order.
    c.send("/who");
    c.wait("online");
    let mut d = Client::join(port);
    // History holds this run's chat lines only.
    assert_eq!(d.line(), "<c> four");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(server.wait_exit(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" <a> three\n") && text.contains(" <c> four\n"));
    assert_eq!(text.matches("server shutting down").count(), 2);
}

/// Sends `signal` to the room: each of `clients` is told `* server shutting down` and closed,
/// and the room exits 0.
fn says_goodbye_on<const N: usize>(
    server: &mut Proc,
    signal: nix::sys::signal::Signal,
    clients: [&mut Client; N],
) {
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    for c in clients {
        assert!(c.wait_closed().ends_with("* server shutting down\n"));
    }
    assert_eq!(server.wait_exit(), 0);
}

/// SIGHUP (the terminal or ssh session went away) shuts the room down in order, like SIGTERM;
/// under `nohup`, which ignores it, the room goes on.
#[test]
fn sighup_shuts_down_in_order_unless_ignored() {
    use nix::sys::signal::{Signal, kill};
    let scratch = crate::util::scratch("hup");
    let dir = scratch.path();
    let log = dir.join("room.log");
    let (mut server, port) = room(&["--log", log.to_str().unwrap()]);
    let mut a = Client::named(port, "a");
    let mut b = Client::named(port, "b");
    a.send("before the hangup");
    b.wait("before the hangup");
    says_goodbye_on(&mut server, Signal::SIGHUP, [&mut a, &mut b]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" <a> before the hangup\n"), "{text}");
    assert!(text.ends_with(" * server shutting down\n"), "{text}");

    if !crate::util::have("nohup") {
        return;
    }
    let mut cmd = std::process::Command::new("nohup");
    cmd.arg(env!("CARGO_BIN_EXE_wirechat"))
        .args(["room", "127.0.0.1:0", "-q"]);
    let mut server = Proc::spawn(cmd);
    let port = server.port();
    let mut b = Client::named(port, "b");
    b.send("/who");
    b.wait("online");
    // Serving, so its signals are set up: SIGHUP is still ignored, with no handler of ours.
    let pid = server.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
    };
    if let (Some(ignored), Some(caught)) = (mask("SigIgn:"), mask("SigCgt:")) {
        assert_eq!((ignored & 1, caught & 1), (1, 0), "{status}");
    }
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    let _c = Client::named(port, "c");
    b.wait("is now known as c");
    assert!(server.child.try_wait().unwrap().is_none());
}

/// A transcript that reaches the file-size limit (as on a full disk) drops the lines it cannot
/// write, says so once, and goes on as soon as it can write again, with a note in the file of
/// how many lines are missing. The room is not killed by SIGXFSZ and the chat never stops.
#[test]
fn a_transcript_over_the_size_limit_resumes_with_a_count() {
    if !have("sh") || !have("prlimit") {
        return;
    }
    let scratch = crate::util::scratch("fsize");
    let dir = scratch.path();
    let log = dir.join("room.log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = std::process::Command::new("sh");
    // A soft limit of 2 blocks (1 or 2 KiB, by shell), which prlimit can raise later.
    cmd.arg("-c").arg(format!(
        "ulimit -S -f 2 && exec {} room 127.0.0.1:0 --log {}",
        env!("CARGO_BIN_EXE_wirechat"),
        log.display()
    ));
    let mut server = Proc::spawn(cmd);
    let port = server.port();
    let mut a = Client::named(port, "a");
    let mut b = Client::named(port, "b");
    for i in 0..40 {
        a.send(&format!("{i:02} {}", "x".repeat(100)));
    }
    b.wait("39 xxx");
    server
        .stderr
        .wait_text("cannot write the log: file too large; ");
    a.send("while it is full");
    b.wait("while it is full");
    let pid = server.child.id().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:"])
        .status()
        .unwrap();
    assert!(raised.success());
    server.stderr.wait_text("the log is written again; ");
    a.send("after");
    b.wait("after");
    says_goodbye_on(
        &mut server,
        nix::sys::signal::Signal::SIGTERM,
        [&mut a, &mut b],
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let note = text
        .lines()
        .find(|l| l.contains(" lines missing from the transcript here (file too large)"))
        .unwrap_or_else(|| panic!("no note of the missing lines:\n{text}"));
    let stderr = server.stderr.text();
    let missing = note.split(' ').nth(2).unwrap();
    assert!(
        stderr.contains(&format!("{missing} lines are missing from it")),
        "{note}\n{stderr}"
    );
    assert!(text.contains(" <a> 00 xxx"), "{text}");
    let after = text.split(note).nth(1).unwrap();
    // A line said while the file was full is missing, or (if it was still buffered when the
    // limit was raised) written after the note: never before it.
    assert!(
        !text.contains("while it is full") || after.contains(" <a> while it is full\n"),
        "{text}"
    );
    assert!(after.contains(" <a> after\n"), "{text}");
    assert!(after.ends_with(" * server shutting down\n"), "{text}");
    assert_eq!(
        stderr.matches("cannot write the log").count(),
        1,
        "{stderr}"
    );
}

/// When the process runs out of descriptors (a hard limit below --max-clients), the next client
/// is told so and closed, instead of hanging unanswered in the listen backlog.
#[test]
fn out_of_descriptors_is_told_not_left_hanging() {
    if !have("sh") {
        return;
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!(
        "ulimit -n 64 && exec {} room 127.0.0.1:0 --max-clients 1000",
        env!("CARGO_BIN_EXE_wirechat")
    ));
    let server = Proc::spawn(cmd);
    let port = server.port();
    let mut clients = Vec::new();
    let refused = loop {
        assert!(clients.len() < 100, "never ran out with a limit of 64");
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).expect("a first line");
        if !first.starts_with("* welcome") {
            break (first, reader);
        }
        clients.push(reader);
    };
    let (refused, mut refused_stream) = refused;
    assert_eq!(
        refused,
        "! room full (the server is out of file descriptors); try again later\n"
    );
    // Those already in are still served.
    let last = clients.len() - 1;
    clients[0].get_mut().write_all(b"still here\n").unwrap();
    let mut line = String::new();
    while !line.contains("still here") {
        line.clear();
        clients[last]
            .read_line(&mut line)
            .expect("the first client's line");
    }
    // Once some leave, the next newcomer gets in. The leaving sockets are counted out of
    // /proc, once the refused one is closed too, so no count is taken halfway.
    let Some(sockets) = open_sockets(server.child.id()) else {
        eprintln!("SKIPPED in part: no /proc to count the leavers' sockets");
        return;
    };
    while refused_stream
        .read_line(&mut line)
        .expect("the refused one's end")
        > 0
    {}
    let full = sockets();
    drop(clients.drain(..3));
    let deadline = std::time::Instant::now() + DEADLINE;
    while sockets() > full.saturating_sub(3) {
        assert!(
            std::time::Instant::now() < deadline,
            "the leavers' sockets stay open"
        );
        std::thread::yield_now();
    }
    let mut newcomer = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    newcomer.get_ref().set_read_timeout(Some(DEADLINE)).unwrap();
    line.clear();
    newcomer.read_line(&mut line).expect("a first line");
    assert!(line.starts_with("* welcome"), "{line}");
}

/// A counter of the sockets process `pid` holds, if /proc shows them.
fn open_sockets(pid: u32) -> Option<impl Fn() -> usize> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir).ok()?;
    Some(move || {
        std::fs::read_dir(&dir)
            .map(|fds| {
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    })
}

#[test]
fn history_is_sent_to_joiners() {
    let (_server, port) = room(&["--history", "2"]);
    let mut a = Client::named(port, "a");
    for t in ["one", "two", "three"] {
        a.send(t);
    }
    a.send("/who");
    a.wait("online");
    let b = TcpStream::connect(("127.0.0.1", port)).unwrap();
    b.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut r = BufReader::new(b.try_clone().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        lines.push(l);
    }
    assert!(lines[0].starts_with("* welcome to the room, you are guest-2 (2 online"));
    assert_eq!(lines[1..], ["<a> two\n", "<a> three\n"]);
    b.shutdown(Shutdown::Both).unwrap();
}

#[test]
fn start_up_says_when_the_open_files_limit_is_below_max_clients() {
    // Above the kernel's nr_open ceiling, so no hard limit can be high enough.
    let (server, port) = room(&["--max-clients", "2000000"]);
    server.stderr.wait_text("open-files limit is");
    assert!(server.stderr.text().contains("--max-clients 2000000"));
    // The room still works within the limit it has.
    let mut a = Client::join(port);
    let mut b = Client::join(port);
    a.send("fine");
    assert_eq!(b.wait("fine"), format!("<{}> fine", a.nick));
}

/// A stderr that nobody reads (a pager left open, a terminal stopped with Ctrl-S) must not stop
/// the room: chat goes on, and Ctrl-C still ends it.
#[test]
fn a_stderr_nobody_reads_does_not_stop_the_room() {
    /// The server, killed on drop; its stderr is read up to the "listening on" line only.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        crate::util::wirechat()
            .args(["room", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Kept open and never read again, so the pipe fills.
    let mut stderr = BufReader::new(server.0.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let port = crate::util::listening_addr(&first).port();
    // Every join and leave is an event line: 2,000 of them are far more than a pipe holds.
    for _ in 0..1000 {
        drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    let mut a = Client::named(port, "a");
    let mut b = Client::named(port, "b");
    a.send("still here");
    assert_eq!(b.wait("still here"), "<a> still here");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(a.wait_closed().ends_with("* server shutting down\n"));
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the room did not exit after Ctrl-C");
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling an exit
    };
    assert_eq!(status.code(), Some(0));
    drop(stderr);
}

/// A burst of private lines to one member that is reading slows their senders down; it does
/// not get the reader cut off.
#[test]
fn a_burst_of_private_lines_does_not_cut_off_a_reader() {
    let (_server, port) = room(&[]);
    let mut victim = Client::named(port, "victim");
    let mut senders: Vec<Client> = (0..8).map(|_| Client::join(port)).collect();
    let text = "a".repeat(4000);
    // Each sender's whole burst in one write: within the default burst of 40 lines.
    let burst = format!("/msg victim {text}\n").repeat(40);
    for s in &mut senders {
        s.send_bytes(burst.as_bytes());
    }
    let mut got = 0;
    while got < 8 * 40 {
        let line = victim.line();
        if line.starts_with("* ") && line.ends_with(" joined") {
            continue;
        }
        assert!(
            line.starts_with("*guest-") && line.ends_with(&text),
            "after {got} private lines: {}",
            &line[..line.len().min(80)]
        );
        got += 1;
    }
}

/// What PuTTY (connection type Telnet) sends as soon as it connects: WILL NAWS, TSPEED,
/// TTYPE and NEW-ENVIRON, DO ECHO, WILL SGA, DO SGA.
const PUTTY: &[u8] =
    b"\xff\xfb\x1f\xff\xfb\x20\xff\xfb\x18\xff\xfb\x27\xff\xfd\x01\xff\xfb\x03\xff\xfd\x03";

/// Telnet commands reach nobody and break no command; `IAC IAC` is one 0xFF, and a 0xFF before
/// a byte below 0xF0 is the byte it is ('ÿ' in latin1).
#[test]
fn telnet_commands_are_taken_out_of_what_a_client_sends() {
    let (_server, port) = room(&[]);
    let mut b = Client::named(port, "bob");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Like PuTTY, before it has read anything.
    stream.write_all(PUTTY).unwrap();
    let mut a = Client::join_stream(stream);
    let guest = a.nick.clone();
    a.send_bytes(b"/nick alice\r\n");
    assert_eq!(
        b.wait("known as"),
        format!("* {guest} is now known as alice")
    );
    a.send_bytes(b"hello everyone\r\n");
    assert_eq!(b.line(), "<alice> hello everyone");
    // netkit telnet's Ctrl-C in line mode (IAC IP, IAC DO TIMING-MARK), then a command.
    a.send_bytes(b"\xff\xf4\xff\xfd\x06/me waves\r\n");
    assert_eq!(b.line(), "* alice waves");
    // A terminal type in a subnegotiation, in the middle of a line.
    a.send_bytes(b"one \xff\xfa\x18\x00xterm\xff\xf0two\r\n");
    assert_eq!(b.line(), "<alice> one two");
    // In a single-byte code page 0xF0-0xFF are letters, so nothing is taken out: windows-1252
    // ÿ, windows-1251 я before р-ю (я+с read as IAC SB), KOI8-R capitals.
    a.send("/encoding latin1");
    a.wait("encoding is now");
    a.send_bytes(b"\xff\xff \xffa \xff\r\n");
    assert_eq!(b.line(), "<alice> ÿÿ ÿa ÿ");
    a.send("/encoding windows-1251");
    a.wait("encoding is now");
    let (cp1251, _, _) = encoding_rs::WINDOWS_1251.encode("пять, мясо, объясните, я ухожу\r\n");
    a.send_bytes(&cp1251);
    assert_eq!(b.line(), "<alice> пять, мясо, объясните, я ухожу");
    a.send("/encoding koi8-r");
    a.wait("encoding is now");
    let (koi8, _, _) = encoding_rs::KOI8_R.encode("ОБЪЯВЛЕНИЕ\r\n");
    a.send_bytes(&koi8);
    assert_eq!(b.line(), "<alice> ОБЪЯВЛЕНИЕ");
    // The switch and the first text in the new encoding in one read, as a script sends them:
    // the text is taken in the encoding its line comes after.
    a.send("/encoding utf-8");
    a.wait("encoding is now");
    let (text, _, _) = encoding_rs::WINDOWS_1251.encode("мясо ячейка\n");
    a.send_bytes(&[&b"/encoding windows-1251\n"[..], &text].concat());
    assert_eq!(b.line(), "<alice> мясо ячейка");
}

/// A telnet command split between two reads is taken out all the same, wherever the split.
#[test]
fn a_telnet_command_split_between_two_reads_is_taken_out() {
    let (_server, port) = room(&["--rate", "0"]);
    let mut b = Client::named(port, "bob");
    let mut a = Client::named(port, "alice");
    b.wait("known as alice");
    let commands = b"\xff\xfb\x1f\xff\xfa\x18\x00xterm\xff\xff\xff\xf0\xff\xf4\xff\xfd\x06";
    for k in 1..commands.len() {
        // The reply to /who shows that the server has read the first part before the rest is
        // sent.
        a.send_bytes(&[&b"/who\r\n"[..], &commands[..k]].concat());
        a.wait("online");
        a.send_bytes(&[&commands[k..], format!("split at {k}\r\n").as_bytes()].concat());
        assert_eq!(b.line(), format!("<alice> split at {k}"));
    }
}

/// A message sent without a line end (a GUI network assistant, the tutorial's
/// `s.send("hello".encode("gbk"))`) reaches the others by itself after a short pause, without
/// waiting for more bytes, and is never glued to the next one.
#[test]
fn a_message_without_a_line_end_is_a_line_after_a_pause() {
    // Tokens for exactly the five lines below and none to spare: an empty line made of the
    // line end that follows a message taken at a pause would hold back the last one.
    let (_server, port) = room(&["--rate", "0.001", "--burst", "5"]);
    let mut a = Client::join(port);
    let mut b = Client::join(port);
    a.wait(&format!("{} joined", b.nick));
    let nick = a.nick.clone();
    a.send_bytes(b"hello");
    assert_eq!(b.wait(&format!("<{nick}>")), format!("<{nick}> hello"));
    a.send_bytes(b"how are you");
    assert_eq!(b.line(), format!("<{nick}> how are you"));
    // A line end after such a message ends it: it makes no line of its own (which would take
    // a token).
    a.send_bytes(b"\r\n");
    a.send("/encoding gbk");
    a.wait("encoding is now");
    a.send_bytes(&crate::util::gbk("你好"));
    assert_eq!(b.line(), format!("<{nick}> 你好"));
    // Commands too.
    a.send_bytes(b"/nick anna");
    assert_eq!(b.line(), format!("* {nick} is now known as anna"));
}

/// The idle timeout still closes a client that left a line unfinished, and that line is
/// delivered, not lost: taken at the pause (a timeout of 1 s) or as the client leaves (0.3 s,
/// shorter than the pause).
#[test]
fn an_unfinished_line_is_delivered_and_the_idle_timeout_still_closes() {
    let scratch = crate::util::scratch("pause");
    let dir = scratch.path();
    let log = dir.join("room.log");
    for secs in ["1", "0.3"] {
        let _ = std::fs::remove_file(&log);
        let (mut server, port) = room(&["--idle-timeout", secs, "--log", log.to_str().unwrap()]);
        let mut a = Client::join(port);
        a.send_bytes(b"almost");
        let idle = format!("idle for {secs} s");
        assert!(a.wait_closed().ends_with(&format!("! {idle}: closing\n")));
        server
            .stderr
            .wait_text(&format!("{} left ({idle})", a.nick));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert_eq!(server.wait_exit(), 0);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!(" <{}> almost\n", a.nick)),
            "{secs}: {text}"
        );
    }
}

/// An idle timeout too long to count (`inf`, `1e30`) is none: it panicked in every client's
/// task, so that no one got so much as a greeting.
#[test]
fn an_idle_timeout_too_long_to_count_is_none() {
    for secs in ["inf", "1e30"] {
        let (_server, port) = room(&["--idle-timeout", secs]);
        let mut a = Client::named(port, "a");
        let mut b = Client::named(port, "b");
        a.send("still here");
        b.wait("<a> still here");
    }
}

/// A directory of this test's own (`tag`, removed when dropped) holding a FIFO, and the FIFO's
/// path.
fn temp_fifo(tag: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = crate::util::scratch(tag);
    let fifo = dir.path().join("room.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    (dir, fifo)
}

/// A `--log` that does not keep up (a FIFO whose reader never reads) never stops the room:
/// lines go round, a newcomer is greeted, and SIGTERM still ends it, with status 0, within a
/// few seconds, saying how many lines did not reach the transcript.
#[test]
fn a_log_nobody_reads_does_not_stop_the_room() {
    use std::os::unix::fs::OpenOptionsExt;
    let (_dir, fifo) = temp_fifo("fifo");
    // Its reader: open, so the room can open the FIFO to write, and never read.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&fifo)
        .unwrap();
    let (mut server, port) = room(&["--log", fifo.to_str().unwrap(), "--rate", "0"]);
    let mut a = Client::named(port, "a");
    let mut b = Client::named(port, "b");
    // A room that stops reading must fail the test, not hang it.
    a.stream.set_write_timeout(Some(DEADLINE)).unwrap();
    // 2 MB of transcript: far more than the pipe and the transcript's queue hold.
    let text = "y".repeat(1000);
    for i in 0..2000 {
        a.send(&format!("{i} {text}"));
    }
    assert_eq!(b.wait("<a> 1999 "), format!("<a> 1999 {text}"));
    server
        .stderr
        .wait_text("the log is not being written fast enough");
    let mut c = Client::join(port);
    c.send("still here");
    assert_eq!(b.wait("still here"), format!("<{}> still here", c.nick));
    let start = Instant::now();
    says_goodbye_on(
        &mut server,
        nix::sys::signal::Signal::SIGTERM,
        [&mut a, &mut b, &mut c],
    );
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    let stderr = server.stderr.text();
    assert!(
        stderr.contains("so it is left unfinished; ") && stderr.contains(" did not reach it"),
        "{stderr}"
    );
    drop(reader);
}

/// A `--log` FIFO that nobody has opened for reading yet does not hold up the room (opening it
/// to write would wait for a reader): the room listens and chats, says the log waits for a
/// reader, and the reader that comes later gets the lines said before it came.
#[test]
fn a_log_fifo_without_a_reader_yet_does_not_hold_up_the_room() {
    let (_dir, fifo) = temp_fifo("fifo-late");
    let (mut server, port) = room(&["--log", fifo.to_str().unwrap()]);
    server
        .stderr
        .wait_text("is a FIFO that nobody reads yet: lines wait for a reader");
    let mut a = Client::named(port, "a");
    let mut b = Client::named(port, "b");
    a.send("before the reader");
    assert_eq!(b.wait("before the reader"), "<a> before the reader");
    // The reader comes: it gets what was said before it came, within the second the
    // transcript takes to be written.
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut f = std::fs::File::open(&fifo).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("<a> before the reader\n") {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        }
    });
    let text = reader.join().unwrap();
    assert!(text.contains(" * guest-2 is now known as b\n"), "{text}");
    assert!(text.contains(" <a> before the reader\n"), "{text}");
    says_goodbye_on(
        &mut server,
        nix::sys::signal::Signal::SIGTERM,
        [&mut a, &mut b],
    );
}

/// A log that ends in the middle of a line (an earlier run's write was cut short) is not
/// glued to: the room's first line starts a line of its own.
#[test]
fn a_log_cut_off_mid_line_goes_on_on_a_new_line() {
    let scratch = crate::util::scratch("glue");
    let dir = scratch.path();
    let log = dir.join("room.log");
    std::fs::write(&log, "cut off mid-li").unwrap();
    let (mut server, port) = room(&["--log", log.to_str().unwrap()]);
    let mut a = Client::named(port, "a");
    says_goodbye_on(&mut server, nix::sys::signal::Signal::SIGTERM, [&mut a]);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("cut off mid-li"), "{text}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.ends_with("Z * guest-1 joined")),
        "{text}"
    );
}

/// A log that can never be written (`/dev/full`): the operator is told once (one line is one
/// line), the chat goes on, and at shutdown hears how many lines never reached it.
#[test]
fn a_log_that_cannot_be_written_is_counted_to_the_end() {
    if crate::util::dev_full().is_none() {
        return;
    }
    let (mut server, port) = room(&["--log", "/dev/full"]);
    // One line for the transcript: "* guest-1 joined".
    let mut a = Client::join(port);
    server.stderr.wait_text(
        "cannot write the log: no space left on device; 1 line lost so far, and lines are \
         dropped (and counted) until it can be written again\n",
    );
    let mut b = Client::join(port);
    b.send("hello");
    assert_eq!(a.wait("hello"), format!("<{}> hello", b.nick));
    says_goodbye_on(
        &mut server,
        nix::sys::signal::Signal::SIGTERM,
        [&mut a, &mut b],
    );
    let stderr = server.stderr.text();
    assert_eq!(
        stderr.matches("cannot write the log").count(),
        1,
        "{stderr}"
    );
    // Two joins, "hello" and "* server shutting down".
    assert!(
        stderr.contains(
            "warning: the log still cannot be written (no space left on device); 4 lines did \
             not reach it\n"
        ),
        "{stderr}"
    );
}

/// A `--log` path that cannot be opened is one line saying why, in words, and what to do, with
/// a usage status (permission denied: 6); the room never starts.
#[test]
fn a_bad_log_path_is_one_clear_line() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = crate::util::scratch("badlog");
    let dir = scratch.path();
    let d = dir.to_str().unwrap();
    let mut cases = vec![
        (
            d.to_string(),
            "is a directory (give a file name)".to_string(),
            2,
        ),
        (
            format!("{d}/missing/room.log"),
            format!("no such directory (create {d}/missing first)"),
            2,
        ),
    ];
    // root may write anywhere.
    if !nix::unistd::geteuid().is_root() {
        let locked = dir.join("locked");
        std::fs::create_dir_all(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
        cases.push((
            format!("{d}/locked/room.log"),
            "permission denied (give a file you may write, in a directory you may write to)"
                .to_string(),
            6,
        ));
    }
    for (path, why, status) in cases {
        let mut p = Proc::wirechat(&["room", "127.0.0.1:0", "--log", &path]);
        p.close_stdin();
        assert_eq!(p.wait_exit(), status, "{path}: {}", p.stderr.text());
        let stderr = p.stderr.text();
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(
            errors,
            [format!(
                "wirechat: error: cannot open the log {path}: {why}"
            )],
            "{stderr}"
        );
    }
}

/// A count of one is singular: `* 1 member`, `room full (1 client)`, `1 line a second`.
#[test]
fn counts_of_one_are_singular() {
    let (_server, port) = room(&["--announce-max", "1"]);
    let mut a = Client::join(port);
    let mut b = Client::join(port);
    assert_eq!(
        a.wait("no longer announced"),
        "* more than 1 member: joins and leaves are no longer announced (/who counts)"
    );
    b.send("/quit");
    b.wait_closed();
    assert_eq!(
        a.wait("announced again"),
        "* 1 member: joins and leaves are announced again"
    );

    let (_server, port) = room(&["--max-clients", "1", "--rate", "1", "--burst", "1"]);
    let mut a = Client::join(port);
    a.send_bytes(b"one\ntwo\n");
    assert_eq!(
        a.wait("slow down"),
        "! slow down: at most 1 line a second (bursts of 1); your lines are held back, not lost"
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut c, &mut text).unwrap();
    assert_eq!(text, "! room full (1 client); try again later\n");
}
