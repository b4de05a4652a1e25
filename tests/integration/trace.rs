//! `wirechat trace`: ladders of recorded loopback conversations (insta snapshots), JSON checked
//! field by field, damaged captures, and (as root) a live capture compared with tshark.
//!
//! The pcaps in tests/data/ were recorded on loopback with
//! `tshark -i lo -F pcap -w FILE -f 'tcp port N'` around `tests/data/conversations.py KIND N`
//! (four-way-close = normal, three-way-close = three, reset = rst, ipv6) and
//! `tests/data/udp_exchange.py N`. A simultaneous close cannot be produced on loopback (each
//! FIN arrives before the other end can send its own), so `simultaneous-close.pcap` and
//! `damaged.pcap` are built with etherparse by the ignored test `make_synthetic_fixtures`.

use crate::util::wirechat;
#[cfg(target_os = "linux")]
use crate::util::{Proc, have};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Runs `wirechat trace --read FILE ARGS...` and returns (status, stdout, stderr).
fn read(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = wirechat()
        .arg("trace")
        .arg("--read")
        .arg(data(name))
        .args(args)
        .output()
        .expect("run wirechat");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ladder(name: &str) -> String {
    let (status, stdout, stderr) = read(name, &[]);
    assert_eq!(status, 0, "stderr: {stderr}");
    stdout
}

#[test]
fn four_way_close_ladder() {
    insta::assert_snapshot!("four_way_close", ladder("four-way-close.pcap"));
}

#[test]
fn three_way_close_ladder() {
    let out = ladder("three-way-close.pcap");
    assert!(out.contains("FIN piggy-backed on the ACK"), "{out}");
    insta::assert_snapshot!("three_way_close", out);
}

#[test]
fn reset_ladder() {
    let out = ladder("reset.pcap");
    assert!(out.contains("reset by A"), "{out}");
    insta::assert_snapshot!("reset", out);
}

#[test]
fn simultaneous_close_ladder() {
    let out = ladder("simultaneous-close.pcap");
    assert!(out.contains("close: simultaneous"), "{out}");
    assert!(
        out.contains("final states: A TIME_WAIT, B TIME_WAIT"),
        "{out}"
    );
    insta::assert_snapshot!("simultaneous_close", out);
}

#[test]
fn ipv6_ladder() {
    insta::assert_snapshot!("ipv6", ladder("ipv6.pcap"));
}

#[test]
fn udp_arrows() {
    insta::assert_snapshot!("udp", ladder("udp.pcap"));
}

#[test]
fn layers_of_one_packet() {
    let (status, out, err) = read("four-way-close.pcap", &["--layers", "--count", "4"]);
    assert_eq!(status, 0, "{err}");
    insta::assert_snapshot!("layers", out);
}

fn json_lines(name: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (status, out, err) = read(name, &all);
    assert_eq!(status, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

fn events<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["event"] == kind).collect()
}

#[test]
fn json_fields_of_a_four_way_close() {
    let lines = json_lines("four-way-close.pcap", &[]);
    let segs = events(&lines, "segment");
    assert_eq!(segs.len(), 11);
    // (from, flags, seq, ack, len, state of A, state of B) after each segment
    type Row = (
        &'static str,
        &'static [&'static str],
        u64,
        Option<u64>,
        u64,
        &'static str,
        &'static str,
    );
    let expect: [Row; 11] = [
        ("A", &["SYN"], 0, None, 0, "SYN_SENT", "LISTEN"),
        (
            "B",
            &["SYN", "ACK"],
            0,
            Some(1),
            0,
            "ESTABLISHED",
            "SYN_RCVD",
        ),
        ("A", &["ACK"], 1, Some(1), 0, "ESTABLISHED", "ESTABLISHED"),
        (
            "A",
            &["PSH", "ACK"],
            1,
            Some(1),
            6,
            "ESTABLISHED",
            "ESTABLISHED",
        ),
        ("B", &["ACK"], 1, Some(7), 0, "ESTABLISHED", "ESTABLISHED"),
        (
            "B",
            &["PSH", "ACK"],
            1,
            Some(7),
            13,
            "ESTABLISHED",
            "ESTABLISHED",
        ),
        ("A", &["ACK"], 7, Some(14), 0, "ESTABLISHED", "ESTABLISHED"),
        (
            "A",
            &["FIN", "ACK"],
            7,
            Some(14),
            0,
            "FIN_WAIT_1",
            "ESTABLISHED",
        ),
        ("B", &["ACK"], 14, Some(8), 0, "FIN_WAIT_2", "CLOSE_WAIT"),
        (
            "B",
            &["FIN", "ACK"],
            14,
            Some(8),
            0,
            "FIN_WAIT_2",
            "LAST_ACK",
        ),
        ("A", &["ACK"], 8, Some(15), 0, "TIME_WAIT", "CLOSED"),
    ];
    for (i, (seg, (from, flags, seq, ack, len, sa, sb))) in segs.iter().zip(expect).enumerate() {
        assert_eq!(seg["conn"], 1, "segment {i}");
        assert_eq!(seg["from"], from, "segment {i}");
        let got: Vec<&str> = seg["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(got, flags, "segment {i}");
        assert_eq!(seg["seq"], seq, "segment {i}");
        assert_eq!(seg["ack"].as_u64(), ack, "segment {i}");
        assert_eq!(seg["len"], len, "segment {i}");
        assert_eq!(seg["state"]["A"], sa, "segment {i}");
        assert_eq!(seg["state"]["B"], sb, "segment {i}");
        assert!(seg["time"].as_f64().is_some() && seg["win"].as_u64().is_some());
    }
    assert_eq!(segs[0]["src"], "127.0.0.1:44834");
    assert_eq!(segs[0]["dst"], "127.0.0.1:45201");
    let opts: Vec<&str> = segs[0]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        opts.contains(&"MSS=65495") && opts.contains(&"SACK_PERM"),
        "{opts:?}"
    );
    assert!(opts.iter().any(|o| o.starts_with("WS=")), "{opts:?}");
    assert_eq!(segs[3]["payload_hex"], "68656c6c6f0a");

    let states = events(&lines, "state");
    let path = |side: &str| -> Vec<&str> {
        states
            .iter()
            .filter(|s| s["side"] == side)
            .map(|s| s["to"].as_str().unwrap())
            .collect()
    };
    assert_eq!(
        path("A"),
        [
            "SYN_SENT",
            "ESTABLISHED",
            "FIN_WAIT_1",
            "FIN_WAIT_2",
            "TIME_WAIT"
        ]
    );
    assert_eq!(
        path("B"),
        [
            "SYN_RCVD",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "LAST_ACK",
            "CLOSED"
        ]
    );
    assert!(
        states
            .iter()
            .all(|s| s["why"].as_str().is_some_and(|w| !w.is_empty()))
    );

    let sum = events(&lines, "summary");
    assert_eq!(sum.len(), 1);
    let s = sum[0];
    assert_eq!(s["handshake"]["segments"], 3);
    assert!(s["handshake"]["us"].as_u64().is_some_and(|us| us < 1000));
    assert_eq!(s["bytes"]["a_to_b"], 6);
    assert_eq!(s["bytes"]["b_to_a"], 13);
    assert_eq!(s["first_closer"], "A");
    assert_eq!(s["close"], "four-way");
    assert_eq!(s["close_segments"], 4);
    assert!(s["note"].is_null());
    assert_eq!(s["final_state"]["A"], "TIME_WAIT");
    let end = events(&lines, "end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["segments"], 11);
    assert_eq!(end[0]["closed"], 1);
}

#[test]
fn json_of_three_way_reset_and_udp() {
    let three = json_lines("three-way-close.pcap", &[]);
    let s = events(&three, "summary")[0];
    assert_eq!(
        (s["close"].as_str(), s["close_segments"].as_u64()),
        (Some("three-way"), Some(3))
    );
    assert!(
        s["note"]
            .as_str()
            .is_some_and(|n| n.contains("rode on the ACK"))
    );

    let rst = json_lines("reset.pcap", &[]);
    let s = events(&rst, "summary")[0];
    assert_eq!(s["close"], "reset");
    assert_eq!(s["reset_by"], "A");

    let udp = json_lines("udp.pcap", &[]);
    let d = events(&udp, "udp");
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["len"], 10);
    assert_eq!(d[0]["dst"], "127.0.0.1:45205");
    assert_eq!(d[1]["src"], "127.0.0.1:45205");
    assert!(events(&udp, "segment").is_empty());
}

