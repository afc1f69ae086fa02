//! Per-block hashes of a data file, and verified reads.
//!
//! Every data file `<id>` carries its hash list, in its extended attribute [`XATTR`] when the
//! list is at most [`XATTR_MAX`] bytes (objects up to 64 MiB) and the filesystem takes it, else
//! in a sidecar file `<id>.blk`. Either way the encoding is
//! `b"MBLK1\0"` · block size (u32 LE) · file size (u64 LE) · one 32-byte blake3 hash per block.
//! The attribute belongs to the data file's inode, so the file's own fsync makes it durable with
//! the bytes (a sidecar needs one of its own), and hard links (plain snapshots), renames
//! (quarantine) and btrfs snapshots carry it along.
//! Blocks are [`BLOCK`] bytes (the last may be shorter; an empty file has no block). A read
//! verifies every block it touches before any byte of it leaves the node; a range read starts
//! at the first touched block's boundary and verifies only the blocks it covers.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Block size of the hash list.
pub const BLOCK: u64 = 1 << 20;
const MAGIC: &[u8; 6] = b"MBLK1\0";
/// Extended attribute holding a data file's hash list.
pub const XATTR: &str = "user.mobula.blocks";
/// Largest hash list kept in [`XATTR`] (64 blocks; fits ext4's one attribute block and btrfs).
pub const XATTR_MAX: usize = 18 + 32 * 64;

/// The block hashes of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHashes {
    pub block: u64,
    pub size: u64,
    pub hashes: Vec<[u8; 32]>,
}

impl BlockHashes {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + 32 * self.hashes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.block as u32).to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        out
    }

    pub fn decode(b: &[u8]) -> io::Result<BlockHashes> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "corrupt block-hash file");
        if b.len() < 18 || &b[..6] != MAGIC || !(b.len() - 18).is_multiple_of(32) {
            return Err(bad());
        }
        let block = u32::from_le_bytes(b[6..10].try_into().map_err(|_| bad())?) as u64;
        let size = u64::from_le_bytes(b[10..18].try_into().map_err(|_| bad())?);
        let hashes: Vec<[u8; 32]> = b[18..]
            .chunks(32)
            .map(|c| c.try_into().expect("32-byte chunks"))
            .collect();
        if block == 0 || hashes.len() as u64 != size.div_ceil(block) {
            return Err(bad());
        }
        Ok(BlockHashes {
            block,
            size,
            hashes,
        })
    }

    pub fn load(path: &Path) -> io::Result<BlockHashes> {
        Self::decode(&std::fs::read(path)?)
    }

    /// The hash list of the open data file `data`: its attribute, else the sidecar `blk`.
    pub fn of(data: &File, blk: &Path) -> io::Result<BlockHashes> {
        use xattr::FileExt;
        match data.get_xattr(XATTR) {
            Ok(Some(b)) => Self::decode(&b),
            // No attribute (a large file), or a filesystem without user attributes.
            Ok(None) | Err(_) => Self::load(blk),
        }
    }

    /// The hash list of the data file at `data` (its sidecar is `<data>.blk`).
    pub fn stored(data: &Path) -> io::Result<BlockHashes> {
        let mut blk = data.as_os_str().to_owned();
        blk.push(".blk");
        Self::of(&File::open(data)?, Path::new(&blk))
    }

    /// Keep the list in `data`'s attribute when it is small enough and the filesystem takes
    /// it; false means it needs a sidecar.
    pub fn attach(&self, data: &File) -> bool {
        use xattr::FileExt;
        let b = self.encode();
        b.len() <= XATTR_MAX && data.set_xattr(XATTR, &b).is_ok()
    }
}

/// Hashes blocks as bytes stream past.
#[derive(Debug)]
pub struct BlockHasher {
    cur: blake3::Hasher,
    in_block: u64,
    hashes: Vec<[u8; 32]>,
    whole: blake3::Hasher,
    size: u64,
}

impl Default for BlockHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockHasher {
    pub fn new() -> Self {
        BlockHasher {
            cur: blake3::Hasher::new(),
            in_block: 0,
            hashes: Vec::new(),
            whole: blake3::Hasher::new(),
            size: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = ((BLOCK - self.in_block) as usize).min(data.len());
            self.cur.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == BLOCK {
                self.hashes.push(*self.cur.finalize().as_bytes());
                self.cur = blake3::Hasher::new();
                self.in_block = 0;
            }
        }
    }

    /// Hex blake3 of everything so far.
    pub fn whole_hex(&self) -> String {
        self.whole.finalize().to_hex().to_string()
    }

