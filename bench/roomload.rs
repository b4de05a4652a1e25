//! Load generator for chat rooms (`wirechat room`, `ncat --chat`, any line relay).
//!
//! Connects N clients, waits until every one of them is in the room (a sync line sent until all
//! have seen it), then S of them send M lines each at a fixed rate. Every line carries its
//! sender, a sequence number and its send time, and is padded with a character derived from the
//! sequence number, so each receiver can tell lost, duplicated, out-of-order and corrupt
//! (spliced or truncated) lines apart and measure delivery latency. Bounded in count and time:
//! it stops when everything expected has arrived or nothing has arrived for `--drain` seconds.
//!
//! Latency is measured twice for every delivery, from the send time in the line:
//! - to when the generator read it, which includes the time the line waited in the client's
//!   socket for a generator thread to get a core (the generator shares the server's cores);
//! - to when it arrived in the client's socket, from the kernel's receive timestamp
//!   (`SO_TIMESTAMPNS`, Linux only): what a client on a machine of its own would see. The stamp
//!   is that of the last segment of each read, so this errs on the high side.
//!
//! The clients run on `--threads` threads, each a single-threaded runtime that owns its share
//! of them: the generator shares the server's cores, so it must not add wake-ups between its
//! own threads to the latency it measures.
//!
//! Built with `cargo build --release --example roomload`; bench/room.sh runs it.

use clap::Parser;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Chat-room load generator.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// The room: HOST:PORT.
    #[arg(long)]
    addr: String,
    /// Clients in the room (senders included).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How many of the clients send.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Lines each sender sends.
    #[arg(long, default_value_t = 500)]
    messages: u32,
    /// Lines a second per sender.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Bytes per line, newline excluded (at least 40).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Connects in flight at once (default: all at once, a burst).
    #[arg(long)]
    connect_concurrency: Option<usize>,
    /// Connects still pending after this many seconds count as failures.
    #[arg(long, default_value_t = 60.0)]
    connect_deadline: f64,
    /// Stop waiting after this many seconds without a delivery.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// The server's process id, for its peak memory (VmHWM).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name for this run in the report.
    #[arg(long, default_value = "room")]
    label: String,
    /// Client threads, each with its own share of the clients.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Latency histogram: 10 µs buckets up to 10 s, then one overflow bucket.
const BUCKET_NS: u64 = 10_000;
const BUCKETS: usize = 1_000_001;

struct Shared {
    args: Args,
    start: Instant,
    go: CancellationToken,
    stop: CancellationToken,
    /// When the senders start (ns after `start`), set before `go` is cancelled.
    go_at_ns: AtomicU64,
    synced: AtomicUsize,
    delivered: AtomicU64,
    hist: Mutex<Vec<u64>>,
    /// The same for arrival at the client's socket (the kernel's receive timestamp).
    arrival_hist: Mutex<Vec<u64>>,
    totals: Mutex<Totals>,
    last_delivery_ns: AtomicU64,
}

#[derive(Default, Debug)]
struct Totals {
    delivered: u64,
    duplicated: u64,
    out_of_order: u64,
    corrupt: u64,
    other: u64,
    closed_early: u64,
    lost: u64,
    max_latency_ns: u64,
}

fn now_ns(sh: &Shared) -> u64 {
    sh.start.elapsed().as_nanos() as u64
}

/// The wall clock in ns since the epoch.
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `L|sender|seq|send_ns|` then padding to `size` bytes.
fn make_line(sender: usize, seq: u32, ts: u64, size: usize) -> Vec<u8> {
    let mut line = format!("L|{sender}|{seq}|{ts}|").into_bytes();
    let pad = b'a' + (seq % 26) as u8;
    while line.len() < size {
        line.push(pad);
    }
    line.push(b'\n');
    line
}

