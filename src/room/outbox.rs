//! Delivery: how lines get from the room to thousands of sockets with few syscalls and bounded
//! memory.
//!
//! - Every line for everyone goes into one shared [`Log`] (a ring of [`Entry`]), once. Nothing is
//!   copied or queued per member: each member's [`Out`] holds only a cursor into the log, plus a
//!   short queue of lines meant for it alone (replies, private messages), each tagged with the
//!   log position it follows so the member sees everything in the order it happened.
//! - [`Shard`] flushers (one task per worker thread) go round their members and write each
//!   one's backlog with a single non-blocking `sendmsg` (a gather write). A line that arrives
//!   during a pass reaches the members the pass has not visited yet, and the others in the next
//!   pass; so a line waits at most about one pass, when idle it goes out at once, and under load
//!   many lines share one syscall.
//! - A member whose socket is full (it is not reading) is left to its own task, which waits for
//!   the socket to become writable and catches up from its cursor. The log keeps `--queue` lines
//!   for it; a member that falls further behind is cut off (`send queue full`). Its backlog costs
//!   no memory of its own, since the log is shared.

use crate::codec::Encoding;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Encoded bytes ready for the wire.
pub type Chunk = Arc<[u8]>;

/// Identifies a connection for its whole life (nicknames change).
pub type ClientId = u64;

/// The most pieces one gather write carries.
const MAX_IOV: usize = 64;

/// The most bytes one gather write carries.
const MAX_WRITE: usize = 256 << 10;

/// The most bytes of lines for one member alone (replies, private messages) kept unsent
/// before whoever sends it a private line waits until it has caught up
/// ([`super::state::Room::wait_for_private_reader`]): a burst of private lines slows its
/// senders down rather than piling up.
pub const PRIVATE_MAX: usize = 64 << 10;

/// The most bytes of lines for one member alone kept while its socket is full, before it is
/// cut off. Far more than [`PRIVATE_MAX`]: a member that reads but is behind on a busy room
/// (its socket full for seconds at a time, and its senders not waiting for it then) must not
/// be cut off by a few long private lines or a long `/who`, which it would read soon; one
/// that does not read at all holds at most this much of the room's memory.
pub const PRIVATE_BLOCKED_MAX: usize = 1 << 20;

/// The most bytes of such lines kept unsent for all members together before members that are
/// not reading are cut off.
pub const PRIVATE_TOTAL: usize = 64 << 20;

/// Encodings other than UTF-8 whose copies an entry keeps; further ones are encoded per write.
const CACHED_ENCODINGS: usize = 3;

/// A flusher lets other tasks run after writing to this many members.
const YIELD_EVERY: usize = 64;

/// One line for everyone (but possibly its sender).
pub struct Entry {
    /// The member who sent it and does not get it back.
    skip: Option<ClientId>,
    /// Bytes (UTF-8) of all entries before this one, ever: the log's byte position.
    start: u64,
    utf8: Chunk,
    /// Other encodings, made on first need and shared by every member using them.
    others: Mutex<Vec<(Encoding, Chunk)>>,
}

impl Entry {
    /// A line for everyone except `skip`.
    pub fn new(text: &str, skip: Option<ClientId>) -> Self {
        Entry {
            skip,
            start: 0,
            utf8: Arc::from(text.as_bytes()),
            others: Mutex::new(Vec::new()),
        }
    }

    /// The line in `enc`, which is not UTF-8 (UTF-8 bytes are borrowed where they are kept).
    fn encoded(&self, enc: Encoding) -> Chunk {
        let mut others = lock(&self.others);
        if let Some((_, c)) = others.iter().find(|(e, _)| *e == enc) {
            return c.clone();
        }
        let chunk = encode(std::str::from_utf8(&self.utf8).unwrap_or_default(), enc);
        // The log's byte budget counts UTF-8 only: a few cached copies keep memory in
        // proportion to it whatever encodings clients pick.
        if others.len() < CACHED_ENCODINGS {
            others.push((enc, chunk.clone()));
        }
        chunk
    }
}

