//! Each error a user meets: one clear line on stderr and its documented exit status.

use crate::util::{Proc, wirechat};
use std::net::TcpListener;

fn one_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    lines[0].to_string()
}

/// The one `error:` line of a run that also printed progress.
fn error_line(stderr: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got {stderr:?}");
    errors[0].to_string()
}

/// Runs wirechat with no input to its end (within the deadline): its status and stderr.
fn run(args: &[&str]) -> (i32, String) {
    let mut p = Proc::wirechat(args);
    p.close_stdin();
    let code = p.wait_exit();
    (code, p.stderr.text())
}

/// Runs wirechat expecting exit status `code` and one line on stderr containing each of
/// `needles`; returns the line.
fn expect_error(args: &[&str], code: i32, needles: &[&str]) -> String {
    let (got, err) = run(args);
    let line = one_line(&err);
    assert_eq!(got, code, "{err}");
    for n in needles {
        assert!(line.contains(n), "{line}");
    }
    line
}

/// `line` names `what` once: the OS's own words for the same error are not appended.
fn says_once(line: &str, what: &str) {
    assert_eq!(line.to_lowercase().matches(what).count(), 1, "{line}");
    assert!(!line.contains("os error"), "{line}");
}

#[test]
fn port_in_use_is_status_3() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = expect_error(
        &["tcp", "listen", &addr],
        3,
        &["address already in use", &addr],
    );
    says_once(&line, "address already in use");
}

/// The room's listening errors carry the same statuses as the conversations'.
#[test]
fn room_port_in_use_is_status_3_and_unknown_host_5() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = expect_error(&["room", &addr], 3, &["address already in use", &addr]);
    says_once(&line, "address already in use");
    expect_error(
        &["room", "no-such-host.invalid:80"],
        5,
        &["unknown host", "no-such-host.invalid"],
    );
}

/// A room setting out of range is a usage error (status 2) that says what the range is.
#[test]
fn room_settings_out_of_range_are_status_2() {
    for (setting, words) in [
        (["--rate", "1e-20"], "--rate must be at least 0.001"),
        (
            ["--rate", "nan"],
            "--rate must be a number of lines a second",
        ),
        (
            ["--rate", "inf"],
            "--rate must be a number of lines a second",
        ),
        // A negative number is a value out of range, not a stray argument.
        (["--rate", "-1"], "--rate must be at least 0.001"),
        (["--max-line", "15"], "--max-line must be at least 16"),
        (["--max-clients", "0"], "--max-clients must be at least 1"),
        (["--history", "100000"], "--history must be at most 10000"),
        // A burst of 0 was taken as 1 and told as "bursts of 0".
        (["--burst", "0"], "'--burst <N>': 0 is not in 1..="),
    ] {
        let mut args = vec!["room", "127.0.0.1:0"];
        args.extend(setting);
        expect_error(&args, 2, &[words]);
    }
}

/// Listening on (or binding to) an address that is not this machine's is a bad argument.
#[test]
fn an_address_not_on_this_machine_is_status_2() {
    // TEST-NET-1 (RFC 5737): never a local address.
    expect_error(
        &["tcp", "listen", "192.0.2.1:0"],
        2,
        &["cannot listen on 192.0.2.1:0: address not available on this machine"],
    );
    expect_error(
        &["room", "192.0.2.1:0"],
        2,
        &["address not available on this machine"],
    );
}

#[test]
fn udp_port_in_use_is_status_3() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = expect_error(&["udp", "listen", &addr], 3, &["address already in use"]);
    says_once(&line, "address already in use");
}

#[test]
fn connection_refused_is_status_4() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let line = expect_error(
        &["tcp", "connect", &addr],
        4,
        &["connection refused", &addr],
    );
    says_once(&line, "refused");
    assert!(line.contains("nothing is listening"), "{line}");
}

#[test]
fn unknown_host_is_status_5() {
    expect_error(
        &["tcp", "connect", "no-such-host.invalid:80"],
        5,
        &["unknown host", "no-such-host.invalid"],
    );
}

