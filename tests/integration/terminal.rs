//! wirechat at a real terminal (tmux provides it): incoming messages are printed above the line
//! being typed without tearing it, and a peer's escape sequences arrive escaped.

use crate::util::{DEADLINE, have};
use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::time::Instant;

/// A tmux server of its own with one session running one command, killed on drop.
///
/// Each test has its own server, on a socket in the temporary directory (`tmux -S PATH`): with
/// one shared server, a test that kills the last session stops the server while another test's
/// `new-session` is connecting to it.
struct Tmux(String);

impl Tmux {
    fn start(command: &str) -> Tmux {
        // Unique in this run: the tests run in parallel, each with a session of its own.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("wirechat-tmux-{}-{n}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "-S",
                &Tmux::socket(&name),
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "100",
                "-y",
                "12",
                command,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Tmux(name)
    }

    fn socket(name: &str) -> String {
        std::env::temp_dir()
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    /// A `tmux` command addressed to this test's own server.
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-S", &Tmux::socket(&self.0)]);
        command
    }

    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `pred`; panics with the screen at the deadline.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < end,
                "waiting for {what}; screen:\n{screen}"
            );
            // Polling the screen, which has no event to wait on.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn keys(&self, keys: &str) {
        self.command()
            .args(["send-keys", "-t", &self.0, "-l", keys])
            .status()
            .unwrap();
    }

    fn enter(&self) {
        self.press("Enter");
    }

    /// Presses a key by its tmux name (`Enter`, `C-c`).
    fn press(&self, key: &str) {
        let ok = self
            .command()
            .args(["send-keys", "-t", &self.0, key])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux send-keys {key} failed");
    }
}

/// `wirechat tcp connect` to `listener` with `options`, running in tmux: the session, and the
/// peer's end of the connection once wirechat's prompt is showing.
fn connect_in_tmux(listener: &TcpListener, options: &str) -> (Tmux, std::net::TcpStream) {
    connect_in_tmux_via(listener, "", options)
}

/// [`connect_in_tmux`], with wirechat started by the command `via` (empty: by the shell).
fn connect_in_tmux_via(
    listener: &TcpListener,
    via: &str,
    options: &str,
) -> (Tmux, std::net::TcpStream) {
    let addr = listener.local_addr().unwrap();
    let tmux = Tmux::start(&format!(
        "{via} {} tcp connect {addr} {options}; echo EXITED=$?; sleep 60",
        env!("CARGO_BIN_EXE_wirechat")
    ));
    let peer = crate::util::accept(listener);
    tmux.wait("the prompt", |s| s.lines().any(|l| l.starts_with('>')));
    (tmux, peer)
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
        let _ = std::fs::remove_file(Tmux::socket(&self.0));
    }
}

#[test]
fn incoming_messages_do_not_tear_the_typed_line() {
    if !have("tmux") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (tmux, mut peer) = connect_in_tmux(&listener, "-e gbk");
    tmux.wait("the prompt", |s| {
        s.contains("connected to") && s.lines().any(|l| l.starts_with('>'))
    });
    tmux.keys("half typ");
    tmux.wait("the typed text", |s| s.contains("> half typ"));
    peer.write_all(&encoding_rs::GBK.encode("你好\x1b[31mred\n").0)
        .unwrap();
    let screen = tmux.wait("the message", |s| s.contains("你好\\x1b[31mred"));
    // The message sits on its own line above the prompt, and the typed text is intact.
    let lines: Vec<&str> = screen.lines().collect();
    let msg = lines
        .iter()
        .position(|l| l.contains("你好\\x1b[31mred"))
        .unwrap();
    let prompt = lines.iter().position(|l| l.contains("> half typ")).unwrap();
    assert!(msg < prompt, "{screen}");
    assert_eq!(lines[msg].trim_end(), "你好\\x1b[31mred");
    tmux.keys("ed 中文");
    tmux.enter();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\n") {
        let n = std::io::Read::read(&mut peer, &mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, encoding_rs::GBK.encode("half typed 中文\n").0.as_ref());
    drop(peer);
    tmux.wait("the exit", |s| s.contains("EXITED=0"));
}

