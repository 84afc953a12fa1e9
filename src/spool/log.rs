//! One route's spool on disk: append frames, read them from the cursor, move the cursor,
//! recover after a crash. Blocking file I/O; [`super::Spool`] runs it off the async runtime.
//! The format is described in [`super::format`].

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::format::{
    self, FRAME_OVERHEAD, HEADER, MAGIC, MAX_PAYLOAD, Position, decode_cursor, encode_cursor,
    encode_frame, frame_len, segment_id, segment_name,
};

/// Bounds of one route's spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A segment is closed and a new one started once it would grow past this.
    pub segment_bytes: u64,
    /// Frames waiting for delivery, in bytes, at most; appends beyond fail with `Full`.
    pub max_bytes: u64,
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the spool is full")]
    Full,
    #[error("writing the spool failed: {0}")]
    Io(#[from] io::Error),
}

/// A record read back, and the position just after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub payload: Vec<u8>,
    pub end: Position,
}

/// What opening a spool found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting for delivery.
    pub records: u64,
    /// Their frames' bytes.
    pub bytes: u64,
    /// Bytes of a torn frame cut from the newest segment's end.
    pub torn_bytes: u64,
    /// Bytes after a damaged frame in an older segment, which cannot be read, and the
    /// damaged bytes cut from the newest segment.
    pub lost_bytes: u64,
    /// The newest segment had a damaged frame followed by intact ones: the damage was cut,
    /// the frames after it kept, and the file as found kept beside it (`.damaged-N`).
    pub damaged: bool,
}

/// Counts of what waits for delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub records: u64,
    pub bytes: u64,
    pub segments: usize,
    pub cursor: Position,
}

/// A spool directory, opened for writing (it holds the directory's lock).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: Options,
    /// Id and readable length of every segment, oldest first; the last one is appended to.
    segments: VecDeque<(u64, u64)>,
    active: File,
    cursor: Position,
    records: u64,
    bytes: u64,
    /// Written since the last sync.
    dirty: bool,
    /// The active segment was drained and emptied to make room, and no new one could be
    /// started yet: the next append starts one first (and fails if it cannot).
    needs_segment: bool,
    /// An append found the disk full: a drained active segment is replaced whatever its size.
    short_of_space: bool,
    _lock: File,
}

/// A drained active segment at least this long (or a quarter of `segment_bytes`, if less) is
/// replaced by a new one when the cursor reaches its end; smaller ones are left to fill, so
/// a spool that keeps up does not start a file per batch. Once the disk has run out of
/// space, one of any length is.
const RECLAIM_AT: u64 = 1 << 20;

