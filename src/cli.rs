//! The command line: clap derive definitions, their translation into checked session options,
//! and [`run`], which dispatches a parsed command. `anyhow` is used from here up only.

// The doc comments below are clap's help text, written in the usual `[HOST:]PORT` notation,
// which rustdoc would otherwise read as links.
#![allow(rustdoc::broken_intra_doc_links)]

use crate::codec::Encoding;
use crate::session::terminal::{CtrlD, Terminal};
use crate::session::{self, Eol, Options};
use crate::trace::inline::{Role, attach};
use crate::transport::HostPort;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Talk to, test and learn TCP and UDP.
#[derive(Debug, Parser)]
#[command(
    name = "wirechat",
    version,
    about,
    propagate_version = true,
    args_override_self = true,
    after_help = TOP_EXAMPLES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More diagnostics on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print no events on stderr (the listening line, warnings and errors still show).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

const TOP_EXAMPLES: &str = "Examples:
  wirechat demo                              narrated TCP and UDP walkthrough on loopback
  wirechat tcp listen 8899                   the tutorial's TCP server
  wirechat tcp connect 127.0.0.1:8899 -e gbk chat with a GBK peer
  wirechat udp listen 8888 --quit 88         the tutorial's UDP receiver
  wirechat udp connect 127.0.0.1:8888        the tutorial's UDP sender
  sudo wirechat trace --port 8899            watch handshakes and closes on loopback";

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// TCP: listen for a client or connect to a server, then converse.
    #[command(subcommand)]
    Tcp(TcpCommand),
    /// UDP: receive datagrams and send lines as datagrams.
    #[command(subcommand)]
    Udp(UdpCommand),
    /// A narrated walkthrough: a TCP and a UDP conversation on loopback, step by step.
    Demo,
    /// Serve a chat room on [HOST:]PORT for any line-based client (wirechat, nc, telnet, ...).
    Room(RoomArgs),
    /// Show the handshake, data and close of real connections as a ladder (live capture needs
    /// root or CAP_NET_RAW; --read does not).
    Trace(TraceArgs),
}

/// `wirechat room ...`
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wirechat room 8899                               a room on every interface
  wirechat room 127.0.0.1:0 --history 20           the kernel picks a port; joiners see 20 lines
  wirechat room 8899 --max-clients 5000 --rate 5 --idle-timeout 600 --log room.log
  wirechat tcp connect 127.0.0.1:8899              join it (or nc, telnet, a Python socket)
In the room: /nick NAME, /who, /msg NICK text, /me text, /encoding gbk, /quit, /help.
Lines typed on the server's stdin go to everyone as <server> text.")]
pub struct RoomArgs {
    /// Address to listen on: PORT, HOST:PORT or [IPV6]:PORT.
    pub addr: HostPort,
    /// Clients served at once; one more is told the room is full.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_clients: usize,
    /// The longest line a client may send, in bytes; longer lines are refused.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub max_line: usize,
    /// Lines a second each client may send on average (0: no limit); faster lines are held back.
    #[arg(
        long,
        value_name = "MSGS_PER_SEC",
        default_value_t = 20.0,
        allow_negative_numbers = true
    )]
    pub rate: f64,
    /// Lines a client may send at once before --rate applies (at least 1).
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// Disconnect a client that sends nothing for SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    pub idle_timeout: Option<Duration>,
    /// Append a timestamped transcript to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<std::path::PathBuf>,
    /// Send each joiner the last N chat lines (at most 512 KiB of them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub history: usize,
    /// The wire encoding a client has until it says otherwise with /encoding (gbk for a room
    /// of the tutorial's Python clients): its greeting and the history come in it.
    #[arg(short, long, value_name = "LABEL", value_parser = parse_encoding)]
    pub encoding: Option<Encoding>,
    /// Lines a client may fall behind while it is not reading (its socket is full) before it
    /// is disconnected. The room keeps those lines once for all clients.
    #[arg(long, value_name = "LINES", default_value_t = 16_384)]
    pub queue: usize,
    /// Bytes of lines a client may fall behind likewise: it is disconnected at --queue lines or
    /// at this many bytes, whichever comes first (at least 65536). Also kept once for all.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(65536..))]
    pub queue_bytes: u64,
    /// Announce joins and leaves only while the room has at most N members.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub announce_max: usize,
    /// Threads serving the room, each flushing a share of the clients (0: one per core; at
    /// most 256). One was best on 2 cores shared with the clients; more help when the cores
    /// are the room's.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(0..=256))]
    pub threads: u16,
}

