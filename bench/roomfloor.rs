//! The least a chat room can do on this machine: the floor under `wirechat room`'s latency.
//!
//! One process, no room protocol: N loopback TCP connections, a writer thread that plays a room
//! with one flusher (lines "arrive" on a fixed schedule, as from `roomload`'s senders, and the
//! writer goes round the members writing each one's backlog with one `write`), and reader
//! threads that play the clients (epoll through mio, one read per readable socket until it is
//! empty). Every line carries the time it was due, and each reader measures the delay to its
//! read, as `roomload` does. There is nothing else: no parsing of commands, no locks, no
//! sanitising, no sender sockets. What is left is the kernel's cost of a send to a loopback
//! socket, with the receiver's processing and wake-up that loopback charges to the sender, and
//! the readers' share of the two cores.
//!
//! bench/room.sh runs it with the c1000 row's load (1,000 clients, 200 lines/s, 72-byte lines)
//! beside the room, so the two can be compared in one run.
//!
//! Built with `cargo build --release --example roomfloor`.

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Bytes per line: a sequence number, the time it was due, padding, a newline.
const LINE: usize = 72;

/// Latency histogram: 10 µs buckets up to 2 s.
const BUCKET_NS: u64 = 10_000;
const BUCKETS: usize = 200_000;

#[derive(Parser, Debug)]
struct Args {
    /// Connections (clients).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Lines a second, in all (roomload's c1000 row: 4 senders x 50).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Lines in all.
    #[arg(long, default_value_t = 2000)]
    lines: usize,
    /// Reader threads (roomload's default is 2).
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Writer threads (the room's `--threads`), each with its share of the members.
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Stop if the readers have not got everything this many seconds after the last line.
    #[arg(long, default_value_t = 10)]
    drain: u64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.clients == 0
        || args.readers == 0
        || args.writers == 0
        || args.rate == 0
        || args.lines == 0
    {
        eprintln!("roomfloor: --clients, --readers, --writers, --rate and --lines must be above 0");
        std::process::exit(2);
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut clients = Vec::with_capacity(args.clients);
    let mut members = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let c = std::net::TcpStream::connect(addr)?;
        let (s, _) = listener.accept()?;
        // As the room's sockets are.
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        c.set_nonblocking(true)?;
        clients.push(c);
        members.push(s);
    }
    let t0 = Instant::now();
    let expected = args.lines as u64;
    let deadline = Duration::from_secs_f64(args.lines as f64 / f64::from(args.rate))
        + Duration::from_secs(args.drain);
    let per = args.clients.div_ceil(args.readers);
    let mut clients = clients.into_iter();
    let readers: Vec<_> = (0..args.readers)
        .map(|_| {
            let mine: Vec<_> = clients
                .by_ref()
                .take(per)
                .map(TcpStream::from_std)
                .collect();
            std::thread::spawn(move || read_all(mine, t0, expected, deadline))
        })
        .collect();

    // The writers, each with its share of the members, as the room's flushers with
    // `--threads`. Line i is due at i / rate whatever the thread, so each keeps its own copy.
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let wper = members.len().div_ceil(args.writers);
    let mut members = members.into_iter();
    let writers: Vec<_> = (0..args.writers)
        .map(|_| {
            let mine: Vec<_> = members.by_ref().take(wper).collect();
            let lines = args.lines;
            std::thread::spawn(move || write_all(mine, t0, interval, lines))
        })
        .collect();
    let mut passes = Vec::new();
    for w in writers {
        passes.extend(
            w.join()
                .map_err(|_| std::io::Error::other("a writer panicked"))??,
        );
    }

    let mut hist = vec![0u64; BUCKETS];
    let (mut got, mut max) = (0u64, 0u64);
    for r in readers {
        let (h, g, m) = r
            .join()
            .map_err(|_| std::io::Error::other("a reader panicked"))?;
        for (a, b) in hist.iter_mut().zip(h) {
            *a += b;
        }
        got += g;
        max = max.max(m);
    }
    passes.sort();
    let pass = |f: f64| {
        passes
            .get(((passes.len().saturating_sub(1)) as f64 * f) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "roomfloor: {} clients, {} lines/s, {} readers, {} writers: delivered {got}/{}, latency to read p50 {:.2} / p99 {:.2} / max {:.2} ms; {} passes, length p50 {:.2} / p99 {:.2} ms",
        args.clients,
        args.rate,
        args.readers,
        args.writers,
        expected * args.clients as u64,
        quantile(&hist, got, 0.50),
        quantile(&hist, got, 0.99),
        max as f64 / 1e6,
        passes.len(),
        pass(0.5),
        pass(0.99),
    );
    Ok(())
}

/// Plays the room's flusher for `members`: line i is due at `i * interval` after `t0` and is
/// appended to the log once the writer sees it is due, which it checks before every member.
/// Goes round the members while any is owed something, writing each one's backlog with one
/// `write`; sleeps until the next line is due when all have everything. Returns the length of
/// every pass.
fn write_all(
    mut members: Vec<std::net::TcpStream>,
    t0: Instant,
    interval: Duration,
    lines: usize,
) -> std::io::Result<Vec<Duration>> {
    let mut log: Vec<u8> = Vec::with_capacity(lines * LINE);
    let mut sent = vec![0usize; members.len()];
    let mut passes = Vec::new();
    let mut due = 0usize;
    let append_due = |log: &mut Vec<u8>, due: &mut usize| {
        let now = t0.elapsed();
        while *due < lines && interval * (*due as u32) <= now {
            let at = interval * (*due as u32);
            let mut line = [b'.'; LINE];
            line[..8].copy_from_slice(&(*due as u64).to_le_bytes());
            line[8..16].copy_from_slice(&(at.as_nanos() as u64).to_le_bytes());
            line[LINE - 1] = b'\n';
            log.extend_from_slice(&line);
            *due += 1;
        }
    };
    loop {
        append_due(&mut log, &mut due);
        if sent.iter().all(|&s| s == log.len()) {
            if due == lines {
                return Ok(passes);
            }
            // Idle until the next line is due.
            let next = interval * (due as u32);
            if let Some(wait) = next.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            continue;
        }
        let start = Instant::now();
        for (m, s) in members.iter_mut().zip(sent.iter_mut()) {
            append_due(&mut log, &mut due);
            if *s < log.len() {
                match m.write(&log[*s..]) {
                    Ok(n) => *s += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        passes.push(start.elapsed());
    }
}

/// Reads every line meant for `socks` until each has all `expected` or `deadline` (since `t0`)
/// passes. Returns the latency histogram, the lines read and the largest latency in ns.
fn read_all(
    mut socks: Vec<TcpStream>,
    t0: Instant,
    expected: u64,
    deadline: Duration,
) -> (Vec<u64>, u64, u64) {
    let mut hist = vec![0u64; BUCKETS];
    let (mut got, mut max) = (0u64, 0u64);
    let Ok(mut poll) = Poll::new() else {
        return (hist, got, max);
    };
    for (i, s) in socks.iter_mut().enumerate() {
        if poll
            .registry()
            .register(s, Token(i), Interest::READABLE)
            .is_err()
        {
            return (hist, got, max);
        }
    }
    // Bytes of an unfinished line per socket, and lines read per socket.
    let mut carry: Vec<Vec<u8>> = vec![Vec::new(); socks.len()];
    let mut lines = vec![0u64; socks.len()];
    let mut done = 0;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 << 10];
    while done < socks.len() && t0.elapsed() < deadline {
        if poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .is_err()
        {
            break;
        }
        for e in events.iter() {
            let i = e.token().0;
            loop {
                let n = match socks[i].read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let now = t0.elapsed().as_nanos() as u64;
                let c = &mut carry[i];
                c.extend_from_slice(&buf[..n]);
                let whole = c.len() / LINE * LINE;
                for line in c[..whole].chunks_exact(LINE) {
                    let mut at = [0u8; 8];
                    at.copy_from_slice(&line[8..16]);
                    let lat = now.saturating_sub(u64::from_le_bytes(at));
                    hist[((lat / BUCKET_NS) as usize).min(BUCKETS - 1)] += 1;
                    max = max.max(lat);
                }
                c.drain(..whole);
                let before = lines[i];
                lines[i] += (whole / LINE) as u64;
                got += lines[i] - before;
                if before < expected && lines[i] >= expected {
                    done += 1;
                }
            }
        }
    }
    (hist, got, max)
}

/// The latency in ms below which a fraction `q` of `n` measurements fall.
fn quantile(hist: &[u64], n: u64, q: f64) -> f64 {
    let target = ((n as f64) * q).ceil() as u64;
    let mut seen = 0;
    for (i, c) in hist.iter().enumerate() {
        seen += c;
        if seen >= target.max(1) {
            return ((i as u64 + 1) * BUCKET_NS) as f64 / 1e6;
        }
    }
    f64::NAN
}
