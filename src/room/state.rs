//! The room's shared state: who is here (by id and by nickname), the shared log of lines for
//! everyone (see [`super::outbox`]), the history kept for joiners, and the transcript.
//!
//! Every operation takes the lock once, never awaits while holding it, and makes no syscall on
//! a client's socket or on the transcript's file: a line for everyone is one entry appended to
//! the log, a line for one member is queued on that member; the flushers write them (and the
//! transcript's thread the file). A member that is more than `Config::queue` lines behind
//! while its socket is full is not reading, and is cut off (`send queue full`); nobody else
//! waits for it.

use super::commands::{MAX_NICK_CHARS, NickKeys, check_me, check_nick, name_chars};
use super::outbox::{Chunk, ClientId, Conn, Entry, Log, PRIVATE_MAX, Shard, Snapshot, encode};
use super::transcript::Transcript;
use super::{Config, EventSink, RoomEvent};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The most names `/who` lists before summarising the rest.
const WHO_MAX_NAMES: usize = 100;

/// The most log entries a member catching up on its own copies at once.
const CATCH_UP_MAX: usize = 1024;

/// The most bytes of history kept, whatever `--history` says: with long lines allowed
/// (`--max-line`) the last N lines could otherwise pin gigabytes. Below
/// [`super::outbox::PRIVATE_BLOCKED_MAX`], so a joiner always has room for it.
pub const HISTORY_BYTES: usize = 512 << 10;

/// The room's side of one client.
struct Member {
    nick: String,
    conn: Arc<Conn>,
    /// Index in its shard's member list.
    slot: usize,
}

/// Everything behind the lock.
struct State {
    members: HashMap<ClientId, Member>,
    /// Each flusher's members.
    shards: Vec<Vec<Arc<Conn>>>,
    /// Members that left but whose task is still writing their last lines.
    draining: HashMap<ClientId, Arc<Conn>>,
    /// [`NickKeys::id`] -> member: names are unique without regard to case or normalization.
    nicks: HashMap<String, ClientId>,
    /// Both of [`NickKeys::looks`] -> member: no one may look like someone else.
    looks: HashMap<String, ClientId>,
    next_guest: u64,
    log: Log,
    /// The last chat lines, in the room's encoding, each shared by the queues of joiners.
    history: VecDeque<Chunk>,
    /// Their bytes, at most [`HISTORY_BYTES`].
    history_bytes: usize,
    transcript: Option<Transcript>,
    /// Whether joins and leaves are currently announced (see `Config::announce_max`).
    announcing: bool,
    closing: bool,
}

/// One chat room.
pub struct Room {
    state: Mutex<State>,
    config: Arc<Config>,
    events: EventSink,
    shards: Vec<Shard>,
    /// Told each time a flusher finishes a pass over its members.
    progress: Notify,
    /// Unsent bytes of lines for one member alone, all members together.
    private_total: Arc<std::sync::atomic::AtomicUsize>,
}

/// Members to cut off once the current operation is done.
type Cuts = Vec<ClientId>;

