//! `wirechat trace`: the handshake, the data and the close of real connections as a ladder.
//!
//! - [`source`]: where frames come from: a live `AF_PACKET` socket on Linux or a pcap/pcapng
//!   file, behind the [`source::PacketSource`] trait; and the pcap writer for `--write`.
//! - [`decode`]: frames into typed headers with etherparse; damage is an error, not a panic.
//! - [`ladder`]: per-connection tracking keyed by 4-tuple: relative seq/ack, the modelled TCP
//!   state of each end ([`state`]), analysis labels and the summary of each connection.
//! - [`print`](mod@print): the text ladder, `--layers` and `--json`.
//! - [`inline`]: the capture behind `tcp connect|listen --trace`.
//!
//! Frames flow `source -> decode -> filter -> ladder -> print` on one thread of their own, so
//! that the capture keeps up without the async runtime in the way; a stop flag ends it.

pub mod decode;
pub mod inline;
pub mod ladder;
pub mod print;
pub mod source;
pub mod state;

use decode::Packet;
use ladder::Tracker;
use print::{EndStats, Format, Printer};
use source::{FileSource, Next, PacketSource, Recorder};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Damaged frames reported one by one; after this many only the count goes on.
const MAX_REPORTS: u64 = 20;

/// What can go wrong while tracing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening a packet socket needs privileges.
    #[error(
        "live capture needs root or CAP_NET_RAW: run it with sudo, or once `sudo setcap \
         cap_net_raw+ep $(command -v wirechat)`; reading a saved capture with --read FILE \
         needs neither"
    )]
    NoPrivilege(#[source] io::Error),
    /// Live capture exists on Linux only.
    #[error("live capture works on Linux only (AF_PACKET); --read FILE works everywhere")]
    LinuxOnly,
    /// No such interface.
    #[error("no network interface named {0:?} (see `ip link`)")]
    NoInterface(String),
    /// The capture socket failed.
    #[error("capture socket")]
    Capture(#[source] io::Error),
    /// A capture file could not be read.
    #[error("cannot read {0}")]
    ReadFile(PathBuf, #[source] io::Error),
    /// A capture file is not pcap or pcapng, or uses an unsupported link type.
    #[error("{0} is not a capture wirechat can read: {1}")]
    BadFile(PathBuf, String),
    /// `--write` failed.
    #[error("cannot write {0}")]
    WriteFile(PathBuf, #[source] io::Error),
    /// The output (stdout) failed.
    #[error("writing the output")]
    Output(#[source] io::Error),
}

/// Which packets to show: all conditions given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Either port equals this.
    pub port: Option<u16>,
    /// Either address is one of these.
    pub hosts: Vec<IpAddr>,
    /// Exactly this conversation (either direction).
    pub tuple: Option<(SocketAddr, SocketAddr)>,
    /// Nothing matches yet (the inline trace before the port is known).
    pub pending: bool,
}

fn plain(a: SocketAddr) -> SocketAddr {
    crate::transport::display_addr(a)
}

impl Filter {
    /// Whether a packet from `src` to `dst` passes.
    pub fn matches(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        let (src, dst) = (plain(src), plain(dst));
        !self.pending
            && self.port.is_none_or(|p| src.port() == p || dst.port() == p)
            && (self.hosts.is_empty()
                || self.hosts.iter().any(|h| {
                    let h = plain(SocketAddr::new(*h, 0)).ip();
                    h == src.ip() || h == dst.ip()
                }))
            && self.tuple.is_none_or(|(x, y)| {
                let (x, y) = (plain(x), plain(y));
                (src == x && dst == y) || (src == y && dst == x)
            })
    }
}

/// Everything `wirechat trace` was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Interface for live capture (`any` for all).
    pub iface: String,
    /// Which packets.
    pub filter: Filter,
    /// Show every header field.
    pub layers: bool,
    /// Explain each state change under its row.
    pub explain: bool,
    /// How payload text is shown.
    pub encoding: crate::codec::Encoding,
    /// Text or JSON.
    pub format: Format,
    /// Save matching frames here.
    pub write: Option<PathBuf>,
    /// Read a capture file instead of capturing.
    pub read: Option<PathBuf>,
    /// Stop after this many packets shown.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Opens the live capture on `iface`.
pub fn open_live(iface: &str) -> Result<Box<dyn PacketSource>, Error> {
    #[cfg(target_os = "linux")]
    {
        Ok(Box::new(source::live::LiveSource::open(iface)?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = iface;
        Err(Error::LinuxOnly)
    }
}

/// Where the capture loop stops and what it tells about the end.
pub struct Limits {
    /// Stop after this many packets shown.
    pub count: Option<u64>,
    /// Stop at this moment.
    pub deadline: Option<Instant>,
}

/// Reads `source` until it ends, a limit is reached or `stop` is set; shows what passes
/// `filter` on `printer`, saves it with `recorder`, then prints the summaries of what is still
/// open and the tally. `after` is called after each shown packet with the tracker.
#[allow(clippy::too_many_arguments)]
pub fn capture<W: Write>(
    source: &mut dyn PacketSource,
    filter: &dyn Fn(SocketAddr, SocketAddr) -> bool,
    printer: &mut Printer<W>,
    recorder: Option<SharedRecorder>,
    limits: &Limits,
    stop: &AtomicBool,
    after: &dyn Fn(&Tracker),
) -> Result<(), Error> {
    let mut tracker = Tracker::new();
    let mut stats = EndStats::default();
    let mut records = Vec::new();
    let mut shown = 0u64;
    let mut last_flush = Instant::now();
    let report = |printer: &mut Printer<W>, n: u64, damaged: u64, why: &str| {
        if damaged <= MAX_REPORTS {
            printer.skipped(n, why)
        } else {
            Ok(())
        }
    };
    let result = loop {
        if stop.load(Ordering::Relaxed) || limits.deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(());
        }
        let frame = match source.next() {
            Ok(Next::Frame(f)) => f,
            Ok(Next::Idle) => {
                printer.flush().map_err(Error::Output)?;
                continue;
            }
            Ok(Next::End) => break Ok(()),
            Ok(Next::Skipped(why)) => {
                stats.frames += 1;
                stats.damaged += 1;
                report(printer, stats.frames, stats.damaged, &why).map_err(Error::Output)?;
                continue;
            }
            Err(e) => break Err(e),
        };
        stats.frames += 1;
        let pkt: Packet = match decode::decode_frame(&frame) {
            Ok(p) => p,
            Err(e) if e.is_damage() => {
                stats.damaged += 1;
                report(printer, stats.frames, stats.damaged, &e.to_string())
                    .map_err(Error::Output)?;
                continue;
            }
            // Not TCP or UDP over IP, or a fragment: counted, not shown.
            Err(_) => {
                stats.other += 1;
                continue;
            }
        };
        if !filter(pkt.src(), pkt.dst()) {
            continue;
        }
        if let Some(rec) = recorder
            .as_ref()
            .map(locked)
            .as_mut()
            .and_then(|g| g.as_mut())
        {
            rec.write(&frame)?;
        }
        tracker.observe(frame.ts, &pkt, &mut records);
        printer
            .packet(&records, &pkt, frame.ts)
            .map_err(Error::Output)?;
        records.clear();
        after(&tracker);
        shown += 1;
        if last_flush.elapsed() > Duration::from_millis(50) {
            printer.flush().map_err(Error::Output)?;
            last_flush = Instant::now();
        }
        if limits.count.is_some_and(|c| shown >= c) {
            break Ok(());
        }
    };
    // Whatever stopped the capture, say what was seen (Ctrl-C included).
    tracker.finish(&mut records);
    stats.kernel_drops = source.dropped();
    // The file is completed before the end is printed: stdout may be what gets stuck.
    let recorder = recorder.and_then(|r| locked(&r).take());
    stats.not_written = recorder.as_ref().map_or(0, Recorder::left_out);
    let finished = recorder.map(Recorder::finish).transpose();
    let shown_end = printer
        .records(&records)
        .and_then(|()| printer.end(tracker.totals(), stats));
    finished?;
    result?;
    shown_end.map_err(Error::Output)
}

/// The `--write` file, shared with the hook that completes it if the process has to be ended
/// while the capture thread is stuck (writing to a stdout nobody reads).
pub type SharedRecorder = Arc<Mutex<Option<Recorder>>>;

fn locked(r: &SharedRecorder) -> std::sync::MutexGuard<'_, Option<Recorder>> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Completes the `--write` file when the process is ended after the grace time of Ctrl-C.
/// The capture thread holds the lock only while it writes one frame, so this waits at most a
/// second for it.
fn finish_at_forced_exit(r: &SharedRecorder) {
    let r = r.clone();
    crate::exit::on_forced_exit(move || {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match r.try_lock() {
                Ok(mut g) => {
                    if let Some(rec) = g.take() {
                        let _ = rec.finish();
                    }
                    return;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    if let Some(rec) = p.into_inner().take() {
                        let _ = rec.finish();
                    }
                    return;
                }
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
        }
    });
}

/// Stops the capture thread when the command's future is dropped (Ctrl-C), and waits for it
/// to print its summaries.
struct StopOnDrop {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `wirechat trace`.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut source: Box<dyn PacketSource> = match &cfg.read {
        Some(path) => Box::new(FileSource::open(path)?),
        None => {
            let s = open_live(&cfg.iface)?;
            eprintln!(
                "wirechat: capturing on {}{}; Ctrl-C stops",
                cfg.iface,
                describe_filter(&cfg.filter)
            );
            s
        }
    };
    let recorder = match &cfg.write {
        Some(path) => {
            let r = Arc::new(Mutex::new(Some(Recorder::create(path, source.link())?)));
            finish_at_forced_exit(&r);
            Some(r)
        }
        None => None,
    };
    let limits = Limits {
        count: cfg.count,
        // Too far to count (`-d inf`): no deadline.
        deadline: cfg.duration.and_then(|d| Instant::now().checked_add(d)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let stdout = io::stdout();
            let out = io::BufWriter::with_capacity(256 * 1024, stdout.lock());
            let mut printer = Printer::new(out, cfg.format, cfg.layers)
                .with_explain(cfg.explain)
                .with_encoding(cfg.encoding);
            let filter = |s, d| cfg.filter.matches(s, d);
            let r = capture(
                source.as_mut(),
                &filter,
                &mut printer,
                recorder,
                &limits,
                &thread_stop,
                &|_| {},
            );
            let _ = tx.send(r);
        })?;
    let _guard = StopOnDrop {
        stop,
        thread: Some(thread),
    };
    match rx.await {
        Ok(Err(Error::Output(e))) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Ok(r) => Ok(r?),
        Err(_) => Err(anyhow::anyhow!("the capture thread ended unexpectedly")),
    }
}

fn describe_filter(f: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(p) = f.port {
        parts.push(format!("port {p}"));
    }
    for h in &f.hosts {
        parts.push(format!("host {h}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `trace` subcommand and the `--trace` flags fit clap's rules (no clashing shorts).
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn filter_conditions() {
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let c: SocketAddr = "[::1]:80".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert!(Filter::default().matches(a, b));
        let port = Filter {
            port: Some(80),
            ..Filter::default()
        };
        assert!(port.matches(a, b) && port.matches(b, a) && port.matches(c, a));
        assert!(!port.matches(a, a));
        let host = Filter {
            hosts: vec!["127.0.0.2".parse().unwrap()],
            ..Filter::default()
        };
        assert!(host.matches(a, b) && !host.matches(a, c));
        // The inline trace learns addresses as the socket reports them (IPv4-mapped on a
        // dual-stack socket); packets carry plain IPv4.
        let tuple = Filter {
            tuple: Some((mapped, b)),
            ..Filter::default()
        };
        assert!(tuple.matches(a, b) && tuple.matches(b, a) && !tuple.matches(a, c));
        let pending = Filter {
            pending: true,
            ..Filter::default()
        };
        assert!(!pending.matches(a, b));
    }
}
