//! The spool: every result the agent makes, on disk before it waits for anything, in the
//! order it was made, in segment files of JSON lines. A result is written to the open segment
//! the moment it is made (a `write`, so `kill -9` of the agent loses nothing; the kernel has
//! it); the segment is fsynced and sealed before it is sent (one fsync for everything made
//! since the last send), and deleted only after the server acknowledged all of it (resending
//! part of one is harmless: ids make replays idempotent). While the server is away sealed
//! segments pile up and are replayed oldest first. Bounded: past the limit the oldest
//! segments go, and how many results that dropped is counted so it can be reported.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// A new segment is started once the current one is this big.
const SEGMENT_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    /// The segment results are written to now: its path, the open file, its size, and its
    /// lines (kept to send it without reading it back).
    open: Option<(PathBuf, File, u64, Vec<String>)>,
    /// The lines of the segment sealed last, while it waits to be sent.
    sealed: Option<(PathBuf, Vec<String>)>,
}

impl Spool {
    pub fn open(dir: &Path, limit: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            limit: limit.max(SEGMENT_BYTES),
            open: None,
            sealed: None,
        })
    }

    /// Segment files, oldest first (names are zero-padded sequence numbers).
    fn segments(&self) -> io::Result<Vec<PathBuf>> {
        let mut segments: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        segments.sort();
        Ok(segments)
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_none() && self.segments().map_or(true, |s| s.is_empty())
    }

    /// Writes one result (a JSON object on one line) to the open segment at once, without
    /// waiting for the disk: on disk for the kernel, so a killed agent loses nothing. Call
    /// [`Spool::seal`] to make what was written durable against a power cut too.
    pub fn write(&mut self, line: &str) -> io::Result<()> {
        if self.open.is_none() {
            let path = match self.segments()?.last() {
                Some(last) => self.dir.join(next_name(last)),
                None => self.dir.join(format!("{:016}.jsonl", 1)),
            };
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)?;
            self.open = Some((path, file, 0, Vec::new()));
        }
        let Some((_, file, size, lines)) = self.open.as_mut() else {
            return Ok(());
        };
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        file.write_all(text.as_bytes())?;
        *size += text.len() as u64;
        lines.push(line.to_string());
        if *size >= SEGMENT_BYTES {
            self.seal()?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (one fsync for all of it) and closes the open
    /// segment, so that it can be sent; the next result starts a new one. Returns how many
    /// older results had to be dropped to stay within the limit.
    pub fn seal(&mut self) -> io::Result<u64> {
        if let Some(file) = self.close_open() {
            file.sync_data()?;
        }
        self.enforce_limit()
    }

    /// Closes the open segment for writing (the next result starts a new one) and hands over
    /// its file, to be made durable where waiting for the disk holds nobody up; then call
    /// [`Spool::sealed`].
    pub fn close_open(&mut self) -> Option<File> {
        let (path, file, _, lines) = self.open.take()?;
        self.sealed = Some((path, lines));
        Some(file)
    }

    /// After the file from [`Spool::close_open`] is synced: keeps the spool within its limit.
    /// Returns how many older results had to be dropped.
    pub fn sealed(&self) -> io::Result<u64> {
        self.enforce_limit()
    }

    /// Appends results (one JSON object per line) durably, in a segment of their own. Returns
    /// how many older results had to be dropped to stay within the limit.
    pub fn append(&mut self, lines: &[String]) -> io::Result<u64> {
        if lines.is_empty() {
            return Ok(0);
        }
        let mut dropped = self.seal()?;
        let segments = self.segments()?;
        let current = match segments.last() {
            Some(last) if fs::metadata(last)?.len() < SEGMENT_BYTES => last.clone(),
            Some(last) => self.dir.join(next_name(last)),
            None => self.dir.join(format!("{:016}.jsonl", 1)),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&current)?;
        let mut text = String::new();
        // A crash mid-write can leave a line without its end; start on a fresh line so the
        // next result is not glued to the broken one.
        if !ends_with_newline(&mut file)? {
            text.push('\n');
        }
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        dropped += self.enforce_limit()?;
        Ok(dropped)
    }

    fn enforce_limit(&self) -> io::Result<u64> {
        let mut segments = self.segments()?;
        let mut total: u64 = segments
            .iter()
            .filter_map(|s| fs::metadata(s).ok())
            .map(|m| m.len())
            .sum();
        let mut dropped = 0;
        // Never drop the segment being written.
        while total > self.limit && segments.len() > 1 {
            let oldest = segments.remove(0);
            total -= fs::metadata(&oldest).map(|m| m.len()).unwrap_or(0);
            dropped += read_lines(&oldest)?.len() as u64;
            fs::remove_file(&oldest)?;
        }
        Ok(dropped)
    }

    /// The oldest sealed segment and its results. A line cut short by a crash mid-write is
    /// skipped. Seal first to include what was written since the last seal.
    pub fn oldest(&self) -> io::Result<Option<(PathBuf, Vec<String>)>> {
        let open = self.open.as_ref().map(|(path, _, _, _)| path);
        match self.segments()?.into_iter().find(|s| Some(s) != open) {
            None => Ok(None),
            Some(path) => {
                // The segment just sealed is in memory still: no need to read it back.
                if let Some((sealed, lines)) = &self.sealed
                    && *sealed == path
                {
                    return Ok(Some((path, lines.clone())));
                }
                let lines = read_lines(&path)?;
                Ok(Some((path, lines)))
            }
        }
    }

    pub fn remove(&mut self, segment: &Path) -> io::Result<()> {
        if self
            .sealed
            .as_ref()
            .is_some_and(|(path, _)| path == segment)
        {
            self.sealed = None;
        }
        fs::remove_file(segment)
    }
}

