//! The spill file: records the store could not commit, one JSON line each,
//! appended next to the database, and read back from the front as the
//! store commits them again.
//!
//! Append-only, so a crash can only tear the last line, which the next
//! start cuts off (everything before it is whole). A line is the record
//! and its span as the API's JSON (`backlog` writes and reads them), not
//! the row's encoding: a spill file left by one version of tracegate is
//! replayed by the next, and `jq` reads it.
//!
//! The file keeps no cursor of its own. The writer commits lines from the
//! front and only then moves past them here; when all are committed the file
//! is removed. A crash in between replays lines that were committed already,
//! which the writer recognises by their trace ids and skips, so a record is
//! never stored twice.
//!
//! An append that fails (the disk is full too) is cut back to where it
//! started: a line is in the file whole or not at all, and the caller keeps
//! the lines in memory. Appends are not synced one by one: a line survives
//! a crash of the process at once, a power cut once the system has written
//! it out (as a commit does under `synchronous = NORMAL`); the writer syncs
//! the file when it stops.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The spill file and the part of it not committed yet.
#[derive(Debug)]
pub(crate) struct SpillFile {
    path: PathBuf,
    /// The offset of the first line not committed yet.
    read_at: u64,
    /// The file's length as written (a failed append is cut back to it).
    end: u64,
    /// The lines from `read_at` to `end`.
    lines: u64,
    /// Open for appending, once something was appended.
    append: Option<File>,
}

impl SpillFile {
    /// The spill file at `path`, with the lines a previous run left in it
    /// (a torn last line is cut off).
    pub fn open(path: PathBuf) -> io::Result<SpillFile> {
        let mut spill = SpillFile {
            path,
            read_at: 0,
            end: 0,
            lines: 0,
            append: None,
        };
        let file = match OpenOptions::new().read(true).write(true).open(&spill.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(spill),
            Err(e) => return Err(e),
        };
        let (lines, whole) = count_lines(&file)?;
        if whole < file.metadata()?.len() {
            tracing::warn!(spill = %spill.path.display(), "cutting a torn last line");
            file.set_len(whole)?;
        }
        (spill.lines, spill.end) = (lines, whole);
        if lines == 0 {
            spill.remove();
        }
        Ok(spill)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lines not committed yet.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Appends `lines` (each without its newline): all of them, or none.
    pub fn append(&mut self, lines: &[String]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let file = match &mut self.append {
            Some(file) => file,
            None => self.append.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        if let Err(e) = file.write_all(&bytes) {
            // Cut a partial write back, so the file holds whole lines only.
            if let Err(cut) = file.set_len(self.end) {
                tracing::warn!(spill = %self.path.display(), "cannot cut a failed append: {cut}");
            }
            self.append = None;
            return Err(e);
        }
        self.end += bytes.len() as u64;
        self.lines += lines.len() as u64;
        Ok(())
    }

    /// Up to `count` lines from the first not committed yet, and the offset
    /// after the last of them.
    pub fn peek(&self, count: usize) -> io::Result<(Vec<String>, u64)> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.read_at))?;
        let mut reader = BufReader::new(file.take(self.end - self.read_at));
        let (mut lines, mut at) = (Vec::new(), self.read_at);
        while lines.len() < count {
            let mut line = String::new();
            let read = reader.read_line(&mut line)?;
            if read == 0 {
                break;
            }
            at += read as u64;
            line.pop();
            lines.push(line);
        }
        Ok((lines, at))
    }

    /// Moves past `count` committed lines, which end at `next`; removes the
    /// file once every line is committed.
    pub fn consume(&mut self, count: u64, next: u64) {
        self.read_at = next;
        self.lines = self.lines.saturating_sub(count);
        if self.lines == 0 {
            self.remove();
        }
    }

    /// Syncs what was appended to the disk.
    pub fn sync(&self) -> io::Result<()> {
        match &self.append {
            Some(file) => file.sync_all(),
            None => Ok(()),
        }
    }

    /// Removes the file (every line in it is committed), or empties it if it
    /// cannot be removed.
    fn remove(&mut self) {
        self.append = None;
        (self.read_at, self.end, self.lines) = (0, 0, 0);
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            let emptied = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_len(0));
            if let Err(e) = emptied {
                // Its lines are committed: a replay will skip them.
                tracing::warn!(spill = %self.path.display(), "cannot remove or empty: {e}");
            }
        }
    }
}

/// The number of whole lines in `file`, and where the last one ends.
fn count_lines(file: &File) -> io::Result<(u64, u64)> {
    let mut reader = BufReader::new(file);
    let (mut lines, mut at, mut whole) = (0, 0, 0);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((lines, whole));
        }
        for (i, byte) in buf.iter().enumerate() {
            if *byte == b'\n' {
                lines += 1;
                whole = at + i as u64 + 1;
            }
        }
        let n = buf.len();
        at += n as u64;
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{{\"n\":{i}}}")).collect()
    }

    #[test]
    fn lines_come_back_in_order_and_the_file_goes_when_all_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = SpillFile::open(dir.path().join("s.jsonl")).unwrap();
        spill.append(&lines(3)).unwrap();
        spill.append(&lines(2)).unwrap();
        assert_eq!(spill.lines(), 5);
        let (first, next) = spill.peek(4).unwrap();
        assert_eq!(first, [&lines(3)[..], &lines(1)[..]].concat());
        spill.consume(4, next);
        let (rest, next) = spill.peek(10).unwrap();
        assert_eq!(rest, vec![lines(2)[1].clone()]);
        assert!(spill.path().exists());
        spill.consume(1, next);
        assert!(
            !spill.path().exists(),
            "every line committed: the file is removed"
        );
    }

    #[test]
    fn a_later_start_finds_the_lines_and_cuts_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let spill = SpillFile::open(path.clone()).unwrap();
        assert_eq!(spill.lines(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        assert_eq!(spill.peek(5).unwrap().0, ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn an_empty_file_left_behind_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, "").unwrap();
        assert_eq!(SpillFile::open(path.clone()).unwrap().lines(), 0);
        assert!(!path.exists());
    }

    #[test]
    fn an_append_that_fails_leaves_nothing_behind() {
        // A directory that does not exist: the append cannot even open.
        let dir = tempfile::tempdir().unwrap();
        let mut spill = SpillFile::open(dir.path().join("gone/s.jsonl")).unwrap();
        assert!(spill.append(&lines(1)).is_err());
        assert_eq!(spill.lines(), 0);
    }
}