/// What one receiver knows about one sender. Lines normally arrive in order, so the common
/// case touches only this struct: `next` says every line before it was seen, and a bitmap
/// (made on the first gap) records lines seen beyond it.
#[derive(Default)]
struct Track {
    next: u32,
    /// Lines at or after `next` already seen, one bit each, indexed by sequence number.
    beyond: Vec<u64>,
    beyond_count: u32,
    max: Option<u32>,
}

impl Track {
    /// Lines seen: those before `next` and those marked beyond it.
    fn count(&self) -> u32 {
        self.next + self.beyond_count
    }

    /// Records line `seq` (below `messages`); false if it was seen before.
    fn see(&mut self, seq: u32, messages: u32) -> bool {
        let bit = |seq: u32| ((seq / 64) as usize, 1u64 << (seq % 64));
        if seq < self.next {
            return false;
        }
        if seq == self.next {
            self.next += 1;
            while self.beyond_count > 0 {
                let (w, b) = bit(self.next);
                if self.beyond[w] & b == 0 {
                    break;
                }
                self.beyond[w] &= !b;
                self.beyond_count -= 1;
                self.next += 1;
            }
            return true;
        }
        if self.beyond.is_empty() {
            self.beyond = vec![0; messages.div_ceil(64) as usize];
        }
        let (w, b) = bit(seq);
        if self.beyond[w] & b != 0 {
            return false;
        }
        self.beyond[w] |= b;
        self.beyond_count += 1;
        true
    }
}

/// An arrival bucket for a delivery without a kernel receive timestamp.
const NO_STAMP: u32 = u32::MAX;

fn bucket(ns: u64) -> u32 {
    (ns / BUCKET_NS).min(BUCKETS as u64 - 1) as u32
}

struct Receiver {
    id: usize,
    tracks: Vec<Track>,
    t: Totals,
    synced: bool,
}

thread_local! {
    /// Latency buckets (read, arrival) of the deliveries on this thread not yet added to the
    /// histograms: one buffer for the thread's clients, not a cold one per client. Arrival is
    /// `NO_STAMP` when the kernel gave no receive timestamp.
    static LAT: std::cell::RefCell<Vec<(u32, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Receiver {
    /// Checks one line read at `now` (ns after `start`) that arrived in the client's socket at
    /// `arrival` (same clock), if the kernel said when.
    fn line(&mut self, sh: &Shared, line: &[u8], now: u64, arrival: Option<u64>) {
        // The payload starts at the first '|': `SYNC|` or `L|` right after the relay's prefix.
        let bar = line.iter().position(|&b| b == b'|');
        let kind = bar.map(|i| &line[i.saturating_sub(4)..i]);
        if kind == Some(b"SYNC") {
            if !self.synced {
                self.synced = true;
                sh.synced.fetch_add(1, Relaxed);
            }
            return;
        }
        let at = match bar {
            Some(i) if i >= 1 && line[i - 1] == b'L' && (i == 1 || line[i - 2] == b' ') => i - 1,
            _ => {
                // Greetings, joins, announcements; a line that looks like chat but carries no
                // payload is a fragment of a spliced one.
                if line.starts_with(b"<") && !line.starts_with(b"<announce>") {
                    self.t.corrupt += 1;
                } else {
                    self.t.other += 1;
                }
                return;
            }
        };
        match self.parse(sh, &line[at..]) {
            Some((s, seq, ts)) => {
                let tr = &mut self.tracks[s];
                if !tr.see(seq, sh.args.messages) {
                    self.t.duplicated += 1;
                    return;
                }
                if tr.max.is_some_and(|m| seq < m) {
                    self.t.out_of_order += 1;
                }
                tr.max = Some(tr.max.map_or(seq, |m| m.max(seq)));
                self.t.delivered += 1;
                let lat = now.saturating_sub(ts);
                self.t.max_latency_ns = self.t.max_latency_ns.max(lat);
                let arrived = arrival.map_or(NO_STAMP, |a| bucket(a.saturating_sub(ts)));
                let full = LAT.with_borrow_mut(|l| {
                    l.push((bucket(lat), arrived));
                    l.len() >= 4096
                });
                if full {
                    Self::flush(sh);
                }
            }
            None => self.t.corrupt += 1,
        }
    }

    /// `L|sender|seq|send_ns|pad...`, checked byte by byte (this runs for every delivery, on
    /// the cores the server runs on).
    fn parse(&self, sh: &Shared, p: &[u8]) -> Option<(usize, u32, u64)> {
        let mut rest = p.strip_prefix(b"L|")?;
        let mut field = || {
            let end = rest.iter().position(|&b| b == b'|')?;
            let (digits, tail) = (&rest[..end], &rest[end + 1..]);
            rest = tail;
            if digits.is_empty() || digits.len() > 19 {
                return None;
            }
            digits.iter().try_fold(0u64, |n, &d| {
                d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
            })
        };
        let s = usize::try_from(field()?).ok()?;
        let seq = u32::try_from(field()?).ok()?;
        let ts = field()?;
        let pad = rest;
        let want = b'a' + (seq % 26) as u8;
        let header = p.len() - pad.len();
        if s >= sh.args.senders
            || s == self.id
            || seq >= sh.args.messages
            || p.len() != sh.args.size.max(header)
            || !pad.iter().all(|&c| c == want)
        {
            return None;
        }
        Some((s, seq, ts))
    }

    /// Adds this thread's buffered latencies to the histograms.
    fn flush(sh: &Shared) {
        LAT.with_borrow_mut(|l| {
            let mut h = sh.hist.lock().unwrap_or_else(|e| e.into_inner());
            let mut a = sh.arrival_hist.lock().unwrap_or_else(|e| e.into_inner());
            for &(read, arrived) in l.iter() {
                h[read as usize] += 1;
                if arrived != NO_STAMP {
                    a[arrived as usize] += 1;
                }
            }
            l.clear();
        });
    }
}

thread_local! {
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 << 10]);
}