impl Log {
    /// Opens (creating) the spool in `dir`: takes its lock, cuts a torn tail, and counts what
    /// waits. Fails with `WouldBlock` when another process holds the spool.
    pub fn open(dir: &Path, options: Options) -> io::Result<(Log, Recovered)> {
        private_dir(dir)?;
        let lock = private(OpenOptions::new().create(true).truncate(false).write(true))
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "the spool {} is in use by another process (a running gateway?)",
                        dir.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let survey = survey(dir)?;
        let mut recovered = Recovered::default();
        // A damaged newest segment repaired: its id, where the damage began and ended.
        let mut moved_cursor: Option<(u64, u64, u64)> = None;
        let mut segments = VecDeque::new();
        let last = survey.segments.len().checked_sub(1);
        for (i, s) in survey.segments.iter().enumerate() {
            let path = dir.join(segment_name(s.id));
            if !s.has_header {
                if Some(i) == last && MAGIC.starts_with(&fs::read(&path)?) {
                    // Torn while being created.
                    recovered.torn_bytes += s.file_len;
                    write_new_segment(&path)?;
                    segments.push_back((s.id, HEADER));
                } else {
                    recovered.lost_bytes += s.file_len;
                    fs::rename(&path, path.with_extension("damaged"))?;
                }
                continue;
            }
            if s.valid_len < s.file_len {
                if Some(i) == last {
                    let buf = fs::read(&path)?;
                    let bad = s.valid_len as usize;
                    if let Some(resume) = resume_after_damage(&buf, bad) {
                        // Damage, not a torn write: intact frames follow it to the end.
                        let cut = (resume - bad) as u64;
                        let kept = repair_segment(&path, &buf, bad, resume)?;
                        recovered.lost_bytes += cut;
                        recovered.damaged = true;
                        moved_cursor = Some((s.id, bad as u64, resume as u64));
                        let start = match survey.cursor {
                            c if c.segment == s.id && c.offset >= resume as u64 => c.offset - cut,
                            c if c.segment == s.id => c.offset.clamp(HEADER, bad as u64),
                            _ => HEADER,
                        };
                        let scanned = format::scan(&kept[HEADER as usize..]);
                        let pending: Vec<_> = scanned
                            .frames
                            .iter()
                            .filter(|&&(at, _)| HEADER + at as u64 > start)
                            .collect();
                        recovered.records += pending.len() as u64;
                        recovered.bytes +=
                            pending.iter().map(|&&(_, len)| frame_len(len)).sum::<u64>();
                        segments.push_back((s.id, kept.len() as u64));
                        continue;
                    }
                    recovered.torn_bytes += s.file_len - s.valid_len;
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(s.valid_len)?;
                    f.sync_all()?;
                } else {
                    recovered.lost_bytes += s.file_len - s.valid_len;
                }
            }
            recovered.records += s.records;
            recovered.bytes += s.bytes;
            segments.push_back((s.id, s.valid_len));
        }
        for id in &survey.delivered {
            fs::remove_file(dir.join(segment_name(*id)))?;
        }
        let mut cursor = survey.cursor;
        if let Some((id, bad, resume)) = moved_cursor
            && cursor.segment == id
            && cursor.offset > bad
        {
            cursor.offset = if cursor.offset >= resume {
                cursor.offset - (resume - bad)
            } else {
                bad
            };
        }
        if segments.is_empty() {
            let id = survey.next_id;
            write_new_segment(&dir.join(segment_name(id)))?;
            sync_dir(dir)?;
            segments.push_back((id, HEADER));
        }
        match segments.iter().find(|&&(id, _)| id == cursor.segment) {
            // Records read before a crash but never made durable may be gone: resume where
            // the segment now ends, or the next appends would be passed over.
            Some(&(_, len)) => cursor.offset = cursor.offset.clamp(HEADER, len),
            None => {
                cursor = Position {
                    segment: segments[0].0,
                    offset: HEADER,
                }
            }
        }
        let active_id = segments.back().map_or(0, |s| s.0);
        let active = OpenOptions::new()
            .append(true)
            .open(dir.join(segment_name(active_id)))?;
        let log = Log {
            dir: dir.to_path_buf(),
            options,
            segments,
            active,
            cursor,
            records: recovered.records,
            bytes: recovered.bytes,
            dirty: false,
            needs_segment: false,
            short_of_space: false,
            _lock: lock,
        };
        Ok((log, recovered))
    }