/// A line that arrives in pieces is shown whole when its rest follows at once, and a line end
/// that arrives alone after its line was shown makes no empty line (a peer that sends the
/// message, then "\n"; a character split between two segments).
#[test]
fn a_line_in_pieces_is_shown_once_without_empty_lines() {
    if !have("tmux") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (tmux, mut peer) = connect_in_tmux(&listener, "-e gbk");
    tmux.wait("the prompt", |s| {
        s.contains("connected to") && s.lines().any(|l| l.starts_with('>'))
    });
    peer.set_nodelay(true).unwrap();
    // A character split between two segments, the second a moment later (this pause is the
    // situation under test, not a wait for an event).
    peer.write_all(b"\xc4").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    peer.write_all(b"\xe3\xba\xc3 one\n").unwrap();
    tmux.wait("the first line", |s| s.contains("你好 one"));
    // A message without a line end is shown after a moment; its line end comes later.
    peer.write_all(b"msg1").unwrap();
    tmux.wait("msg1", |s| s.lines().any(|l| l.trim_end() == "msg1"));
    peer.write_all(b"\nmsg2\r\n").unwrap();
    let screen = tmux.wait("msg2", |s| s.lines().any(|l| l.trim_end() == "msg2"));
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let at = lines.iter().position(|l| *l == "msg1").unwrap();
    assert_eq!(lines[at + 1], "msg2", "{screen}");
    let first = lines.iter().position(|l| l.contains("你好 one")).unwrap();
    assert_eq!(first + 1, at, "{screen}");
    drop(peer);
    tmux.wait("the exit", |s| s.contains("EXITED=0"));
}

/// A prompt without a line end, held for its rest, is still shown when the conversation ends
/// before the hold does (here the idle timeout, shorter than the hold).
#[test]
fn a_held_line_is_shown_when_the_conversation_ends_first() {
    if !have("tmux") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The peer speaks at once: the idle time counts from its prompt.
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"prompt> ").unwrap();
        // Held open until wirechat leaves.
        let _ = std::io::Read::read(&mut s, &mut [0u8; 16]);
    });
    let tmux = Tmux::start(&format!(
        "{} tcp connect {addr} -w 0.05; echo EXITED=$?; sleep 60",
        env!("CARGO_BIN_EXE_wirechat")
    ));
    let screen = tmux.wait("the exit", |s| s.contains("EXITED=0"));
    assert!(
        screen.lines().any(|l| l.trim_end() == "prompt>"),
        "{screen}"
    );
    peer.join().unwrap();
}

#[test]
fn lines_typed_ahead_in_a_burst_all_arrive_even_during_a_flood() {
    // 150 lines typed in bursts of ten (as a paste without bracketed-paste mode, or a tool
    // driving the terminal, types them) while the peer floods wirechat and reads nothing, so
    // wirechat's sends back up. Every line must arrive whole and in order once the peer
    // reads: the editor keeps what it has read ahead of the line it returns, and it never
    // waits for the conversation.
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !have("tmux") {
        return;
    }
    let socket = crate::util::bound_loopback_socket();
    // A small receive buffer, inherited by the accepted connection: what wirechat sends backs
    // up after a few kilobytes.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.listen(8).unwrap();
    let listener: TcpListener = socket.into();
    let (tmux, peer) = connect_in_tmux(&listener, "-q");
    // The flood, until told to stop (bounded in count, and in time by a write timeout).
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (mut peer, stop) = (peer.try_clone().unwrap(), stop.clone());
        peer.set_write_timeout(Some(DEADLINE)).unwrap();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 10_000_000 {
                if peer.write_all(format!("flood {n}\n").as_bytes()).is_err() {
                    break;
                }
                n += 1;
            }
        })
    };
    const LINES: usize = 150;
    let line = |i: usize| format!("{i:04}{}", "t".repeat(196));
    for burst in (0..LINES).collect::<Vec<_>>().chunks(10) {
        let mut args = vec!["send-keys".to_string(), "-t".into(), tmux.0.clone()];
        for &i in burst {
            args.extend([line(i), "Enter".into()]);
        }
        assert!(tmux.command().args(&args).status().unwrap().success());
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    // Now the peer reads: every typed line arrives, whole and in order.
    let mut peer = peer;
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let expected: String = (0..LINES).map(|i| line(i) + "\n").collect();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < expected.len() {
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{} of {} bytes arrived: {e}", got.len(), expected.len()),
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), expected);
    drop(peer);
    tmux.wait("the exit", |s| s.contains("EXITED=0"));
}

