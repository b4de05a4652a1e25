//! Where packets come from: the [`PacketSource`] trait, a saved capture ([`FileSource`], pcap
//! or pcapng) and, on Linux, a live capture socket ([`live::LiveSource`]). Also [`Recorder`],
//! which writes frames to a pcap file that tshark and Wireshark open.

use super::Error;
use super::decode::{Frame, Link};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(target_os = "linux")]
pub mod live;
#[cfg(target_os = "linux")]
mod sys;

/// What a source has next.
#[derive(Debug)]
pub enum Next {
    /// A frame.
    Frame(Frame),
    /// Nothing arrived within the poll interval (live capture): check the stop conditions.
    Idle,
    /// A frame that cannot be used, and why (an unknown link type, a damaged file record).
    Skipped(String),
    /// The source is exhausted.
    End,
}

/// A source of captured frames.
pub trait PacketSource: Send {
    /// The next frame; blocks at most a short poll interval.
    fn next(&mut self) -> Result<Next, Error>;

    /// The link type frames are written with (`--write`).
    fn link(&self) -> Link;

    /// Packets the kernel dropped because we did not read fast enough, if known.
    fn dropped(&mut self) -> Option<u64> {
        None
    }
}

/// A saved capture: classic pcap or pcapng.
pub struct FileSource {
    path: PathBuf,
    reader: Reader,
    link: Link,
}

enum Reader {
    Pcap(PcapRecords),
    PcapNg(Box<PcapNgReader<BufReader<File>>>),
    Done,
}

fn link_of(dl: DataLink) -> Option<Link> {
    Some(match dl {
        DataLink::ETHERNET => Link::Ethernet,
        DataLink::LINUX_SLL => Link::LinuxSll,
        DataLink::LINUX_SLL2 => Link::LinuxSll2,
        DataLink::NULL | DataLink::LOOP => Link::Null,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Link::Raw,
        _ => return None,
    })
}

fn datalink_of(link: Link) -> DataLink {
    match link {
        Link::Ethernet => DataLink::ETHERNET,
        Link::LinuxSll => DataLink::LINUX_SLL,
        Link::LinuxSll2 => DataLink::LINUX_SLL2,
        Link::Null => DataLink::NULL,
        Link::Raw => DataLink::RAW,
    }
}