/// Asks the kernel to stamp what arrives on `stream` (Linux: `SO_TIMESTAMPNS`).
#[cfg(target_os = "linux")]
fn stamp_arrivals(stream: &TcpStream) {
    let _ =
        nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::ReceiveTimestampns, &true);
}

#[cfg(not(target_os = "linux"))]
fn stamp_arrivals(_: &TcpStream) {}

/// One non-blocking read, with the kernel's receive timestamp (wall clock, ns since the epoch)
/// of the last segment read, where the system gives one. A line that came in an earlier
/// segment of the same read is stamped late, so arrival latency errs on the high side.
#[cfg(target_os = "linux")]
fn recv_stamped(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let m = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let stamp = m.cmsgs().ok().and_then(|c| {
        c.filter_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(t) => Some(
                u64::try_from(t.tv_sec()).ok()? * 1_000_000_000
                    + u64::try_from(t.tv_nsec()).ok()?,
            ),
            _ => None,
        })
        .last()
    });
    Ok((m.bytes, stamp))
}

#[cfg(not(target_os = "linux"))]
fn recv_stamped(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    use std::io::Read;
    Ok(((&*socket2::SockRef::from(stream)).read(buf)?, None))
}

async fn receive(sh: Arc<Shared>, id: usize, rd: tokio::net::tcp::OwnedReadHalf) {
    let senders = sh.args.senders;
    let mut r = Receiver {
        id,
        tracks: (0..senders).map(|_| Track::default()).collect(),
        t: Totals::default(),
        synced: false,
    };
    let mut pending: Vec<u8> = Vec::new();
    // Progress is shared in batches (and when this receiver has everything), not per read:
    // counters written by every receiver on every read would cost the generator more than
    // the reads themselves.
    let mine = (senders - usize::from(id < senders)) as u64 * u64::from(sh.args.messages);
    let mut reported = 0;
    // One registration with the stop token for the whole run, not one per read.
    let stop = sh.stop.cancelled();
    tokio::pin!(stop);
    loop {
        // Read into the thread's one buffer (the clients of a thread take turns), not into a
        // buffer per client: a thousand cold 16 KiB buffers cost cache misses on every read.
        // The buffer is borrowed only within one poll, never across an await.
        let read = std::future::poll_fn(|cx| {
            loop {
                match rd.as_ref().poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(())) => {}
                }
                let mut got = None;
                let r = rd.as_ref().try_io(tokio::io::Interest::READABLE, || {
                    BUF.with_borrow_mut(|buf| {
                        let (n, stamp) = recv_stamped(rd.as_ref(), buf)?;
                        got = Some(n);
                        let now = now_ns(&sh);
                        // The stamp is on the wall clock, the lines on `start`'s: only the
                        // short span between arrival and now is taken from the wall clock,
                        // so a wall clock that is slewed or stepped during the run does not
                        // skew it.
                        let arrival =
                            stamp.map(|w| now.saturating_sub(wall_ns().saturating_sub(w)));
                        let mut data = &buf[..n];
                        while let Some(i) = data.iter().position(|&b| b == b'\n') {
                            if pending.is_empty() {
                                r.line(&sh, &data[..i], now, arrival);
                            } else {
                                pending.extend_from_slice(&data[..i]);
                                r.line(&sh, &pending, now, arrival);
                                pending.clear();
                            }
                            data = &data[i + 1..];
                        }
                        pending.extend_from_slice(data);
                        // A read shorter than the buffer emptied the socket: clear the
                        // readiness now (as tokio's own reads do) rather than with a second
                        // read that would find nothing.
                        if n > 0 && n < buf.len() {
                            Err(std::io::ErrorKind::WouldBlock.into())
                        } else {
                            Ok(())
                        }
                    })
                });
                match (got, r) {
                    (Some(n), _) => return Poll::Ready(n > 0),
                    (None, Err(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    (None, _) => return Poll::Ready(false),
                }
            }
        });
        let more = tokio::select! {
            biased;
            more = read => more,
            () = &mut stop => break,
        };
        if !more {
            if !sh.stop.is_cancelled() {
                r.t.closed_early += 1;
            }
            break;
        }
        let got = r.t.delivered - reported;
        if got >= 64 || (got > 0 && r.t.delivered >= mine) {
            sh.delivered.fetch_add(got, Relaxed);
            sh.last_delivery_ns.fetch_max(now_ns(&sh), Relaxed);
            reported = r.t.delivered;
        }
    }
    let got = r.t.delivered - reported;
    if got > 0 {
        sh.delivered.fetch_add(got, Relaxed);
        sh.last_delivery_ns.fetch_max(now_ns(&sh), Relaxed);
    }
    // Every receiver flushes its thread's buffer when it ends, so the last one on a thread
    // leaves nothing behind.
    Receiver::flush(&sh);
    // Lost: what each sender sent (all of it, once the run is over) minus what arrived.
    for (s, tr) in r.tracks.iter().enumerate() {
        if s != id {
            r.t.lost += u64::from(sh.args.messages - tr.count());
        }
    }
    let mut t = sh.totals.lock().unwrap_or_else(|e| e.into_inner());
    t.delivered += r.t.delivered;
    t.duplicated += r.t.duplicated;
    t.out_of_order += r.t.out_of_order;
    t.corrupt += r.t.corrupt;
    t.other += r.t.other;
    t.closed_early += r.t.closed_early;
    t.lost += r.t.lost;
    t.max_latency_ns = t.max_latency_ns.max(r.t.max_latency_ns);
}

