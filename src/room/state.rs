//! The room's shared state: who is here (by id and by nickname), each member's bounded send
//! queue and wire encoding, the history kept for joiners, and the transcript.
//!
//! Every operation takes the lock once and never awaits while holding it: delivering a message
//! is a non-blocking push of an `Arc`'d chunk into each member's queue. When a queue is full the
//! chunk is handed back as [`Pending`]: the caller waits for room in that queue, but only until
//! the queue has been full for `Config::stall`; then the member is cut off ("send queue full").
//! So a burst never costs a reading client its lines, and a client that stopped reading holds
//! the others up for at most the stall time, once.

use super::commands::check_nick;
use super::{Config, EventSink, RoomEvent};
use crate::codec::Encoding;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Encoded bytes ready for the wire, shared by every member with the same encoding.
pub type Chunk = Arc<[u8]>;

/// Identifies a connection for its whole life (nicknames change).
pub type ClientId = u64;

/// The most names `/who` lists before summarising the rest.
const WHO_MAX_NAMES: usize = 100;

/// How the room tells a client task that it has been cut off, and why.
#[derive(Default)]
pub struct Kick {
    /// Cancelled when the room removes the client.
    pub token: CancellationToken,
    /// Why, set before the token is cancelled.
    pub reason: OnceLock<String>,
}

/// The room's side of one client.
struct Member {
    nick: String,
    encoding: Encoding,
    queue: mpsc::Sender<Chunk>,
    kick: Arc<Kick>,
    /// When the queue was first found full, if it still is.
    full_since: Option<Instant>,
}

/// A chunk that did not fit in a member's queue yet.
struct Blocked {
    id: ClientId,
    queue: mpsc::Sender<Chunk>,
    chunk: Chunk,
    /// The member is cut off if the chunk still does not fit by then.
    deadline: Instant,
}

/// Deliveries still to make: pass to [`Room::deliver`].
#[must_use = "blocked chunks must be delivered with Room::deliver"]
#[derive(Default)]
pub struct Pending(Vec<Blocked>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({} chunks)", self.0.len())
    }
}

impl Pending {
    /// True when everything was delivered at once.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one operation left to do: members to cut off now, chunks to deliver later.
struct Delivery {
    now: Instant,
    stall: std::time::Duration,
    cut: Vec<ClientId>,
    blocked: Vec<Blocked>,
}

/// The result of [`Room::join`].
pub struct Joined {
    /// The nickname given (`guest-N`).
    pub nick: String,
    /// The greeting and the announcement, if they did not fit at once.
    pub pending: Pending,
}

/// Everything behind the lock.
struct State {
    members: HashMap<ClientId, Member>,
    /// Lower-cased nickname -> id, for uniqueness without regard to case.
    nicks: HashMap<String, ClientId>,
    next_guest: u64,
    history: VecDeque<Arc<str>>,
    transcript: Option<BufWriter<File>>,
    /// Whether joins and leaves are currently announced (see `Config::announce_max`).
    announcing: bool,
    closing: bool,
}

/// One chat room.
pub struct Room {
    state: Mutex<State>,
    config: Arc<Config>,
    events: EventSink,
}

/// A line's encodings, made on first need and reused for every member with the same encoding.
struct Encoded<'a> {
    text: &'a str,
    cache: Vec<(Encoding, Chunk)>,
}

impl<'a> Encoded<'a> {
    fn new(text: &'a str) -> Self {
        Encoded {
            text,
            cache: Vec::with_capacity(1),
        }
    }

    fn get(&mut self, enc: Encoding) -> Chunk {
        if let Some((_, c)) = self.cache.iter().find(|(e, _)| *e == enc) {
            return c.clone();
        }
        let chunk = encode(self.text, enc);
        self.cache.push((enc, chunk.clone()));
        chunk
    }
}

fn encode(text: &str, enc: Encoding) -> Chunk {
    if enc.is_utf8() {
        return Arc::from(text.as_bytes());
    }
    let mut out = Vec::with_capacity(text.len());
    enc.encode_message(text, &mut out);
    Arc::from(out)
}

