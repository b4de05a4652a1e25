//! wirechat at a real terminal (tmux provides it): incoming messages are printed above the line
//! being typed without tearing it, and a peer's escape sequences arrive escaped.

use crate::util::{DEADLINE, have};
use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::time::Instant;

/// A tmux session running one command, killed on drop.
struct Tmux(String);

impl Tmux {
    fn start(command: &str) -> Tmux {
        let name = format!("wirechat-test-{}-{}", std::process::id(), line!());
        let ok = Command::new("tmux")
            .args([
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

    fn screen(&self) -> String {
        let out = Command::new("tmux")
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
        Command::new("tmux")
            .args(["send-keys", "-t", &self.0, "-l", keys])
            .status()
            .unwrap();
    }

    fn enter(&self) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.0, "Enter"])
            .status()
            .unwrap();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn incoming_messages_do_not_tear_the_typed_line() {
    if !have("tmux") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tmux = Tmux::start(&format!(
        "{} tcp connect {addr} -e gbk; echo EXITED=$?; sleep 60",
        env!("CARGO_BIN_EXE_wirechat")
    ));
    let mut peer = crate::util::accept(&listener);
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
