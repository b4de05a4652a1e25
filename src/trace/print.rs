//! Printers: the text ladder (one row per segment, a summary per connection), the `--layers`
//! breakdown of every packet header by header, and `--json` (one object per line per packet
//! and per event, with serde_json).

use super::decode::{IpHeader, LinkHeader, Packet, Transport};
use super::ladder::{Close, Record, Segment, Side, Start, Summary, TcpOpt, Totals};
use crate::codec::{Encoding, HexDump};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

/// How records are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The ladder, for people.
    Text,
    /// One JSON object per line, for scripts.
    Json,
}

/// Payload shown in a ladder row, at most this many bytes.
const PREVIEW: usize = 24;

/// Writes records to an output.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    layers: bool,
    /// Follow each row with the state changes it caused and why.
    explain: bool,
    /// How payload text is shown (the conversation's wire encoding).
    encoding: Encoding,
}

/// What the end of a capture reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndStats {
    /// Frames read from the source.
    pub frames: u64,
    /// Frames skipped as damaged.
    pub damaged: u64,
    /// Frames skipped as other protocols.
    pub other: u64,
    /// Packets the kernel dropped (live capture), if known.
    pub kernel_drops: Option<u64>,
    /// Frames shown but left out of the `--write` file for having another link type than it.
    pub not_written: u64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn side_role(s: Side) -> &'static str {
    match s {
        Side::A => "client",
        Side::B => "server",
    }
}

/// The start of a payload, decoded from `enc`; `wire_len` is its length on the wire, when the
/// capture kept less.
fn preview(payload: &[u8], wire_len: usize, enc: Encoding) -> String {
    let cut = if wire_len > payload.len() {
        format!("  [{} of {wire_len} bytes captured]", payload.len())
    } else {
        String::new()
    };
    if payload.is_empty() {
        return cut;
    }
    let text = escaped(&payload[..payload.len().min(PREVIEW)], enc);
    let more = if payload.len() > PREVIEW || !cut.is_empty() {
        "..."
    } else {
        ""
    };
    format!("  \"{text}\"{more}{cut}")
}

/// Payload bytes as text in `enc` with control characters escaped, so a payload cannot drive
/// the terminal. Bytes that are not text in `enc` show as U+FFFD.
fn escaped(payload: &[u8], enc: Encoding) -> String {
    let mut text = String::with_capacity(payload.len());
    enc.decode_message(payload, &mut text);
    text.chars().flat_map(char::escape_debug).collect()
}