impl RoomArgs {
    fn config(&self) -> crate::room::Config {
        crate::room::Config {
            max_clients: self.max_clients,
            max_line: self.max_line,
            // 0 turns the limit off; anything else that is not a positive number is refused.
            rate: (self.rate != 0.0).then_some((self.rate, self.burst)),
            idle_timeout: self.idle_timeout,
            history: self.history,
            encoding: self.encoding.unwrap_or(Encoding::UTF8),
            log: self.log.clone(),
            queue: self.queue,
            queue_bytes: self.queue_bytes,
            announce_max: self.announce_max,
            ..crate::room::Config::default()
        }
    }
}

/// `wirechat trace ...`
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sudo wirechat trace --port 8899                  ladders of connections to or from port 8899
  sudo wirechat trace --port 8899 --layers         every header field of every packet
  wirechat trace --read s.pcap --explain           why each end changed state, row by row
  sudo wirechat trace --count 20 --write s.pcap    save 20 packets for tshark or Wireshark
  wirechat trace --read s.pcap --json              a saved capture as JSON lines, no root needed
  wirechat tcp connect 127.0.0.1:8899 --trace      a conversation with its own ladder on stderr")]
pub struct TraceArgs {
    /// Interface to capture on (`any` for all).
    #[arg(short, long, value_name = "IFACE", default_value = "lo")]
    pub iface: String,
    /// Only packets to or from this port.
    #[arg(short, long)]
    pub port: Option<u16>,
    /// Only packets to or from this address.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<IpAddr>,
    /// Break every packet down layer by layer: link, IP, TCP/UDP fields, payload text and hex.
    #[arg(long)]
    pub layers: bool,
    /// Under each row, the state changes it caused and why (with the RFC section).
    #[arg(short = 'e', long)]
    pub explain: bool,
    /// One JSON object per line per packet and per event.
    #[arg(long)]
    pub json: bool,
    /// Show payload text as this encoding decodes it (gbk, big5, ...; default utf-8).
    #[arg(long, value_name = "LABEL", value_parser = parse_encoding)]
    pub encoding: Option<Encoding>,
    /// Save the packets shown to a pcap file.
    #[arg(short, long, value_name = "FILE.pcap")]
    pub write: Option<PathBuf>,
    /// Read a saved capture (pcap or pcapng) instead of capturing live.
    #[arg(short, long, value_name = "FILE.pcap")]
    pub read: Option<PathBuf>,
    /// Stop after N packets.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
}

/// `wirechat tcp ...`
#[derive(Debug, Subcommand)]
pub enum TcpCommand {
    /// Listen on [HOST:]PORT, accept one client and converse (all interfaces without HOST).
    #[command(after_help = "Examples:
  wirechat tcp listen 8899                 accept one client on any interface
  wirechat tcp listen 127.0.0.1:0          the kernel picks a port; the line on stderr says which
  wirechat tcp listen [::1]:8899 -k        IPv6 loopback, clients one after another
  wirechat tcp listen 8888 -e gbk --quit end --eol none   the tutorial's chat server")]
    Listen {
        /// Address to listen on: PORT, HOST:PORT or [IPV6]:PORT.
        addr: HostPort,
        /// Serve clients one after another instead of exiting after the first. A quit word
        /// received ends that client's conversation; the quit word typed ends the listener.
        #[arg(short = 'k', long)]
        keep_open: bool,
        /// Show this conversation's handshake and close on stderr as they happen (needs root
        /// or CAP_NET_RAW).
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        talk: TalkArgs,
    },
    /// Connect to HOST:PORT and converse.
    #[command(after_help = "Examples:
  wirechat tcp connect 127.0.0.1:8899
  wirechat tcp connect example.org:80 < request.txt > response.txt
  wirechat tcp connect 127.0.0.1:8888 -e gbk --quit end --eol none   the tutorial's chat client
  wirechat tcp connect 127.0.0.1:7 --hex         type 48 65 6c 6c 6f, see a hexdump")]
    Connect {
        /// Server address: HOST:PORT or [IPV6]:PORT.
        #[arg(value_parser = destination)]
        addr: HostPort,
        /// Give up connecting after SECS seconds.
        #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
        timeout: Option<Duration>,
        /// Show this conversation's handshake and close on stderr as they happen (needs root
        /// or CAP_NET_RAW).
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        talk: TalkArgs,
    },
}

