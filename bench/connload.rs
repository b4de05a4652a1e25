//! A bounded loopback load of short TCP connections, for `bench/trace.sh`.
//!
//! `connload PORT CONNS SECS [THREADS]` listens on 127.0.0.1:PORT and makes CONNS connections
//! to it (stopping after SECS seconds at the latest). Each is a whole conversation: handshake,
//! "ping\n" from the client, "pong\n" back, the client closes, the server closes. Clients bind
//! to source addresses across 127.0.0.0/8, so TIME_WAIT never runs out of ports. The last
//! line printed is `done: N connections in T s = R/s`.

use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> T {
    match args.get(i).map(|a| a.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => default.unwrap_or_else(|| {
            eprintln!("usage: connload PORT CONNS SECS [THREADS]");
            std::process::exit(2)
        }),
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if matches!(s.read(&mut buf), Ok(n) if n > 0) {
            let _ = s.write_all(b"pong\n");
        }
        // Read to the client's FIN, then close: the client closes first.
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    }
}

fn client(port: u16, n: u64, deadline: Instant, done: &AtomicU64, base: u8) -> std::io::Result<()> {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut buf = [0u8; 16];
    for i in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        // Source addresses 127.<base>.x.y: 64k addresses, each with its own port range.
        let src = Ipv4Addr::new(127, base, (i >> 8) as u8, (i & 0xff).max(1) as u8);
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        sock.bind(&SocketAddr::from((src, 0)).into())?;
        sock.connect(&target.into())?;
        let mut s: std::net::TcpStream = sock.into();
        s.write_all(b"ping\n")?;
        let _ = s.read(&mut buf)?;
        drop(s);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, 1, None);
    let conns: u64 = arg(&args, 2, None);
    let secs: f64 = arg(&args, 3, None);
    let threads: u64 = arg(&args, 4, Some(2)).clamp(1, 64);
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("connload: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = (0..threads)
        .map(|_| {
            let (l, s) = (listener.clone(), stop.clone());
            std::thread::spawn(move || serve(&l, &s))
        })
        .collect();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let d = done.clone();
            let per = conns / threads + u64::from(t < conns % threads);
            std::thread::spawn(move || {
                if let Err(e) = client(port, per, deadline, &d, 10 + t as u8) {
                    eprintln!("connload: client {t}: {e}");
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let took = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    // Wake the accept loops so they see the stop flag.
    stop.store(true, Ordering::Relaxed);
    for _ in 0..threads {
        let _ = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
    }
    for s in servers {
        let _ = s.join();
    }
    println!(
        "done: {n} connections in {took:.2} s = {:.0}/s",
        n as f64 / took
    );
}