#[test]
fn permission_denied_is_status_6() {
    let root = nix::unistd::geteuid().is_root();
    let unprivileged_start: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_start <= 80 {
        eprintln!("SKIPPED: this kernel lets anyone bind port 80");
        return;
    }
    let out = if root {
        // As root, drop to nobody for this one process so the bind is refused.
        if !crate::util::have("setpriv") {
            return;
        }
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_wirechat"))
            .args(["tcp", "listen", "127.0.0.1:80"])
            .output()
            .unwrap()
    } else {
        wirechat()
            .args(["tcp", "listen", "127.0.0.1:80"])
            .output()
            .unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let line = one_line(&err);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        line.contains("permission denied") && line.contains("1024"),
        "{line}"
    );
}

#[test]
fn connect_timeout_is_status_7() {
    // A listener whose accept queue is full drops further SYNs, so a connect hangs: the one
    // way to make a connect time out without sending anything beyond loopback.
    let socket = crate::util::bound_loopback_socket();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    let started = std::time::Instant::now();
    expect_error(
        &["tcp", "connect", &addr.to_string(), "--timeout", "0.5"],
        7,
        &["timed out"],
    );
    assert!(started.elapsed().as_secs_f64() < 10.0);
    drop(fillers);
}

#[test]
fn bad_arguments_are_status_2() {
    for args in [
        &["tcp", "listen", "99999"][..],
        &["tcp", "connect", "::1:80"],
        &["tcp", "connect", "127.0.0.1:80", "--encoding", "klingon"],
        &["tcp", "listen", "0", "--idle-timeout", "-1"],
        &["udp", "connect", "127.0.0.1:0"],
        &["udp", "listen", "0", "--peer", "127.0.0.1:0"],
        &["tcp", "connect", "127.0.0.1:80", "--quit", ""],
        &["trace", "--read", "x.pcap", "--count", "0"],
        &["frobnicate"],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let line = one_line(&err);
        assert!(line.starts_with("wirechat: error:"), "{line}");
    }
    let (_, err) = run(&["tcp", "connect", "127.0.0.1:80", "-e", "klingon"]);
    assert!(err.contains("unknown encoding"), "{err}");
    // The line names what is missing or what would do.
    expect_error(
        &["tcp", "listen"],
        2,
        &["required arguments were not provided: <ADDR>"],
    );
    expect_error(
        &["tcp", "listen", "0", "--eol", "bogus"],
        2,
        &["[possible values: lf, crlf, none]"],
    );
    // A negative number is a value that is wrong, not an option nobody knows.
    expect_error(
        &["tcp", "connect", "127.0.0.1:80", "--timeout", "-1"],
        2,
        &["\"-1\" must be a number of seconds above 0"],
    );
    // A flag given twice is the flag, as in most tools.
    let (code, err) = run(&["-q", "-q", "tcp", "listen", "99999"]);
    assert!(
        code == 2 && err.contains("99999") && !err.contains("multiple times"),
        "{err}"
    );
    // A quit word with a line break in it could never match a line.
    expect_error(
        &["tcp", "connect", "127.0.0.1:80", "--quit", "a\nb"],
        2,
        &["has a line break in it"],
    );
    // A quit word the encoding cannot carry would go out, and be matched, as '?'.
    expect_error(
        &["udp", "listen", "0", "-e", "gbk", "--quit", "€"],
        2,
        &["the quit word \"€\" has characters GBK cannot carry"],
    );
    // Thousands of room threads ended in a panic when the system refused one.
    expect_error(
        &["room", "127.0.0.1:0", "--threads", "100000"],
        2,
        &["100000 is not in 0..=256"],
    );
}

