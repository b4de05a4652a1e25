//! `wirechat demo`: the tutorial's conversations, run for real on ephemeral loopback ports in one
//! process and narrated step by step: socket, bind, listen, connect/accept, send/recv, the
//! half-close, close; GBK and UTF-8 on the wire; then a chat through wirechat's own conversation
//! pump; then UDP, which has no connection at all. Needs no arguments, network or privileges.

use crate::codec::{Encoding, HexDump};
use crate::session::{self, Activity, Events, Options};
use crate::transport::{self, HostPort};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn loopback() -> HostPort {
    HostPort {
        host: Some("127.0.0.1".into()),
        port: 0,
    }
}

/// Prints a line of the walkthrough. Once stdout is closed (`wirechat demo | head`) nobody is
/// reading: the demo ends there, quietly. Any other write error ends it with that error.
macro_rules! out {
    ($($arg:tt)*) => {
        write_line(format_args!($($arg)*))
    };
}

fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!(
            "wirechat: error: cannot write the demo: {}",
            crate::transport::describe(&e)
        );
        std::process::exit(1);
    }
}

fn say(who: &str, what: impl AsRef<str>) {
    let mut lines = what.as_ref().lines();
    if let Some(first) = lines.next() {
        out!("{who:>8}  {first}");
    }
    for more in lines {
        out!("{:>8}  {more}", "");
    }
}

fn heading(title: &str) {
    out!("\n── {title} ──");
}

fn wire(bytes: &[u8]) -> String {
    let mut s = String::new();
    HexDump::default().dump(bytes, &mut s);
    s.trim_end().to_string()
}

fn gbk(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Encoding::GBK.encode_message(text, &mut out);
    out
}

fn from_gbk(bytes: &[u8]) -> String {
    let mut s = String::new();
    Encoding::GBK.decode_message(bytes, &mut s);
    s
}

/// Runs the walkthrough.
pub async fn run() -> anyhow::Result<()> {
    out!("wirechat demo: the tutorial's TCP and UDP conversations, live on 127.0.0.1");
    tcp_steps().await?;
    tcp_chat().await?;
    udp_steps().await?;
    out!("\nDone: every step above used real sockets. Try it between two terminals:");
    out!("  wirechat tcp listen 8899                 wirechat tcp connect 127.0.0.1:8899");
    out!("  wirechat udp listen 8888 -e gbk          wirechat udp connect 127.0.0.1:8888 -e gbk");
    Ok(())
}