/// `wirechat udp ...`
#[derive(Debug, Subcommand)]
pub enum UdpCommand {
    /// Bind [HOST:]PORT and receive datagrams; typed lines go to --peer or the last sender.
    #[command(after_help = "Examples:
  wirechat udp listen 127.0.0.1:8888 -e gbk --quit 88    the tutorial's UDP receiver
  wirechat udp listen 8989 --peer 127.0.0.1:8080         one side of the two-way chat")]
    Listen {
        /// Address to bind: PORT, HOST:PORT or [IPV6]:PORT.
        addr: HostPort,
        /// Send typed lines to this address instead of to the last sender.
        #[arg(long, value_name = "HOST:PORT", value_parser = destination)]
        peer: Option<HostPort>,
        #[command(flatten)]
        raw: RawArg,
        #[command(flatten)]
        talk: TalkArgs,
    },
    /// Send typed lines as datagrams to HOST:PORT and show the replies.
    #[command(after_help = "Examples:
  wirechat udp connect 127.0.0.1:8888 -e gbk --quit 88   the tutorial's UDP sender
  wirechat udp connect 127.0.0.1:8989 --bind 8080        the other side of the two-way chat")]
    Connect {
        /// Where datagrams go: HOST:PORT or [IPV6]:PORT.
        #[arg(value_parser = destination)]
        addr: HostPort,
        /// Local address to send from (and receive on): PORT or HOST:PORT.
        #[arg(long, value_name = "[HOST:]PORT")]
        bind: Option<HostPort>,
        #[command(flatten)]
        raw: RawArg,
        #[command(flatten)]
        talk: TalkArgs,
    },
}

/// `--raw` for UDP: binary data, as nc -u moves it.
#[derive(Debug, Args)]
pub struct RawArg {
    /// Binary datagrams: each read of stdin is sent as one datagram (at most 65,507 bytes,
    /// nothing removed), and each datagram received is written out as it is, with nothing
    /// added (on a terminal it is still shown escaped, one per line).
    #[arg(
        long,
        conflicts_with_all = ["encoding", "hex", "quit", "crlf", "eol", "show_peer", "timestamps"]
    )]
    pub raw: bool,
}

/// Options shared by every conversation.
#[derive(Debug, Args)]
pub struct TalkArgs {
    /// Text encoding on the wire (gbk, gb18030, big5, shift_jis, utf-8, ...), as browsers
    /// have them: big5 is Big5-HKSCS and euc-kr is windows-949 (Python: big5hkscs, cp949). The
    /// terminal stays UTF-8. Without it bytes pass through untouched.
    #[arg(short, long, value_name = "LABEL", value_parser = parse_encoding_arg)]
    pub encoding: Option<EncodingArg>,
    /// Typed lines are hex bytes (48 65 6c or 48656c); received data is shown as a hexdump.
    #[arg(short = 'x', long)]
    pub hex: bool,
    /// A line equal to WORD, typed or received, ends the conversation (the tutorial uses
    /// "end" for TCP and "88" for UDP). With --hex a typed line that is hex is compared as
    /// bytes (type 38 38 for 88), and a WORD that is not hex may be typed as it is.
    #[arg(long, value_name = "WORD", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub quit: Option<String>,
    /// Send line endings as CRLF (same as --eol crlf).
    #[arg(short = 'C', long, conflicts_with = "eol")]
    pub crlf: bool,
    /// Line ending sent after each typed line: lf, crlf, or none (each line a message of its
    /// own, as the tutorial's Python peers expect; a terminal then also shows each read from
    /// the peer at once). Default: on TCP each line keeps its own; a datagram, and the bytes of
    /// a hex line, carry none.
    #[arg(long, value_enum, value_name = "EOL")]
    pub eol: Option<Eol>,
    /// Tag each received message with the sender's address (default for udp listen on a
    /// terminal).
    #[arg(long, overrides_with = "hide_peer")]
    pub show_peer: bool,
    /// Do not tag received messages with the sender's address.
    #[arg(long)]
    pub hide_peer: bool,
    /// Tag each received message with the local time.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Close after SECS seconds with no data either way (tcp listen: once a client is
    /// connected; waiting for one has no limit, as with nc -l).
    #[arg(short = 'w', long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    pub idle_timeout: Option<Duration>,
    /// Read the terminal plainly instead of through the line editor.
    #[arg(long)]
    pub no_editor: bool,
}