/// pcap-file reads a pcapng timestamp as a count of nanoseconds; the interface's `if_tsresol`
/// says what the unit really is (10^-n s, or 2^-n s with the high bit set; microseconds when
/// absent, RFC draft-ietf-opsawg-pcapng §4.2).
fn rescale(raw: Duration, tsresol: u8) -> Duration {
    let units = raw.as_nanos();
    let nanos = if tsresol & 0x80 != 0 {
        let shift = u32::from(tsresol & 0x7f).min(127);
        units.saturating_mul(1_000_000_000) >> shift
    } else {
        match 9i32 - i32::from(tsresol) {
            d if d >= 0 => units.saturating_mul(10u128.pow(d as u32)),
            d => units / 10u128.saturating_pow((-d) as u32),
        }
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The records of a classic pcap file, read here rather than by pcap-file's `PcapReader`, which
/// stops at the first record with an impossible timestamp or original length. Such a record's
/// length is still known, so its bytes are used (as tshark does): a timestamp fraction of a
/// second or more carries into the seconds, an original length below the captured one is taken
/// as the captured one. Only a captured length that cannot be right ends the reading.
struct PcapRecords {
    reader: BufReader<File>,
    header: PcapHeader,
}

impl PcapRecords {
    /// Reads the file header of `path`.
    fn new(path: &Path, mut reader: BufReader<File>) -> Result<PcapRecords, Error> {
        let mut head = [0u8; 24];
        reader
            .read_exact(&mut head)
            .map_err(|e| too_short(path, e))?;
        let (_, header) = PcapHeader::from_slice(&head)
            .map_err(|e| Error::BadFile(path.to_path_buf(), e.to_string()))?;
        Ok(PcapRecords { reader, header })
    }

    /// The next record: its time, length on the wire and bytes; `None` at the end.
    fn next_record(&mut self) -> Result<Option<(Duration, u32, Vec<u8>)>, String> {
        let mut rec = [0u8; 16];
        match self.reader.read(&mut rec[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        self.reader
            .read_exact(&mut rec[1..])
            .map_err(|_| "the file ends inside a record header".to_string())?;
        let field = |i: usize| {
            let b = [rec[i], rec[i + 1], rec[i + 2], rec[i + 3]];
            match self.header.endianness {
                pcap_file::Endianness::Big => u32::from_be_bytes(b),
                pcap_file::Endianness::Little => u32::from_le_bytes(b),
            }
        };
        let (secs, frac, incl, orig) = (field(0), field(4), field(8), field(12));
        // Generous: snap lengths go up to 256 KiB in practice.
        let max = self.header.snaplen.clamp(MAX_RECORD / 4, MAX_RECORD);
        if incl > max {
            return Err(format!(
                "a record of {incl} bytes (the snap length is {})",
                self.header.snaplen
            ));
        }
        let mut data = vec![0u8; incl as usize];
        self.reader
            .read_exact(&mut data)
            .map_err(|_| format!("the file ends inside a record of {incl} bytes"))?;
        let frac_ns = match self.header.ts_resolution {
            pcap_file::TsResolution::MicroSecond => u64::from(frac) * 1000,
            pcap_file::TsResolution::NanoSecond => u64::from(frac),
        };
        // A fraction of a second or more carries into the seconds, but no further than pcap
        // can hold, so that `--write` can write the frame back.
        let ts = (Duration::from_secs(u64::from(secs)) + Duration::from_nanos(frac_ns))
            .min(Duration::new(u64::from(u32::MAX), 999_999_999));
        Ok(Some((ts, orig.max(incl), data)))
    }
}

/// A file too short for a capture's header is not a capture; other read errors are errors.
fn too_short(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::BadFile(path.to_path_buf(), "it is too short to be one".into())
    } else {
        Error::ReadFile(path.to_path_buf(), e)
    }
}

/// The largest captured length a pcap record may claim.
const MAX_RECORD: u32 = 1 << 20;

impl FileSource {
    /// Opens `path`, telling pcap from pcapng by the magic number.
    pub fn open(path: &Path) -> Result<FileSource, Error> {
        let io_err = |e| Error::ReadFile(path.to_path_buf(), e);
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic)
            .map_err(|e| too_short(path, e))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let bad = |e: pcap_file::PcapError| Error::BadFile(path.to_path_buf(), e.to_string());
        let buffered = BufReader::with_capacity(256 * 1024, file);
        let (reader, link) = if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
            let r = PcapNgReader::new(buffered).map_err(bad)?;
            (Reader::PcapNg(Box::new(r)), Link::Ethernet)
        } else {
            let r = PcapRecords::new(path, buffered)?;
            let dl = r.header.datalink;
            let link = link_of(dl).ok_or_else(|| {
                Error::BadFile(path.to_path_buf(), format!("unsupported link type {dl:?}"))
            })?;
            (Reader::Pcap(r), link)
        };
        Ok(FileSource {
            path: path.to_path_buf(),
            reader,
            link,
        })
    }
}

impl PacketSource for FileSource {
    fn next(&mut self) -> Result<Next, Error> {
        let damaged = |e: pcap_file::PcapError| {
            format!(
                "{}: damaged record, reading stops here: {e}",
                self.path.display()
            )
        };
        match &mut self.reader {
            Reader::Done => Ok(Next::End),
            Reader::Pcap(r) => match r.next_record() {
                Ok(None) => Ok(Next::End),
                Ok(Some((ts, orig_len, data))) => Ok(Next::Frame(Frame {
                    ts,
                    link: self.link,
                    orig_len,
                    data,
                })),
                Err(why) => {
                    // The pcap format has no resynchronisation point: a record whose length
                    // cannot be right, or a file cut short, ends the reading.
                    let why = format!(
                        "{}: damaged record, reading stops here: {why}",
                        self.path.display()
                    );
                    self.reader = Reader::Done;
                    Ok(Next::Skipped(why))
                }
            },
            Reader::PcapNg(r) => loop {
                let block = match r.next_block() {
                    None => return Ok(Next::End),
                    Some(Err(e)) => {
                        let why = damaged(e);
                        self.reader = Reader::Done;
                        return Ok(Next::Skipped(why));
                    }
                    Some(Ok(b)) => b,
                };
                let (ts, orig_len, data, iface) = match block {
                    Block::EnhancedPacket(p) => (
                        p.timestamp,
                        p.original_len,
                        p.data.into_owned(),
                        p.interface_id,
                    ),
                    Block::SimplePacket(p) => {
                        (Default::default(), p.original_len, p.data.into_owned(), 0)
                    }
                    _ => continue,
                };
                let idb = r.interfaces().get(iface as usize);
                let dl = idb.map(|i| i.linktype);
                let resol = idb.and_then(|i| {
                    i.options.iter().find_map(|o| match o {
                        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                        _ => None,
                    })
                });
                let ts = rescale(ts, resol.unwrap_or(6));
                let Some(link) = dl.and_then(link_of) else {
                    return Ok(Next::Skipped(format!(
                        "packet on interface {iface} with unsupported link type {dl:?}"
                    )));
                };
                self.link = link;
                return Ok(Next::Frame(Frame {
                    ts,
                    link,
                    orig_len,
                    data,
                }));
            },
        }
    }

    fn link(&self) -> Link {
        self.link
    }
}

/// The snap length of the files `--write` makes: tcpdump's default, 256 KiB.
const SNAPLEN: u32 = 262_144;

/// Writes frames to a classic pcap file (`--write`).
///
/// A pcap file has one link type, in its header. A pcapng source only says which link type
/// its frames have when its first interface block is read, so the header is written with the
/// first frame's link type, not with the one the source reported before reading anything.
pub struct Recorder {
    path: PathBuf,
    out: Output,
    /// The file's link type once the header is written; until then, the one to write.
    link: Link,
    /// Frames left out for having another link type.
    left_out: u64,
}

enum Output {
    /// Created, header not written yet.
    Opened(BufWriter<File>),
    Writing(PcapWriter<BufWriter<File>>),
    /// Writing the header failed; the error was returned then.
    Failed,
}

/// The I/O error inside a pcap-file error: its own wording ("Error reading bytes") is wrong for
/// a write.
fn io_error(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        e => std::io::Error::other(e.to_string()),
    }
}