impl Room {
    /// An empty room with `config.flushers` flushers; `transcript` is the `--log` file's.
    pub fn new(config: Arc<Config>, events: EventSink, transcript: Option<Transcript>) -> Self {
        let n = config.flushers.max(1);
        Room {
            state: Mutex::new(State {
                members: HashMap::new(),
                shards: vec![Vec::new(); n],
                draining: HashMap::new(),
                nicks: HashMap::new(),
                looks: HashMap::new(),
                next_guest: 1,
                log: Log::default(),
                history: VecDeque::new(),
                history_bytes: 0,
                transcript,
                announcing: true,
                closing: false,
            }),
            shards: (0..n).map(|_| Shard::default()).collect(),
            config,
            events,
            progress: Notify::new(),
            private_total: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the room down with it: the state stays consistent
        // because no operation leaves it half-updated across a possible panic point.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a client under a fresh `guest-N` name, greets it (with history) and tells the
    /// others. The stream comes back when the room is shutting down.
    pub fn join(
        &self,
        id: ClientId,
        peer: SocketAddr,
        stream: TcpStream,
    ) -> Result<Arc<Conn>, TcpStream> {
        let mut st = self.lock();
        if st.closing {
            return Err(stream);
        }
        let nick = loop {
            let n = format!("guest-{}", st.next_guest);
            st.next_guest += 1;
            if st.holder(&n).is_none() {
                break n;
            }
        };
        let shard = (id % self.shards.len() as u64) as usize;
        let conn = Arc::new(Conn::new(
            id,
            stream,
            shard,
            st.log.end(),
            self.private_total.clone(),
        ));
        if !self.config.encoding.is_utf8() {
            conn.set_encoding(self.config.encoding);
        }
        st.claim(NickKeys::of(&nick), id);
        let slot = st.shards[shard].len();
        st.shards[shard].push(conn.clone());
        st.members.insert(
            id,
            Member {
                nick: nick.clone(),
                conn: conn.clone(),
                slot,
            },
        );
        let online = st.members.len();
        let greeting = format!(
            "* welcome to the room, you are {nick} ({online} online; /help lists the commands)\n"
        );
        let mut cuts = Cuts::new();
        self.send_to(&mut st, id, &greeting, &mut cuts);
        if !st.history.is_empty() {
            // Each line is held once and shared by every joiner's queue, however many join and
            // however often the history changes; a joiner reads the room's encoding until it
            // says otherwise, as the lines are kept in.
            let tag = st.log.end();
            let mut out = conn.out();
            let mut fits = true;
            for line in &st.history {
                fits &= conn.push_shared(&mut out, tag, line.clone());
            }
            if !fits {
                cuts.push(id);
            } else if !out.blocked() {
                drop(out);
                self.shards[conn.shard].mark(&conn);
            }
        }
        self.events.emit(RoomEvent::Joined {
            nick: nick.clone(),
            peer,
        });
        self.update_announcing(&mut st, &mut cuts);
        if st.announcing {
            self.broadcast(&mut st, Some(id), &format!("* {nick} joined\n"), &mut cuts);
        }
        log(&mut st, &format!("* {nick} joined"));
        self.settle(&mut st, cuts);
        Ok(conn)
    }

    /// Removes a client (if still here) and tells the others why it left. Its task goes on
    /// writing what it was owed until then, and calls [`Room::gone`] when done.
    pub fn leave(&self, id: ClientId, reason: &str) {
        let mut st = self.lock();
        let mut cuts = Cuts::new();
        self.remove(&mut st, id, reason, &mut cuts);
        self.settle(&mut st, cuts);
    }

    /// The client's task has ended.
    pub fn gone(&self, id: ClientId) {
        self.lock().draining.remove(&id);
    }

    fn remove(&self, st: &mut State, id: ClientId, reason: &str, cuts: &mut Cuts) {
        let Some(m) = st.members.remove(&id) else {
            return;
        };
        let shard = m.conn.shard;
        let list = &mut st.shards[shard];
        list.swap_remove(m.slot);
        if let Some(moved) = list.get(m.slot) {
            let moved = moved.id;
            if let Some(other) = st.members.get_mut(&moved) {
                other.slot = m.slot;
            }
        }
        m.conn.leave_at(st.log.end());
        if !m.conn.kick.token.is_cancelled() {
            // It is owed lines up to here; a member cut off is owed nothing.
            st.draining.insert(id, m.conn);
        }
        st.release(&m.nick);
        if st.closing {
            return;
        }
        self.events.emit(RoomEvent::Left {
            nick: m.nick.clone(),
            reason: reason.to_string(),
        });
        let line = format!("* {} left ({reason})\n", m.nick);
        if st.announcing {
            self.broadcast(st, None, &line, cuts);
        }
        log(st, line.trim_end());
        self.update_announcing(st, cuts);
    }

    /// Cuts off the members in `cuts` (which may cut off more).
    fn settle(&self, st: &mut State, mut cuts: Cuts) {
        while let Some(id) = cuts.pop() {
            if let Some(m) = st.members.get(&id) {
                m.conn.kick.kick("send queue full");
                self.remove(st, id, "send queue full", &mut cuts);
            }
        }
    }

    /// Joins and leaves are announced only while the room is small enough that telling
    /// everyone about everyone stays cheap (each announcement costs one write per member).
    fn update_announcing(&self, st: &mut State, cuts: &mut Cuts) {
        let limit = self.config.announce_max;
        let n = st.members.len();
        if st.announcing && n > limit {
            st.announcing = false;
            let line = format!(
                "* more than {}: joins and leaves are no longer announced (/who counts)\n",
                super::count(limit, "member")
            );
            self.broadcast(st, None, &line, cuts);
        } else if !st.announcing && n <= limit {
            st.announcing = true;
            let line = format!(
                "* {}: joins and leaves are announced again\n",
                super::count(n, "member")
            );
            self.broadcast(st, None, &line, cuts);
        }
    }

    /// A chat line from a member, to everyone else: `<nick> text`. `text` is sanitised.
    pub fn say(&self, id: ClientId, text: &str) {
        let mut st = self.lock();
        let Some(m) = st.members.get(&id) else {
            return;
        };
        let line = format!("<{}> {text}\n", m.nick);
        self.publish(&mut st, Some(id), line);
    }

    /// An action, `* nick text`, to everyone else. `text` is sanitised.
    pub fn me(&self, id: ClientId, text: &str) -> Result<(), String> {
        // Checked outside the lock; only this member's own task renames it.
        let Some(nick) = self.lock().members.get(&id).map(|m| m.nick.clone()) else {
            return Ok(());
        };
        check_me(&nick, text)?;
        let mut st = self.lock();
        self.publish(&mut st, Some(id), format!("* {nick} {text}\n"));
        Ok(())
    }

    /// A line typed on the server's own stdin: `<server> text` to everyone.
    pub fn server_say(&self, text: &str) {
        let mut st = self.lock();
        self.publish(&mut st, None, format!("<server> {text}\n"));
    }

    /// Broadcasts a chat line and keeps it in the history and the transcript.
    fn publish(&self, st: &mut State, from: Option<ClientId>, line: String) {
        let mut cuts = Cuts::new();
        self.broadcast(st, from, &line, &mut cuts);
        log(st, line.trim_end());
        if self.config.history > 0 {
            let chunk = encode(&line, self.config.encoding);
            st.history_bytes += chunk.len();
            st.history.push_back(chunk);
            while st.history.len() > self.config.history || st.history_bytes > HISTORY_BYTES {
                match st.history.pop_front() {
                    Some(old) => st.history_bytes -= old.len(),
                    None => break,
                }
            }
        }
        self.settle(st, cuts);
    }

    /// Appends `line` to the log for everyone but `skip`, and wakes the flushers. When the log
    /// holds more than it must, members too far behind are found and cut off, and the rest
    /// is forgotten.
    fn broadcast(&self, st: &mut State, skip: Option<ClientId>, line: &str, cuts: &mut Cuts) {
        st.log.push(Entry::new(line, skip));
        for shard in &self.shards {
            shard.log_grew();
        }
        let (cap, cap_bytes) = (self.config.queue as u64, self.config.queue_bytes);
        if st.log.len() as u64 > cap + cap / 8 || st.log.bytes_kept() > cap_bytes + cap_bytes / 8 {
            let end = st.log.end();
            let too_far = |cursor: u64| end - cursor > cap || st.log.bytes_from(cursor) > cap_bytes;
            let mut oldest = end;
            for (&id, m) in &st.members {
                let out = m.conn.out();
                let cursor = out.cursor();
                if out.blocked() && too_far(cursor) {
                    cuts.push(id);
                } else {
                    oldest = oldest.min(cursor);
                }
            }
            for conn in st.draining.values() {
                // A member that left is owed its last lines for a while, but not a longer
                // backlog than anyone else.
                let cursor = conn.out().cursor();
                if !too_far(cursor) {
                    oldest = oldest.min(cursor);
                }
            }
            st.log.trim(oldest);
        }
    }

    /// Queues `text` for one member.
    fn send_to(&self, st: &mut State, id: ClientId, text: &str, cuts: &mut Cuts) {
        let Some(m) = st.members.get(&id) else {
            return;
        };
        let tag = st.log.end();
        let mut out = m.conn.out();
        let chunk: Chunk = encode(text, out.encoding());
        if !m.conn.push_private(&mut out, tag, chunk) {
            cuts.push(id);
            return;
        }
        let flushed = !out.blocked();
        drop(out);
        if flushed {
            self.shards[m.conn.shard].mark(&m.conn);
        }
    }

    /// A line to one member only (replies, errors).
    pub fn tell(&self, id: ClientId, text: &str) {
        let mut st = self.lock();
        let mut cuts = Cuts::new();
        self.send_to(&mut st, id, text, &mut cuts);
        self.settle(&mut st, cuts);
    }

    /// `/nick`: renames a member if the name is allowed and free.
    pub fn rename(&self, id: ClientId, new: &str) -> Result<(), String> {
        check_nick(new)?;
        let keys = NickKeys::of(new);
        let mut st = self.lock();
        if st.nicks.get(&keys.id).is_some_and(|&other| other != id) {
            return Err(format!("{new} is taken; pick another nickname"));
        }
        let like = keys
            .looks
            .iter()
            .find_map(|l| st.looks.get(l).filter(|&&other| other != id));
        if let Some(other) = like {
            let like = st.members.get(other).map_or("someone", |m| m.nick.as_str());
            return Err(format!(
                "{new} looks too much like {like}, who is here; pick another nickname"
            ));
        }
        // No change at all is not news; a change of letter case, or to a look-alike of one's
        // own name, is allowed.
        if st.members.get(&id).is_some_and(|m| m.nick == new) {
            return Err(format!("you are already {new}"));
        }
        let Some(m) = st.members.get_mut(&id) else {
            return Ok(());
        };
        let old = std::mem::replace(&mut m.nick, new.to_string());
        st.release(&old);
        st.claim(keys, id);
        self.events.emit(RoomEvent::Renamed {
            old: old.clone(),
            new: new.to_string(),
        });
        let line = format!("* {old} is now known as {new}\n");
        let mut cuts = Cuts::new();
        self.broadcast(&mut st, None, &line, &mut cuts);
        log(&mut st, line.trim_end());
        self.settle(&mut st, cuts);
        Ok(())
    }

    /// `/who`: who is online, to the asking member.
    pub fn who(&self, id: ClientId) {
        let mut st = self.lock();
        let mut names: Vec<&str> = st.members.values().map(|m| m.nick.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        let mut line = format!("* {n} online: {}", names[..n.min(WHO_MAX_NAMES)].join(", "));
        if n > WHO_MAX_NAMES {
            line.push_str(&format!(" and {} more", n - WHO_MAX_NAMES));
        }
        line.push('\n');
        let mut cuts = Cuts::new();
        self.send_to(&mut st, id, &line, &mut cuts);
        self.settle(&mut st, cuts);
    }

    /// `/msg`: a private line to one member; the sender gets a copy.
    ///
    /// Returns the recipient when it now has more than [`PRIVATE_MAX`] unsent while reading: the
    /// sender should then [`Room::wait_for_private_reader`] before it sends more, so that a
    /// burst of private lines slows its senders down rather than cutting off a reader.
    pub fn private(&self, id: ClientId, to: &str, text: &str) -> Result<Option<ClientId>, String> {
        // The name as given, in quotes: the reply is sanitised once, by the caller.
        let nobody = || format!("no one here is called \"{to}\" (/who lists who is)");
        if name_chars(to, MAX_NICK_CHARS) > MAX_NICK_CHARS {
            return Err(nobody());
        }
        let keys = NickKeys::of(to);
        let mut st = self.lock();
        let Some(&target) = st.nicks.get(&keys.id) else {
            // A look-alike is someone else: the line is not given to it.
            let like = keys
                .looks
                .iter()
                .find_map(|l| st.looks.get(l))
                .and_then(|o| st.members.get(o));
            return Err(match like {
                Some(m) => format!(
                    "no one here is called \"{to}\"; {} only looks like it (/who lists who is)",
                    m.nick
                ),
                None => nobody(),
            });
        };
        if target == id {
            return Err("that is you: /msg is for someone else".into());
        }
        let (Some(from), Some(dest)) = (st.members.get(&id), st.members.get(&target)) else {
            return Err(format!("{to} has just left"));
        };
        let (from, dest) = (from.nick.clone(), dest.nick.clone());
        let mut cuts = Cuts::new();
        self.send_to(&mut st, target, &format!("*{from}* {text}\n"), &mut cuts);
        self.send_to(&mut st, id, &format!("-> *{dest}* {text}\n"), &mut cuts);
        let behind = st
            .members
            .get(&target)
            .is_some_and(|m| m.conn.out().private_bytes() > PRIVATE_MAX);
        self.settle(&mut st, cuts);
        Ok(behind.then_some(target))
    }

    /// Waits until member `target` has at most [`PRIVATE_MAX`] of private lines unsent, or has
    /// stopped reading (then the cut-off rules apply to it), or has left.
    pub async fn wait_for_private_reader(&self, target: ClientId) {
        loop {
            let wait = self.progress.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            {
                let st = self.lock();
                let Some(m) = st.members.get(&target) else {
                    return;
                };
                let out = m.conn.out();
                if out.private_bytes() <= PRIVATE_MAX || out.blocked() {
                    return;
                }
            }
            wait.await;
        }
    }

    /// `/encoding`: sets the member's wire encoding for what it sends and receives.
    pub fn set_encoding(&self, id: ClientId, enc: crate::codec::Encoding) {
        let st = self.lock();
        if let Some(m) = st.members.get(&id) {
            m.conn.set_encoding(enc);
        }
    }

    /// How many members are here.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// True when no one is here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `CATCH_UP_MAX` log entries from `from`, for a member catching up on its own.
    pub fn snapshot(&self, from: u64) -> Snapshot {
        self.lock().log.snapshot(from, CATCH_UP_MAX)
    }

    /// Tells the flusher of `conn` that it has something of its own to write.
    pub fn mark(&self, conn: &Arc<Conn>) {
        self.shards[conn.shard].mark(conn);
    }

    /// Lines and bytes appended to the log that some flusher has not yet written to its
    /// members.
    fn lag(&self) -> (u64, u64) {
        let st = self.lock();
        let end = st.log.end();
        let synced = self
            .shards
            .iter()
            .map(|s| s.synced.load(Ordering::Acquire))
            .min()
            .unwrap_or(end);
        (end.saturating_sub(synced), st.log.bytes_from(synced))
    }

    /// Waits while the flushers are more than half a queue (in lines or in bytes) behind, so
    /// that a fast sender is slowed down (its socket fills) rather than the log growing.
    pub async fn wait_for_flushers(&self) {
        let lines = (self.config.queue / 2).max(1) as u64;
        let bytes = self.config.queue_bytes / 2;
        loop {
            let wait = self.progress.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            let (behind, behind_bytes) = self.lag();
            if behind <= lines && behind_bytes <= bytes {
                return;
            }
            wait.await;
        }
    }

    /// Flusher `k`: writes new lines to its members as they come, until the room closes.
    pub async fn flush(&self, k: usize) {
        let shard = &self.shards[k];
        loop {
            shard.wake.notified().await;
            loop {
                let (moved, dirty) = shard.take();
                if !moved && dirty.is_empty() {
                    break;
                }
                let from = shard.synced.load(Ordering::Acquire);
                let (mut snap, members) = {
                    let st = self.lock();
                    let snap = st.log.snapshot(from, usize::MAX);
                    let members = if moved { st.shards[k].clone() } else { dirty };
                    (snap, members)
                };
                // Every member gets at least this far in this pass.
                let start = snap.end();
                shard
                    .flush_all(
                        &members,
                        &mut snap,
                        |c| self.snapshot(c),
                        |s| self.lock().log.extend(s),
                    )
                    .await;
                if moved {
                    shard.synced.store(start, Ordering::Release);
                }
                // Senders wait on this for the log (when it moved) or for a reader's private
                // lines (when it did not).
                self.progress.notify_waiters();
            }
        }
    }

    /// Hands buffered transcript lines to its writer. Never waits for the file: if the writer
    /// does not keep up, the lines are dropped and counted (see [`Transcript`]).
    pub fn flush_transcript(&self) {
        if let Some(t) = self.lock().transcript.as_mut() {
            t.flush();
        }
    }

    /// Writes out the rest of the transcript, waiting for the file at most `grace`, and tells
    /// the operator of lines that did not reach it. Lines logged after this are not kept.
    pub async fn close_transcript(&self, grace: std::time::Duration) {
        let transcript = self.lock().transcript.take();
        if let Some(t) = transcript {
            if let Some(news) = t.close(grace).await {
                self.events.emit(RoomEvent::Warning(news.to_string()));
            }
        }
    }

    /// Tells everyone the server is shutting down; each member's lines end there, and its
    /// task writes them and closes. No one joins after this.
    pub fn shut_down(&self) {
        let mut st = self.lock();
        let mut cuts = Cuts::new();
        self.broadcast(&mut st, None, "* server shutting down\n", &mut cuts);
        st.closing = true;
        log(&mut st, "* server shutting down");
        let end = st.log.end();
        let members: Vec<_> = st.members.drain().collect();
        for (id, m) in members {
            m.conn.leave_at(end);
            st.draining.insert(id, m.conn);
        }
        for list in &mut st.shards {
            list.clear();
        }
        st.nicks.clear();
        st.looks.clear();
    }
}

impl State {
    /// Who has `nick`, or a name that looks like it.
    fn holder(&self, nick: &str) -> Option<ClientId> {
        let keys = NickKeys::of(nick);
        let mut looks = keys.looks.iter().filter_map(|l| self.looks.get(l));
        self.nicks.get(&keys.id).or_else(|| looks.next()).copied()
    }

    fn claim(&mut self, keys: NickKeys, id: ClientId) {
        self.nicks.insert(keys.id, id);
        for look in keys.looks {
            self.looks.insert(look, id);
        }
    }

    fn release(&mut self, nick: &str) {
        let keys = NickKeys::of(nick);
        self.nicks.remove(&keys.id);
        for look in &keys.looks {
            self.looks.remove(look);
        }
    }
}

/// Appends a timestamped line to the transcript, if there is one.
fn log(st: &mut State, line: &str) {
    if let Some(t) = st.transcript.as_mut() {
        t.line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;
    use crate::room::outbox::Mode;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::net::TcpListener;

    /// A transcript that cannot be written is reported once, the chat goes on, and at
    /// shutdown the operator is told how many lines never reached it.
    #[tokio::test]
    async fn a_transcript_that_cannot_be_written_is_reported_once() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return; // not Linux
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let events = {
            let seen = seen.clone();
            EventSink::new(move |e: &RoomEvent| seen.lock().unwrap().push(e.clone()))
        };
        let report = {
            let events = events.clone();
            move |news: crate::room::transcript::News| {
                events.emit(RoomEvent::Warning(news.to_string()))
            }
        };
        let transcript = Transcript::start(full, true, report).unwrap();
        let room = Room::new(Arc::new(Config::default()), events, Some(transcript));
        // More than the transcript's 64 KiB buffer, so lines are written before any flush.
        for _ in 0..100 {
            room.server_say(&"x".repeat(1000));
        }
        room.flush_transcript();
        room.server_say("after");
        room.flush_transcript();
        room.close_transcript(Duration::from_secs(10)).await;
        let warnings: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                RoomEvent::Warning(w) => Some(w.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("cannot write the log: no space left on device; "));
        assert_eq!(
            warnings[1],
            "the log still cannot be written (no space left on device); 101 lines did not \
             reach it"
        );
    }

    /// A room with its flushers running.
    fn room(config: Config) -> Arc<Room> {
        let r = Arc::new(Room::new(Arc::new(config), EventSink::discard(), None));
        for k in 0..r.shards.len() {
            let r = r.clone();
            tokio::spawn(async move { r.flush(k).await });
        }
        r
    }

    /// The client's end of a member's connection.
    struct Client {
        id: ClientId,
        conn: Arc<Conn>,
        rd: BufReader<TcpStream>,
    }

    impl Client {
        async fn line(&mut self) -> String {
            let mut l = String::new();
            let read = tokio::time::timeout(Duration::from_secs(10), self.rd.read_line(&mut l));
            assert!(read.await.expect("a line in time").unwrap() > 0, "closed");
            l
        }

        /// Reads lines until one contains `needle`, and returns what was read before it.
        async fn until(&mut self, needle: &str) -> Vec<String> {
            let mut seen = Vec::new();
            loop {
                let l = self.line().await;
                if l.contains(needle) {
                    return seen;
                }
                seen.push(l);
            }
        }
    }

    /// Joins a member over a real loopback connection, with the member task's writer running.
    async fn join(room: &Arc<Room>, id: ClientId) -> Client {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        server.writable().await.unwrap();
        let conn = match room.join(id, peer, server) {
            Ok(conn) => conn,
            Err(_) => panic!("not joined"),
        };
        let (r, c) = (room.clone(), conn.clone());
        tokio::spawn(async move { super::super::client::write_loop(&r, &c).await });
        let mut c = Client {
            id,
            conn,
            rd: BufReader::new(client),
        };
        assert!(c.line().await.starts_with("* welcome"));
        c
    }

    #[tokio::test]
    async fn chat_nick_who_msg_in_order() {
        let r = room(Config::default());
        let mut a = join(&r, 1).await;
        let mut b = join(&r, 2).await;
        assert_eq!(a.line().await, "* guest-2 joined\n");
        r.rename(a.id, "alice").unwrap();
        assert!(r.rename(b.id, "ALICE").unwrap_err().contains("taken"));
        r.say(a.id, "hi");
        r.who(b.id);
        r.private(b.id, "Alice", "psst").unwrap();
        r.say(b.id, "after");
        assert!(r.private(b.id, "carol", "x").is_err());
        assert_eq!(b.line().await, "* guest-1 is now known as alice\n");
        assert_eq!(b.line().await, "<alice> hi\n");
        assert_eq!(b.line().await, "* 2 online: alice, guest-2\n");
        assert_eq!(b.line().await, "-> *alice* psst\n");
        assert_eq!(a.line().await, "* guest-1 is now known as alice\n");
        assert_eq!(a.line().await, "*guest-2* psst\n");
        assert_eq!(a.line().await, "<guest-2> after\n");
    }

    /// A name is found however its accents are typed, also at the length limit: `é` typed as
    /// `e` and a combining accent is one character.
    #[tokio::test]
    async fn msg_finds_a_name_typed_with_combining_accents() {
        let r = room(Config::default());
        let mut a = join(&r, 1).await;
        let b = join(&r, 2).await;
        let composed = "\u{e9}".repeat(MAX_NICK_CHARS);
        r.rename(a.id, &composed).unwrap();
        let decomposed = "e\u{301}".repeat(MAX_NICK_CHARS);
        assert_eq!(r.private(b.id, &decomposed, "psst"), Ok(None), "delivered");
        assert_eq!(a.line().await, "* guest-2 joined\n");
        assert_eq!(
            a.line().await,
            format!("* guest-1 is now known as {composed}\n")
        );
        assert_eq!(a.line().await, "*guest-2* psst\n");
    }

    #[tokio::test]
    async fn each_member_reads_its_own_encoding() {
        let r = room(Config::default());
        let a = join(&r, 1).await;
        let mut b = join(&r, 2).await;
        let mut c = join(&r, 3).await;
        r.set_encoding(b.id, Encoding::GBK);
        r.say(a.id, "你好");
        r.say(c.id, "x");
        let mut line = Vec::new();
        b.until("guest-3 joined").await;
        b.rd.read_until(b'\n', &mut line).await.unwrap();
        assert_eq!(line, b"<guest-1> \xc4\xe3\xba\xc3\n");
        assert_eq!(c.line().await, "<guest-1> 你好\n");
    }

    #[tokio::test]
    async fn a_member_that_never_reads_is_cut_off_and_nobody_waits_for_it() {
        never_reader(Config {
            queue: 64,
            ..Config::default()
        })
        .await;
    }

    #[tokio::test]
    async fn the_byte_budget_cuts_off_a_non_reader_too() {
        never_reader(Config {
            queue_bytes: 1 << 20,
            ..Config::default()
        })
        .await;
    }

    /// One member sends 3,000 lines of 4 kB, one reads them all, one never reads.
    async fn never_reader(config: Config) {
        let (lines_cap, bytes_cap) = (config.queue, config.queue_bytes);
        let r = room(config);
        let a = join(&r, 1).await;
        let mut b = join(&r, 2).await;
        let slow = join(&r, 3).await;
        b.until("guest-3 joined").await;
        // Far more than the kernel's buffers hold, so the slow member's socket fills.
        let big = "x".repeat(4000);
        const LINES: usize = 3000;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut others = Vec::new();
            while got < LINES {
                let l = b.line().await;
                if l.starts_with("<guest-1> ") {
                    assert_eq!(l.len(), "<guest-1> ".len() + 4001, "whole lines");
                    got += 1;
                } else {
                    others.push(l);
                }
            }
            (b, others)
        });
        for _ in 0..LINES {
            r.say(a.id, &big);
            r.wait_for_flushers().await;
        }
        let (mut b, mut others) = reader.await.unwrap();
        assert!(
            slow.conn.kick.token.is_cancelled(),
            "the slow member is cut off"
        );
        assert_eq!(slow.conn.kick.reason(), "send queue full");
        r.say(a.id, "end");
        others.extend(b.until("<guest-1> end").await);
        assert_eq!(others, ["* guest-3 left (send queue full)\n"]);
        assert_eq!(r.len(), 2);
        // The log forgets what everyone has: it holds about a queue's worth, not 12 MB.
        let (len, bytes) = {
            let st = r.lock();
            (st.log.len(), st.log.bytes_kept())
        };
        assert!(len <= lines_cap + lines_cap / 8 + 1, "{len} lines kept");
        assert!(
            bytes <= bytes_cap + bytes_cap / 8 + 4100,
            "{bytes} bytes kept"
        );
    }

    /// A room whose queue cuts nobody off, with members 1 and 2.
    async fn roomy() -> (Arc<Room>, Client, Client) {
        let r = room(Config {
            queue: 1 << 20,
            queue_bytes: 1 << 30,
            ..Config::default()
        });
        let a = join(&r, 1).await;
        let p = join(&r, 2).await;
        (r, a, p)
    }

    /// The `i`th of the long lines that fill a socket quickly.
    fn long_line(i: usize) -> String {
        format!("{i:06} {}", "p".repeat(4000))
    }

    /// `a` says long lines until the flusher finds `p`'s socket full; returns how many.
    async fn fill(r: &Room, a: &Client, p: &Client) -> usize {
        let mut sent = 0;
        let from = p.conn.out().cursor();
        while p.conn.out().mode() != Mode::Blocked {
            assert!(sent < 100_000, "the socket never filled");
            r.say(a.id, &long_line(sent));
            sent += 1;
            // Until the flusher has written the line or found the socket full.
            let mut turns = 0;
            while p.conn.out().cursor() < from + sent as u64 && p.conn.out().mode() == Mode::Flushed
            {
                assert!(turns < 100_000, "the flusher never wrote line {sent}");
                turns += 1;
                tokio::task::yield_now().await;
            }
        }
        sent
    }

    #[tokio::test]
    async fn a_member_that_pauses_reading_gets_everything_when_it_reads_again() {
        // The flushers find its socket full; its own task takes over and must be woken when
        // the socket drains, then hand it back to the flushers.
        let (r, a, mut p) = roomy().await;
        let mut sent = fill(&r, &a, &p).await;
        for _ in 0..200 {
            r.say(a.id, &long_line(sent));
            sent += 1;
        }
        for i in 0..sent {
            let l = p.line().await;
            assert_eq!(l, format!("<guest-1> {}\n", long_line(i)), "line {i}");
        }
        // Back with the flushers: a new line arrives at once.
        r.say(a.id, "after");
        assert_eq!(p.line().await, "<guest-1> after\n");
        assert!(!p.conn.kick.token.is_cancelled());
        assert_eq!(p.conn.out().mode(), Mode::Flushed);
    }

    #[tokio::test]
    async fn a_sender_waits_for_the_flushers_rather_than_the_log_growing() {
        // No flusher yet: the log only grows.
        let r = Arc::new(Room::new(
            Arc::new(Config {
                queue: 64,
                ..Config::default()
            }),
            EventSink::discard(),
            None,
        ));
        for i in 0..40 {
            r.server_say(&format!("line {i}"));
        }
        let wait = tokio::time::timeout(Duration::from_millis(200), r.wait_for_flushers());
        assert!(
            wait.await.is_err(),
            "40 lines unwritten > half a queue: the sender waits"
        );
        let r2 = r.clone();
        tokio::spawn(async move { r2.flush(0).await });
        let wait = tokio::time::timeout(Duration::from_secs(10), r.wait_for_flushers());
        assert!(
            wait.await.is_ok(),
            "released once the flusher has caught up"
        );
    }

    /// A member behind on a busy room (its socket full) that is sent a few long private lines
    /// is not cut off for them: it gets them, in order with the room's lines, when it reads.
    #[tokio::test]
    async fn private_lines_to_a_member_behind_do_not_cut_it_off() {
        let (r, a, mut p) = roomy().await;
        let sent = fill(&r, &a, &p).await;
        // 80 kB of private lines, more than PRIVATE_MAX, while it is behind.
        let private = "m".repeat(4000);
        for _ in 0..20 {
            assert!(r.private(a.id, "guest-2", &private).is_ok());
        }
        assert!(!p.conn.kick.token.is_cancelled(), "cut off while reading");
        let mut publics = 0;
        let mut privates = 0;
        while publics < sent || privates < 20 {
            let l = p.line().await;
            if l.starts_with("*guest-1* ") {
                privates += 1;
            } else {
                assert_eq!(l, format!("<guest-1> {}\n", long_line(publics)));
                publics += 1;
            }
        }
        assert!(!p.conn.kick.token.is_cancelled());
    }

    #[tokio::test]
    async fn replies_to_a_member_that_never_reads_are_bounded_too() {
        let r = room(Config::default());
        let a = join(&r, 1).await;
        let big = format!("{}\n", "r".repeat(4000));
        // Far more than its socket holds plus PRIVATE_MAX: it is cut off, not buffered.
        for _ in 0..5000 {
            r.tell(a.id, &big);
            if a.conn.kick.token.is_cancelled() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(a.conn.kick.token.is_cancelled());
        assert_eq!(a.conn.kick.reason(), "send queue full");
        assert_eq!(r.len(), 0);
    }

    /// The history keeps its last N lines up to HISTORY_BYTES: 200 lines of 64 kB with
    /// `--history 10000` hold 512 KiB, not 12 MB.
    #[tokio::test]
    async fn the_history_is_bounded_in_bytes() {
        let r = Room::new(
            Arc::new(Config {
                history: 10_000,
                max_line: 1 << 20,
                ..Config::default()
            }),
            EventSink::discard(),
            None,
        );
        for i in 0..200 {
            r.server_say(&format!("{i:03} {}", "h".repeat(64_000)));
        }
        let st = r.lock();
        let bytes: usize = st.history.iter().map(|c| c.len()).sum();
        assert_eq!(bytes, st.history_bytes);
        assert!(bytes <= HISTORY_BYTES, "{bytes}");
        assert_eq!(st.history.len(), HISTORY_BYTES / 64_014);
        // The newest are kept.
        assert!(
            st.history
                .back()
                .is_some_and(|c| c.starts_with(b"<server> 199 "))
        );
    }

    #[tokio::test]
    async fn history_for_joiners() {
        let r = room(Config {
            history: 2,
            ..Config::default()
        });
        let a = join(&r, 1).await;
        for t in ["one", "two", "three"] {
            r.say(a.id, t);
        }
        // The greeting carries the history; read it raw.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        server.writable().await.unwrap();
        let _conn = r.join(2, peer, server).ok().unwrap();
        let want = "* welcome to the room, you are guest-2 (2 online; /help lists the commands)\n\
                    <guest-1> two\n<guest-1> three\n";
        let mut got = vec![0; want.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    /// The history is queued for joiners as one shared chunk: held once, and not counted in
    /// the room's total of unsent private bytes however many joiners have it pending.
    #[tokio::test]
    async fn joiners_share_one_copy_of_the_history() {
        // No flushers: everything queued stays queued.
        let r = Room::new(
            Arc::new(Config {
                history: 2,
                ..Config::default()
            }),
            EventSink::discard(),
            None,
        );
        let line = "h".repeat(4000);
        r.server_say(&line);
        r.server_say(&line);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut clients = Vec::new();
        let mut conns = Vec::new();
        for id in 1..=10 {
            clients.push(TcpStream::connect(l.local_addr().unwrap()).await.unwrap());
            let (server, peer) = l.accept().await.unwrap();
            conns.push(r.join(id, peer, server).ok().unwrap());
            // The history changes between joins too: lines are still held once each.
            if id == 5 {
                r.server_say(&line);
            }
        }
        let total = r.private_total.load(Ordering::Relaxed);
        assert!(total < 8000, "{total} bytes counted for 10 joiners");
        let newest = r.lock().history.back().unwrap().clone();
        let lasts: Vec<Chunk> = conns
            .iter()
            .map(|c| c.out().last_private().unwrap().clone())
            .collect();
        // Joiners 6-10 hold the newest line itself, not a copy of it.
        assert!(lasts[5..].iter().all(|c| Arc::ptr_eq(c, &newest)));
        assert!(
            lasts[..5]
                .iter()
                .all(|c| Arc::ptr_eq(c, &lasts[0]) && c.len() > 4000)
        );
    }

    #[tokio::test]
    async fn announcements_stop_in_large_rooms() {
        let r = room(Config {
            announce_max: 2,
            ..Config::default()
        });
        let mut a = join(&r, 1).await;
        let _b = join(&r, 2).await;
        let _c = join(&r, 3).await;
        assert_eq!(a.line().await, "* guest-2 joined\n");
        assert!(a.line().await.contains("more than 2 members"));
        r.leave(3, "quit");
        assert!(a.line().await.contains("announced again"));
    }

    #[tokio::test]
    async fn shut_down_tells_everyone_and_ends_their_lines() {
        let r = room(Config::default());
        let mut a = join(&r, 1).await;
        r.shut_down();
        // The member's task writes its last lines itself.
        super::super::client::drain(&r, &a.conn).await;
        assert_eq!(a.line().await, "* server shutting down\n");
        let end = r.lock().log.end();
        assert_eq!(a.conn.out().behind(end), 0);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        assert!(r.join(9, peer, server).is_err(), "no one joins after");
    }
}