async fn send(sh: Arc<Shared>, id: usize, mut wr: tokio::net::tcp::OwnedWriteHalf) {
    // Sender 0 also sends the sync lines that prove everyone is in the room.
    if id == 0 {
        let mut k = 0;
        while !sh.go.is_cancelled() && !sh.stop.is_cancelled() {
            if wr
                .write_all(format!("SYNC|{k}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            k += 1;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = sh.go.cancelled() => {}
            }
        }
    }
    tokio::select! {
        () = sh.go.cancelled() => {}
        () = sh.stop.cancelled() => return,
    }
    let period = Duration::from_secs_f64(1.0 / sh.args.rate);
    // Senders start evenly spread over one period, not all at once: the steadiest load, and
    // the one that gives each line a round of its own.
    let offset = period.mul_f64(id as f64 / sh.args.senders as f64);
    let go_at = sh.start + Duration::from_nanos(sh.go_at_ns.load(Relaxed));
    let mut tick = tokio::time::interval_at((go_at + offset).into(), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..sh.args.messages {
        tick.tick().await;
        let line = make_line(id, seq, now_ns(&sh), sh.args.size);
        if wr.write_all(&line).await.is_err() {
            return;
        }
    }
    // Keep the connection open (half-closing would make some servers drop the client).
    sh.stop.cancelled().await;
}

fn vm(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn percentile(h: &[u64], total: u64, p: f64) -> f64 {
    if total == 0 {
        return f64::NAN;
    }
    let want = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, &c) in h.iter().enumerate() {
        acc += c;
        if acc >= want {
            return (i as u64 * BUCKET_NS + BUCKET_NS) as f64 / 1e6;
        }
    }
    f64::NAN
}

fn main() {
    let args = Args::parse();
    // The orchestration (sync, go, drain, report) runs here; the clients run on `--threads`
    // threads of their own, each a single-threaded runtime that owns its share of the clients.
    // No work stealing and no cross-thread wake-ups: the generator costs the machine it shares
    // with the server as little as it can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

/// What one connect attempt came to: how long it took, or why it failed.
type Connected = Result<Duration, String>;

/// Runs the clients `id` with `id % groups == group` on a runtime of this thread's own:
/// connects them (at most `gate`'s permits in flight across all groups), then reads, and
/// sends for those that are senders, until `stop`.
fn group(
    sh: Arc<Shared>,
    group: usize,
    groups: usize,
    gate: Arc<tokio::sync::Semaphore>,
    connect_end: Instant,
    report: tokio::sync::mpsc::UnboundedSender<Connected>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let addr = sh.args.addr.clone();
        let mut tasks = Vec::new();
        let mut connects = Vec::new();
        for id in (group..sh.args.clients).step_by(groups) {
            let (gate, addr) = (gate.clone(), addr.clone());
            connects.push(tokio::task::spawn_local(async move {
                let _permit = gate.acquire().await;
                let t = Instant::now();
                let limit = connect_end
                    .saturating_duration_since(t)
                    .min(Duration::from_secs(15));
                let r = tokio::time::timeout(limit, TcpStream::connect(&addr)).await;
                (id, r, t.elapsed())
            }));
        }
        for c in connects {
            let (id, r, took) = match c.await {
                Ok(v) => v,
                Err(e) => {
                    let _ = report.send(Err(format!("task: {e}")));
                    continue;
                }
            };
            let stream = match r {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let _ = report.send(Err(format!("{:?}", e.kind())));
                    continue;
                }
                Err(_) => {
                    let _ = report.send(Err("timed out".into()));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            stamp_arrivals(&stream);
            let _ = report.send(Ok(took));
            let (rd, wr) = stream.into_split();
            tasks.push(tokio::task::spawn_local(receive(sh.clone(), id, rd)));
            if id < sh.args.senders {
                tasks.push(tokio::task::spawn_local(send(sh.clone(), id, wr)));
            } else {
                // Kept open until the end.
                let sh = sh.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let _wr = wr;
                    sh.stop.cancelled().await;
                }));
            }
        }
        drop(report);
        for t in tasks {
            let _ = t.await;
        }
    });
}

