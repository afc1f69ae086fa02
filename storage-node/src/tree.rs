//! A data file's blocks as nodes of the file's own blake3 tree (hash lists `MBLK2`): block `i`
//! of a file of more than one block is hashed as the subtree of the file's blake3 tree that
//! starts at byte `i · block` (its chaining value, from `blake3::hazmat`), and the block of a
//! one-block file as the file itself (its root hash). So a file's blake3 — what metadata records
//! and every copy is checked against — follows from its list by merging parents, with no second
//! pass over the bytes, and a block is still verified by hashing that block alone.
//!
//! Invariant: the block size is a power of two and at least blake3's 1 KiB chunk, so block
//! boundaries are boundaries of blake3's subtrees: the left subtree of `n ≥ 2` blocks holds
//! the largest power of two of blocks below `n`.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

/// Whether `block` can be a block size of a tree list.
pub fn fits(block: u64) -> bool {
    block.is_power_of_two() && block >= blake3::CHUNK_LEN as u64
}

/// A fresh hasher for block `idx` of `block`-byte blocks.
pub fn hasher(idx: u64, block: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    if idx > 0 {
        h.set_input_offset(idx * block);
    }
    h
}

/// The node of a block whose bytes `h` took (from [`hasher`]); `alone` when the file is just
/// that block.
pub fn node(h: &blake3::Hasher, alone: bool) -> [u8; 32] {
    if alone {
        *h.finalize().as_bytes()
    } else {
        h.finalize_non_root()
    }
}

/// The node of block `idx` (bytes `data`) of a file of `n` blocks.
pub fn hash_block(data: &[u8], idx: u64, n: u64, block: u64) -> [u8; 32] {
    let mut h = hasher(idx, block);
    h.update(data);
    node(&h, n == 1)
}

/// The file's blake3 from its nodes.
pub fn root(nodes: &[[u8; 32]]) -> blake3::Hash {
    match nodes {
        [] => blake3::hash(b""),
        [one] => (*one).into(),
        _ => {
            let l = left(nodes.len());
            merge_subtrees_root(&parent(&nodes[..l]), &parent(&nodes[l..]), Mode::Hash)
        }
    }
}

/// The chaining value of the subtree over `nodes` (at least one).
fn parent(nodes: &[[u8; 32]]) -> [u8; 32] {
    if let [one] = nodes {
        return *one;
    }
    let l = left(nodes.len());
    merge_subtrees_non_root(&parent(&nodes[..l]), &parent(&nodes[l..]), Mode::Hash)
}

/// The largest power of two below `n` (`n ≥ 2`).
fn left(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_of_the_nodes_is_the_files_blake3() {
        let block = 4096u64;
        let data: Vec<u8> = (0..block as usize * 9 + 77)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let sizes = [0, 1, 1024, 1025, 4095, 4096, 4097, 8192, 8193, 12288, 20000];
        let more = (1..=9).flat_map(|k| [k * block as usize - 1, k * block as usize]);
        for len in sizes.into_iter().chain(more).chain([data.len()]) {
            let file = &data[..len];
            let n = len.div_ceil(block as usize) as u64;
            let nodes: Vec<[u8; 32]> = file
                .chunks(block as usize)
                .enumerate()
                .map(|(i, b)| hash_block(b, i as u64, n, block))
                .collect();
            assert_eq!(root(&nodes), blake3::hash(file), "{len} bytes");
        }
        assert_eq!(
            [left(2), left(3), left(4), left(5), left(8), left(9)],
            [1, 2, 2, 4, 4, 8]
        );
        assert!(fits(1 << 20) && fits(1024) && !fits(512) && !fits(3 << 20));
    }
}