#[test]
fn the_last_events_are_on_screen_before_wirechat_exits() {
    // The editor's thread shows what it is given a moment later, so at exit the last events
    // could be lost. A loss depends on timing: three rounds.
    if !have("tmux") {
        return;
    }
    for round in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (tmux, mut peer) = connect_in_tmux(&listener, "");
        peer.write_all(b"hello\n").unwrap();
        drop(peer);
        let screen = tmux.wait("the exit", |s| s.contains("EXITED=0"));
        assert!(
            screen.contains("wirechat: closed: sent 0 bytes, received 6 bytes"),
            "round {round}:\n{screen}"
        );
        // The shell's output starts a line of its own: no prompt drawn after wirechat's end.
        assert!(
            screen.lines().any(|l| l.starts_with("EXITED=0")),
            "round {round}:\n{screen}"
        );
    }
}

#[test]
fn ctrl_c_at_the_prompt_exits_130_at_once_without_a_fin_event() {
    // Ctrl-C interrupts: it is not the end of input, so wirechat must not report that it sent
    // FIN, and it must exit at once (the exit waits up to a second for the editor's output,
    // which the editor must keep taking). The old report depended on timing: five rounds.
    if !have("tmux") {
        return;
    }
    for round in 0..5 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (tmux, _peer) = connect_in_tmux(&listener, "");
        tmux.wait("the connection", |s| s.contains("connected to"));
        let pressed = Instant::now();
        tmux.press("C-c");
        let screen = tmux.wait("the exit", |s| s.contains("EXITED="));
        let took = pressed.elapsed();
        assert!(screen.contains("EXITED=130"), "round {round}:\n{screen}");
        assert!(!screen.contains("sent FIN"), "round {round}:\n{screen}");
        // Well under the one second that a stalled editor would cost.
        assert!(
            took < std::time::Duration::from_millis(800),
            "round {round}: exit took {took:?}\n{screen}"
        );
    }
}

#[test]
fn ctrl_c_at_the_prompt_exits_130_even_when_sigint_was_blocked() {
    // A parent may start wirechat with SIGINT blocked (the mask is inherited through exec).
    // Ctrl-C at the prompt must still end it, not leave it with its input stopped for good.
    if !have("tmux") || !have("python3") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let blocked = "python3 -c 'import os, signal, sys; \
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); \
        os.execv(sys.argv[1], sys.argv[1:])'";
    let (tmux, _peer) = connect_in_tmux_via(&listener, blocked, "");
    tmux.wait("the connection", |s| s.contains("connected to"));
    tmux.press("C-c");
    let screen = tmux.wait("the exit", |s| s.contains("EXITED="));
    assert!(screen.contains("EXITED=130"), "{screen}");
}

/// `tcp listen` running in tmux with `options`: the session and the listening address.
fn listen_in_tmux(options: &str) -> (Tmux, String) {
    let tmux = Tmux::start(&format!(
        "{} tcp listen 127.0.0.1:0 {options}; echo EXITED=$?; sleep 60",
        env!("CARGO_BIN_EXE_wirechat")
    ));
    let screen = tmux.wait("the listening line", |s| s.contains(" (tcp)"));
    (tmux, crate::util::listening_addr(&screen).to_string())
}

/// Once the client is gone, types the quit word `end` and checks that the listener exits with
/// status 0; returns the screen.
fn quit_between_clients(tmux: &Tmux) -> String {
    tmux.wait("the client's end", |s| s.contains("closed:"));
    tmux.keys("end");
    tmux.enter();
    let screen = tmux.wait("the exit", |s| s.contains("EXITED="));
    assert!(screen.contains("EXITED=0"), "{screen}");
    screen
}

