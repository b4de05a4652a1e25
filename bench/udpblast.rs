//! A bounded UDP sender for `bench/udp.sh`: sends COUNT datagrams of SIZE bytes to ADDR as fast
//! as one `send` per datagram goes (or at RATE per second), then prints what it did.
//!
//! Usage: udpblast ADDR COUNT SIZE [RATE]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: udpblast ADDR COUNT SIZE [RATE]");
        std::process::exit(2);
    }
    let parse = |i: usize| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("udpblast: {:?} is not a number", args[i]);
            std::process::exit(2)
        })
    };
    let (count, size) = (parse(2), parse(3) as usize);
    let rate = (args.len() > 4).then(|| parse(4)).filter(|&r| r > 0);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(&args[1]).expect("connect");
    let mut payload = vec![b'x'; size.max(1)];
    if let Some(last) = payload.last_mut() {
        *last = b'\n';
    }
    let start = Instant::now();
    let mut errors = 0u64;
    for i in 0..count {
        if let Some(r) = rate {
            // Pace in batches of 64 so the clock is not read for every datagram.
            if i % 64 == 0 {
                let due = Duration::from_secs_f64(i as f64 / r as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        if socket.send(&payload).is_err() {
            errors += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent={} errors={} secs={:.3} rate={:.0}",
        count - errors,
        errors,
        secs,
        (count - errors) as f64 / secs
    );
}