fn ends_with_newline(file: &mut File) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

fn next_name(last: &Path) -> String {
    let number: u64 = last
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    format!("{:016}.jsonl", number + 1)
}

fn read_lines(path: &Path) -> io::Result<Vec<String>> {
    let reader = BufReader::new(File::open(path)?);
    let mut lines = Vec::new();
    for line in reader.lines() {
        let line = line?;
        // Every line the agent writes is one JSON object: only one that does not look whole
        // (a crash cut it short) is parsed to be sure. Parsing each of them cost the agent's
        // one thread milliseconds a second at a thousand results.
        let looks_whole = line.starts_with('{') && line.ends_with('}');
        if looks_whole || serde_json::from_str::<serde_json::Value>(&line).is_ok() {
            lines.push(line);
        } else if !line.trim().is_empty() {
            tracing::warn!(segment = %path.display(), "skipping a spooled line cut short by a crash");
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> String {
        format!("{{\"id\": \"r{i}\", \"pad\": \"{}\"}}", "x".repeat(1000))
    }

    #[test]
    fn keeps_order_across_segments_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 100 * 1024 * 1024).expect("open");
        assert!(spool.is_empty());
        for i in 0..3000 {
            assert_eq!(spool.append(&[line(i)]).expect("append"), 0);
        }
        let mut spool = Spool::open(dir.path(), 100 * 1024 * 1024).expect("reopen");
        let mut seen = Vec::new();
        while let Some((segment, lines)) = spool.oldest().expect("read") {
            seen.extend(lines);
            spool.remove(&segment).expect("remove");
        }
        assert_eq!(seen.len(), 3000);
        assert!(
            seen.iter()
                .enumerate()
                .all(|(i, l)| l.contains(&format!("\"r{i}\"")))
        );
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 2 * SEGMENT_BYTES).expect("open");
        let mut dropped = 0;
        for i in 0..5000 {
            dropped += spool.append(&[line(i)]).expect("append");
        }
        assert!(dropped > 0);
        let mut kept = 0;
        let mut first = None;
        while let Some((segment, lines)) = spool.oldest().expect("read") {
            first.get_or_insert_with(|| lines[0].clone());
            kept += lines.len() as u64;
            spool.remove(&segment).expect("remove");
        }
        assert_eq!(
            kept + dropped,
            5000,
            "every result is either kept or counted as dropped"
        );
        assert!(
            first.is_some_and(|l| !l.contains("\"r0\"")),
            "the oldest went first"
        );
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 100 * 1024 * 1024).expect("open");
        spool.append(&[line(1)]).expect("append");
        let (segment, _) = spool.oldest().expect("read").expect("segment");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        file.write_all(b"{\"id\": \"half").expect("write");
        spool.append(&[line(2)]).expect("append");
        let (_, lines) = spool.oldest().expect("read").expect("segment");
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    #[test]
    fn what_is_written_is_there_at_once_and_sent_once_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 100 * 1024 * 1024).expect("open");
        assert!(spool.is_empty());
        spool.write(&line(1)).expect("write");
        spool.write(&line(2)).expect("write");
        assert!(!spool.is_empty());
        assert!(
            spool.oldest().expect("read").is_none(),
            "the open segment is not sent before it is sealed"
        );
        // A process killed now leaves both lines in a file another start reads.
        let reopened = Spool::open(dir.path(), 100 * 1024 * 1024).expect("reopen");
        let (_, lines) = reopened.oldest().expect("read").expect("a segment");
        assert_eq!(lines.len(), 2);
        assert_eq!(spool.seal().expect("seal"), 0);
        let (segment, lines) = spool.oldest().expect("read").expect("sealed");
        assert_eq!(lines.len(), 2);
        spool.write(&line(3)).expect("write after the seal");
        spool.remove(&segment).expect("remove");
        spool.seal().expect("seal");
        let (_, lines) = spool.oldest().expect("read").expect("the new segment");
        assert!(lines[0].contains("\"r3\""), "{lines:?}");
    }
}