#[test]
fn filters_and_count() {
    let lines = json_lines("four-way-close.pcap", &["--port", "9", "--count", "3"]);
    assert!(events(&lines, "segment").is_empty());
    let lines = json_lines(
        "four-way-close.pcap",
        &["--host", "127.0.0.1", "--count", "3"],
    );
    assert_eq!(events(&lines, "segment").len(), 3);
    // Cut short, the connection is summarised as still open.
    let s = events(&lines, "summary")[0];
    assert_eq!(s["close"], "open");
    // --layers in JSON: each layer's fields as a string under "layers".
    let lines = json_lines("four-way-close.pcap", &["--layers", "--count", "1"]);
    let seg = events(&lines, "segment")[0];
    assert!(
        seg["layers"]["link"]
            .as_str()
            .unwrap()
            .starts_with("Ethernet II")
    );
    assert!(seg["layers"]["ipv4"].as_str().unwrap().contains("ttl 64"));
    assert!(
        seg["layers"]["tcp"]
            .as_str()
            .unwrap()
            .contains("port 44834 -> 45201")
    );
    assert_eq!(seg["layers"]["payload"], "0 bytes");
}

#[test]
fn damaged_capture_is_reported_and_skipped() {
    let (status, out, err) = read("damaged.pcap", &[]);
    assert_eq!(status, 0, "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.contains("skipped: truncated"), "{out}");
    assert!(out.contains("skipped: corrupt"), "{out}");
    assert!(out.contains("damaged record, reading stops here"), "{out}");
    // The good packets around the damage are still shown.
    assert!(out.contains("A --SYN--"), "{out}");
    assert!(out.contains("udp  +"), "{out}");
    assert!(out.contains("frames of other protocols"), "{out}");
}

/// A capture made with a snap length (`tcpdump -s 96`; here `editcap -s`, which cuts a
/// recorded file the same way) gives the same ladder as the whole capture: sequence numbers,
/// lengths, states and summary. Only the payload previews show that bytes were cut.
#[test]
fn a_capture_cut_by_a_snap_length_gives_the_same_ladder() {
    if !crate::util::have("editcap") {
        return;
    }
    let scratch = crate::util::scratch("snaplen");
    let dir = scratch.path();
    let whole = ladder("four-way-close.pcap");
    // 14 + 20 + 32 header bytes, so each of the two data segments keeps 4 bytes.
    let cut = dir.join("cut.pcap");
    let status = std::process::Command::new("editcap")
        .args(["-s", "70"])
        .arg(data("four-way-close.pcap"))
        .arg(&cut)
        .status()
        .unwrap();
    assert!(status.success());
    let out = wirechat()
        .args(["trace", "--read"])
        .arg(&cut)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // The SYNs carry 40 bytes of TCP header and are cut inside it: damage, said so.
    assert!(text.contains("frame 1 skipped: truncated"), "{text}");
    assert!(text.contains("(the capture kept 70 of 74 bytes)"), "{text}");
    assert!(
        text.contains(r#""hell"...  [4 of 6 bytes captured]"#),
        "{text}"
    );
    assert!(text.contains("[4 of 13 bytes captured]"), "{text}");
    let rows = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains(" seq=") && !l.contains("SYN"))
            .map(|l| {
                // Without the SYNs, times count from another segment and the window scale is
                // unknown, so times and windows differ; nothing else may.
                let l = l.split("  \"").next().unwrap_or(l);
                l.split_whitespace()
                    .skip(2)
                    .filter(|w| !w.starts_with("win="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let (a, b) = (rows(&whole), rows(&text));
    assert_eq!(a.len(), 9, "{whole}");
    assert!(
        a[3].contains("len=13") && a[2].contains("ESTABLISHED"),
        "{a:?}"
    );
    assert_eq!(a, b, "{text}");
    assert!(text.contains("data: A->B 6 bytes, B->A 13 bytes"), "{text}");
    assert!(text.contains("the textbook four-way close"), "{text}");
}

/// Ctrl-C while stdout is stuck (a pipe nobody reads): the process ends after its grace time,
/// and the `--write` file is still complete, every record whole, instead of cut where its
/// buffer last happened to be written out.
#[test]
#[cfg(target_os = "linux")]
fn interrupted_with_stdout_stuck_the_written_file_is_complete() {
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
    use std::process::Stdio;
    use std::time::Instant;

    let scratch = crate::util::scratch("stuck");
    let dir = scratch.path();
    let (input, output) = (dir.join("many.pcap"), dir.join("out.pcap"));
    {
        // 20,000 data segments: far more rows than a pipe and the output buffer hold.
        let mut w = PcapWriter::new(std::fs::File::create(&input).unwrap()).unwrap();
        for i in 0..20_000u32 {
            let line = b"one line of a long stream of lines\n";
            let mut f = Vec::new();
            PacketBuilder::ethernet2([0; 6], [0; 6])
                .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
                .tcp(40000, 8899, 1 + 35 * i, 65535)
                .psh()
                .ack(1)
                .write(&mut f, line)
                .unwrap();
            let ts = Duration::from_secs(1_764_000_000) + Duration::from_micros(u64::from(i));
            w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))
                .unwrap();
        }
    }
    let mut child = wirechat()
        .args(["trace", "--read"])
        .arg(&input)
        .arg("--write")
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Stuck: one of its threads waits in the kernel to write to the full pipe.
    let stuck = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| {
                std::fs::read_to_string(t.path().join("wchan"))
                    .is_ok_and(|w| w.contains("pipe_write"))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stuck(child.id()) {
        assert!(Instant::now() < deadline, "never blocked on its stdout");
        std::thread::yield_now();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after Ctrl-C");
        std::thread::yield_now();
    };
    assert_eq!(status.code(), Some(130));
    let mut r = PcapReader::new(std::fs::File::open(&output).unwrap()).unwrap();
    let mut frames = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap_or_else(|e| panic!("record {} is cut: {e}", frames + 1));
        assert_eq!(p.data.len(), 14 + 20 + 20 + 35);
        frames += 1;
    }
    assert!(frames > 100, "{frames} frames");
    drop(child);
}

/// A duration too long to count (`-d inf`, `1e30`) is no deadline, not a crash.
#[test]
fn a_duration_too_long_to_count_is_no_deadline() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/udp.pcap");
    for d in ["inf", "1e30", "1e19"] {
        let out = wirechat()
            .args(["trace", "--read", file, "-d", d])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "-d {d}: {err}");
    }
}

#[test]
fn not_a_capture_file() {
    let scratch = crate::util::scratch("trace");
    let dir = scratch.path();
    let f = dir.join("text.pcap");
    std::fs::write(&f, "this is not a capture\n").unwrap();
    let out = wirechat()
        .args(["trace", "--read"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a capture wirechat can read"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The port of a `tcp listen` child, once its whole "listening on ADDR (tcp)" line is in.
#[cfg(target_os = "linux")]
fn listen_port(p: &Proc) -> u16 {
    let text = p.stderr.wait_text(" (tcp)\n");
    let line = text
        .lines()
        .find(|l| l.contains("listening on "))
        .expect("listening line");
    let addr = line.split_whitespace().nth(3).expect("address");
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|_| panic!("bad address in {line:?}"))
        .port()
}

/// The server of the live tests. `--quit` keeps it off the spliced pass-through, which at the
/// time of writing holds data received for a pipe until the connection closes.
#[cfg(target_os = "linux")]
const SERVER: [&str; 5] = ["tcp", "listen", "127.0.0.1:0", "--quit", "no-such-word"];

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Without privileges, live capture fails with one line naming sudo and setcap, status 6.
#[test]
#[cfg(target_os = "linux")]
fn live_capture_without_privileges() {
    let mut cmd = if is_root() {
        if !have("setpriv") {
            return;
        }
        let mut c = std::process::Command::new("setpriv");
        // Leaving uid 0 drops the capabilities as well (no keep-caps).
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_wirechat"));
        c
    } else {
        wirechat()
    };
    let out = cmd
        .args(["trace", "--count", "1", "--duration", "5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.starts_with("setpriv:") {
        eprintln!("SKIPPED: cannot drop privileges here: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("sudo") && err.contains("setcap cap_net_raw+ep"),
        "{err}"
    );
    assert!(err.contains("--read"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[cfg(target_os = "linux")]
fn skip_unless_root(what: &str) -> bool {
    if !is_root() {
        crate::util::cannot_run(&format!("{what} needs root (live capture)"));
        return true;
    }
    false
}

/// A real conversation under a live trace: the ladder, the Ctrl-C summary, and the pcap it
/// wrote read back by tshark with the same flags and relative seq/ack.
#[test]
#[cfg(target_os = "linux")]
fn live_trace_matches_tshark() {
    if skip_unless_root("live_trace_matches_tshark") {
        return;
    }
    let scratch = crate::util::scratch("live");
    let dir = scratch.path();
    let pcap = dir.join("live.pcap");
    let mut server = Proc::wirechat(&SERVER);
    let port = listen_port(&server).to_string();
    let pcap_arg = pcap.to_str().unwrap();
    let mut trace = Proc::wirechat(&[
        "trace",
        "--port",
        &port,
        "--count",
        "1000",
        "--duration",
        "20",
        "--write",
        pcap_arg,
    ]);
    trace.stderr.wait_text("capturing on lo");
    let mut client = Proc::wirechat(&["tcp", "connect", &format!("127.0.0.1:{port}")]);
    client.stderr.wait_text("connected to");
    client.send(b"hello over a traced wire\n");
    server.stdout.wait_text("hello over a traced wire");
    client.close_stdin();
    server.stderr.wait_text("peer closed");
    server.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    let out = trace.stdout.wait_text("summary:");
    assert!(out.contains("A --SYN--"), "{out}");
    assert!(out.contains("\"hello over a traced wire"), "{out}");
    trace.stdout.wait_text("final states:");
    // Ctrl-C: stops cleanly, prints the tally and closes the pcap. Delivered twice, 20 ms
    // apart, as `timeout` does (to the child, then to its group): that is one interrupt, not
    // the impatient second one that ends at once.
    for _ in 0..2 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(trace.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(trace.wait_exit(), 130);
    let out = String::from_utf8_lossy(&trace.stdout.wait_closed()).into_owned();
    assert!(out.contains("end: "), "{out}");
    assert!(out.contains("kernel dropped 0"), "{out}");
    assert!(out.contains("handshake: 3 segments"), "{out}");

    // Our reading of our own file.
    let ours: Vec<(u8, u64, Option<u64>)> = {
        let o = wirechat()
            .args(["trace", "--json", "--read", pcap_arg])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "segment")
            .map(|v| {
                let mut bits = 0u8;
                for f in v["flags"].as_array().unwrap() {
                    bits |= match f.as_str().unwrap() {
                        "FIN" => 1,
                        "SYN" => 2,
                        "RST" => 4,
                        "PSH" => 8,
                        "ACK" => 16,
                        "URG" => 32,
                        "ECE" => 64,
                        "CWR" => 128,
                        _ => 0,
                    };
                }
                (bits, v["seq"].as_u64().unwrap(), v["ack"].as_u64())
            })
            .collect()
    };
    assert!(ours.len() >= 7, "{ours:?}");
    if !have("tshark") {
        return;
    }
    let o = std::process::Command::new("tshark")
        .args([
            "-r",
            pcap_arg,
            "-T",
            "fields",
            "-e",
            "tcp.flags",
            "-e",
            "tcp.seq",
            "-e",
            "tcp.ack",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let theirs: Vec<(u8, u64, Option<u64>)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let bits = u16::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap() as u8;
            let ack = (bits & 16 != 0).then(|| f[2].parse().unwrap());
            (bits, f[1].parse().unwrap(), ack)
        })
        .collect();
    assert_eq!(ours, theirs);
}

/// `tcp connect --trace`: the conversation's own handshake and close on stderr.
#[test]
#[cfg(target_os = "linux")]
fn inline_trace_on_connect() {
    if skip_unless_root("inline_trace_on_connect") {
        return;
    }
    let mut server = Proc::wirechat(&SERVER);
    let port = listen_port(&server);
    let mut client = Proc::wirechat(&["tcp", "connect", &format!("127.0.0.1:{port}"), "--trace"]);
    client.stderr.wait_text("connected to");
    client
        .stderr
        .wait_text("wirechat: trace #1   +0.000000  A --SYN--");
    client.send(b"ping\n");
    server.stdout.wait_text("ping");
    client.close_stdin();
    server.stderr.wait_text("peer closed");
    server.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    let err = client.stderr.text();
    assert!(err.contains("wirechat: trace #1   summary:"), "{err}");
    assert!(err.contains("handshake: 3 segments"), "{err}");
    assert!(err.contains("\"ping\\n\""), "{err}");
    // Each segment is stamped when it arrived, even the first ones, which come right after
    // the capture opened (the kernel turns its receive stamps on a moment late): the times
    // never go backwards.
    let times: Vec<f64> = err
        .lines()
        .filter_map(|l| l.strip_prefix("wirechat: trace #1   +"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(times.len() >= 8, "{err}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}\n{err}");
    // The data itself still goes to stdout only.
    assert!(!client.stdout.text().contains("trace"));
}

/// `tcp connect -e gbk --trace`: the ladder shows the payload as the conversation's encoding
/// reads it, not as UTF-8 (which would show replacement characters for GBK bytes).
#[test]
#[cfg(target_os = "linux")]
fn inline_trace_shows_payload_in_the_conversations_encoding() {
    if skip_unless_root("inline_trace_shows_payload_in_the_conversations_encoding") {
        return;
    }
    let mut args = SERVER.to_vec();
    args.extend(["-e", "gbk"]);
    let mut server = Proc::wirechat(&args);
    let port = listen_port(&server);
    let addr = format!("127.0.0.1:{port}");
    let mut client = Proc::wirechat(&["tcp", "connect", &addr, "-e", "gbk", "--trace"]);
    client.stderr.wait_text("connected to");
    client.stderr.wait_text("A --SYN--");
    client.send("你好\n".as_bytes());
    server.stdout.wait_text("你好");
    client.stderr.wait_text("\"你好\\n\"");
    client.close_stdin();
    server.stderr.wait_text("peer closed");
    server.close_stdin();
    assert_eq!(client.wait_exit(), 0);
    assert!(!client.stderr.text().contains('\u{fffd}'));
}

/// Builds the fixtures that loopback cannot produce: run with
/// `cargo test make_synthetic_fixtures -- --ignored` to regenerate them.
#[test]
#[ignore]
fn make_synthetic_fixtures() {
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapPacket, PcapWriter};

    let (a, b) = ([127, 0, 0, 1], [127, 0, 0, 1]);
    let (pa, pb) = (40100u16, 8899u16);
    let t0 = Duration::from_secs(1_764_000_000);
    // (from A?, flags, seq, ack, payload, µs)
    type Seg = (bool, &'static str, u32, u32, &'static [u8], u64);
    let segs: [Seg; 9] = [
        (true, "S", 1000, 0, b"", 0),
        (false, "SA", 5000, 1001, b"", 20),
        (true, "A", 1001, 5001, b"", 40),
        (true, "PA", 1001, 5001, b"ping\n", 100),
        (false, "A", 5001, 1006, b"", 120),
        // Both FINs leave before either arrives: neither acknowledges the other's.
        (true, "FA", 1006, 5001, b"", 500),
        (false, "FA", 5001, 1006, b"", 501),
        (true, "A", 1007, 5002, b"", 540),
        (false, "A", 5002, 1007, b"", 541),
    ];
    let frame = |s: &Seg| {
        let (src, dst, sp, dp) = if s.0 { (a, b, pa, pb) } else { (b, a, pb, pa) };
        let mut bld = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, s.2, 65535);
        for c in s.1.chars() {
            bld = match c {
                'S' => bld.syn(),
                'A' => bld.ack(s.3),
                'F' => bld.fin(),
                'P' => bld.psh(),
                _ => bld,
            };
        }
        let mut out = Vec::new();
        bld.write(&mut out, s.4).unwrap();
        out
    };
    let file = std::fs::File::create(data("simultaneous-close.pcap")).unwrap();
    let mut w = PcapWriter::new(file).unwrap();
    for s in &segs {
        let f = frame(s);
        w.write_packet(&PcapPacket::new(
            t0 + Duration::from_micros(s.5),
            f.len() as u32,
            &f,
        ))
        .unwrap();
    }

    // damaged.pcap: a good SYN, a truncated TCP header, a bad IP version, an ICMP echo, an
    // ARP frame, a UDP datagram, then a record whose length runs past the end of the file.
    let good = frame(&segs[0]);
    let mut bad_version = good.clone();
    bad_version[14] = 0x75;
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(a, b, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, b"ping")
        .unwrap();
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let mut udp = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(a, b, 64)
        .udp(5000, 6000)
        .write(&mut udp, b"still here")
        .unwrap();
    let frames = [
        good.clone(),
        good[..40].to_vec(),
        bad_version,
        icmp,
        arp,
        udp,
    ];
    let mut bytes = Vec::new();
    {
        let mut w = PcapWriter::new(&mut bytes).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let p = PcapPacket::new(t0 + Duration::from_micros(i as u64), f.len() as u32, f);
            w.write_packet(&p).unwrap();
        }
    }
    // A record header claiming 1000 bytes, followed by only 10.
    bytes.extend_from_slice(&(t0.as_secs() as u32).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&1000u32.to_le_bytes());
    bytes.extend_from_slice(&1000u32.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 10]);
    std::fs::write(data("damaged.pcap"), bytes).unwrap();
}

/// pcapng (what tshark and Wireshark write by default; this one by `editcap -F pcapng` with
/// microsecond timestamps) gives the same ladder as pcap.
#[test]
fn pcapng_reads_like_pcap() {
    assert_eq!(ladder("ipv6.pcapng"), ladder("ipv6.pcap"));
}

/// `tcp listen --trace` on port 0: the trace learns the port from the "listening on" event.
#[test]
#[cfg(target_os = "linux")]
fn inline_trace_on_listen() {
    if skip_unless_root("inline_trace_on_listen") {
        return;
    }
    let mut args = SERVER.to_vec();
    args.push("--trace");
    let mut server = Proc::wirechat(&args);
    let port = listen_port(&server);
    let mut client = Proc::wirechat(&["tcp", "connect", &format!("127.0.0.1:{port}")]);
    client.stderr.wait_text("connected to");
    client.send(b"pong\n");
    server.stdout.wait_text("pong");
    client.close_stdin();
    server.stderr.wait_text("peer closed");
    server.close_stdin();
    assert_eq!(server.wait_exit(), 0);
    let err = server.stderr.text();
    assert!(
        err.contains(&format!("B 127.0.0.1:{port} (server)")),
        "{err}"
    );
    assert!(err.contains("A --SYN--"), "{err}");
    assert!(err.contains("wirechat: trace #1   summary:"), "{err}");
    assert!(err.contains("closed first"), "{err}");
}

/// `--explain`: every state change under the row that caused it, with its reason.
#[test]
fn explained_simultaneous_close() {
    let (status, out, err) = read("simultaneous-close.pcap", &["--explain"]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("FIN_WAIT_1 -> CLOSING"), "{out}");
    insta::assert_snapshot!("simultaneous_close_explained", out);
}

/// A pcapng of raw-IP frames (no link header) read and written back as pcap: the file takes the
/// frames' link type, so tshark reads every packet, and a frame from a second interface of
/// another link type is left out and counted on the end line.
#[test]
fn pcapng_without_ethernet_is_written_back_whole() {
    use etherparse::PacketBuilder;
    use pcap_file::DataLink;
    use pcap_file::pcap::PcapReader;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use std::borrow::Cow;

    let syn = |link: DataLink, port: u16| {
        let mut out = Vec::new();
        let b = match link {
            DataLink::ETHERNET => PacketBuilder::ethernet2([0; 6], [0; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(port, 80, 1000, 65535)
                .syn(),
            _ => PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(port, 80, 1000, 65535)
                .syn(),
        };
        b.write(&mut out, &[]).unwrap();
        out
    };
    let scratch = crate::util::scratch("rawng");
    let dir = scratch.path();
    let (input, output) = (dir.join("raw.pcapng"), dir.join("out.pcap"));
    {
        let mut w = PcapNgWriter::new(std::fs::File::create(&input).unwrap()).unwrap();
        for linktype in [DataLink::RAW, DataLink::ETHERNET] {
            // pcap-file writes timestamps in nanoseconds: say so (the default unit is µs).
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(9)],
            })
            .unwrap();
        }
        // Two raw SYNs on interface 0, one Ethernet SYN on interface 1 between them.
        for (i, (iface, link, port)) in [
            (0, DataLink::RAW, 40001),
            (1, DataLink::ETHERNET, 40002),
            (0, DataLink::RAW, 40003),
        ]
        .into_iter()
        .enumerate()
        {
            let data = syn(link, port);
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: iface,
                timestamp: Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64),
                original_len: data.len() as u32,
                data: Cow::Owned(data),
                options: vec![],
            })
            .unwrap();
        }
    }
    let out = wirechat()
        .args(["trace", "--read"])
        .arg(&input)
        .arg("--write")
        .arg(&output)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.matches("--SYN--").count(), 3, "{stdout}");
    assert!(
        stdout.contains("1 frames of another link type not written"),
        "{stdout}"
    );
    let mut r = PcapReader::new(std::fs::File::open(&output).unwrap()).unwrap();
    assert_eq!(r.header().datalink, DataLink::RAW);
    let mut ports = Vec::new();
    while let Some(p) = r.next_packet() {
        let data = p.unwrap().data.into_owned();
        ports.push(u16::from_be_bytes([data[20], data[21]]));
    }
    assert_eq!(ports, [40001, 40003]);
}

/// A record with an impossible timestamp or original length still has a known length: its
/// bytes are used, and the records after it are read (tshark reads them all too).
#[test]
fn a_record_with_a_bad_header_field_does_not_end_the_reading() {
    let mut bytes = std::fs::read(data("three-way-close.pcap")).unwrap();
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian µs pcap"
    );
    // The first record's header follows the 24-byte file header.
    bytes[28..32].copy_from_slice(&u32::MAX.to_le_bytes()); // ts_usec
    bytes[36..40].copy_from_slice(&0u32.to_le_bytes()); // orig_len
    let scratch = crate::util::scratch("badrec");
    let dir = scratch.path();
    let f = dir.join("bad-record.pcap");
    // The file written, then read: the status and what was printed.
    let read = |bytes: &[u8]| {
        std::fs::write(&f, bytes).unwrap();
        let out = wirechat()
            .args(["trace", "--read"])
            .arg(&f)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };
    let (status, text) = read(&bytes);
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains("end: 10 frames, 10 TCP segments"), "{text}");
    assert!(!text.contains("damaged"), "{text}");
    // A record that claims more bytes than any capture holds still ends it, with a reason.
    bytes[32..36].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // incl_len
    let (_, text) = read(&bytes);
    assert!(
        text.contains("damaged record, reading stops here"),
        "{text}"
    );
}