/// A peer that closes while our input still flows: our next data meets its reset, and the write
/// after that EPIPE, which is told as the peer's doing, not as a shell pipe's.
#[test]
fn a_peer_gone_while_input_flows_is_named_not_a_broken_pipe() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut p = Proc::wirechat(&["tcp", "connect", &addr]);
    let mut stream = crate::util::accept(&listener);
    p.send(b"one\n");
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).unwrap();
    drop(stream);
    p.stderr.wait_text("peer closed its side");
    // Each line is another write on the socket: the first is answered by a reset, a later one
    // fails. Bounded: the input pipe breaks once wirechat has exited.
    let mut input = p.stdin.take().unwrap();
    for _ in 0..100_000 {
        if input.write_all(b"more\n").is_err() {
            break;
        }
    }
    drop(input);
    let code = p.wait_exit();
    let err = p.stderr.text();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "wirechat: error: connection with {addr}: the peer closed the connection before all \
             of the input was sent (broken pipe)"
        )),
        "{err}"
    );
}

#[test]
fn reset_by_peer_is_status_1() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut p = Proc::wirechat(&["tcp", "connect", &addr]);
    let stream = crate::util::accept(&listener);
    // Reset once connected, so the reset ends the conversation, not the connect.
    p.stderr.wait_text("connected to");
    // SO_LINGER 0 turns close into RST.
    socket2::SockRef::from(&stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(stream);
    let code = p.wait_exit();
    let err = p.stderr.text();
    assert_eq!(code, 1, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("wirechat: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("connection reset by peer"), "{line}");
    // Which connection: the peer's address.
    assert!(line.contains(&format!("connection with {addr}")), "{line}");
    says_once(line, "reset");
}

#[test]
fn help_shows_an_example_per_command() {
    for cmd in [
        &["tcp", "listen"][..],
        &["tcp", "connect"],
        &["udp", "listen"],
        &["udp", "connect"],
    ] {
        let out = wirechat().args(cmd).arg("--help").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        // An example of this very command, after the heading (the usage line alone would
        // contain "wirechat " too).
        let examples = text.split("Examples:").nth(1).unwrap_or_default();
        assert!(
            examples.contains(&format!("wirechat {}", cmd.join(" "))),
            "{text}"
        );
    }
}

/// A capture that cannot be written says so in words about writing.
#[test]
fn trace_write_errors_say_write() {
    if !std::path::Path::new("/dev/full").exists() {
        crate::util::cannot_run("no /dev/full on this machine");
        return;
    }
    let (code, err) = run(&[
        "trace",
        "--read",
        "tests/data/three-way-close.pcap",
        "--write",
        "/dev/full",
    ]);
    assert_eq!(code, 1, "{err}");
    let line = one_line(&err);
    assert!(
        line.contains("cannot write /dev/full: No space left on device"),
        "{line}"
    );
    assert!(!line.to_lowercase().contains("reading"), "{line}");
}

/// With plain files on both sides wirechat moves bytes inside the kernel; a failure of stdin or
/// stdout there is reported as such, not as the connection's error.
#[test]
fn pass_through_blames_stdin_and_stdout_not_the_connection() {
    use std::io::Write;
    use std::process::Stdio;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Connects with the given stdin and stdout, has the peer send `peer_sends`, and checks
    // the one error line: status 1, `side`, the system's words once, no connection named.
    let check = |stdin: Stdio, stdout: Stdio, peer_sends: &[u8], side: &str, words: &str| {
        let mut cmd = wirechat();
        cmd.args(["tcp", "connect", &addr])
            .stdin(stdin)
            .stdout(stdout);
        let mut p = Proc::spawn_stderr(cmd);
        let mut peer = crate::util::accept(&listener);
        peer.write_all(peer_sends).unwrap();
        let code = p.wait_exit();
        let err = p.stderr.text();
        let line = error_line(&err);
        assert_eq!(code, 1, "{err}");
        assert!(line.contains(side), "{line}");
        says_once(&line, words);
        assert!(!line.contains("connection with"), "{line}");
    };
    // stdin is a directory: reading it fails with EISDIR.
    let dir = std::fs::File::open("tests").unwrap();
    check(
        dir.into(),
        Stdio::null(),
        b"",
        "reading input",
        "is a directory",
    );

    // stdout is /dev/full: writing what the peer sent fails with ENOSPC.
    let Some(full) = crate::util::dev_full() else {
        return;
    };
    check(
        Stdio::null(),
        full.into(),
        b"hello\n",
        "writing output",
        "no space left on device",
    );
}
