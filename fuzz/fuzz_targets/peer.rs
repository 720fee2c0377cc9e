//! The hostile peer of the fuzz targets that run a live channel: the
//! region file opened a second time, and the writes a buggy or malicious
//! process could make to it between the channel's operations. Each target
//! names the 8-byte fields its kind of region uses; the input picks the
//! field and the value.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// How a step writes.
pub enum Write {
    /// A raw 8-byte value into a field (1 + 8 input bytes).
    Raw,
    /// One field's value, plus a small delta, into another (3 bytes).
    Copy,
    /// A delta added to a field, shifted by the top 3 bits of the step's
    /// byte (2 bytes).
    Delta,
    /// One byte anywhere in the file (3 bytes).
    Stray,
}

pub struct Peer {
    file: File,
    size: u64,
    fields: Vec<u64>,
}

impl Peer {
    /// The region file at `path`, with no fields yet.
    pub fn open(path: &str) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let size = file.metadata().unwrap().len();
        Self {
            file,
            size,
            fields: Vec::new(),
        }
    }

    /// The fields (byte offsets of 8-byte words) a step may write.
    pub fn with_fields(mut self, fields: Vec<u64>) -> Self {
        self.fields = fields;
        self
    }

    /// The 8-byte word at `off`.
    pub fn read(&self, off: u64) -> u64 {
        let mut v = [0u8; 8];
        self.file.read_exact_at(&mut v, off).unwrap();
        u64::from_le_bytes(v)
    }

    fn store(&self, off: u64, v: u64) {
        self.file.write_all_at(&v.to_le_bytes(), off).unwrap();
    }

    fn field(&self, b: u8) -> u64 {
        self.fields[usize::from(b) % self.fields.len()]
    }

    /// One write, its arguments taken from `it`; `false` if the input
    /// ended first (the target stops).
    pub fn write(&self, how: Write, op: u8, it: &mut impl Iterator<Item = u8>) -> bool {
        match how {
            Write::Raw => {
                let Some(f) = it.next() else { return false };
                let mut v = [0u8; 8];
                for b in &mut v {
                    *b = it.next().unwrap_or(0);
                }
                self.store(self.field(f), u64::from_le_bytes(v));
            }
            Write::Copy => {
                let (Some(src), Some(dst), Some(d)) = (it.next(), it.next(), it.next()) else {
                    return false;
                };
                let v = self
                    .read(self.field(src))
                    .wrapping_add_signed(i64::from(d as i8));
                self.store(self.field(dst), v);
            }
            Write::Delta => {
                let (Some(f), Some(d)) = (it.next(), it.next()) else {
                    return false;
                };
                let off = self.field(f);
                let v = self
                    .read(off)
                    .wrapping_add_signed(i64::from(d as i8) << (op >> 5));
                self.store(off, v);
            }
            Write::Stray => {
                let (Some(a), Some(b), Some(v)) = (it.next(), it.next(), it.next()) else {
                    return false;
                };
                let off = u64::from(u16::from_le_bytes([a, b])) % self.size;
                self.file.write_all_at(&[v], off).unwrap();
            }
        }
        true
    }
}