/// A receiver with no room left is probed with one byte at a time (as Windows and the BSDs
/// probe); its replies repeat the ACK and the zero window. The ladder labels them as Wireshark
/// does (TCP ZeroWindowProbe, TCP ZeroWindowProbeAck), not as duplicate ACKs.
#[test]
fn zero_window_probes_are_labelled_and_their_acks_are_not_dup_acks() {
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapPacket, PcapWriter};

    // (from A?, flags, seq, ack, window, payload)
    type Seg = (bool, &'static str, u32, u32, u16, &'static [u8]);
    let segs: [Seg; 13] = [
        (true, "S", 1000, 0, 65535, b""),
        (false, "SA", 5000, 1001, 65535, b""),
        (true, "A", 1001, 5001, 65535, b""),
        (true, "PA", 1001, 5001, 65535, b"fill"),
        (false, "A", 5001, 1005, 0, b""),
        (true, "A", 1005, 5001, 65535, b"m"),
        (false, "A", 5001, 1005, 0, b""),
        (true, "A", 1005, 5001, 65535, b"m"),
        (false, "A", 5001, 1005, 0, b""),
        (false, "A", 5001, 1005, 4096, b""),
        (true, "PA", 1005, 5001, 65535, b"more"),
        (false, "A", 5001, 1009, 4096, b""),
        (true, "R", 1009, 0, 0, b""),
    ];
    let frame = |s: &Seg| {
        let ((src, sp), (dst, dp)) = if s.0 {
            (([127, 0, 0, 1], 40200), ([127, 0, 0, 1], 8899))
        } else {
            (([127, 0, 0, 1], 8899), ([127, 0, 0, 1], 40200))
        };
        let mut bld = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, s.2, s.4);
        for c in s.1.chars() {
            bld = match c {
                'S' => bld.syn(),
                'A' => bld.ack(s.3),
                'P' => bld.psh(),
                'R' => bld.rst(),
                _ => bld,
            };
        }
        let mut out = Vec::new();
        bld.write(&mut out, s.5).unwrap();
        out
    };
    let scratch = crate::util::scratch("zwp");
    let dir = scratch.path();
    let file = dir.join("zero-window-probes.pcap");
    {
        let mut w = PcapWriter::new(std::fs::File::create(&file).unwrap()).unwrap();
        let t0 = Duration::from_secs(1_764_000_000);
        for (i, s) in segs.iter().enumerate() {
            let f = frame(s);
            let at = t0 + Duration::from_millis(i as u64);
            w.write_packet(&PcapPacket::new(at, f.len() as u32, &f))
                .unwrap();
        }
    }
    let out = wirechat()
        .args(["trace", "--read"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("#1   +")).collect();
    assert_eq!(rows.len(), segs.len(), "{stdout}");
    assert!(!stdout.contains("dup ACK"), "{stdout}");
    for i in [5, 7] {
        assert!(
            rows[i].contains("[zero window probe]"),
            "row {i}:\n{stdout}"
        );
        assert!(!rows[i].contains("keep-alive"), "row {i}:\n{stdout}");
    }
    for i in [6, 8] {
        assert!(
            rows[i].contains("[zero window probe ACK]  [zero window]"),
            "row {i}:\n{stdout}"
        );
    }
    // The probed byte, sent again with more once there is room, is new data.
    assert!(!rows[10].contains('['), "{stdout}");
    assert!(stdout.contains("data: A->B 8 bytes"), "{stdout}");
}
