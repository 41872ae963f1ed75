//! Reading a stopped replica's write log from outside, to damage it on
//! purpose: find the segments, the records in each, and the byte range of
//! every record, then cut or flip bytes there.
//!
//! The format is the replica's (`replica/src/log/segment.rs`): a segment
//! file `DATA_DIR/log/{base index:020}.seg` is a 16-byte header (magic,
//! base index) followed by records in the format of
//! [`proto_common::record`], then zeros to the preallocated size. Never
//! use these helpers on the log of a running replica.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proto_common::record::{self, Decoded};
use proto_common::Position;

/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER_LEN: u64 = 16;

/// Where one record lies in its segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpan {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset of the record's first byte (its length field).
    pub offset: u64,
    /// Bytes the record takes, header and payload.
    pub len: u64,
    /// The record's `(epoch, index)`.
    pub position: Position,
}

impl RecordSpan {
    /// Offset just past the record.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The segment files of the log in `data_dir`, in log order.
pub fn segment_files(data_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let log_dir = data_dir.join("log");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&log_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_segment = name
            .strip_suffix(".seg")
            .is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()));
        if is_segment {
            files.push(entry.path());
        }
    }
    // Zero-padded base indexes: name order is log order.
    files.sort();
    Ok(files)
}

/// Every valid record of one segment, up to the zero-filled end; an error
/// if the segment holds anything else (the helpers only damage logs that
/// were intact).
pub fn segment_records(path: &Path) -> io::Result<Vec<RecordSpan>> {
    let data = std::fs::read(path)?;
    let invalid = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    if data.len() < SEGMENT_HEADER_LEN as usize {
        return Err(invalid(format!(
            "{} bytes, shorter than a header",
            data.len()
        )));
    }
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as usize;
    loop {
        match record::decode(&data[offset..]) {
            Decoded::Record(r) => {
                records.push(RecordSpan {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    len: r.encoded_len() as u64,
                    position: r.position,
                });
                offset += r.encoded_len();
            }
            Decoded::End => return Ok(records),
            Decoded::Incomplete if offset == data.len() => return Ok(records),
            Decoded::Incomplete => return Err(invalid(format!("torn record at {offset}"))),
            Decoded::Corrupt(why) => return Err(invalid(format!("at {offset}: {why}"))),
        }
    }
}

/// Every record of the log in `data_dir`, in log order.
pub fn log_records(data_dir: &Path) -> io::Result<Vec<RecordSpan>> {
    let mut all = Vec::new();
    for path in segment_files(data_dir)? {
        all.extend(segment_records(&path)?);
    }
    Ok(all)
}

/// Inverts bit `bit` (0..8) of the byte at `offset`.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) -> io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset)?;
    byte[0] ^= 1 << (bit % 8);
    file.write_all_at(&byte, offset)?;
    file.sync_all()
}

/// Overwrites `[from, to)` with zeros: what a crash leaves in a
/// preallocated segment when only the start of a write reached the disk.
pub fn zero_bytes(path: &Path, from: u64, to: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; (to - from) as usize];
    file.write_all_at(&zeros, from)?;
    file.sync_all()
}

/// Shortens the file to `len` bytes: a torn write at the end of a file
/// that was not preallocated.
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::TestDir;

    #[test]
    fn records_are_found_and_damaged() {
        let dir = TestDir::new("log-files-unit").unwrap();
        let log = dir.subdir("data/log").unwrap();
        let path = log.join(format!("{:020}.seg", 1));
        let mut data = b"USTDYLG1".to_vec();
        data.extend_from_slice(&1u64.to_le_bytes());
        record::encode(&mut data, Position::new(1, 1), b"first");
        record::encode(&mut data, Position::new(1, 2), b"second");
        data.resize(4096, 0);
        std::fs::write(&path, &data).unwrap();
        std::fs::write(log.join("prealloc-1.tmp"), [0u8; 16]).unwrap();

        assert_eq!(
            segment_files(&dir.join("data")).unwrap(),
            vec![path.clone()]
        );
        let records = log_records(&dir.join("data")).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].offset, 16);
        assert_eq!(records[1].offset, records[0].end());
        assert_eq!(records[1].position, Position::new(1, 2));

        flip_bit(&path, records[0].offset + 30, 3).unwrap();
        assert!(segment_records(&path).is_err());
        flip_bit(&path, records[0].offset + 30, 3).unwrap();
        zero_bytes(&path, records[1].offset + 5, records[1].end()).unwrap();
        assert!(segment_records(&path).is_err());
        truncate(&path, records[1].offset).unwrap();
        assert_eq!(segment_records(&path).unwrap().len(), 1);
    }
}