/// At a terminal, `tcp listen -k` reads what is typed between clients: a line waits for the
/// next client, and the quit word ends the listener at once.
#[test]
fn keep_open_at_a_terminal_acts_on_the_quit_word_between_clients() {
    use std::io::Read;
    if !have("tmux") {
        return;
    }
    let (tmux, addr) = listen_in_tmux("-k --quit end");
    tmux.keys("early");
    tmux.enter();
    let mut first = std::net::TcpStream::connect(&addr).unwrap();
    let mut got = [0u8; 6];
    first.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early\n");
    drop(first);
    let screen = quit_between_clients(&tmux);
    assert!(screen.contains("ending (it was not sent)"), "{screen}");
}

/// Without the line editor, Ctrl-D typed between clients ends the next client's turn (it gets
/// our FIN at once), and typing goes on after it.
#[test]
fn keep_open_at_a_plain_terminal_gives_ctrl_d_to_the_next_client() {
    use std::io::Read;
    if !have("tmux") {
        return;
    }
    let (tmux, addr) = listen_in_tmux("-k --no-editor --quit end");
    tmux.press("C-d");
    let mut second = std::net::TcpStream::connect(&addr).unwrap();
    second.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    second
        .read_to_end(&mut rest)
        .expect("our FIN before the deadline");
    assert!(rest.is_empty(), "{rest:?}");
    drop(second);
    quit_between_clients(&tmux);
}

/// With the line editor, Ctrl-D typed during a client's turn ends that turn only (the client
/// gets our FIN), and the editor goes on: a line typed after it goes to the next client.
#[test]
fn keep_open_with_the_editor_ctrl_d_ends_one_turn_only() {
    use std::io::Read;
    if !have("tmux") {
        return;
    }
    let (tmux, addr) = listen_in_tmux("-k --quit end");
    let mut first = std::net::TcpStream::connect(&addr).unwrap();
    first.set_read_timeout(Some(DEADLINE)).unwrap();
    tmux.wait("the first client", |s| s.contains("connection from"));
    tmux.press("C-d");
    let mut rest = Vec::new();
    first
        .read_to_end(&mut rest)
        .expect("our FIN before the deadline");
    assert!(rest.is_empty(), "{rest:?}");
    drop(first);
    tmux.wait("the first client's end", |s| s.contains("closed:"));
    tmux.keys("for the second");
    tmux.enter();
    let mut second = std::net::TcpStream::connect(&addr).unwrap();
    second.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = [0u8; 15];
    second
        .read_exact(&mut got)
        .expect("the typed line, not our FIN");
    assert_eq!(&got, b"for the second\n");
    drop(second);
    quit_between_clients(&tmux);
}

/// Without `-k` too, the quit word typed before any client has come ends the listener at once,
/// instead of being sent to the first client to connect.
#[test]
fn a_listener_at_a_terminal_ends_on_the_quit_word_typed_before_a_client() {
    if !have("tmux") {
        return;
    }
    let (tmux, _addr) = listen_in_tmux("--quit end");
    tmux.keys("end");
    tmux.enter();
    let screen = tmux.wait("the exit", |s| s.contains("EXITED="));
    assert!(screen.contains("EXITED=0"), "{screen}");
    assert!(screen.contains("ending (it was not sent)"), "{screen}");
}

/// `wirechat ARGS &` typed at an interactive shell (bash) in tmux, `redirect` added (`> FILE`):
/// the session, once wirechat's listening line is on the screen, and the address there.
fn in_the_background(args: &str, redirect: &str) -> (Tmux, std::net::SocketAddr) {
    let tmux = Tmux::start("bash --norc --noprofile");
    tmux.keys(&format!(
        "{} {args} {redirect} &",
        env!("CARGO_BIN_EXE_wirechat")
    ));
    tmux.enter();
    let screen = tmux.wait("the listening line", |s| {
        s.contains(" (tcp)") || s.contains(" (udp)")
    });
    (tmux, crate::util::listening_addr(&screen))
}