    /// Appends one frame per payload, all or none; `Full` if they would take the spool past
    /// its bound. Nothing is durable before [`Log::sync`].
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<(), AppendError> {
        let total: u64 = payloads.iter().map(|p| frame_len(p.as_ref().len())).sum();
        if payloads.iter().any(|p| {
            let len = p.as_ref().len();
            len == 0 || len > MAX_PAYLOAD as usize
        }) {
            return Err(AppendError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a record is empty or larger than a frame may be",
            )));
        }
        if self.bytes + total > self.options.max_bytes {
            return Err(AppendError::Full);
        }
        if self.needs_segment {
            self.replace_drained_active()?;
        }
        let len = self.active_len();
        if len > HEADER && len + total > self.options.segment_bytes {
            self.roll()?;
        }
        let mut buf = Vec::with_capacity(total as usize);
        for p in payloads {
            encode_frame(p.as_ref(), &mut buf);
        }
        let len = self.active_len();
        if let Err(e) = self.active.write_all(&buf) {
            // Leave no partial frame behind for the next append to follow.
            let _ = self.active.set_len(len);
            self.short_of_space |= out_of_space(&e);
            return Err(e.into());
        }
        if let Some(back) = self.segments.back_mut() {
            back.1 += total;
        }
        self.records += payloads.len() as u64;
        self.bytes += total;
        self.dirty = true;
        Ok(())
    }

    /// Makes every append so far durable (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.active.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Whether appends wait for a sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Up to `max_records` records from the cursor, with at most `max_bytes` of payload (but
    /// at least one record when any waits). The cursor does not move; see [`Log::ack`].
    pub fn read(&self, max_records: usize, max_bytes: usize) -> io::Result<Vec<Frame>> {
        self.read_from(self.cursor, max_records, max_bytes)
    }

    /// As [`Log::read`], from `from` (the end of a frame read before, at or after the
    /// cursor), to read ahead of batches still being delivered.
    pub fn read_from(
        &self,
        from: Position,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<Frame>> {
        let from = from.max(self.cursor);
        let mut out: Vec<Frame> = Vec::new();
        let mut taken = 0;
        for &(id, len) in &self.segments {
            if id < from.segment {
                continue;
            }
            let start = if id == from.segment {
                from.offset
            } else {
                HEADER
            };
            if start >= len {
                continue;
            }
            let mut file = File::open(self.dir.join(segment_name(id)))?;
            file.seek(SeekFrom::Start(start))?;
            let mut r = BufReader::with_capacity(256 << 10, file.take(len - start));
            let mut offset = start;
            while offset < len {
                if out.len() >= max_records {
                    return Ok(out);
                }
                let payload = read_frame(&mut r)?;
                offset += frame_len(payload.len());
                if !out.is_empty() && taken + payload.len() > max_bytes {
                    return Ok(out);
                }
                taken += payload.len();
                out.push(Frame {
                    payload,
                    end: Position {
                        segment: id,
                        offset,
                    },
                });
            }
        }
        Ok(out)
    }

    /// Moves the cursor past delivered records (the first `records` from the cursor, whose
    /// frames take `bytes`, ending at `to`), deletes segments left wholly behind, and replaces
    /// a drained active segment by a new one so its space comes back.
    ///
    /// On a full disk the cursor still moves: if writing it fails, the delivered segments are
    /// deleted first and it is written again (a crash in between replays a segment's
    /// delivered frames again, never skips one). If it still cannot be written the records
    /// stay delivered here and the next ack writes it.
    pub fn ack(&mut self, to: Position, records: u64, bytes: u64) -> io::Result<()> {
        self.cursor = to;
        self.records = self.records.saturating_sub(records);
        self.bytes = self.bytes.saturating_sub(bytes);
        let mut finished = Vec::new();
        while self.segments.len() > 1 {
            let (id, len) = self.segments[0];
            if id < self.cursor.segment || (id == self.cursor.segment && self.cursor.offset >= len)
            {
                finished.push(id);
                self.segments.pop_front();
                if self.cursor.segment <= id {
                    self.cursor = Position {
                        segment: self.segments[0].0,
                        offset: HEADER,
                    };
                }
            } else {
                break;
            }
        }
        let mut drained = None;
        let reclaim_at = RECLAIM_AT.min(self.options.segment_bytes / 4);
        if self.active_drained() && (self.active_len() >= reclaim_at || self.short_of_space) {
            let old = self.active_id();
            match self.roll() {
                Ok(()) => {
                    self.segments.pop_front();
                    self.cursor = Position {
                        segment: self.active_id(),
                        offset: HEADER,
                    };
                    self.short_of_space = false;
                    drained = Some(old);
                }
                // No room for even a new segment: empty the drained one to make some.
                Err(e) if out_of_space(&e) => self.replace_drained_active()?,
                Err(e) => return Err(e),
            }
        }
        // The cursor first: a crash between the two leaves a delivered segment to delete
        // next time, never a cursor into a deleted one. Out of space, the segments go first
        // to make room for it.
        match self.write_cursor() {
            Ok(()) => {}
            Err(e) if out_of_space(&e) => {
                for id in finished.drain(..).chain(drained.take()) {
                    fs::remove_file(self.dir.join(segment_name(id)))?;
                }
                self.write_cursor()?;
            }
            Err(e) => return Err(e),
        }
        for id in finished.into_iter().chain(drained) {
            fs::remove_file(self.dir.join(segment_name(id)))?;
        }
        Ok(())
    }

    /// Writes the cursor file (a new file renamed over the old, so it is always one or the
    /// other); a failed write leaves no partial file behind.
    fn write_cursor(&self) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        let written = write_private(&tmp, &encode_cursor(self.cursor))
            .and_then(|()| fs::rename(&tmp, self.dir.join("cursor")));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Whether every record was delivered and the cursor is at the active segment's end.
    fn active_drained(&self) -> bool {
        self.records == 0
            && self.segments.len() == 1
            && self.cursor.segment == self.active_id()
            && self.cursor.offset >= self.active_len()
            && self.active_len() > HEADER
    }

    fn active_id(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.0)
    }

    /// Empties the drained active segment (its space comes back at once) and starts the next
    /// one. Positions only grow, so a reader holding the old segment's end reads on from the
    /// new one's start. If the new one cannot be made, appends wait for it.
    fn replace_drained_active(&mut self) -> io::Result<()> {
        if !self.needs_segment {
            let old = self.active_id();
            self.active.set_len(0)?;
            fs::remove_file(self.dir.join(segment_name(old)))?;
            self.needs_segment = true;
        }
        self.dirty = false;
        self.roll()?;
        self.segments.pop_front();
        self.cursor = Position {
            segment: self.active_id(),
            offset: HEADER,
        };
        self.needs_segment = false;
        self.short_of_space = false;
        Ok(())
    }

    pub fn status(&self) -> Status {
        Status {
            records: self.records,
            bytes: self.bytes,
            segments: self.segments.len(),
            cursor: self.cursor,
        }
    }

    fn active_len(&self) -> u64 {
        self.segments.back().map_or(HEADER, |s| s.1)
    }

    /// Closes the active segment (durably) and starts the next one.
    fn roll(&mut self) -> io::Result<()> {
        self.sync()?;
        let id = self.segments.back().map_or(1, |s| s.0 + 1);
        let path = self.dir.join(segment_name(id));
        write_new_segment(&path)?;
        sync_dir(&self.dir)?;
        self.active = OpenOptions::new().append(true).open(&path)?;
        self.segments.push_back((id, HEADER));
        Ok(())
    }
}

