//! `wirechat demo`, the main job for a newcomer.

use crate::util::wirechat;

/// The demo runs every step on loopback by itself and exits 0.
#[test]
fn demo_runs_and_narrates() {
    let out = wirechat().arg("demo").output().expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "listen(backlog",
        "three-way handshake",
        "decoded as GBK: \"你好，服务器 haha\"",
        "shutdown(SHUT_WR): sends FIN",
        "half-closed",
        "shows: \"你好！\\nhow are you?\\n\"",
        "server  conversation over: the peer sent the quit word",
        "client  conversation over: the quit word was typed here",
        "recvfrom -> 4 bytes from 127.0.0.1:",
        "\"88\" is the tutorial's quit word",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
}

/// `wirechat demo | head -3`: once nobody reads, the demo ends quietly with status 0; output
/// that cannot be written (a full disk) ends it with a one-line error and status 1.
#[test]
fn demo_ends_quietly_when_its_reader_goes() {
    // The reading end is closed before the demo starts, so its first line already finds
    // nobody there (the whole demo fits in a pipe's buffer, so a reader that left later might
    // not be noticed at all).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = wirechat()
        .arg("demo")
        .stdout(writer)
        .output()
        .expect("run demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");

    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out = wirechat()
            .arg("demo")
            .stdout(full)
            .output()
            .expect("run demo");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(
            err.trim(),
            "wirechat: error: cannot write the demo: no space left on device"
        );
    }
}