    /// The block hashes and the hex blake3 of the whole.
    pub fn finish(mut self) -> (BlockHashes, String) {
        if self.in_block > 0 {
            self.hashes.push(*self.cur.finalize().as_bytes());
        }
        (
            BlockHashes {
                block: BLOCK,
                size: self.size,
                hashes: self.hashes,
            },
            self.whole.finalize().to_hex().to_string(),
        )
    }
}

/// Reads bytes `start..end` of a file, verifying every touched block first.
#[derive(Debug)]
pub struct VerifiedReader {
    file: File,
    hashes: BlockHashes,
    pos: u64,
    end: u64,
    verify: bool,
}

/// A block failed verification (or the file does not match its hash list).
pub fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl VerifiedReader {
    pub fn open(data: &Path, blk: &Path, start: u64, end: u64) -> io::Result<VerifiedReader> {
        let file = File::open(data)?;
        let hashes = BlockHashes::of(&file, blk)?;
        let len = file.metadata()?.len();
        if len != hashes.size {
            return Err(corrupt(format!(
                "size {len}, hash list says {}",
                hashes.size
            )));
        }
        Ok(VerifiedReader {
            file,
            pos: start,
            end: end.min(hashes.size),
            hashes,
            verify: true,
        })
    }

    /// Skip hash checks (benchmark baseline only: the cost of verification).
    pub fn unverified(mut self) -> Self {
        self.verify = false;
        self
    }

    /// The next verified piece (at most one block), or `None` at the end.
    pub fn next_chunk(&mut self) -> Option<io::Result<bytes::Bytes>> {
        if self.pos >= self.end {
            return None;
        }
        Some(self.read_block())
    }

    /// Each block is read into a buffer of its own, not zeroed first, and handed on whole (or
    /// the range's part of it, without copying): its bytes are copied once, out of the page
    /// cache. (A reused buffer cost a second copy of every byte, out of the buffer.)
    fn read_block(&mut self) -> io::Result<bytes::Bytes> {
        let b = self.hashes.block;
        let idx = self.pos / b;
        let block_start = idx * b;
        let block_len = (self.hashes.size - block_start).min(b) as usize;
        self.file.seek(SeekFrom::Start(block_start))?;
        let mut buf = Vec::with_capacity(block_len);
        (&mut self.file)
            .take(block_len as u64)
            .read_to_end(&mut buf)?;
        if buf.len() != block_len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if self.verify && blake3::hash(&buf).as_bytes() != &self.hashes.hashes[idx as usize] {
            self.pos = self.end;
            return Err(corrupt(format!("block {idx} fails its hash")));
        }
        let from = (self.pos - block_start) as usize;
        let to = ((self.end - block_start) as usize).min(block_len);
        self.pos = block_start + to as u64;
        Ok(bytes::Bytes::from(buf).slice(from..to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_and_reads_verify() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(BLOCK * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let mut h = BlockHasher::new();
        for c in data.chunks(70_000) {
            h.update(c);
        }
        let (bh, whole) = h.finish();
        assert_eq!(whole, blake3::hash(&data).to_hex().to_string());
        assert_eq!(bh.hashes.len(), 3);
        assert_eq!(BlockHashes::decode(&bh.encode()).unwrap(), bh);
        std::fs::write(dir.path().join("d"), &data).unwrap();
        std::fs::write(dir.path().join("d.blk"), bh.encode()).unwrap();
        let read = |a: u64, b: u64| -> io::Result<Vec<u8>> {
            let mut r =
                VerifiedReader::open(&dir.path().join("d"), &dir.path().join("d.blk"), a, b)?;
            let mut out = Vec::new();
            while let Some(c) = r.next_chunk() {
                out.extend(c?);
            }
            Ok(out)
        };
        assert_eq!(read(0, data.len() as u64).unwrap(), data);
        assert_eq!(
            read(BLOCK - 5, BLOCK + 5).unwrap(),
            &data[(BLOCK - 5) as usize..(BLOCK + 5) as usize]
        );
        // Flip a byte in block 1: ranges that avoid it still read; those that touch it fail.
        let mut bad = data.clone();
        bad[(BLOCK + 7) as usize] ^= 1;
        std::fs::write(dir.path().join("d"), &bad).unwrap();
        assert_eq!(read(0, 100).unwrap(), &data[..100]);
        assert_eq!(
            read(BLOCK * 2, BLOCK * 2 + 10).unwrap(),
            &data[(BLOCK * 2) as usize..(BLOCK * 2 + 10) as usize]
        );
        assert_eq!(
            read(BLOCK + 100, BLOCK + 200).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(read(0, data.len() as u64).is_err());
    }
}