/// One frame's payload from a reader positioned at a frame written whole.
fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = [0u8; FRAME_OVERHEAD as usize];
    r.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_PAYLOAD {
        return Err(damaged());
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Err(damaged());
    }
    Ok(payload)
}

fn damaged() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a spool frame changed on disk after it was checked",
    )
}

fn write_new_segment(path: &Path) -> io::Result<()> {
    let mut f = private(OpenOptions::new().create(true).truncate(true).write(true)).open(path)?;
    f.write_all(MAGIC)?;
    f.sync_all()
}

/// Where intact frames resume after the frame that does not check out at `bad`: the first
/// later offset from which intact frames run exactly to the end of the file. A torn write
/// (the end of a crash) has none; bytes of a client's record that merely look like a frame
/// would also have to chain, CRCs and all, to the end.
fn resume_after_damage(buf: &[u8], bad: usize) -> Option<usize> {
    (bad + 1..buf.len()).find(|&at| {
        let s = format::scan(&buf[at..]);
        !s.frames.is_empty() && s.rest == 0
    })
}

/// Rewrites a damaged segment without the damaged bytes `[bad, resume)`, keeping the file
/// as found beside it; returns the new contents.
fn repair_segment(path: &Path, buf: &[u8], bad: usize, resume: usize) -> io::Result<Vec<u8>> {
    let mut n = 1;
    let aside = loop {
        let candidate = path.with_extension(format!("damaged-{n}"));
        if !candidate.exists() {
            break candidate;
        }
        n += 1;
    };
    write_private(&aside, buf)?;
    let mut kept = Vec::with_capacity(buf.len() - (resume - bad));
    kept.extend_from_slice(&buf[..bad]);
    kept.extend_from_slice(&buf[resume..]);
    let tmp = path.with_extension("repairing");
    {
        let mut f =
            private(OpenOptions::new().create(true).truncate(true).write(true)).open(&tmp)?;
        f.write_all(&kept)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(kept)
}

/// Clients' records are for the gateway's user alone: files are created 0600.
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Writes a whole file, created 0600 (or truncated).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = private(OpenOptions::new().create(true).truncate(true).write(true)).open(path)?;
    f.write_all(bytes)
}

/// Creates a directory and its parents 0700, and makes an existing one 0700 (so files of
/// older versions, created 0644, are no longer reachable by others either).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Whether an error is the disk (or its quota) being full.
fn out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A segment as found on disk.
#[derive(Debug, Clone)]
pub struct SegmentSurvey {
    pub id: u64,
    pub file_len: u64,
    pub has_header: bool,
    /// Where its intact frames end.
    pub valid_len: u64,
    /// Undelivered records in it and their frames' bytes.
    pub records: u64,
    pub bytes: u64,
}