fn parse_encoding(label: &str) -> Result<Encoding, String> {
    Encoding::from_label(label).map_err(|e| e.to_string())
}

/// A conversation's `-e`: the encoding, and the label it was asked for by.
#[derive(Clone, Debug)]
pub struct EncodingArg {
    /// The encoding.
    pub encoding: Encoding,
    /// As typed.
    pub label: String,
}

impl EncodingArg {
    /// What the user should know when the label does not mean what it seems to: WHATWG (and
    /// so encoding_rs) reads `latin1`, `iso-8859-1` and `ascii` as windows-1252.
    pub fn surprise(&self) -> Option<String> {
        let label = self.label.trim().to_ascii_lowercase();
        if self.encoding.name() != "windows-1252"
            || matches!(label.as_str(), "windows-1252" | "cp1252" | "x-cp1252")
        {
            return None;
        }
        let ascii = matches!(label.as_str(), "ascii" | "us-ascii" | "ansi_x3.4-1968");
        Some(if ascii {
            format!(
                "-e {} is windows-1252 here (as browsers and the WHATWG Encoding Standard read \
                 it): characters outside ASCII are sent as windows-1252 bytes, not refused",
                self.label
            )
        } else {
            format!(
                "-e {} is windows-1252 here (as browsers and the WHATWG Encoding Standard read \
                 it): bytes 0x80-0x9F are shown as € ‚ ƒ ..., and € is sent as 0x80, which a \
                 Python latin-1 peer reads as a control character",
                self.label
            )
        })
    }
}

fn parse_encoding_arg(label: &str) -> Result<EncodingArg, String> {
    Ok(EncodingArg {
        encoding: parse_encoding(label)?,
        label: label.to_string(),
    })
}

/// An address to connect or send to: port 0 means "any free port" only when listening.
fn destination(s: &str) -> Result<HostPort, String> {
    let addr: HostPort = s.parse()?;
    if addr.port == 0 {
        return Err(
            "port 0 only means \"any free port\" when listening; a destination needs its port"
                .into(),
        );
    }
    Ok(addr)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        // Above 0 but below a nanosecond (1e-10), which a Duration cannot count: the shortest
        // time it can, rather than refuse a number that is above 0.
        Ok(_) if secs > 0.0 => Ok(Duration::from_nanos(1)),
        // Too long to count (1e30, inf): as good as none, like any other huge value.
        Err(_) if secs > 0.0 => Ok(Duration::MAX),
        _ => Err(format!("{s:?} must be a number of seconds above 0")),
    }
}

impl Cli {
    /// Parses the command line, then checks what clap cannot see option by option.
    pub fn parse_checked() -> Result<Cli, clap::Error> {
        let cli = Cli::try_parse()?;
        if let Some(talk) = cli.talk() {
            talk.check()?;
        }
        Ok(cli)
    }

    fn talk(&self) -> Option<&TalkArgs> {
        match &self.command {
            Command::Tcp(TcpCommand::Listen { talk, .. } | TcpCommand::Connect { talk, .. })
            | Command::Udp(UdpCommand::Listen { talk, .. } | UdpCommand::Connect { talk, .. }) => {
                Some(talk)
            }
            _ => None,
        }
    }
}

impl TalkArgs {
    /// The wire encoding, if one was asked for.
    fn encoding(&self) -> Option<Encoding> {
        self.encoding.as_ref().map(|e| e.encoding)
    }