async fn tcp_steps() -> anyhow::Result<()> {
    heading("1. TCP: handshake, a GBK message, the four-way close");
    let listener = transport::tcp_listen(&loopback()).await?;
    let addr = listener.local_addr()?;
    say(
        "server",
        format!(
            "socket(AF_INET, SOCK_STREAM), bind(127.0.0.1:0): the kernel chose port {}",
            addr.port()
        ),
    );
    say(
        "server",
        format!(
            "listen(backlog {}): LISTEN, waiting for a client",
            transport::BACKLOG
        ),
    );
    let target = HostPort {
        host: Some("127.0.0.1".into()),
        port: addr.port(),
    };
    say(
        "client",
        format!("socket(AF_INET, SOCK_STREAM), connect({addr})"),
    );
    let (client, accepted) = tokio::join!(transport::tcp_connect(&target, None), listener.accept());
    let (mut client, _) = client?;
    let (mut server, peer) = accepted?;
    say(
        "kernel",
        "three-way handshake: client SYN (seq x) ->, <- server SYN+ACK (seq y, ack x+1),\n\
         client ACK (ack y+1) ->. Both sides are now ESTABLISHED.",
    );
    say("client", format!("connected from {}", client.local_addr()?));
    say(
        "server",
        format!("accept() -> a new socket for {peer}; the listening socket keeps listening"),
    );

    let text = "你好，服务器 haha";
    let bytes = gbk(text);
    say(
        "client",
        format!(
            "send({text:?}) as GBK: {} bytes (UTF-8 would take {})\n{}",
            bytes.len(),
            text.len(),
            wire(&bytes)
        ),
    );
    client.write_all(&bytes).await?;
    let mut buf = vec![0u8; 1024];
    let n = read_exactly(&mut server, &mut buf, bytes.len()).await?;
    say(
        "server",
        format!(
            "recv -> {n} bytes, decoded as GBK: {:?}",
            from_gbk(&buf[..n])
        ),
    );

    let reply = "收到 (UTF-8 this time)";
    server.write_all(reply.as_bytes()).await?;
    say(
        "server",
        format!("send({reply:?}) as UTF-8: {} bytes", reply.len()),
    );
    let n = read_exactly(&mut client, &mut buf, reply.len()).await?;
    say(
        "client",
        format!(
            "recv -> {n} bytes: as UTF-8 {:?}; read as GBK they would be {:?}",
            String::from_utf8_lossy(&buf[..n]),
            from_gbk(&buf[..n])
        ),
    );
    say(
        "",
        "the bytes are the same; only the agreed encoding makes them text.",
    );

    client.shutdown().await?;
    say(
        "client",
        "shutdown(SHUT_WR): sends FIN, \"I have nothing more to send\" (FIN_WAIT_1, then\n\
         FIN_WAIT_2 once the server's kernel ACKs it). It can still receive.",
    );
    let n = server.read(&mut buf).await?;
    say(
        "server",
        format!(
            "recv -> {n} bytes: that is the client's FIN (CLOSE_WAIT). The server may still send."
        ),
    );
    let last = "再见";
    server.write_all(&gbk(last)).await?;
    say(
        "server",
        format!("send({last:?}) as GBK after the client's FIN: a half-closed connection"),
    );
    let n = read_exactly(&mut client, &mut buf, gbk(last).len()).await?;
    say(
        "client",
        format!(
            "recv -> {:?}: data still flows toward the side that sent FIN",
            from_gbk(&buf[..n])
        ),
    );
    drop(server);
    say("server", "close(): its FIN goes out (LAST_ACK)");
    let n = client.read(&mut buf).await?;
    say(
        "client",
        format!(
            "recv -> {n} bytes: the server's FIN. Its kernel ACKs it and waits in TIME_WAIT.\n\
             FIN, ACK, FIN, ACK: the four-way close (Linux often rides the ACK on the FIN)."
        ),
    );
    Ok(())
}