/// `text` in `enc`.
///
/// Some labels for ISO-8859 charsets mean a Windows code page to encoding_rs (after WHATWG),
/// which puts characters on bytes 0x80-0x9F, where a terminal set to the ISO charset has C1
/// controls: windows-1252 (`latin1`, `iso-8859-1`, `ascii`) puts `€`, `“` and `›` there, and
/// `›` is 0x9B, CSI; windows-1254 (`latin5`, `iso-8859-9`) and windows-874 (`tis-620`,
/// `iso-8859-11`) do the same, and x-user-defined puts U+F780-U+F79F there. For those, such
/// characters are sent escaped (`\u{203a}`), like any other control sequence from a peer.
/// Code pages whose own letters live there (windows-1250's `š`, ibm866's `А`-`Я`, macintosh's
/// `é`) keep them. In any encoding, a character it cannot carry is sent escaped too, rather
/// than as `?`: in GBK `bob😀` and `bob?` would look the same.
pub fn encode(text: &str, enc: Encoding) -> Chunk {
    if enc.is_utf8() {
        return Arc::from(text.as_bytes());
    }
    let mut out = Vec::with_capacity(text.len());
    if text.is_ascii() {
        enc.encode_message(text, &mut out);
        return Arc::from(out);
    }
    let c1_risk = matches!(
        enc.name(),
        "windows-1252" | "windows-1254" | "windows-874" | "x-user-defined"
    );
    // Multi-byte encodings have no C1 risk: the whole line at once, unless something in it
    // has no bytes there.
    if !enc.is_single_byte() {
        if enc.encode_message(text, &mut out) == 0 {
            return Arc::from(out);
        }
        out.clear();
    }
    let mut one = Vec::with_capacity(4);
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
            continue;
        }
        one.clear();
        let unmappable = enc.encode_message(c.encode_utf8(&mut utf8), &mut one) > 0;
        if unmappable || c1_risk && one.iter().any(|b| (0x80..=0x9f).contains(b)) {
            out.extend_from_slice(format!("\\u{{{:x}}}", u32::from(c)).as_bytes());
        } else {
            out.extend_from_slice(&one);
        }
    }
    Arc::from(out)
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared log: entry `base` is the oldest still kept, `end()` is the next to be written.
#[derive(Default)]
pub struct Log {
    entries: VecDeque<Arc<Entry>>,
    base: u64,
    /// Bytes of all entries ever appended.
    bytes: u64,
}

impl Log {
    /// The position the next entry gets.
    pub fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry; returns its position.
    pub fn push(&mut self, mut e: Entry) -> u64 {
        e.start = self.bytes;
        self.bytes += e.utf8.len() as u64;
        self.entries.push_back(Arc::new(e));
        self.end() - 1
    }

    /// Bytes from position `pos` to the end (as UTF-8).
    pub fn bytes_from(&self, pos: u64) -> u64 {
        let i = pos.saturating_sub(self.base) as usize;
        self.entries
            .get(i)
            .map_or(0, |e| self.bytes.saturating_sub(e.start))
    }

    /// Bytes kept.
    pub fn bytes_kept(&self) -> u64 {
        self.bytes_from(self.base)
    }

    /// Forgets entries before `pos`.
    pub fn trim(&mut self, pos: u64) {
        while self.base < pos && self.entries.pop_front().is_some() {
            self.base += 1;
        }
    }

    /// Adds the entries appended since `snap` was taken (all of them from what is kept, if the
    /// log has moved past it).
    pub fn extend(&self, snap: &mut Snapshot) {
        let from = snap.end();
        if from < self.base {
            *snap = self.snapshot(self.base, usize::MAX);
            return;
        }
        let skip = (from - self.base) as usize;
        snap.entries.extend(self.entries.range(skip..).cloned());
        snap.log_end = self.end();
    }

    /// Up to `max` entries from `from` (clamped to what is kept) and the position of the first.
    pub fn snapshot(&self, from: u64, max: usize) -> Snapshot {
        let from = from.clamp(self.base, self.end());
        let skip = (from - self.base) as usize;
        Snapshot {
            base: from,
            entries: self.entries.range(skip..).take(max).cloned().collect(),
            log_end: self.end(),
        }
    }
}

/// A copy of part of the log, taken under the room's lock and written without it.
#[derive(Default)]
pub struct Snapshot {
    base: u64,
    entries: Vec<Arc<Entry>>,
    /// The log's end when the snapshot was taken.
    log_end: u64,
}

