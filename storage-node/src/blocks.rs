//! Per-block hashes of a data file, and verified reads.
//!
//! Every data file `<id>` carries its hash list, in its extended attribute [`XATTR`] when the
//! list is at most [`XATTR_MAX`] bytes (objects up to 64 MiB) and the filesystem takes it, else
//! in a sidecar file `<id>.blk`. Either way the encoding is
//! `b"MBLK2\0"` · block size (u32 LE) · file size (u64 LE) · one 32-byte blake3 hash per block,
//! each block's node in the file's own blake3 tree (`tree.rs`: the file's blake3 follows from
//! the list, so a write hashes its bytes once). Lists written before are `MBLK1`, each block
//! hashed on its own; they are read and verified as they were written.
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
/// A list of the blocks' nodes in the file's blake3 tree (written now).
const MAGIC: &[u8; 6] = b"MBLK2\0";
/// A list of each block's blake3 on its own (written before; still read).
const MAGIC_ALONE: &[u8; 6] = b"MBLK1\0";
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
    /// Each block hashed on its own (an `MBLK1` list), not as a node of the file's tree.
    pub alone: bool,
}

impl BlockHashes {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + 32 * self.hashes.len());
        out.extend_from_slice(if self.alone { MAGIC_ALONE } else { MAGIC });
        out.extend_from_slice(&(self.block as u32).to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        out
    }

    pub fn decode(b: &[u8]) -> io::Result<BlockHashes> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "corrupt block-hash file");
        if b.len() < 18 || !(b.len() - 18).is_multiple_of(32) {
            return Err(bad());
        }
        let alone = match &b[..6] {
            m if m == MAGIC => false,
            m if m == MAGIC_ALONE => true,
            _ => return Err(bad()),
        };
        let block = u32::from_le_bytes(b[6..10].try_into().map_err(|_| bad())?) as u64;
        let size = u64::from_le_bytes(b[10..18].try_into().map_err(|_| bad())?);
        let hashes: Vec<[u8; 32]> = b[18..]
            .chunks(32)
            .map(|c| c.try_into().expect("32-byte chunks"))
            .collect();
        if block == 0 || (!alone && !crate::tree::fits(block)) {
            return Err(bad());
        }
        if hashes.len() as u64 != size.div_ceil(block) {
            return Err(bad());
        }
        Ok(BlockHashes {
            block,
            size,
            hashes,
            alone,
        })
    }

    /// Whether `data` is block `idx` as the list says.
    pub fn verifies(&self, idx: u64, data: &[u8]) -> bool {
        let n = self.hashes.len() as u64;
        let got = if self.alone {
            *blake3::hash(data).as_bytes()
        } else {
            crate::tree::hash_block(data, idx, n, self.block)
        };
        self.hashes.get(idx as usize) == Some(&got)
    }

    pub fn load(path: &Path) -> io::Result<BlockHashes> {
        Self::decode(&std::fs::read(path)?)
    }

    /// The hash list of the open data file `data`: its attribute, else the sidecar `blk`.
    pub fn of(data: &File, blk: &Path) -> io::Result<BlockHashes> {
        match Self::from_attribute(data) {
            Some(list) => list,
            // No attribute (a large file), or a filesystem without user attributes.
            None => Self::load(blk),
        }
    }

    /// The hash list in the open data file's attribute, if it is there and well formed.
    pub fn in_attribute(data: &File) -> Option<BlockHashes> {
        Self::from_attribute(data)?.ok()
    }

    /// `data`'s attribute decoded; `None` when there is none to read. One `fgetxattr` into a
    /// buffer of [`XATTR_MAX`] bytes (no size query first: a small GET reads it); a longer
    /// attribute (never written so) is read by its size.
    fn from_attribute(data: &File) -> Option<io::Result<BlockHashes>> {
        let mut buf = [0u8; XATTR_MAX];
        match rustix::fs::fgetxattr(data, XATTR, &mut buf[..]) {
            Ok(n) => Some(Self::decode(&buf[..n])),
            Err(rustix::io::Errno::RANGE) => {
                use xattr::FileExt;
                Some(Self::decode(&data.get_xattr(XATTR).ok()??))
            }
            Err(_) => None,
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

/// Hashes blocks as bytes stream past, each once: the block list (`MBLK2`) and the file's
/// blake3 (its root) come from the same pass.
#[derive(Debug)]
pub struct BlockHasher {
    /// The block being hashed (block `hashes.len()`).
    cur: blake3::Hasher,
    in_block: u64,
    /// Nodes of the blocks done — block 0's as a subtree; see `first`.
    hashes: Vec<[u8; 32]>,
    /// Block 0's hasher once done: if it stays the only block, its node is the root.
    first: Option<blake3::Hasher>,
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
            cur: crate::tree::hasher(0, BLOCK),
            in_block: 0,
            hashes: Vec::new(),
            first: None,
            size: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = ((BLOCK - self.in_block) as usize).min(data.len());
            self.cur.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == BLOCK {
                let next = crate::tree::hasher(self.hashes.len() as u64 + 1, BLOCK);
                let done = std::mem::replace(&mut self.cur, next);
                self.hashes.push(crate::tree::node(&done, false));
                if self.hashes.len() == 1 {
                    self.first = Some(done);
                }
                self.in_block = 0;
            }
        }
    }

    /// The nodes of the bytes so far.
    fn nodes(&self) -> Vec<[u8; 32]> {
        let mut nodes = self.hashes.clone();
        if self.in_block > 0 {
            nodes.push(crate::tree::node(&self.cur, nodes.is_empty()));
        } else if let ([_], Some(first)) = (&nodes[..], &self.first) {
            nodes[0] = crate::tree::node(first, true);
        }
        nodes
    }

    /// Hex blake3 of everything so far.
    pub fn whole_hex(&self) -> String {
        crate::tree::root(&self.nodes()).to_hex().to_string()
    }

    /// The block hashes and the hex blake3 of the whole.
    pub fn finish(self) -> (BlockHashes, String) {
        let hashes = self.nodes();
        let whole = crate::tree::root(&hashes).to_hex().to_string();
        let list = BlockHashes {
            block: BLOCK,
            size: self.size,
            hashes,
            alone: false,
        };
        (list, whole)
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

    /// The file's blake3 as its list says (a tree list only): once every block has read and
    /// verified, that is the blake3 of the bytes read.
    pub fn root(&self) -> Option<blake3::Hash> {
        (!self.hashes.alone).then(|| crate::tree::root(&self.hashes.hashes))
    }

    /// Skip hash checks (benchmark baseline only: the cost of verification).
    pub fn unverified(mut self) -> Self {
        self.verify = false;
        self
    }

    /// The whole range verified in one buffer: a range within one block is that block's
    /// chunk as it is (no copy); one across blocks joins them.
    pub fn read_all(&mut self) -> io::Result<bytes::Bytes> {
        let mut out = self.next_chunk().transpose()?.unwrap_or_default();
        while let Some(more) = self.next_chunk() {
            out = [out, more?].concat().into();
        }
        Ok(out)
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
        if self.verify && !self.hashes.verifies(idx, &buf) {
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
#[path = "blocks_tests.rs"]
mod tests;