    /// A quit word the encoding cannot carry would go out as `?` and be matched as `?`.
    fn check(&self) -> Result<(), clap::Error> {
        // Compared with whole lines, a word with a line break in it could never match.
        if let Some(word) = self.quit.as_ref().filter(|w| w.contains(['\n', '\r'])) {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "the quit word {word:?} has a line break in it, so no line could ever \
                     match it\n"
                ),
            ));
        }
        if let (Some(enc), Some(word)) = (self.encoding(), &self.quit) {
            if enc.encode_message(word, &mut Vec::new()) > 0 {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::ValueValidation,
                    format!(
                        "the quit word {word:?} has characters {} cannot carry, so it could be \
                         neither sent nor recognised\n",
                        enc.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The session options these arguments ask for, given what the terminal is.
    fn options(&self, term: &Terminal, peer_default: bool) -> Options {
        let show_peer = if self.hide_peer {
            false
        } else {
            self.show_peer || (peer_default && term.stdout_is_tty)
        };
        Options {
            encoding: self.encoding(),
            hex: self.hex,
            quit: self.quit.clone(),
            eol: if self.crlf {
                Eol::Crlf
            } else {
                self.eol.unwrap_or_default()
            },
            show_peer,
            timestamps: self.timestamps,
            pretty: term.stdout_is_tty,
            idle_timeout: self.idle_timeout,
            wait_for_input: !term.stdin_is_tty,
            ..Options::default()
        }
    }
}

impl TraceArgs {
    /// The trace configuration these arguments ask for.
    fn config(self) -> crate::trace::Config {
        crate::trace::Config {
            iface: self.iface,
            filter: crate::trace::Filter {
                port: self.port,
                hosts: self.host.into_iter().collect(),
                ..Default::default()
            },
            layers: self.layers,
            explain: self.explain,
            encoding: self.encoding.unwrap_or(Encoding::UTF8),
            format: if self.json {
                crate::trace::print::Format::Json
            } else {
                crate::trace::print::Format::Text
            },
            write: self.write,
            read: self.read,
            count: self.count,
            duration: self.duration,
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let quiet = cli.quiet;
    let term = |talk: &TalkArgs, ctrl_d: CtrlD| {
        let t = Terminal::stdio(!talk.no_editor, quiet, ctrl_d);
        if let Some(note) = talk.encoding.as_ref().and_then(EncodingArg::surprise) {
            t.events.warn(note);
        }
        t
    };
    match cli.command {
        Command::Demo => crate::demo::run().await?,
        // The room handles Ctrl-C and SIGTERM itself: it shuts down in order and exits 0.
        Command::Room(args) => {
            crate::room::serve(&args.addr, args.config(), quiet, args.threads.into()).await?
        }
        Command::Trace(args) => crate::trace::run(args.config()).await?,
        Command::Tcp(TcpCommand::Listen {
            addr,
            keep_open,
            trace,
            talk,
        }) => {
            let mut t = term(
                &talk,
                if keep_open {
                    CtrlD::EndsTurn
                } else {
                    CtrlD::EndsInput
                },
            );
            let opts = talk.options(&t, false);
            let _trace = trace
                .then(|| attach(&mut t.events, &addr, Role::Listen, talk.encoding()))
                .flatten();
            session::tcp::listen(&addr, keep_open, &opts, &mut t).await?;
        }
        Command::Tcp(TcpCommand::Connect {
            addr,
            timeout,
            trace,
            talk,
        }) => {
            let mut t = term(&talk, CtrlD::EndsInput);
            let opts = talk.options(&t, false);
            let _trace = trace
                .then(|| attach(&mut t.events, &addr, Role::Connect, talk.encoding()))
                .flatten();
            session::tcp::connect(&addr, timeout, &opts, &mut t).await?;
        }
        Command::Udp(UdpCommand::Listen {
            addr,
            peer,
            raw,
            talk,
        }) => {
            let mut t = term(&talk, CtrlD::EndsInput);
            let mut opts = talk.options(&t, !raw.raw);
            opts.raw = raw.raw;
            session::udp::listen(&addr, peer.as_ref(), &opts, &mut t).await?;
        }
        Command::Udp(UdpCommand::Connect {
            addr,
            bind,
            raw,
            talk,
        }) => {
            let mut t = term(&talk, CtrlD::EndsInput);
            let mut opts = talk.options(&t, false);
            opts.raw = raw.raw;
            if !t.stdin_is_tty {
                // `echo hi | wirechat udp connect ...` sends, waits a moment for replies, ends.
                opts.eof_linger = Some(Duration::from_secs(1));
            }
            session::udp::connect(&addr, bind.as_ref(), &opts, &mut t).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any number above 0 is a time: one below a nanosecond is the shortest time there is,
    /// one too large to count is no limit; 0, negatives and NaN are refused.
    #[test]
    fn seconds_above_zero_are_accepted_however_small() {
        assert_eq!(parse_secs("1e-10"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_secs("4.9e-324"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_secs("1e-9"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("inf"), Ok(Duration::MAX));
        assert_eq!(parse_secs("1e30"), Ok(Duration::MAX));
        for refused in ["0", "-0", "0.0", "-1", "-1e-10", "NaN", "-inf"] {
            let e = parse_secs(refused).expect_err(refused);
            assert!(e.contains("above 0"), "{refused}: {e}");
        }
        assert!(parse_secs("soon").is_err());
    }
}
