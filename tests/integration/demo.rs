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
        "conversation over: Quit(Peer)",
        "recvfrom -> 4 bytes from 127.0.0.1:",
        "\"88\" is the tutorial's quit word",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
}
