//! Reading an agent's transcript as it grows: whole lines only, from where
//! the last read stopped (the offset lives in memory; after a restart the
//! attempt's part is read again from its recorded start, which the
//! deterministic event ids make harmless).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// A transcript file and how far it was read.
#[derive(Debug)]
pub struct TranscriptReader {
    path: PathBuf,
    offset: u64,
}

impl TranscriptReader {
    /// A reader at the start of `path`.
    pub fn new(path: PathBuf) -> Self {
        Self::at(path, 0)
    }

    /// A reader of `path` from byte `offset` on: where an attempt's part
    /// of a session's transcript starts.
    pub fn at(path: PathBuf, offset: u64) -> Self {
        Self { path, offset }
    }

    /// The file read.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The offset just past the last line returned.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_new(&self) -> std::io::Result<Vec<u8>> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The lines completed since the last read; a line still being written
    /// (no newline yet) waits for the next read.
    pub fn complete_lines(&mut self) -> std::io::Result<Vec<String>> {
        let bytes = self.read_new()?;
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        self.offset += end as u64 + 1;
        Ok(split_lines(&bytes[..end]))
    }

    /// Every line left, the last one even without its newline: for when the
    /// agent is gone and nothing more will be written.
    pub fn remaining_lines(&mut self) -> std::io::Result<Vec<String>> {
        let bytes = self.read_new()?;
        self.offset += bytes.len() as u64;
        let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if trimmed.is_empty() && bytes.is_empty() {
            return Ok(Vec::new());
        }
        Ok(split_lines(trimmed))
    }
}

fn split_lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b'\n')
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_line_is_read_once_and_only_when_complete() {
        let dir = std::env::temp_dir().join(format!("stv-transcript-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stdout.jsonl");
        let mut reader = TranscriptReader::new(path.clone());
        assert!(reader.complete_lines().unwrap().is_empty(), "no file yet");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"{\"a\":1}\n{\"b\"").unwrap();
        assert_eq!(reader.complete_lines().unwrap(), vec!["{\"a\":1}"]);
        assert!(reader.complete_lines().unwrap().is_empty());
        file.write_all(b":2}\n{\"c\":3}").unwrap();
        assert_eq!(reader.complete_lines().unwrap(), vec!["{\"b\":2}"]);
        assert_eq!(reader.remaining_lines().unwrap(), vec!["{\"c\":3}"]);
        assert!(reader.remaining_lines().unwrap().is_empty());
        assert_eq!(reader.offset(), std::fs::metadata(&path).unwrap().len());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reader_from_an_offset_sees_only_what_follows_it() {
        let dir = std::env::temp_dir().join(format!("stv-transcript-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.jsonl");
        std::fs::write(&path, b"{\"first\":1}\n{\"second\":2}\n").unwrap();
        let mut reader = TranscriptReader::at(path, 12);
        assert_eq!(reader.complete_lines().unwrap(), vec!["{\"second\":2}"]);
        assert_eq!(reader.offset(), 25);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