impl Room {
    /// An empty room; `transcript` is the opened `--log` file, if any.
    pub fn new(config: Arc<Config>, events: EventSink, transcript: Option<File>) -> Self {
        Room {
            state: Mutex::new(State {
                members: HashMap::new(),
                nicks: HashMap::new(),
                next_guest: 1,
                history: VecDeque::new(),
                transcript: transcript.map(|f| BufWriter::with_capacity(64 << 10, f)),
                announcing: true,
                closing: false,
            }),
            config,
            events,
        }
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            now: Instant::now(),
            stall: self.config.stall,
            cut: Vec::new(),
            blocked: Vec::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the room down with it: the state stays consistent
        // because no operation leaves it half-updated across a possible panic point.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a client under a fresh `guest-N` name, greets it (with history) and tells the others.
    pub fn join(
        &self,
        id: ClientId,
        peer: SocketAddr,
        queue: mpsc::Sender<Chunk>,
        kick: Arc<Kick>,
    ) -> Option<Joined> {
        let mut st = self.lock();
        if st.closing {
            return None;
        }
        let nick = loop {
            let n = format!("guest-{}", st.next_guest);
            st.next_guest += 1;
            if !st.nicks.contains_key(&n) {
                break n;
            }
        };
        st.nicks.insert(nick.clone(), id);
        st.members.insert(
            id,
            Member {
                nick: nick.clone(),
                encoding: Encoding::UTF8,
                queue,
                kick,
                full_since: None,
            },
        );
        let online = st.members.len();
        let mut greeting = format!(
            "* welcome to the room, you are {nick} ({online} online; /help lists the commands)\n"
        );
        for line in &st.history {
            greeting.push_str(line);
        }
        let mut d = self.delivery();
        send_to(&mut st, id, &greeting, &mut d);
        self.events.emit(RoomEvent::Joined {
            nick: nick.clone(),
            peer,
        });
        self.update_announcing(&mut st, &mut d);
        if st.announcing {
            broadcast(&mut st, Some(id), &format!("* {nick} joined\n"), &mut d);
        }
        log(&mut st, &format!("* {nick} joined"));
        let pending = self.settle(&mut st, d);
        Some(Joined { nick, pending })
    }

    /// Removes a client (if still here) and tells the others why it left.
    pub fn leave(&self, id: ClientId, reason: &str) -> Pending {
        let mut st = self.lock();
        let mut d = self.delivery();
        self.remove(&mut st, id, reason, &mut d);
        self.settle(&mut st, d)
    }

    fn remove(&self, st: &mut State, id: ClientId, reason: &str, d: &mut Delivery) {
        let Some(m) = st.members.remove(&id) else {
            return;
        };
        st.nicks.remove(&m.nick.to_lowercase());
        if st.closing {
            return;
        }
        self.events.emit(RoomEvent::Left {
            nick: m.nick.clone(),
            reason: reason.to_string(),
        });
        let line = format!("* {} left ({reason})\n", m.nick);
        if st.announcing {
            broadcast(st, None, &line, d);
        }
        log(st, line.trim_end());
        self.update_announcing(st, d);
    }

    /// Cuts off every member whose queue stayed full too long (which may cut off more) and
    /// returns what is left to deliver.
    fn settle(&self, st: &mut State, mut d: Delivery) -> Pending {
        while let Some(id) = d.cut.pop() {
            if let Some(m) = st.members.get(&id) {
                let _ = m.kick.reason.set("send queue full".into());
                m.kick.token.cancel();
                self.remove(st, id, "send queue full", &mut d);
            }
        }
        d.blocked.retain(|b| st.members.contains_key(&b.id));
        Pending(d.blocked)
    }

    /// Waits for room in the queues `pending` is blocked on, each until its member's queue has
    /// been full for the stall time; a member still full then is cut off.
    pub async fn deliver(&self, pending: Pending) {
        let mut work = pending.0;
        while let Some(b) = work.pop() {
            let sent = tokio::time::timeout_at(b.deadline, b.queue.send(b.chunk)).await;
            if sent.is_err() {
                let mut st = self.lock();
                let mut d = self.delivery();
                d.cut.push(b.id);
                work.extend(self.settle(&mut st, d).0);
            }
        }
    }

    /// Joins and leaves are announced only while the room is small enough that telling
    /// everyone about everyone stays cheap (each announcement costs one line per member).
    fn update_announcing(&self, st: &mut State, d: &mut Delivery) {
        let limit = self.config.announce_max;
        let n = st.members.len();
        if st.announcing && n > limit {
            st.announcing = false;
            let line = format!(
                "* more than {limit} members: joins and leaves are no longer announced (/who counts)\n"
            );
            broadcast(st, None, &line, d);
        } else if !st.announcing && n <= limit {
            st.announcing = true;
            broadcast(
                st,
                None,
                &format!("* {n} members: joins and leaves are announced again\n"),
                d,
            );
        }
    }

    /// A chat line from a member, to everyone else: `<nick> text`. `text` is sanitised.
    pub fn say(&self, id: ClientId, text: &str) -> Pending {
        let mut st = self.lock();
        let Some(m) = st.members.get(&id) else {
            return Pending::default();
        };
        let line = format!("<{}> {text}\n", m.nick);
        self.publish(&mut st, Some(id), line)
    }

    /// An action, `* nick text`, to everyone else. `text` is sanitised.
    pub fn me(&self, id: ClientId, text: &str) -> Pending {
        let mut st = self.lock();
        let Some(m) = st.members.get(&id) else {
            return Pending::default();
        };
        let line = format!("* {} {text}\n", m.nick);
        self.publish(&mut st, Some(id), line)
    }

    /// A line typed on the server's own stdin: `<server> text` to everyone.
    pub fn server_say(&self, text: &str) -> Pending {
        let mut st = self.lock();
        self.publish(&mut st, None, format!("<server> {text}\n"))
    }

    /// Broadcasts a chat line and keeps it in the history and the transcript.
    fn publish(&self, st: &mut State, from: Option<ClientId>, line: String) -> Pending {
        let mut d = self.delivery();
        broadcast(st, from, &line, &mut d);
        log(st, line.trim_end());
        if self.config.history > 0 {
            if st.history.len() == self.config.history {
                st.history.pop_front();
            }
            st.history.push_back(Arc::from(line));
        }
        self.settle(st, d)
    }

    /// A line to one member only (replies, errors).
    pub fn tell(&self, id: ClientId, text: &str) -> Pending {
        let mut st = self.lock();
        let mut d = self.delivery();
        send_to(&mut st, id, text, &mut d);
        self.settle(&mut st, d)
    }

    /// `/nick`: renames a member if the name is allowed and free.
    pub fn rename(&self, id: ClientId, new: &str) -> Result<Pending, String> {
        check_nick(new)?;
        let mut st = self.lock();
        let key = new.to_lowercase();
        match st.nicks.get(&key) {
            Some(&other) if other == id => {
                // Only the letter case changes (or nothing): allowed.
            }
            Some(_) => return Err(format!("{new} is taken; pick another nickname")),
            None => {}
        }
        let Some(m) = st.members.get_mut(&id) else {
            return Ok(Pending::default());
        };
        let old = std::mem::replace(&mut m.nick, new.to_string());
        st.nicks.remove(&old.to_lowercase());
        st.nicks.insert(key, id);
        self.events.emit(RoomEvent::Renamed {
            old: old.clone(),
            new: new.to_string(),
        });
        let line = format!("* {old} is now known as {new}\n");
        let mut d = self.delivery();
        broadcast(&mut st, None, &line, &mut d);
        log(&mut st, line.trim_end());
        Ok(self.settle(&mut st, d))
    }

    /// `/who`: who is online, to the asking member.
    pub fn who(&self, id: ClientId) -> Pending {
        let mut st = self.lock();
        let mut names: Vec<&str> = st.members.values().map(|m| m.nick.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        let mut line = format!("* {n} online: {}", names[..n.min(WHO_MAX_NAMES)].join(", "));
        if n > WHO_MAX_NAMES {
            line.push_str(&format!(" and {} more", n - WHO_MAX_NAMES));
        }
        line.push('\n');
        let mut d = self.delivery();
        send_to(&mut st, id, &line, &mut d);
        self.settle(&mut st, d)
    }

    /// `/msg`: a private line to one member; the sender gets a copy.
    pub fn private(&self, id: ClientId, to: &str, text: &str) -> Result<Pending, String> {
        let mut st = self.lock();
        let Some(&target) = st.nicks.get(&to.to_lowercase()) else {
            return Err(format!("no one here is called {to:?} (/who lists who is)"));
        };
        let (Some(from), Some(dest)) = (st.members.get(&id), st.members.get(&target)) else {
            return Err(format!("{to} has just left"));
        };
        let (from, dest) = (from.nick.clone(), dest.nick.clone());
        let mut d = self.delivery();
        send_to(&mut st, target, &format!("*{from}* {text}\n"), &mut d);
        send_to(&mut st, id, &format!("-> *{dest}* {text}\n"), &mut d);
        Ok(self.settle(&mut st, d))
    }

    /// `/encoding`: sets the member's wire encoding for what it sends and receives.
    pub fn set_encoding(&self, id: ClientId, enc: Encoding) {
        let mut st = self.lock();
        if let Some(m) = st.members.get_mut(&id) {
            m.encoding = enc;
        }
    }

    /// The nickname of a member, if it is still here.
    pub fn nick(&self, id: ClientId) -> Option<String> {
        self.lock().members.get(&id).map(|m| m.nick.clone())
    }

    /// How many members are here.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// True when no one is here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes buffered transcript lines to the file.
    pub fn flush_transcript(&self) {
        let mut st = self.lock();
        if let Some(t) = st.transcript.as_mut() {
            if let Err(e) = t.flush() {
                self.events
                    .emit(RoomEvent::Warning(format!("cannot write the log: {e}")));
                st.transcript = None;
            }
        }
    }

    /// Tells everyone the server is shutting down and lets go of every queue, so each writer
    /// sends what is queued and ends. No one joins after this.
    pub fn shut_down(&self) {
        let mut st = self.lock();
        st.closing = true;
        let line: Chunk = Arc::from(&b"* server shutting down\n"[..]);
        let mut enc = Encoded::new("* server shutting down\n");
        for m in st.members.values() {
            let chunk = if m.encoding.is_utf8() {
                line.clone()
            } else {
                enc.get(m.encoding)
            };
            // A full queue belongs to a client that stopped reading: it will not see this.
            let _ = m.queue.try_send(chunk);
        }
        log(&mut st, "* server shutting down");
        st.members.clear();
        st.nicks.clear();
    }
}

/// Pushes `line` to every member except `skip`.
fn broadcast(st: &mut State, skip: Option<ClientId>, line: &str, d: &mut Delivery) {
    let mut enc = Encoded::new(line);
    for (&id, m) in st.members.iter_mut() {
        if Some(id) != skip {
            push(id, m, enc.get(m.encoding), d);
        }
    }
}

/// Pushes `text` to one member.
fn send_to(st: &mut State, id: ClientId, text: &str, d: &mut Delivery) {
    if let Some(m) = st.members.get_mut(&id) {
        push(id, m, encode(text, m.encoding), d);
    }
}

/// Queues `chunk` for `m`; a full queue hands it to `d` to wait, or to cut `m` off if the
/// queue has been full for the stall time already.
fn push(id: ClientId, m: &mut Member, chunk: Chunk, d: &mut Delivery) {
    match m.queue.try_send(chunk) {
        Ok(()) => m.full_since = None,
        Err(mpsc::error::TrySendError::Full(chunk)) => {
            let since = *m.full_since.get_or_insert(d.now);
            if d.now.saturating_duration_since(since) >= d.stall {
                d.cut.push(id);
            } else {
                d.blocked.push(Blocked {
                    id,
                    queue: m.queue.clone(),
                    chunk,
                    deadline: since + d.stall,
                });
            }
        }
        // The member is leaving; its task no longer reads the queue.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// Appends a timestamped line to the transcript, if there is one.
fn log(st: &mut State, line: &str) {
    if let Some(t) = st.transcript.as_mut() {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        if writeln!(t, "{now} {line}").is_err() {
            // Reported when the flush fails; until then the buffer keeps the lines.
            st.transcript = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    fn peer() -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1))
    }

    fn room(config: Config) -> Room {
        Room::new(Arc::new(config), EventSink::discard(), None)
    }

    struct Client {
        id: ClientId,
        rx: mpsc::Receiver<Chunk>,
        kick: Arc<Kick>,
    }

    fn join(room: &Room, id: ClientId, cap: usize) -> Client {
        let (tx, rx) = mpsc::channel(cap);
        let kick = Arc::new(Kick::default());
        room.join(id, peer(), tx, kick.clone()).expect("joined");
        Client { id, rx, kick }
    }

    fn drain(c: &mut Client) -> String {
        let mut out = Vec::new();
        while let Ok(chunk) = c.rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn chat_nick_who_msg() {
        let r = room(Config::default());
        let mut a = join(&r, 1, 64);
        let mut b = join(&r, 2, 64);
        assert!(drain(&mut a).contains("* guest-2 joined"));
        assert!(drain(&mut b).contains("you are guest-2 (2 online"));
        let _ = r.rename(a.id, "alice").unwrap();
        assert!(r.rename(b.id, "ALICE").unwrap_err().contains("taken"));
        let _ = r.say(a.id, "hi");
        assert_eq!(
            drain(&mut b),
            "* guest-1 is now known as alice\n<alice> hi\n"
        );
        assert_eq!(drain(&mut a), "* guest-1 is now known as alice\n");
        let _ = r.who(b.id);
        assert_eq!(drain(&mut b), "* 2 online: alice, guest-2\n");
        let _ = r.private(b.id, "Alice", "psst").unwrap();
        assert_eq!(drain(&mut a), "*guest-2* psst\n");
        assert_eq!(drain(&mut b), "-> *alice* psst\n");
        assert!(r.private(b.id, "carol", "x").is_err());
    }

    #[test]
    fn encodes_once_per_encoding() {
        let r = room(Config::default());
        let a = join(&r, 1, 64);
        let mut b = join(&r, 2, 64);
        let mut c = join(&r, 3, 64);
        r.set_encoding(b.id, Encoding::GBK);
        r.set_encoding(c.id, Encoding::GBK);
        drain(&mut b);
        drain(&mut c);
        let _ = r.say(a.id, "你好");
        let (x, y) = (b.rx.try_recv().unwrap(), c.rx.try_recv().unwrap());
        assert_eq!(&x[..], b"<guest-1> \xc4\xe3\xba\xc3\n");
        assert!(
            Arc::ptr_eq(&x, &y),
            "one encoding shared by both GBK members"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_slows_the_sender_then_cuts_off_only_that_member() {
        let r = room(Config::default());
        let a = join(&r, 1, 1024);
        let mut b = join(&r, 2, 1024);
        let mut slow = join(&r, 3, 4);
        drain(&mut b);
        drain(&mut slow);
        let start = Instant::now();
        // A reader that catches up within the stall time loses nothing.
        for i in 0..6 {
            let p = r.say(a.id, &format!("early {i}"));
            if i < 4 {
                assert!(p.is_empty());
            } else {
                assert!(!p.is_empty());
                let got = tokio::join!(r.deliver(p), async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    slow.rx.recv().await
                });
                assert!(got.1.is_some());
            }
        }
        assert!(!slow.kick.token.is_cancelled());
        // One that reads nothing is cut off once its queue has been full for the stall time.
        for i in 0..10 {
            let p = r.say(a.id, &format!("line {i}"));
            r.deliver(p).await;
        }
        assert!(start.elapsed() >= Config::default().stall);
        assert!(slow.kick.token.is_cancelled());
        assert_eq!(
            slow.kick.reason.get().map(String::as_str),
            Some("send queue full")
        );
        let got = drain(&mut b);
        for i in 0..10 {
            assert!(got.contains(&format!("<guest-1> line {i}\n")));
        }
        assert!(got.contains("* guest-3 left (send queue full)"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn history_for_joiners() {
        let r = room(Config {
            history: 2,
            ..Config::default()
        });
        let a = join(&r, 1, 64);
        for t in ["one", "two", "three"] {
            let _ = r.say(a.id, t);
        }
        let mut b = join(&r, 2, 64);
        let got = drain(&mut b);
        assert!(got.ends_with("<guest-1> two\n<guest-1> three\n"), "{got:?}");
    }

    #[test]
    fn announcements_stop_in_large_rooms() {
        let r = room(Config {
            announce_max: 2,
            ..Config::default()
        });
        let mut a = join(&r, 1, 64);
        let _b = join(&r, 2, 64);
        let _c = join(&r, 3, 64);
        let got = drain(&mut a);
        assert!(got.contains("* guest-2 joined"));
        assert!(!got.contains("guest-3 joined"));
        assert!(got.contains("more than 2 members"));
        let _ = r.leave(3, "quit");
        assert!(drain(&mut a).contains("announced again"));
    }

    #[test]
    fn shut_down_tells_everyone_and_closes_queues() {
        let r = room(Config::default());
        let mut a = join(&r, 1, 64);
        drain(&mut a);
        r.shut_down();
        assert_eq!(drain(&mut a), "* server shutting down\n");
        assert!(a.rx.try_recv().is_err() && a.rx.is_closed());
        let (tx, _rx) = mpsc::channel(1);
        assert!(r.join(9, peer(), tx, Arc::new(Kick::default())).is_none());
    }
}