fn hex(data: &[u8]) -> String {
    data.iter()
        .fold(String::with_capacity(data.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The arrow between A and B with the flags written on it.
fn arrow(from: Side, label: &str) -> String {
    const WIDTH: usize = 17;
    let fill = WIDTH.saturating_sub(label.len() + 2);
    match from {
        Side::A => format!("A --{label}{}> B", "-".repeat(fill)),
        Side::B => format!("A <{}{label}-- B", "-".repeat(fill)),
    }
}

/// One ladder row, its payload shown as text in `enc`.
pub fn row(seg: &Segment, payload: &[u8], enc: Encoding) -> String {
    let mut line = format!(
        "#{:<3} +{:.6}  {}  seq={:<6}",
        seg.conn,
        secs(seg.time),
        arrow(seg.from, &seg.flags.to_string()),
        seg.seq,
    );
    match seg.ack {
        Some(a) => {
            let _ = write!(line, " ack={a:<6}");
        }
        None => line.push_str("           "),
    }
    let _ = write!(
        line,
        " len={:<5} win={:<7}  A {:<11}  B {:<11}",
        seg.len, seg.win, seg.states[0], seg.states[1]
    );
    for l in &seg.labels {
        let _ = write!(line, "  [{l}]");
    }
    if !seg.options.is_empty() {
        let opts: Vec<String> = seg.options.iter().map(|o| o.to_string()).collect();
        let _ = write!(line, "  <{}>", opts.join(" "));
    }
    line.push_str(&preview(payload, seg.len, enc));
    line.trim_end().to_string()
}

/// The lines of a connection's summary.
pub fn summary_lines(s: &Summary) -> Vec<String> {
    let mut lines = vec![format!("#{:<3} summary: A {} -> B {}", s.conn, s.a, s.b)];
    let hs = match (s.handshake, s.start) {
        (Some(h), Start::SynAck) => format!(
            "handshake: the SYN was not captured; from the SYN-ACK, {} segments in {} µs{}",
            h.segments,
            h.took.as_micros(),
            if h.segments > 2 {
                " (more than SYN-ACK, ACK: a SYN-ACK was sent again)"
            } else {
                ""
            }
        ),
        (Some(h), _) => format!(
            "handshake: {} segments in {} µs{}",
            h.segments,
            h.took.as_micros(),
            if h.segments == 3 {
                " (SYN, SYN-ACK, ACK)"
            } else {
                " (more than the textbook three: a SYN or SYN-ACK was sent again)"
            }
        ),
        (None, Start::Midway) => {
            "handshake: not seen (the capture joined the connection midway)".into()
        }
        (None, _) => "handshake: not completed".to_string(),
    };
    lines.push(hs);
    lines.push(format!(
        "data: A->B {} bytes, B->A {} bytes; {} segment{} in all",
        s.bytes[0],
        s.bytes[1],
        s.segments,
        if s.segments == 1 { "" } else { "s" }
    ));
    let flags: Vec<String> = s
        .close_flags
        .iter()
        .map(|(side, f)| format!("{side}:{f}"))
        .collect();
    let mut closer = s
        .first_closer
        .map(|c| format!("{c} ({}) closed first; ", side_role(c)))
        .unwrap_or_default();
    let fin_close = matches!(s.close, Close::FourWay | Close::ThreeWay | Close::Open);
    if let (Some(c), (bytes, segs @ 1..), true) = (s.first_closer, s.after_fin, fin_close) {
        let _ = write!(
            closer,
            "{} sent {bytes} more bytes in {segs} segment{} after that FIN (a half-close); ",
            c.other(),
            if segs == 1 { "" } else { "s" }
        );
    }
    let close = match s.close {
        Close::FourWay => format!(
            "close: {closer}{} segments ({}): the textbook four-way close",
            s.close_segments,
            flags.join(", ")
        ),
        Close::ThreeWay => format!(
            "close: {closer}{} segments ({}): FIN piggy-backed on the ACK",
            s.close_segments,
            flags.join(", ")
        ),
        Close::Simultaneous => format!(
            "close: simultaneous; {} segments ({})",
            s.close_segments,
            flags.join(", ")
        ),
        Close::Reset(by) => format!("close: {closer}reset by {by} ({})", side_role(by)),
        Close::Refused => "close: refused (RST answered the SYN)".into(),
        Close::Open => format!(
            "close: {closer}not finished when the capture ended (A {}, B {})",
            s.states[0], s.states[1]
        ),
    };
    lines.push(close);
    if let Some(note) = s.note() {
        lines.push(format!("why: {note}"));
    }
    let mut analysis = Vec::new();
    for (n, what) in [
        (s.retransmissions, "retransmission"),
        (s.dup_acks, "duplicate ACK"),
        (s.out_of_order, "out-of-order segment"),
        (s.zero_windows, "zero window"),
    ] {
        if n > 0 {
            analysis.push(format!("{n} {what}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if !analysis.is_empty() {
        lines.push(format!("analysis: {}", analysis.join(", ")));
    }
    lines.push(format!(
        "final states: A {}, B {}",
        s.states[0], s.states[1]
    ));
    for l in lines.iter_mut().skip(1) {
        l.insert_str(0, "       ");
    }
    lines
}

fn close_name(c: Close) -> &'static str {
    match c {
        Close::FourWay => "four-way",
        Close::ThreeWay => "three-way",
        Close::Simultaneous => "simultaneous",
        Close::Reset(_) => "reset",
        Close::Refused => "refused",
        Close::Open => "open",
    }
}

/// The JSON object of a record.
pub fn record_json(rec: &Record, pkt: Option<&Packet>, ts: Duration) -> Value {
    match rec {
        Record::Opened { conn, a, b, start } => json!({
            "event": "open", "conn": conn, "a": a.to_string(), "b": b.to_string(),
            "saw_syn": *start == Start::Syn, "start": start.name(),
        }),
        Record::Segment(s) => json!({
            "event": "segment",
            "conn": s.conn,
            "time": secs(s.time),
            "at": secs(s.at),
            "ts": secs(ts),
            "from": s.from.to_string(),
            "src": s.src.to_string(),
            "dst": s.dst.to_string(),
            "flags": s.flags.names(),
            "seq": s.seq,
            "ack": s.ack,
            "raw_seq": s.raw_seq,
            "raw_ack": s.raw_ack,
            "len": s.len,
            "captured_len": pkt.map_or(s.len, |p| p.payload.len()),
            "win": s.win,
            "raw_win": s.raw_win,
            "options": s.options.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
            "labels": s.labels.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
            "state": { "A": s.states[0].name(), "B": s.states[1].name() },
            "payload_hex": pkt.map(|p| hex(&p.payload)).unwrap_or_default(),
        }),
        Record::State(t) => json!({
            "event": "state", "conn": t.conn, "side": t.side.to_string(),
            "from": t.from.name(), "to": t.to.name(), "why": t.why,
        }),
        Record::Summary(s) => json!({
            "event": "summary",
            "conn": s.conn,
            "a": s.a.to_string(),
            "b": s.b.to_string(),
            "handshake": s.handshake.map(|h| json!({"segments": h.segments, "us": h.took.as_micros() as u64})),
            "bytes": { "a_to_b": s.bytes[0], "b_to_a": s.bytes[1] },
            "segments": s.segments,
            "first_closer": s.first_closer.map(|c| c.to_string()),
            "close": close_name(s.close),
            "reset_by": match s.close { Close::Reset(by) => Some(by.to_string()), _ => None },
            "close_segments": s.close_segments,
            "after_fin_bytes": s.after_fin.0,
            "note": s.note(),
            "retransmissions": s.retransmissions,
            "dup_acks": s.dup_acks,
            "out_of_order": s.out_of_order,
            "zero_windows": s.zero_windows,
            "final_state": { "A": s.states[0].name(), "B": s.states[1].name() },
        }),
        Record::Datagram { at, src, dst, len } => json!({
            "event": "udp", "at": secs(*at), "ts": secs(ts), "src": src.to_string(),
            "dst": dst.to_string(), "len": len,
            "payload_hex": pkt.map(|p| hex(&p.payload)).unwrap_or_default(),
        }),
    }
}

/// Writes `s` as a JSON string (escaped by serde_json).
fn jstr<W: Write>(out: &mut W, s: &str) -> io::Result<()> {
    serde_json::to_writer(&mut *out, s).map_err(io::Error::from)
}

/// Writes a float as serde_json does (`0.0`, `1e-6`), so both paths print the same text.
fn jf64<W: Write>(out: &mut W, v: f64) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &v).map_err(io::Error::from)
}

fn jlist<W: Write, T: std::fmt::Display>(out: &mut W, items: &[T]) -> io::Result<()> {
    out.write_all(b"[")?;
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        jstr(out, &it.to_string())?;
    }
    out.write_all(b"]")
}

/// The same objects as [`record_json`] for segments and state changes, written directly.
fn fast_json<W: Write>(out: &mut W, rec: &Record, pkt: &Packet, ts: Duration) -> io::Result<()> {
    match rec {
        Record::Segment(s) => {
            write!(out, "{{\"event\":\"segment\",\"conn\":{},\"time\":", s.conn)?;
            jf64(out, secs(s.time))?;
            out.write_all(b",\"at\":")?;
            jf64(out, secs(s.at))?;
            out.write_all(b",\"ts\":")?;
            jf64(out, secs(ts))?;
            write!(out, ",\"from\":\"{}\",\"src\":", s.from)?;
            jstr(out, &s.src.to_string())?;
            out.write_all(b",\"dst\":")?;
            jstr(out, &s.dst.to_string())?;
            out.write_all(b",\"flags\":")?;
            jlist(out, &s.flags.names())?;
            write!(out, ",\"seq\":{},\"ack\":", s.seq)?;
            match s.ack {
                Some(a) => write!(out, "{a}")?,
                None => out.write_all(b"null")?,
            }
            write!(
                out,
                ",\"raw_seq\":{},\"raw_ack\":{},\"len\":{},\"captured_len\":{},\"win\":{},\
                 \"raw_win\":{},\"options\":",
                s.raw_seq,
                s.raw_ack,
                s.len,
                pkt.payload.len(),
                s.win,
                s.raw_win
            )?;
            jlist(out, &s.options)?;
            out.write_all(b",\"labels\":")?;
            jlist(out, &s.labels)?;
            writeln!(
                out,
                ",\"state\":{{\"A\":\"{}\",\"B\":\"{}\"}},\"payload_hex\":\"{}\"}}",
                s.states[0].name(),
                s.states[1].name(),
                hex(&pkt.payload)
            )
        }
        Record::State(t) => {
            write!(
                out,
                "{{\"event\":\"state\",\"conn\":{},\"side\":\"{}\",\"from\":\"{}\",\"to\":\"{}\",\"why\":",
                t.conn,
                t.side,
                t.from.name(),
                t.to.name()
            )?;
            jstr(out, t.why)?;
            out.write_all(b"}\n")
        }
        other => {
            serde_json::to_writer(&mut *out, &record_json(other, Some(pkt), ts))?;
            out.write_all(b"\n")
        }
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The `--layers` breakdown: one (label, fields) pair per layer.
pub fn layers(pkt: &Packet, seg: Option<&Segment>, enc: Encoding) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match &pkt.link {
        LinkHeader::Ethernet(e) => out.push((
            "link",
            format!(
                "Ethernet II, {} -> {}, type {:#06x}, 14 bytes",
                mac(e.source),
                mac(e.destination),
                e.ether_type.0
            ),
        )),
        LinkHeader::Cooked(c) => out.push((
            "link",
            format!(
                "Linux cooked capture v{}, {} ({}), ARPHRD {}, protocol {:#06x}, {} bytes",
                c.version,
                c.direction(),
                c.packet_type,
                c.arphrd,
                c.protocol,
                if c.version == 1 { 16 } else { 20 }
            ),
        )),
        LinkHeader::Null(f) => out.push(("link", format!("BSD loopback, family {f}, 4 bytes"))),
        LinkHeader::Raw => out.push(("link", "none (the capture starts at IP)".into())),
    }
    match &pkt.ip {
        IpHeader::V4(h) => out.push((
            "ipv4",
            format!(
                "{} -> {}, header {} bytes, total length {}, id {:#06x}, flags{}{}, \
                 fragment offset {}, ttl {}, protocol {} ({}), checksum {:#06x}, dscp {}, ecn {}",
                pkt.ip.src(),
                pkt.ip.dst(),
                h.header_len(),
                h.total_len,
                h.identification,
                if h.dont_fragment { " DF" } else { "" },
                if h.more_fragments { " MF" } else { "" },
                h.fragment_offset.value(),
                h.time_to_live,
                h.protocol.0,
                h.protocol.keyword_str().unwrap_or("?"),
                h.header_checksum,
                h.dscp.value(),
                h.ecn.value(),
            ),
        )),
        IpHeader::V6(h) => out.push((
            "ipv6",
            format!(
                "{} -> {}, header 40 bytes, payload length {}, traffic class {:#04x}, \
                 flow label {:#07x}, next header {} ({}), hop limit {}",
                pkt.ip.src(),
                pkt.ip.dst(),
                h.payload_length,
                h.traffic_class,
                h.flow_label.value(),
                h.next_header.0,
                h.next_header.keyword_str().unwrap_or("?"),
                h.hop_limit,
            ),
        )),
    }
    match &pkt.transport {
        Transport::Tcp(t) => {
            let window = match seg {
                Some(s) if s.win != u64::from(s.raw_win) => {
                    format!("{} (scaled: {} bytes)", s.raw_win, s.win)
                }
                _ => t.window_size.to_string(),
            };
            let rel = seg
                .map(|s| {
                    let ack = s
                        .ack
                        .map(|a| format!(" (relative {a})"))
                        .unwrap_or_default();
                    (format!(" (relative {})", s.seq), ack)
                })
                .unwrap_or_default();
            // SACK blocks are in the receiver's sequence space, as the ACK number is: shown
            // relative to the same base, as Wireshark does.
            let ack_base = seg.and_then(|s| s.ack.map(|a| s.raw_ack.wrapping_sub(a)));
            let opts: Vec<String> = super::ladder::options(t)
                .iter()
                .map(|o| match (o, ack_base) {
                    (TcpOpt::Sack(blocks), Some(base)) => {
                        let rel: Vec<String> = blocks
                            .iter()
                            .map(|(l, r)| {
                                format!("{}-{}", l.wrapping_sub(base), r.wrapping_sub(base))
                            })
                            .collect();
                        format!("{o} (relative {})", rel.join(" "))
                    }
                    _ => o.to_string(),
                })
                .collect();
            out.push((
                "tcp",
                format!(
                    "port {} -> {}, seq {}{}, ack {}{}, header {} bytes, flags {}, window {}, \
                     checksum {:#06x}, urgent {}, options [{}]",
                    t.source_port,
                    t.destination_port,
                    t.sequence_number,
                    rel.0,
                    t.acknowledgment_number,
                    rel.1,
                    t.header_len(),
                    super::ladder::Flags::of(t),
                    window,
                    t.checksum,
                    t.urgent_pointer,
                    opts.join(" "),
                ),
            ))
        }
        Transport::Udp(u) => out.push((
            "udp",
            format!(
                "port {} -> {}, length {}, checksum {:#06x}, header 8 bytes",
                u.source_port, u.destination_port, u.length, u.checksum
            ),
        )),
    }
    out.push((
        "payload",
        if pkt.wire_len > pkt.payload.len() {
            format!(
                "{} bytes, {} of them captured (the capture's snap length cut the rest)",
                pkt.wire_len,
                pkt.payload.len()
            )
        } else {
            format!("{} bytes", pkt.payload.len())
        },
    ));
    if !pkt.payload.is_empty() {
        // Control characters escaped, so a payload cannot drive the terminal.
        out.push(("text", escaped(&pkt.payload, enc)));
        let mut dump = String::new();
        HexDump::default().dump(&pkt.payload, &mut dump);
        out.push(("hex", dump.trim_end().to_string()));
    }
    out
}

impl<W: Write> Printer<W> {
    /// A printer on `out`.
    pub fn new(out: W, format: Format, layers: bool) -> Self {
        Printer {
            out,
            format,
            layers,
            explain: false,
            encoding: Encoding::UTF8,
        }
    }

    /// Shows payload text as `encoding` decodes it (the conversation's wire encoding).
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Explains every state change under the row that caused it (text).
    pub fn with_explain(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }

    fn line(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{text}")
    }

    fn json(&mut self, v: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")
    }

    /// Shows the records one packet produced (`pkt` is that packet, captured at `ts`).
    pub fn packet(&mut self, records: &[Record], pkt: &Packet, ts: Duration) -> io::Result<()> {
        for rec in records {
            match self.format {
                // The hot records are written directly: building a Value costs more than the
                // capture can afford at 100k packets/s.
                Format::Json
                    if !self.layers && matches!(rec, Record::Segment(_) | Record::State(_)) =>
                {
                    fast_json(&mut self.out, rec, pkt, ts)?;
                }
                Format::Json => {
                    let mut v = record_json(rec, Some(pkt), ts);
                    if self.layers && matches!(rec, Record::Segment(_) | Record::Datagram { .. }) {
                        let seg = match rec {
                            Record::Segment(s) => Some(s),
                            _ => None,
                        };
                        let l: serde_json::Map<String, Value> = layers(pkt, seg, self.encoding)
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), Value::String(v)))
                            .collect();
                        v["layers"] = Value::Object(l);
                    }
                    self.json(&v)?;
                }
                Format::Text => self.text(rec, Some(pkt))?,
            }
        }
        Ok(())
    }

    /// Shows records not tied to a packet (summaries at the end of a capture).
    pub fn records(&mut self, records: &[Record]) -> io::Result<()> {
        for rec in records {
            match self.format {
                Format::Json => self.json(&record_json(rec, None, Duration::ZERO))?,
                Format::Text => self.text(rec, None)?,
            }
        }
        Ok(())
    }

    fn text(&mut self, rec: &Record, pkt: Option<&Packet>) -> io::Result<()> {
        match rec {
            Record::Opened { conn, a, b, start } => {
                let roles = match start {
                    Start::Syn => ("client", "server"),
                    Start::SynAck => ("client; its SYN not captured", "server"),
                    Start::Midway => ("joined midway", "joined midway"),
                };
                self.line(&format!(
                    "#{conn:<3} tcp  A {a} ({}) <-> B {b} ({})",
                    roles.0, roles.1
                ))?;
            }
            Record::Segment(s) => {
                let payload = pkt.map(|p| p.payload.as_slice()).unwrap_or_default();
                self.line(&row(s, payload, self.encoding))?;
                if let (true, Some(p)) = (self.layers, pkt) {
                    self.layer_lines(p, Some(s))?;
                }
            }
            // The row already shows both states; --explain says how each changed and why.
            Record::State(t) if self.explain => {
                self.line(&format!(
                    "                 {} {:>11} -> {:<11}  {}",
                    t.side, t.from, t.to, t.why
                ))?;
            }
            Record::State(_) => {}
            Record::Summary(s) => {
                for l in summary_lines(s) {
                    self.line(&l)?;
                }
            }
            Record::Datagram { at, src, dst, len } => {
                let payload = pkt.map(|p| p.payload.as_slice()).unwrap_or_default();
                self.line(&format!(
                    "udp  +{:.6}  {src} ---------> {dst}  len={len}  (a datagram: no handshake, no ACK){}",
                    secs(*at),
                    preview(payload, *len, self.encoding)
                ))?;
                if let (true, Some(p)) = (self.layers, pkt) {
                    self.layer_lines(p, None)?;
                }
            }
        }
        Ok(())
    }

    fn layer_lines(&mut self, pkt: &Packet, seg: Option<&Segment>) -> io::Result<()> {
        for (name, fields) in layers(pkt, seg, self.encoding) {
            let mut first = true;
            for part in fields.lines() {
                let label = if first { name } else { "" };
                first = false;
                self.line(&format!("      {label:<8} {part}"))?;
            }
        }
        Ok(())
    }

    /// Reports a frame that was skipped.
    pub fn skipped(&mut self, frame_no: u64, reason: &str) -> io::Result<()> {
        match self.format {
            Format::Json => {
                self.json(&json!({"event": "skipped", "frame": frame_no, "reason": reason}))
            }
            Format::Text => self.line(&format!("!    frame {frame_no} skipped: {reason}")),
        }
    }

    /// The closing tally.
    pub fn end(&mut self, totals: Totals, stats: EndStats) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&json!({
                "event": "end",
                "frames": stats.frames,
                "segments": totals.segments,
                "datagrams": totals.datagrams,
                "connections": totals.connections,
                "closed": totals.closed,
                "damaged": stats.damaged,
                "other_protocols": stats.other,
                "kernel_drops": stats.kernel_drops,
                "not_written": stats.not_written,
            }))?,
            Format::Text => {
                let mut line = format!(
                    "end: {} frames, {} TCP segments in {} connection{} ({} closed), {} UDP datagrams",
                    stats.frames,
                    totals.segments,
                    totals.connections,
                    if totals.connections == 1 { "" } else { "s" },
                    totals.closed,
                    totals.datagrams
                );
                if stats.damaged > 0 {
                    let _ = write!(line, ", {} damaged frames skipped", stats.damaged);
                }
                if stats.other > 0 {
                    let _ = write!(line, ", {} frames of other protocols", stats.other);
                }
                if let Some(d) = stats.kernel_drops {
                    let _ = write!(line, "; kernel dropped {d}");
                }
                if stats.not_written > 0 {
                    let _ = write!(
                        line,
                        "; {} frames of another link type not written (a pcap file holds one)",
                        stats.not_written
                    );
                }
                self.line(&line)?;
            }
        }
        self.out.flush()
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::decode::{Link, decode};
    use crate::trace::ladder::Tracker;
    use etherparse::PacketBuilder;

    fn seg(from_a: bool, syn: bool, ack: Option<u32>, seq: u32, data: &[u8]) -> Packet {
        let (a, b) = (([127, 0, 0, 1], 40000), ([127, 0, 0, 2], 80));
        let ((src, sp), (dst, dp)) = if from_a { (a, b) } else { (b, a) };
        let mut p = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 65535);
        if syn {
            p = p.syn();
        }
        if let Some(n) = ack {
            p = p.ack(n);
        }
        let mut out = Vec::new();
        p.write(&mut out, data).expect("write to Vec");
        decode(Link::Ethernet, &out).expect("valid segment")
    }

    /// The fast path must print what `record_json` prints, number types included: a time of
    /// zero is `0.0`, not `0`, and a microsecond is `1e-6`, not `0.000001`.
    #[test]
    fn the_fast_json_path_writes_what_record_json_does() {
        let steps = [
            (Duration::ZERO, seg(true, true, None, 100, b"")),
            (
                Duration::from_micros(1),
                seg(false, true, Some(101), 500, b""),
            ),
            (
                Duration::from_millis(1500),
                seg(true, false, Some(501), 101, b"hi\"\n"),
            ),
        ];
        let mut tracker = Tracker::new();
        let mut checked = 0;
        for (ts, pkt) in &steps {
            let mut recs = Vec::new();
            tracker.observe(*ts, pkt, &mut recs);
            for rec in &recs {
                let mut text = Vec::new();
                fast_json(&mut text, rec, pkt, *ts).expect("write to Vec");
                let fast: Value = serde_json::from_slice(&text).expect("valid JSON");
                assert_eq!(fast, record_json(rec, Some(pkt), *ts), "{rec:?}");
                checked += usize::from(matches!(rec, Record::Segment(_)));
            }
        }
        assert_eq!(checked, 3);
    }

    /// Payload text is shown in the conversation's encoding: GBK bytes read as GBK, and in
    /// UTF-8 (the default) as the replacement character, in the row and in `--layers`.
    #[test]
    fn payload_text_in_the_chosen_encoding() {
        let gbk = Encoding::from_label("gbk").expect("gbk");
        let pkt = seg(true, false, Some(1), 100, &[0xc4, 0xe3, 0xba, 0xc3, b'\n']);
        let mut tracker = Tracker::new();
        let mut recs = Vec::new();
        tracker.observe(Duration::ZERO, &pkt, &mut recs);
        let Some(Record::Segment(s)) = recs.iter().find(|r| matches!(r, Record::Segment(_))) else {
            panic!("no segment in {recs:?}");
        };
        assert!(row(s, &pkt.payload, gbk).ends_with("\"你好\\n\""));
        let utf8 = row(s, &pkt.payload, Encoding::UTF8);
        assert!(
            utf8.contains('\u{fffd}') && !utf8.contains("你好"),
            "{utf8}"
        );
        let text = |enc| {
            layers(&pkt, Some(s), enc)
                .into_iter()
                .find(|(k, _)| *k == "text")
                .map(|(_, v)| v)
        };
        assert_eq!(text(gbk).as_deref(), Some("你好\\n"));
    }

    /// In `--layers`, SACK blocks get the same relative numbering as the ACK number.
    #[test]
    fn sack_blocks_are_shown_relative_too() {
        use etherparse::TcpOptionElement;
        let mut tracker = Tracker::new();
        let mut recs = Vec::new();
        tracker.observe(Duration::ZERO, &seg(true, true, None, 100, b""), &mut recs);
        tracker.observe(
            Duration::ZERO,
            &seg(false, true, Some(101), 5000, b""),
            &mut recs,
        );
        let mut out = Vec::new();
        PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([127, 0, 0, 2], [127, 0, 0, 1], 64)
            .tcp(80, 40000, 5001, 65535)
            .ack(201)
            .options(&[TcpOptionElement::SelectiveAcknowledgement(
                (301, 401),
                [None; 3],
            )])
            .expect("fits")
            .write(&mut out, b"")
            .expect("write to Vec");
        let pkt = decode(Link::Ethernet, &out).expect("valid");
        recs.clear();
        tracker.observe(Duration::ZERO, &pkt, &mut recs);
        let Some(Record::Segment(s)) = recs.iter().find(|r| matches!(r, Record::Segment(_))) else {
            panic!("no segment in {recs:?}");
        };
        let tcp = layers(&pkt, Some(s), Encoding::UTF8)
            .into_iter()
            .find(|(k, _)| *k == "tcp")
            .map(|(_, v)| v)
            .unwrap_or_default();
        assert!(tcp.contains("ack 201 (relative 101)"), "{tcp}");
        assert!(tcp.contains("SACK 301-401 (relative 201-301)"), "{tcp}");
    }
}