/// A spool directory as found on disk, read without changing anything.
#[derive(Debug, Clone)]
pub struct Survey {
    pub cursor: Position,
    /// Segments the cursor has passed: delivered, not yet deleted.
    pub delivered: Vec<u64>,
    pub segments: Vec<SegmentSurvey>,
    /// The id a new segment would take.
    pub next_id: u64,
}

/// Reads a spool directory's cursor and segments.
pub fn survey(dir: &Path) -> io::Result<Survey> {
    let mut ids: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| segment_id(e.file_name().to_str()?))
        .collect();
    ids.sort_unstable();
    let next_id = ids.last().map_or(1, |id| id + 1);
    let stored = fs::read(dir.join("cursor"))
        .ok()
        .and_then(|b| decode_cursor(&b));
    // A cursor into a segment that is gone (or none) starts at the oldest one there is.
    let cursor = match stored {
        Some(c) if ids.contains(&c.segment) => c,
        _ => Position {
            segment: ids.first().copied().unwrap_or(next_id),
            offset: HEADER,
        },
    };
    let (delivered, live): (Vec<u64>, Vec<u64>) =
        ids.into_iter().partition(|&id| id < cursor.segment);
    let mut segments = Vec::with_capacity(live.len());
    for id in live {
        let buf = fs::read(dir.join(segment_name(id)))?;
        let file_len = buf.len() as u64;
        if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
            segments.push(SegmentSurvey {
                id,
                file_len,
                has_header: false,
                valid_len: 0,
                records: 0,
                bytes: 0,
            });
            continue;
        }
        let scanned = format::scan(&buf[HEADER as usize..]);
        let valid_len = HEADER + scanned.valid_end as u64;
        // Frames before the cursor were delivered; the cursor is always at a frame's end.
        let start = if id == cursor.segment {
            cursor.offset.clamp(HEADER, valid_len)
        } else {
            HEADER
        };
        let pending: Vec<_> = scanned
            .frames
            .iter()
            .filter(|&&(at, _)| HEADER + at as u64 > start)
            .collect();
        segments.push(SegmentSurvey {
            id,
            file_len,
            has_header: true,
            valid_len,
            records: pending.len() as u64,
            bytes: pending.iter().map(|&&(_, len)| frame_len(len)).sum(),
        });
    }
    Ok(Survey {
        cursor,
        delivered,
        segments,
        next_id,
    })
}

/// Appends frames to a file in the segment format (creating it with its header) and syncs:
/// the dead letters.
pub fn append_frames(path: &Path, payloads: &[Vec<u8>]) -> io::Result<()> {
    let mut file = private(OpenOptions::new().create(true).append(true)).open(path)?;
    let mut buf = Vec::new();
    if file.metadata()?.len() == 0 {
        buf.extend_from_slice(MAGIC);
    }
    for p in payloads {
        encode_frame(p, &mut buf);
    }
    file.write_all(&buf)?;
    file.sync_data()
}

/// The payloads in a file of frames (the dead letters), at most `limit`.
pub fn read_frames(path: &Path, limit: usize) -> io::Result<Vec<Vec<u8>>> {
    let buf = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return Ok(Vec::new());
    }
    let body = &buf[HEADER as usize..];
    Ok(format::scan(body)
        .frames
        .into_iter()
        .take(limit)
        .map(|(at, len)| body[at..at + len].to_vec())
        .collect())
}

/// The undelivered records' payloads of a spool directory, oldest first, at most `limit`,
/// read without taking the lock or changing anything.
pub fn peek(dir: &Path, limit: usize) -> io::Result<Vec<Vec<u8>>> {
    let s = survey(dir)?;
    let mut out = Vec::new();
    for seg in s.segments.iter().filter(|seg| seg.has_header) {
        let buf = fs::read(dir.join(segment_name(seg.id)))?;
        let start = if seg.id == s.cursor.segment {
            s.cursor.offset.max(HEADER)
        } else {
            HEADER
        };
        let scanned = format::scan(&buf[HEADER as usize..]);
        for (at, len) in scanned.frames {
            let at = HEADER as usize + at;
            if (at as u64) < start {
                continue;
            }
            if out.len() >= limit {
                return Ok(out);
            }
            out.push(buf[at..at + len].to_vec());
        }
    }
    Ok(out)
}