impl Snapshot {
    /// The position after the last entry.
    pub fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }
}

/// Who writes a member's socket now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The flushers, whenever there is something new.
    Flushed,
    /// The socket was full: the member's own task, once it is writable again.
    Blocked,
}

/// What is left to write to one member.
pub struct Out {
    /// The next log entry to write.
    cursor: u64,
    /// A piece (private or log) taken off the order and partly written, with the bytes done:
    /// it is finished from these very bytes, whatever changes meanwhile (the encoding, the log).
    partial: Option<(Chunk, usize)>,
    /// Lines for this member alone, each after the log entries before its tag, and whether
    /// its bytes count in the room's total (a chunk shared by many members, the history, is
    /// not: it is held once).
    private: VecDeque<(u64, Chunk, bool)>,
    private_bytes: usize,
    encoding: Encoding,
    mode: Mode,
    /// Once the member has left: the log position where its lines end.
    until: Option<u64>,
}

impl Out {
    /// The next log entry to write.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The last line queued for this member alone.
    #[cfg(test)]
    pub fn last_private(&self) -> Option<&Chunk> {
        self.private.back().map(|(_, chunk, _)| chunk)
    }

    /// Bytes of lines for this member alone not written yet.
    pub fn private_bytes(&self) -> usize {
        self.private_bytes
    }

    /// Who writes the member's socket now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Log entries not yet written.
    pub fn behind(&self, end: u64) -> u64 {
        end.saturating_sub(self.cursor)
    }

    /// The member's wire encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The member's socket is full.
    pub fn blocked(&self) -> bool {
        self.mode == Mode::Blocked
    }

    /// Where this member's lines end: its leaving point, or `end`.
    fn stop(&self, end: u64) -> u64 {
        self.until.map_or(end, |u| u.min(end))
    }
}

/// How a write attempt ended.
#[derive(Debug)]
pub enum Flushed {
    /// Everything up to the snapshot's end is written, and every line for this member alone
    /// that may go before it.
    Done,
    /// The socket is full.
    Blocked,
    /// The member is further behind than the snapshot: it needs one of its own.
    Behind,
    /// The connection failed.
    Failed(io::Error),
}

/// How the room tells a client task that it has been cut off, and why.
#[derive(Default)]
pub struct Kick {
    /// Cancelled when the room removes the client.
    pub token: CancellationToken,
    /// Why, set before the token is cancelled.
    pub reason: std::sync::OnceLock<String>,
}

impl Kick {
    /// Cuts the client off for `reason` (the first reason given wins).
    pub fn kick(&self, reason: &str) {
        let _ = self.reason.set(reason.to_string());
        self.token.cancel();
    }

    /// Why the client was cut off.
    pub fn reason(&self) -> String {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| "disconnected".into())
    }
}

/// How a write reaches the socket.
#[derive(Clone, Copy)]
enum Via {
    /// Through tokio, which clears the socket's readiness when it is full.
    Tokio,
    /// A plain non-blocking send.
    Direct,
}

/// One member's connection as the room sees it.
pub struct Conn {
    pub id: ClientId,
    pub stream: TcpStream,
    /// Unsent private bytes of every member of the room.
    private_total: Arc<std::sync::atomic::AtomicUsize>,
    /// The flusher that writes to it.
    pub shard: usize,
    out: Mutex<Out>,
    /// Told when the socket was found full, so the member's task takes over.
    pub blocked: Notify,
    pub kick: Kick,
}

impl Conn {
    /// A connection whose lines start at log position `cursor`; `private_total` is shared by
    /// the room's members.
    pub fn new(
        id: ClientId,
        stream: TcpStream,
        shard: usize,
        cursor: u64,
        private_total: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Self {
        Conn {
            id,
            stream,
            private_total,
            shard,
            out: Mutex::new(Out {
                cursor,
                partial: None,
                private: VecDeque::new(),
                private_bytes: 0,
                encoding: Encoding::UTF8,
                mode: Mode::Flushed,
                until: None,
            }),
            blocked: Notify::new(),
            kick: Kick::default(),
        }
    }

    /// The member's delivery state.
    pub fn out(&self) -> MutexGuard<'_, Out> {
        lock(&self.out)
    }

