//! The capture behind `wirechat tcp connect|listen --trace`: started before the connection
//! exists, it shows that conversation's ladder among the events (stderr, or above the prompt at
//! an interactive terminal) as the segments happen.
//!
//! The session code is not touched: [`attach`] wraps the terminal's event sink, and the
//! `Listening`, `Connected` and `Accepted` events tell it which port and 4-tuple to follow.
//! Dropping the [`Guard`] waits briefly for the close to finish, then stops the capture.

use super::print::{Format, Printer};
use super::{Error, Filter, Limits};
use crate::codec::Encoding;
use crate::session::{Event, EventLines, Events};
use crate::transport::HostPort;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long the end of a conversation waits for its last FIN and ACK to be seen.
const LINGER: Duration = Duration::from_millis(500);

/// Which conversation to follow.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// `tcp connect`: the server's port is known now, the local port after connecting.
    Connect,
    /// `tcp listen`: our port is known once bound.
    Listen,
}

/// A running inline capture; dropping it ends the capture after the close is seen.
pub struct Guard {
    stop: Arc<AtomicBool>,
    closed: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (lock, cv) = &*self.closed;
        if let Ok(g) = lock.lock() {
            // Wait (bounded) for the last ACK of the close, so the summary is complete.
            let _ = cv.wait_timeout_while(g, LINGER, |closed| !*closed);
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The interface that carries traffic to `host`: `lo` for loopback, otherwise all of them.
fn iface_for(host: Option<&str>) -> &'static str {
    let loopback = match host {
        Some("localhost") => true,
        Some(h) => h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    if loopback { "lo" } else { "any" }
}

/// Starts a capture for the conversation at `addr` and routes `events` through it; payloads
/// are shown as text in the conversation's `encoding` (UTF-8 when it has none). On failure (no
/// privileges, not Linux) it warns through `events` and the conversation goes on without.
pub fn attach(
    events: &mut Events,
    addr: &HostPort,
    role: Role,
    encoding: Option<Encoding>,
) -> Option<Guard> {
    match start(events, addr, role, encoding.unwrap_or(Encoding::UTF8)) {
        Ok(g) => Some(g),
        Err(e) => {
            events.warn(format!("--trace: {e}; going on without it"));
            None
        }
    }
}

fn start(
    events: &mut Events,
    addr: &HostPort,
    role: Role,
    encoding: Encoding,
) -> Result<Guard, Error> {
    let mut source = super::open_live(iface_for(addr.host.as_deref()))?;
    let filter = Arc::new(Mutex::new(Filter {
        port: (addr.port != 0).then_some(addr.port),
        pending: addr.port == 0,
        ..Filter::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new((Mutex::new(false), Condvar::new()));
    let (f, s, c) = (filter.clone(), stop.clone(), closed.clone());
    // The ladder goes through the event sink, so at a terminal it is printed above the prompt.
    let lines = EventLines::new(events.clone());
    let thread = std::thread::Builder::new()
        .name("trace".into())
        .spawn(move || {
            let mut printer = Printer::new(lines, Format::Text, false).with_encoding(encoding);
            let matches = |src, dst| f.lock().is_ok_and(|f| f.matches(src, dst));
            let after = |t: &super::ladder::Tracker| {
                if t.totals().connections > 0 && t.all_closed() {
                    let (lock, cv) = &*c;
                    if let Ok(mut g) = lock.lock() {
                        *g = true;
                        cv.notify_all();
                    }
                }
            };
            let limits = Limits {
                count: None,
                deadline: None,
            };
            let _ = super::capture(
                source.as_mut(),
                &matches,
                &mut printer,
                None,
                &limits,
                &s,
                &after,
            );
        })
        .map_err(Error::Capture)?;
    let inner = events.clone();
    *events = Events::new(move |e| {
        if let Ok(mut f) = filter.lock() {
            match (e, role) {
                (Event::Listening { addr, .. }, Role::Listen) => {
                    f.port = Some(addr.port());
                    f.pending = false;
                }
                (Event::Connected { peer, local }, Role::Connect) => {
                    f.tuple = Some((*local, *peer));
                }
                _ => {}
            }
        }
        inner.emit(e.clone());
    });
    Ok(Guard {
        stop,
        closed,
        thread: Some(thread),
    })
}