impl Recorder {
    /// Creates `path` for frames of `link`, unless the first frame has another link type.
    pub fn create(path: &Path, link: Link) -> Result<Recorder, Error> {
        let file = File::create(path).map_err(|e| Error::WriteFile(path.to_path_buf(), e))?;
        Ok(Recorder {
            path: path.to_path_buf(),
            out: Output::Opened(BufWriter::with_capacity(256 * 1024, file)),
            link,
            left_out: 0,
        })
    }

    /// The writer, writing the file header first if it is not written yet.
    fn writer(&mut self) -> Result<&mut PcapWriter<BufWriter<File>>, Error> {
        if let Output::Opened(_) = self.out
            && let Output::Opened(file) = std::mem::replace(&mut self.out, Output::Failed)
        {
            let header = PcapHeader {
                datalink: datalink_of(self.link),
                // pcap-file's default, 65,535, is less than a frame on `lo` with GSO (an IP
                // packet of up to 64 KiB plus the link header), and pcap-file refuses to write
                // a record over the snap length: tcpdump's default instead.
                snaplen: SNAPLEN,
                ..PcapHeader::default()
            };
            let w = PcapWriter::with_header(file, header)
                .map_err(|e| Error::WriteFile(self.path.clone(), io_error(e)))?;
            self.out = Output::Writing(w);
        }
        match &mut self.out {
            Output::Writing(w) => Ok(w),
            _ => Err(Error::WriteFile(
                self.path.clone(),
                std::io::Error::other("an earlier write failed"),
            )),
        }
    }