async fn read_exactly(
    s: &mut tokio::net::TcpStream,
    buf: &mut [u8],
    want: usize,
) -> std::io::Result<usize> {
    let mut got = 0;
    let want = want.min(buf.len());
    // One send may arrive in several recvs: the tutorial's recv(1024) assumes otherwise.
    while got < want {
        let n = s.read(&mut buf[got..want]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

async fn tcp_chat() -> anyhow::Result<()> {
    heading("2. TCP chat until \"end\", through wirechat's conversation pump");
    say(
        "",
        "as `wirechat tcp listen 0 -e gbk --quit end` and `wirechat tcp connect ... -e gbk --quit end`",
    );
    let listener = transport::tcp_listen(&loopback()).await?;
    let addr = listener.local_addr()?;
    let target = HostPort {
        host: Some("127.0.0.1".into()),
        port: addr.port(),
    };
    let opts = Options {
        encoding: Some(Encoding::GBK),
        quit: Some("end".into()),
        ..Options::default()
    };
    let narrate = |who: &'static str| Events::new(move |e| say(who, format!("[event] {e}")));
    let (client, accepted) = tokio::join!(transport::tcp_connect(&target, None), listener.accept());
    let ((client, _), (server, _)) = (client?, accepted?);
    // Each side's keyboard and screen are in-memory pipes that this script types into and reads.
    let (mut server_keys, server_in) = tokio::io::duplex(4096);
    let (server_screen, mut server_shows) = tokio::io::duplex(4096);
    let (mut client_keys, client_in) = tokio::io::duplex(4096);
    let (client_screen, mut client_shows) = tokio::io::duplex(4096);
    let (a1, a2) = (Activity::default(), Activity::default());
    let (s_events, c_events) = (narrate("server"), narrate("client"));
    let script = async {
        server_keys.write_all("欢迎 (welcome)\n".as_bytes()).await?;
        say("server", "types: 欢迎 (welcome)");
        say(
            "client",
            format!("shows: {:?}", shown(&mut client_shows, "欢迎").await?),
        );
        client_keys
            .write_all("你好！\nhow are you?\n".as_bytes())
            .await?;
        say("client", "types: 你好！ / how are you?");
        say(
            "server",
            format!("shows: {:?}", shown(&mut server_shows, "you?").await?),
        );
        client_keys.write_all(b"end\n").await?;
        say("client", "types: end");
        say(
            "server",
            format!("shows: {:?}", shown(&mut server_shows, "end").await?),
        );
        anyhow::Ok(())
    };
    let mut s_out = session::Outbound::new(&opts, false, s_events.clone());
    let mut c_out = session::Outbound::new(&opts, false, c_events.clone());
    let (s_end, c_end, script) = tokio::join!(
        session::tcp::converse(
            server,
            server_in,
            &mut s_out,
            server_screen,
            &opts,
            &s_events,
            &a1
        ),
        session::tcp::converse(
            client,
            client_in,
            &mut c_out,
            client_screen,
            &opts,
            &c_events,
            &a2
        ),
        script,
    );
    script?;
    say("server", format!("conversation over: {}", s_end?));
    say("client", format!("conversation over: {}", c_end?));
    say(
        "",
        "the UTF-8 typed on each side crossed the wire as GBK and was shown as UTF-8 again;\n\
         \"end\" ended the conversation on both sides.",
    );
    Ok(())
}

/// Reads what a side's screen shows until `needle` appears (or the conversation ends).
async fn shown(screen: &mut tokio::io::DuplexStream, needle: &str) -> std::io::Result<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = screen.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

async fn udp_steps() -> anyhow::Result<()> {
    heading("3. UDP: no connection, no handshake, one datagram per message");
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let receiver = transport::udp_bind_addr(local(0), false)?;
    let raddr = receiver.local_addr()?;
    say(
        "receiver",
        format!(
            "socket(AF_INET, SOCK_DGRAM), bind(127.0.0.1:0): port {}",
            raddr.port()
        ),
    );
    let sender = transport::udp_bind_addr(local(0), false)?;
    let saddr = sender.local_addr()?;
    say(
        "sender",
        format!(
            "socket(AF_INET, SOCK_DGRAM): no connect and no handshake; each sendto names\n\
             the receiver, like addressing a letter (the kernel gave it port {})",
            saddr.port()
        ),
    );
    let mut buf = vec![0u8; 1024];
    for text in ["你好", "88"] {
        let bytes = gbk(text);
        sender.send_to(&bytes, raddr).await?;
        say(
            "sender",
            format!("sendto({text:?} as GBK, {} bytes, {raddr})", bytes.len()),
        );
        let (n, from) = receiver.recv_from(&mut buf).await?;
        let got = from_gbk(&buf[..n]);
        say(
            "receiver",
            format!("recvfrom -> {n} bytes from {from}: {got:?}"),
        );
        if got == "88" {
            say(
                "receiver",
                "\"88\" is the tutorial's quit word: the chat ends",
            );
        } else {
            let reply = gbk("收到");
            receiver.send_to(&reply, from).await?;
            say(
                "receiver",
                format!("sendto(\"收到\", {from}): the reply goes to whoever sent"),
            );
            let (n, _) = sender.recv_from(&mut buf).await?;
            say("sender", format!("recvfrom -> {:?}", from_gbk(&buf[..n])));
        }
    }
    drop((sender, receiver));
    say(
        "",
        "close(): nothing goes on the wire. UDP promised no delivery, so there is nothing to\n\
         set up and nothing to tear down: that is why it has no handshake.",
    );
    Ok(())
}