/// Checks with `jobs` that the background job is running, not stopped (reading the terminal
/// from the background, or changing its mode, would have stopped it).
fn still_running(tmux: &Tmux) {
    tmux.keys("jobs");
    tmux.enter();
    let screen = tmux.wait("the job's state", |s| {
        s.contains("Running") || s.contains("Stopped")
    });
    assert!(!screen.contains("Stopped"), "{screen}");
}

/// Types `fg` and waits until the job started as `wirechat ARGS` is in the foreground.
fn bring_to_the_foreground(tmux: &Tmux, args: &str) {
    tmux.keys("fg");
    tmux.enter();
    tmux.wait("the job in the foreground", |s| {
        s.lines().any(|l| l.trim_end().ends_with(args))
    });
}

/// Ends the background job with SIGTERM (`kill %1`) and checks that it exits at once, with
/// the status of an interrupt.
fn terminate(tmux: &Tmux) {
    tmux.keys("kill %1; wait %1; echo EXITED=$?");
    tmux.enter();
    let screen = tmux.wait("the job's exit", |s| {
        s.lines().any(|l| l.starts_with("EXITED="))
    });
    assert!(
        screen.lines().any(|l| l.trim_end() == "EXITED=130"),
        "{screen}"
    );
}

/// Waits until the file at `path` holds `want`.
fn wait_for_file(path: &std::path::Path, want: &[u8]) {
    let end = Instant::now() + DEADLINE;
    loop {
        let got = std::fs::read(path).unwrap_or_default();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "waiting for {}: {:?}",
            path.display(),
            String::from_utf8_lossy(&got)
        );
        // Polling a file, which has no event to wait on.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `wirechat room PORT &` from an interactive shell: in the background it serves (reading the
/// terminal there would stop it with SIGTTIN), and after `fg` the keyboard is the server's.
#[test]
fn a_room_in_the_background_serves_and_takes_the_keyboard_after_fg() {
    use std::io::{BufRead, BufReader};
    if !have("tmux") || !have("bash") {
        return;
    }
    let (tmux, addr) = in_the_background("room 127.0.0.1:0", "");
    let client = std::net::TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("a greeting while in the background");
    assert!(line.contains("welcome"), "{line:?}");
    bring_to_the_foreground(&tmux, "room 127.0.0.1:0");
    tmux.keys("hello from the keyboard");
    tmux.enter();
    line.clear();
    reader.read_line(&mut line).expect("the server's line");
    assert_eq!(line, "<server> hello from the keyboard\n");
}

/// The README's `wirechat tcp listen 5000 > file.bin &`: in the background, with the terminal
/// as its stdin, the listener leaves the keyboard alone and writes what arrives to the file;
/// SIGTERM (`kill %1`) ends it.
#[test]
fn a_tcp_listener_in_the_background_writes_its_file_and_ends_on_sigterm() {
    if !have("tmux") || !have("bash") {
        return;
    }
    let dir = crate::util::scratch("bg-tcp");
    let file = dir.path().join("out.bin");
    let (tmux, addr) =
        in_the_background("tcp listen 127.0.0.1:0", &format!("> {}", file.display()));
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let data = crate::util::payload(10_000);
    client.write_all(&data).unwrap();
    wait_for_file(&file, &data);
    still_running(&tmux);
    terminate(&tmux);
    // The connection is gone with it.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut rest).expect("the listener's close");
}

/// `wirechat udp listen PORT > log &` likewise: the datagrams are logged, the job runs on.
#[test]
fn a_udp_listener_in_the_background_writes_its_log_and_ends_on_sigterm() {
    if !have("tmux") || !have("bash") {
        return;
    }
    let dir = crate::util::scratch("bg-udp");
    let file = dir.path().join("log");
    let (tmux, addr) =
        in_the_background("udp listen 127.0.0.1:0", &format!("> {}", file.display()));
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"one datagram\n", addr).unwrap();
    wait_for_file(&file, b"one datagram\n");
    still_running(&tmux);
    terminate(&tmux);
}