    /// Appends `frame` (frames of another link type than the file's are left out).
    pub fn write(&mut self, frame: &Frame) -> Result<(), Error> {
        if let Output::Opened(_) = self.out {
            self.link = frame.link;
        }
        if frame.link != self.link {
            self.left_out += 1;
            return Ok(());
        }
        // A frame over the snap length (BIG TCP makes them) is cut there, as tcpdump does; its
        // original length stays in the record.
        let data = &frame.data[..frame.data.len().min(SNAPLEN as usize)];
        let packet = PcapPacket::new(frame.ts, frame.orig_len.max(frame.data.len() as u32), data);
        let w = self.writer()?;
        match w.write_packet(&packet) {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::WriteFile(self.path.clone(), io_error(e))),
        }
    }

    /// How many frames were left out for having another link type than the file.
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    /// Flushes what is buffered and closes the file (a file with no frames still gets its
    /// header).
    pub fn finish(mut self) -> Result<(), Error> {
        self.writer()?;
        let Output::Writing(w) = self.out else {
            return Ok(());
        };
        w.into_writer()
            .flush()
            .map_err(|e| Error::WriteFile(self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_timestamp_units() {
        let raw = Duration::from_nanos(1_500_000);
        assert_eq!(rescale(raw, 6), Duration::from_millis(1500));
        assert_eq!(rescale(raw, 9), raw);
        assert_eq!(rescale(raw, 12), Duration::from_nanos(1500));
        // 2^-10 s units: 1024 of them make a second.
        assert_eq!(
            rescale(Duration::from_nanos(1024), 0x8a),
            Duration::from_secs(1)
        );
        // Nonsense resolutions saturate instead of panicking.
        let _ = rescale(Duration::MAX, 0);
        let _ = rescale(Duration::MAX, 0xff);
        let _ = rescale(raw, 200);
    }

    /// A pcapng source reports Ethernet until its first interface block is read; the file
    /// takes the link type of the first frame, and frames of another type are left out.
    #[test]
    fn the_file_takes_the_first_frames_link_type() {
        let scratch = tempfile::Builder::new()
            .prefix("wirechat-recorder-")
            .tempdir()
            .expect("a temporary directory");
        let dir = scratch.path();
        let path = dir.join("raw.pcap");
        let frame = |link, byte| Frame {
            ts: Duration::from_secs(1),
            link,
            data: vec![byte; 20],
            orig_len: 20,
        };
        let mut rec = Recorder::create(&path, Link::Ethernet).expect("create");
        rec.write(&frame(Link::Raw, 0x45)).expect("write");
        rec.write(&frame(Link::Ethernet, 1)).expect("write");
        rec.write(&frame(Link::Raw, 0x46)).expect("write");
        assert_eq!(rec.left_out(), 1);
        rec.finish().expect("finish");
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&path).expect("open"))
            .expect("a pcap file");
        assert_eq!(r.header().datalink, DataLink::RAW);
        let mut firsts = Vec::new();
        while let Some(p) = r.next_packet() {
            firsts.push(p.expect("a packet").data[0]);
        }
        assert_eq!(firsts, [0x45, 0x46]);

        // No frames at all: a valid, empty file of the source's link type.
        let empty = dir.join("empty.pcap");
        Recorder::create(&empty, Link::LinuxSll)
            .expect("create")
            .finish()
            .expect("finish");
        let r = pcap_file::pcap::PcapReader::new(File::open(&empty).expect("open"))
            .expect("a pcap file");
        assert_eq!(r.header().datalink, DataLink::LINUX_SLL);
    }

    /// Frames on `lo` with GSO are larger than 64 KiB; BIG TCP ones can pass the snap length,
    /// and are cut there with their original length kept.
    #[test]
    fn large_frames_are_written_whole_up_to_the_snap_length() {
        let scratch = tempfile::Builder::new()
            .prefix("wirechat-big-")
            .tempdir()
            .expect("a temporary directory");
        let dir = scratch.path();
        let path = dir.join("big.pcap");
        let mut rec = Recorder::create(&path, Link::Ethernet).expect("create");
        for len in [65_549usize, 300_000] {
            let frame = Frame {
                ts: Duration::from_secs(1),
                link: Link::Ethernet,
                data: vec![7; len],
                orig_len: len as u32,
            };
            rec.write(&frame).expect("a large frame is written");
        }
        rec.finish().expect("finish");
        // Read back as `--read` reads (pcap-file's own reader refuses an original length over
        // the snap length, which tcpdump and tshark write and read).
        let mut source = FileSource::open(&path).expect("our own file opens");
        let mut lens = Vec::new();
        while let Ok(Next::Frame(f)) = source.next() {
            lens.push((f.data.len(), f.orig_len));
        }
        assert_eq!(lens, [(65_549, 65_549), (262_144, 300_000)]);
    }
}