async fn run(args: Args) {
    assert!(args.size >= 40, "--size must be at least 40");
    assert!(args.senders <= args.clients && args.senders > 0);
    let base_rss = args.server_pid.and_then(|p| vm(p, "VmRSS:"));
    let sh = Arc::new(Shared {
        args: args.clone(),
        start: Instant::now(),
        go: CancellationToken::new(),
        stop: CancellationToken::new(),
        go_at_ns: AtomicU64::new(0),
        synced: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        hist: Mutex::new(vec![0; BUCKETS]),
        arrival_hist: Mutex::new(vec![0; BUCKETS]),
        totals: Mutex::new(Totals::default()),
        last_delivery_ns: AtomicU64::new(0),
    });

    // Connect everyone (a burst unless limited), timing each connect.
    let gate = Arc::new(tokio::sync::Semaphore::new(
        args.connect_concurrency.unwrap_or(args.clients).max(1),
    ));
    let t0 = Instant::now();
    let connect_end = t0 + Duration::from_secs_f64(args.connect_deadline);
    let groups = args.threads.clamp(1, args.clients);
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let threads: Vec<_> = (0..groups)
        .map(|g| {
            let (sh, gate, report) = (sh.clone(), gate.clone(), report.clone());
            std::thread::Builder::new()
                .name(format!("clients-{g}"))
                .spawn(move || group(sh, g, groups, gate, connect_end, report))
                .expect("thread")
        })
        .collect();
    drop(report);
    let mut conn_times = Vec::new();
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    let deadline = tokio::time::Instant::from_std(connect_end + Duration::from_secs(1));
    for _ in 0..args.clients {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(Ok(took))) => conn_times.push(took),
            Ok(Some(Err(e))) => *why.entry(e).or_default() += 1,
            // Every group is done, or connects are still pending past the deadline.
            Ok(None) | Err(_) => break,
        }
    }
    let receivers = conn_times.len();
    // Failed, timed out or still pending.
    let failures = args.clients - receivers;
    let connect_all = t0.elapsed();
    conn_times.sort();
    let ct = |p: f64| {
        conn_times
            .get(((conn_times.len() as f64 * p) as usize).min(conn_times.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };

    // Everyone but sender 0 must see a sync line: then all are members.
    let sync_deadline = Instant::now() + Duration::from_secs(30);
    while sh.synced.load(Relaxed) < receivers.saturating_sub(1) && Instant::now() < sync_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let synced = sh.synced.load(Relaxed);
    let rss_joined = args.server_pid.and_then(|p| vm(p, "VmRSS:"));
    // The senders' schedule is fixed from one instant, a little ahead, so that they are evenly
    // spread however late each thread sees `go`.
    let send_start = now_ns(&sh) + 20_000_000;
    sh.go_at_ns.store(send_start, Relaxed);
    sh.go.cancel();

    // Wait for everything or for the drain time without progress.
    let expected = args.senders as u64 * u64::from(args.messages) * (args.clients as u64 - 1);
    let send_secs = f64::from(args.messages) / args.rate;
    let hard_end = Instant::now() + Duration::from_secs_f64(send_secs + 120.0);
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let d = sh.delivered.load(Relaxed);
        if d >= expected || Instant::now() > hard_end {
            break;
        }
        if d != last {
            last = d;
            last_change = Instant::now();
        } else if last_change.elapsed().as_secs_f64() > args.drain
            && Instant::now().duration_since(t0).as_secs_f64() > send_secs
        {
            break;
        }
    }
    sh.stop.cancel();
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .expect("client threads");
    let t = std::mem::take(&mut *sh.totals.lock().unwrap_or_else(|e| e.into_inner()));
    let h = sh.hist.lock().unwrap_or_else(|e| e.into_inner());
    let n: u64 = h.iter().sum();
    let a = sh.arrival_hist.lock().unwrap_or_else(|e| e.into_inner());
    let stamped: u64 = a.iter().sum();
    let delivered = sh.delivered.load(Relaxed);
    let span = (sh.last_delivery_ns.load(Relaxed).saturating_sub(send_start)) as f64 / 1e9;
    let hwm = args.server_pid.and_then(|p| vm(p, "VmHWM:"));
    let per_client = match (hwm, base_rss) {
        (Some(h), Some(b)) => format!("{:.1}", (h.saturating_sub(b)) as f64 / args.clients as f64),
        _ => "-".into(),
    };
    let lost = expected.saturating_sub(delivered);
    println!("== {} ==", args.label);
    println!(
        "clients {} (senders {} x {} lines at {}/s, {} B); connected {}, connect failures {} {:?}, \
         in room {}; connect p50/p99/max {:.1}/{:.1}/{:.1} ms, all connected in {:.2} s",
        args.clients,
        args.senders,
        args.messages,
        args.rate,
        args.size,
        receivers,
        failures,
        why,
        synced + 1,
        ct(0.5),
        ct(0.99),
        conn_times
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        connect_all.as_secs_f64()
    );
    println!(
        "delivered {delivered}/{expected} lost {lost} duplicated {} out-of-order {} corrupt {} \
         closed-early {} (other lines {})",
        t.duplicated, t.out_of_order, t.corrupt, t.closed_early, t.other
    );
    println!(
        "latency p50/p99/max {:.2}/{:.2}/{:.2} ms; {:.0} delivered lines/s over {:.2} s",
        percentile(&h, n, 0.5),
        percentile(&h, n, 0.99),
        t.max_latency_ns as f64 / 1e6,
        delivered as f64 / span.max(1e-9),
        span
    );
    println!(
        "arrival in the client's socket (kernel receive timestamp) p50/p99 {:.2}/{:.2} ms, \
         {stamped} deliveries stamped",
        percentile(&a, stamped, 0.5),
        percentile(&a, stamped, 0.99),
    );
    println!(
        "server memory: VmRSS before {} kB, joined {} kB, VmHWM {} kB ({} kB per client)",
        base_rss.map_or("-".into(), |v| v.to_string()),
        rss_joined.map_or("-".into(), |v| v.to_string()),
        hwm.map_or("-".into(), |v| v.to_string()),
        per_client
    );
    println!(
        "| {} | {} | {}/{} | {} | {} | {} | {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {} | {:.0} ms | {} |",
        args.label,
        args.clients,
        delivered,
        expected,
        lost,
        t.duplicated,
        t.out_of_order,
        t.corrupt,
        percentile(&h, n, 0.5),
        percentile(&h, n, 0.99),
        t.max_latency_ns as f64 / 1e6,
        percentile(&a, stamped, 0.5),
        percentile(&a, stamped, 0.99),
        delivered as f64 / span.max(1e-9),
        failures,
        conn_times
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        per_client
    );
}

#[cfg(test)]
mod tests {
    use super::Track;

    #[test]
    fn a_track_tells_duplicates_from_new_lines_in_any_order() {
        let mut t = Track::default();
        // In order, then a duplicate of an old line.
        assert!(t.see(0, 200) && t.see(1, 200));
        assert!(!t.see(0, 200) && !t.see(1, 200));
        // A gap: 5 and 70 arrive before 2, 3 and 4; each is new once.
        assert!(t.see(5, 200) && t.see(70, 200));
        assert!(!t.see(5, 200) && !t.see(70, 200));
        assert!(t.see(3, 200) && !t.see(3, 200));
        assert!(t.see(2, 200));
        assert_eq!((t.next, t.beyond_count), (4, 2));
        // Filling the gap moves `next` past everything seen beyond it.
        assert!(t.see(4, 200));
        assert_eq!((t.next, t.beyond_count), (6, 1));
        for seq in 6..70 {
            assert!(t.see(seq, 200), "{seq}");
        }
        assert_eq!((t.next, t.beyond_count), (71, 0));
        assert!(!t.see(70, 200) && !t.see(0, 200) && t.see(199, 200));
    }
}