/// `wirechat tcp listen PORT &` with the terminal as stdin and stdout: in the background the
/// line editor leaves the terminal's mode alone (changing it would stop wirechat with SIGTTOU)
/// while messages are shown; after `fg` it reads the keyboard.
#[test]
fn a_tcp_listener_with_the_editor_in_the_background_takes_the_keyboard_after_fg() {
    use std::io::{BufRead, BufReader};
    if !have("tmux") || !have("bash") {
        return;
    }
    let (tmux, addr) = in_the_background("tcp listen 127.0.0.1:0", "");
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client.write_all(b"from the peer\n").unwrap();
    tmux.wait("the peer's message", |s| {
        s.lines().any(|l| l.trim_end() == "from the peer")
    });
    still_running(&tmux);
    bring_to_the_foreground(&tmux, "tcp listen 127.0.0.1:0");
    tmux.keys("typed after fg");
    tmux.enter();
    let mut line = String::new();
    BufReader::new(client)
        .read_line(&mut line)
        .expect("the typed line");
    assert_eq!(line, "typed after fg\n");
}

/// With stderr redirected, events go there as README says, not to the screen through the line
/// editor; the editor still shows the peer's messages.
#[test]
fn events_go_to_a_redirected_stderr_not_to_the_screen() {
    if !have("tmux") {
        return;
    }
    let dir = crate::util::scratch("events");
    let log = dir.path().join("ev.log");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (tmux, mut peer) = connect_in_tmux(&listener, &format!("2>{}", log.display()));
    peer.write_all(b"hi\n").unwrap();
    drop(peer);
    let screen = tmux.wait("the exit", |s| s.contains("EXITED="));
    assert!(screen.contains("EXITED=0"), "{screen}");
    assert!(screen.lines().any(|l| l.trim_end() == "hi"), "{screen}");
    assert!(!screen.contains("wirechat:"), "{screen}");
    let events = std::fs::read_to_string(&log).unwrap();
    assert!(events.contains("wirechat: connected to "), "{events}");
    assert!(
        events.contains("wirechat: closed: sent 0 bytes, received 3 bytes"),
        "{events}"
    );
}

/// An error at start-up (nothing listening) starts a line of its own: it does not follow the
/// line editor's prompt (`> wirechat: error: ...`). It depends on timing: three rounds.
#[test]
fn a_startup_error_at_a_terminal_starts_a_line_of_its_own() {
    if !have("tmux") {
        return;
    }
    for round in 0..3 {
        // A port with nothing listening on it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let tmux = Tmux::start(&format!(
            "{} tcp connect {addr}; echo EXITED=$?; sleep 60",
            env!("CARGO_BIN_EXE_wirechat")
        ));
        let screen = tmux.wait("the exit", |s| s.contains("EXITED="));
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with("wirechat: error: cannot connect")),
            "round {round}:\n{screen}"
        );
        assert!(!screen.contains("> "), "round {round}:\n{screen}");
        assert!(
            screen.lines().any(|l| l.starts_with("EXITED=")),
            "round {round}:\n{screen}"
        );
    }
}

/// At a terminal, `udp listen` without `--peer` reads typed lines at once: before anyone has
/// sent a datagram a line has nowhere to go and is reported unsent, the quit word too.
#[test]
fn a_udp_listener_at_a_terminal_says_a_line_has_nowhere_to_go() {
    if !have("tmux") {
        return;
    }
    let tmux = Tmux::start(&format!(
        "{} udp listen 127.0.0.1:0 --quit 88; echo EXITED=$?; sleep 60",
        env!("CARGO_BIN_EXE_wirechat")
    ));
    tmux.wait("the listening line", |s| s.contains(" (udp)"));
    tmux.keys("into the void");
    tmux.enter();
    tmux.wait("the warning", |s| {
        s.contains("nobody has sent a datagram yet")
    });
    tmux.keys("88");
    tmux.enter();
    let screen = tmux.wait("the exit", |s| s.contains("EXITED="));
    assert!(screen.contains("EXITED=0"), "{screen}");
    assert!(screen.contains("(it was not sent)"), "{screen}");
}