    /// Queues a line for this member alone, after log entries before `tag`. Returns false when
    /// the member must be cut off: its socket is full and it has more than
    /// [`PRIVATE_BLOCKED_MAX`] unsent, or the room more than [`PRIVATE_TOTAL`]. A single line
    /// (the greeting) always fits.
    pub fn push_private(&self, out: &mut Out, tag: u64, chunk: Chunk) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        out.private_bytes += chunk.len();
        let total = self.private_total.fetch_add(chunk.len(), Relaxed) + chunk.len();
        out.private.push_back((tag, chunk, true));
        if out.private.len() == 1 {
            return true;
        }
        // A member that is reading is not cut off for what others hold: its senders wait for
        // it instead (see PRIVATE_MAX).
        out.mode != Mode::Blocked
            || (out.private_bytes <= PRIVATE_BLOCKED_MAX && total <= PRIVATE_TOTAL)
    }

    /// Queues a chunk that many members share (the history for joiners): like
    /// [`Conn::push_private`], but its bytes, held once, do not count in the room's total.
    pub fn push_shared(&self, out: &mut Out, tag: u64, chunk: Chunk) -> bool {
        out.private_bytes += chunk.len();
        out.private.push_back((tag, chunk, false));
        out.private.len() == 1
            || out.mode != Mode::Blocked
            || out.private_bytes <= PRIVATE_BLOCKED_MAX
    }

    /// Sets the member's encoding for log entries written from now on.
    pub fn set_encoding(&self, enc: Encoding) {
        self.out().encoding = enc;
    }

    /// Marks the member as gone: its lines end at log position `end`.
    pub fn leave_at(&self, end: u64) {
        let mut out = self.out();
        out.until.get_or_insert(end);
    }

    /// Writes what the member is owed from a snapshot of its own (`fresh(cursor)`). `Ok(true)`:
    /// it has everything, and the flushers write to it again from now on; `Ok(false)`: there
    /// is more, try again at once; `Err`: the socket is full or failed.
    pub fn catch_up(&self, fresh: impl Fn(u64) -> Snapshot) -> Result<bool, Flushed> {
        let cursor = self.out().cursor;
        let snap = fresh(cursor);
        let mut out = self.out();
        if snap.base > out.cursor {
            // Entries this member never got were dropped from the log (it left long ago and
            // nothing kept them): go on from what is kept, after finishing a partial piece.
            out.cursor = snap.base;
        }
        match self.write(&mut out, &snap, &mut Vec::new()) {
            Flushed::Done => {
                let all = snap.end() >= out.stop(snap.log_end);
                if all {
                    out.mode = Mode::Flushed;
                }
                Ok(all)
            }
            // Someone else wrote in between; the next attempt takes a newer snapshot.
            Flushed::Behind => Ok(false),
            r => Err(r),
        }
    }

    /// Writes what `out` still owes the member, up to `snap`'s end, without blocking. If the
    /// socket is full, tokio's readiness for it is cleared, so `writable()` waits for room.
    pub fn write(&self, out: &mut Out, snap: &Snapshot, pieces: &mut Pieces) -> Flushed {
        self.write_via(out, snap, pieces, Via::Tokio)
    }

    /// [`Conn::write`] straight to the socket, for the flushers: tokio's readiness is neither
    /// read nor cleared (a cold cache line per member on every pass). A member found full is
    /// handed to its task, whose first `writable()` may then return at once; its next write,
    /// through tokio, meets the full socket again and clears the readiness before it waits.
    fn write_direct(&self, out: &mut Out, snap: &Snapshot, pieces: &mut Pieces) -> Flushed {
        self.write_via(out, snap, pieces, Via::Direct)
    }

    fn write_via(&self, out: &mut Out, snap: &Snapshot, pieces: &mut Pieces, via: Via) -> Flushed {
        if out.cursor < snap.base && out.cursor < out.stop(snap.end()) {
            return Flushed::Behind;
        }
        let stop = out.stop(snap.end());
        loop {
            // Gather the next pieces in order: a partly written piece first, then private lines
            // before the log entry at their tag (a private line waits for the entries before
            // its tag even if this snapshot does not have them yet); an entry this member sent
            // itself is an empty piece. UTF-8 entries are borrowed from the log, not cloned:
            // with several flushers, every clone of a shared `Arc` would move its count
            // between the cores once per member.
            pieces.clear();
            let mut owned: Vec<Chunk> = Vec::new();
            let (mut c, mut private, mut bytes) = (out.cursor, 0, 0);
            if let Some((chunk, done)) = &out.partial {
                bytes += chunk.len() - done;
                pieces.push(Piece::Partial(chunk.len() - done));
            }
            while pieces.len() < MAX_IOV && bytes < MAX_WRITE {
                let piece = match out.private.get(private) {
                    Some((tag, chunk, _)) if *tag <= c => {
                        private += 1;
                        Piece::Private(private - 1, chunk.len())
                    }
                    _ if c < stop => {
                        let at = (c - snap.base) as usize;
                        let entry = &snap.entries[at];
                        c += 1;
                        if entry.skip == Some(self.id) {
                            Piece::Mine
                        } else if out.encoding.is_utf8() {
                            Piece::Entry(at, None, entry.utf8.len())
                        } else {
                            let chunk = entry.encoded(out.encoding);
                            let len = chunk.len();
                            owned.push(chunk);
                            Piece::Entry(at, Some(owned.len() - 1), len)
                        }
                    }
                    _ => break,
                };
                bytes += piece.len();
                pieces.push(piece);
            }
            if pieces.is_empty() {
                return Flushed::Done;
            }
            let written = if bytes == 0 {
                0
            } else {
                let slice = |piece: &Piece| -> &[u8] {
                    match *piece {
                        Piece::Partial(_) => out.partial.as_ref().map_or(&[], |(c, d)| &c[*d..]),
                        Piece::Private(i, _) => out.private.get(i).map_or(&[], |(_, c, _)| &c[..]),
                        Piece::Entry(at, None, _) => &snap.entries[at].utf8,
                        Piece::Entry(_, Some(k), _) => &owned[k],
                        Piece::Mine => &[],
                    }
                };
                // Straight to the socket (writev would go through the VFS layer): send for
                // one piece, the common case, sendmsg to gather more.
                let send = || {
                    let sock = socket2::SockRef::from(&self.stream);
                    match pieces.as_slice() {
                        [one] => sock.send(slice(one)),
                        many => {
                            let mut iov = [IoSlice::new(&[]); MAX_IOV];
                            let mut n = 0;
                            for piece in many.iter().filter(|p| p.len() > 0) {
                                iov[n] = IoSlice::new(slice(piece));
                                n += 1;
                            }
                            sock.send_vectored(&iov[..n])
                        }
                    }
                };
                let sent = match via {
                    Via::Tokio => self.stream.try_io(Interest::WRITABLE, send),
                    Via::Direct => send(),
                };
                match sent {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Blocked,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Flushed::Failed(e),
                }
            };
            self.advance(out, pieces, snap, &owned, written);
            if written < bytes {
                // A short write: the socket is full.
                return Flushed::Blocked;
            }
        }
    }

    /// Consumes `n` written bytes of `pieces` (gathered in order from `out`, `snap` and
    /// `owned`) from `out`; a piece written in part becomes `out.partial`.
    fn advance(
        &self,
        out: &mut Out,
        pieces: &[Piece],
        snap: &Snapshot,
        owned: &[Chunk],
        mut n: usize,
    ) {
        for piece in pieces {
            let len = piece.len();
            if n == 0 && len > 0 {
                return;
            }
            let chunk = match *piece {
                Piece::Partial(_) => match out.partial.take() {
                    Some((chunk, done)) if n < len => {
                        out.partial = Some((chunk, done + n));
                        return;
                    }
                    _ => None,
                },
                Piece::Private(..) => out.private.pop_front().map(|(_, chunk, counted)| {
                    out.private_bytes -= chunk.len();
                    if counted {
                        self.private_total
                            .fetch_sub(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                    chunk
                }),
                Piece::Entry(at, k, _) => {
                    out.cursor += 1;
                    // Kept only if it is finished later.
                    (n < len).then(|| match k {
                        Some(k) => owned[k].clone(),
                        None => snap.entries[at].utf8.clone(),
                    })
                }
                Piece::Mine => {
                    out.cursor += 1;
                    None
                }
            };
            if n < len {
                out.partial = chunk.map(|chunk| (chunk, n));
                return;
            }
            n -= len;
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let unsent: usize = lock(&self.out)
            .private
            .iter()
            .filter(|(_, _, counted)| *counted)
            .map(|(_, chunk, _)| chunk.len())
            .sum();
        self.private_total
            .fetch_sub(unsent, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a piece gathered for one write comes from, with its length in bytes.
#[derive(Clone, Copy, Debug)]
pub enum Piece {
    /// The rest of `Out::partial`.
    Partial(usize),
    /// `Out::private[i]`.
    Private(usize, usize),
    /// `Snapshot::entries[i]`: its UTF-8 bytes (`None`), or chunk `k` encoded for this write.
    Entry(usize, Option<usize>, usize),
    /// An entry this member sent itself: nothing to write.
    Mine,
}

impl Piece {
    fn len(&self) -> usize {
        match *self {
            Piece::Partial(len) | Piece::Private(_, len) | Piece::Entry(_, _, len) => len,
            Piece::Mine => 0,
        }
    }
}

/// The pieces of one write, kept between writes for their allocation.
pub type Pieces = Vec<Piece>;

/// One flusher's share of the members and what it has to do.
#[derive(Default)]
pub struct Shard {
    /// Members with lines of their own to write (the log has not moved for them).
    pub dirty: Mutex<Vec<Arc<Conn>>>,
    /// Set when the log grew: every member of the shard is owed something.
    pub log_moved: std::sync::atomic::AtomicBool,
    /// Wakes the flusher.
    pub wake: Notify,
    /// Every member of this shard that is not blocked has been written up to here.
    pub synced: std::sync::atomic::AtomicU64,
}

impl Shard {
    /// Tells the flusher that `conn` has lines of its own.
    pub fn mark(&self, conn: &Arc<Conn>) {
        lock(&self.dirty).push(conn.clone());
        self.wake.notify_one();
    }

    /// Tells the flusher that the log grew.
    pub fn log_grew(&self) {
        self.log_moved
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    /// Takes the work: whether the log moved, and the members marked since.
    pub fn take(&self) -> (bool, Vec<Arc<Conn>>) {
        let moved = self
            .log_moved
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        (moved, std::mem::take(&mut *lock(&self.dirty)))
    }

    /// Writes to every member in `members` from `snap` (or a snapshot of its own from `fresh`,
    /// if it is further behind); members found full are handed to their own tasks. Every few
    /// members `refresh` brings the snapshot up to date, so a line that arrives during a long
    /// pass reaches the members not yet visited in this pass rather than waiting for the next.
    pub async fn flush_all(
        &self,
        members: &[Arc<Conn>],
        snap: &mut Snapshot,
        fresh: impl Fn(u64) -> Snapshot,
        refresh: impl Fn(&mut Snapshot),
    ) {
        let mut pieces = Pieces::with_capacity(MAX_IOV);
        for (i, conn) in members.iter().enumerate() {
            if i > 0 && i % YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
                refresh(snap);
            }
            let r = {
                let mut out = conn.out();
                if out.mode == Mode::Blocked {
                    continue;
                }
                conn.write_direct(&mut out, snap, &mut pieces)
            };
            let r = match r {
                Flushed::Behind => {
                    // Rare (the member was blocked until just now): it needs entries from
                    // before this snapshot, taken without holding its lock.
                    loop {
                        match conn.catch_up(&fresh) {
                            Ok(true) => break Flushed::Done,
                            // A long backlog: let the other tasks run between writes.
                            Ok(false) => tokio::task::yield_now().await,
                            Err(r) => break r,
                        }
                    }
                }
                r => r,
            };
            if matches!(r, Flushed::Blocked | Flushed::Failed(_)) {
                // The member's task retries when the socket is writable and meets the error
                // itself if there is one.
                conn.out().mode = Mode::Blocked;
                conn.blocked.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Member `id`'s connection on the server's side, writable, and the client's end of it.
    async fn member(id: ClientId) -> (Conn, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (client, _) = l.accept().await.unwrap();
        server.writable().await.unwrap();
        (Conn::new(id, server, 0, 0, Arc::default()), client)
    }

    async fn read_exact(s: &mut TcpStream, n: usize) -> String {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).await.unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[tokio::test]
    async fn private_lines_interleave_with_the_log_in_order() {
        let (conn, mut client) = member(7).await;
        let mut log = Log::default();
        {
            let mut out = conn.out();
            assert!(conn.push_private(&mut out, log.end(), Arc::from(&b"p0\n"[..])));
            log.push(Entry::new("a\n", None));
            assert!(conn.push_private(&mut out, log.end(), Arc::from(&b"p1\n"[..])));
            log.push(Entry::new("mine\n", Some(7)));
            log.push(Entry::new("b\n", None));
        }
        {
            let mut out = conn.out();
            let r = conn.write(&mut out, &log.snapshot(0, usize::MAX), &mut Vec::new());
            assert!(matches!(r, Flushed::Done), "{r:?}");
            assert_eq!(out.cursor, 3);
            assert!(out.private.is_empty() && out.private_bytes == 0);
        }
        // The sender's own line ("mine") is not sent back to it.
        assert_eq!(read_exact(&mut client, 10).await, "p0\na\np1\nb\n");
    }

    #[tokio::test]
    async fn a_private_line_never_overtakes_an_entry_missing_from_the_snapshot() {
        let (conn, mut client) = member(1).await;
        let mut log = Log::default();
        log.push(Entry::new("a\n", None));
        let old = log.snapshot(0, usize::MAX);
        log.push(Entry::new("b\n", None));
        {
            let mut out = conn.out();
            assert!(conn.push_private(&mut out, log.end(), Arc::from(&b"p\n"[..])));
            let r = conn.write(&mut out, &old, &mut Vec::new());
            assert!(matches!(r, Flushed::Done));
            assert_eq!(out.private.len(), 1, "p waits for b");
            let new = log.snapshot(out.cursor, usize::MAX);
            let r = conn.write(&mut out, &new, &mut Vec::new());
            assert!(matches!(r, Flushed::Done));
        }
        assert_eq!(read_exact(&mut client, 6).await, "a\nb\np\n");
    }

    /// A piece written in part is finished from the same bytes even if the member's encoding
    /// changes and more lines arrive meanwhile; nothing is spliced or repeated.
    #[tokio::test]
    async fn a_partly_written_line_is_finished_whatever_changes() {
        let (conn, mut client) = member(1).await;
        let mut log = Log::default();
        let big = format!("{}\n", "你".repeat(4 << 20));
        log.push(Entry::new(&big, None));
        {
            let mut out = conn.out();
            let r = conn.write(&mut out, &log.snapshot(0, usize::MAX), &mut Vec::new());
            assert!(matches!(r, Flushed::Blocked));
            assert!(out.partial.is_some(), "the first line is partly written");
        }
        conn.set_encoding(Encoding::GBK);
        log.push(Entry::new("好\n", None));
        {
            let mut out = conn.out();
            assert!(conn.push_private(&mut out, log.end(), Arc::from(&b"p\n"[..])));
        }
        let want = big.len() + 3 + 2;
        let reader = tokio::spawn(async move {
            let mut all = vec![0; want];
            client.read_exact(&mut all).await.unwrap();
            all
        });
        loop {
            conn.stream.writable().await.unwrap();
            let snap = log.snapshot(0, usize::MAX);
            if matches!(
                conn.write(&mut conn.out(), &snap, &mut Vec::new()),
                Flushed::Done
            ) {
                break;
            }
        }
        let all = reader.await.unwrap();
        assert_eq!(
            &all[..big.len()],
            big.as_bytes(),
            "the first line whole, in UTF-8"
        );
        assert_eq!(
            &all[big.len()..],
            b"\xba\xc3\np\n",
            "then GBK, then the reply"
        );
        assert_eq!(
            conn.private_total
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    #[tokio::test]
    async fn a_full_socket_blocks_and_resumes_mid_piece() {
        let (conn, mut client) = member(1).await;
        let mut log = Log::default();
        let line = format!("{}\n", "x".repeat(999));
        for _ in 0..20_000 {
            log.push(Entry::new(&line, None));
        }
        let snap = log.snapshot(0, usize::MAX);
        {
            let mut out = conn.out();
            assert!(matches!(
                conn.write(&mut out, &snap, &mut Vec::new()),
                Flushed::Blocked
            ));
            assert!(out.cursor < 20_000);
        }
        // Read everything while the writer catches up; every line arrives whole.
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = vec![0; 1 << 16];
            while all.len() < 20_000 * 1000 {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0);
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        loop {
            conn.stream.writable().await.unwrap();
            if matches!(
                conn.write(&mut conn.out(), &snap, &mut Vec::new()),
                Flushed::Done
            ) {
                break;
            }
        }
        let all = reader.await.unwrap();
        assert!(all.chunks(1000).all(|l| l == line.as_bytes()));
    }

    /// A latin1 client never gets bytes 0x80-0x9F (C1 controls on an ISO-8859-1 terminal):
    /// what windows-1252 would put there comes escaped; Latin-1 letters stay themselves.
    #[test]
    fn latin1_clients_get_no_c1_bytes() {
        let latin1 = Encoding::from_label("iso-8859-1").unwrap();
        let chunk = encode("a\u{203a}2J \u{20ac}5 caf\u{e9} \u{4f60}", latin1);
        assert_eq!(&chunk[..], b"a\\u{203a}2J \\u{20ac}5 caf\xe9 \\u{4f60}");
        assert!(!chunk.iter().any(|b| (0x80..=0x9f).contains(b)));
        let binary = Encoding::from_label("x-user-defined").unwrap();
        assert_eq!(&encode("\u{f79b}2J", binary)[..], b"\\u{f79b}2J");
        // The other single-byte encodings that use 0x80-0x9F: Turkish and Thai.
        for label in ["latin5", "iso-8859-9", "iso-8859-11", "tis-620"] {
            let enc = Encoding::from_label(label).unwrap();
            let chunk = encode("\u{203a}31m \u{2026} \u{20ac} x\u{e9}", enc);
            assert!(!chunk.iter().any(|b| (0x80..=0x9f).contains(b)), "{label}");
            assert!(chunk.starts_with(b"\\u{203a}31m "), "{label}");
        }
        let latin5 = Encoding::from_label("latin5").unwrap();
        assert_eq!(&encode("\u{11f}", latin5)[..], b"\xf0", "ğ stays a letter");
        // Code pages with letters on 0x80-0x9F keep them: Czech š in windows-1250, Cyrillic А
        // and Я in ibm866, é in macintosh.
        for (label, text, wire) in [
            ("windows-1250", "\u{161}", &b"\x9a"[..]),
            ("ibm866", "\u{410}\u{42f}", b"\x80\x9f"),
            ("macintosh", "\u{e9}", b"\x8e"),
        ] {
            let enc = Encoding::from_label(label).unwrap();
            assert_eq!(&encode(text, enc)[..], wire, "{label}");
        }
        // Other encodings are untouched by this.
        assert_eq!(&encode("\u{4f60}", Encoding::GBK)[..], b"\xc4\xe3");
        // What a multi-byte encoding cannot carry is escaped as in single-byte ones, not '?':
        // `bob😀` must not read as `bob?`.
        assert_eq!(
            &encode("<bob\u{1f600}> \u{4f60}?", Encoding::GBK)[..],
            b"<bob\\u{1f600}> \xc4\xe3?"
        );
        for label in ["shift_jis", "big5", "euc-kr", "euc-jp", "iso-2022-jp"] {
            let enc = Encoding::from_label(label).unwrap();
            let chunk = encode("a\u{1f600}b", enc);
            assert_eq!(&chunk[..], b"a\\u{1f600}b", "{label}");
        }
    }

    #[test]
    fn log_snapshots_clamp_and_trim() {
        let mut log = Log::default();
        for i in 0..10 {
            assert_eq!(log.push(Entry::new(&format!("{i}\n"), None)), i);
        }
        log.trim(4);
        assert_eq!((log.base, log.end(), log.len()), (4, 10, 6));
        assert_eq!(
            (log.bytes_kept(), log.bytes_from(8), log.bytes_from(10)),
            (12, 4, 0)
        );
        let s = log.snapshot(2, 3);
        assert_eq!((s.base, s.end()), (4, 7));
        assert_eq!(log.snapshot(20, 5).end(), 10);
    }
}
