//! Block lists, one-pass hashing and verified reads.

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
        let mut r = VerifiedReader::open(&dir.path().join("d"), &dir.path().join("d.blk"), a, b)?;
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

    // A list written before (`MBLK1`: each block hashed on its own) still reads and verifies.
    let alone = BlockHashes {
        hashes: data
            .chunks(BLOCK as usize)
            .map(|b| *blake3::hash(b).as_bytes())
            .collect(),
        alone: true,
        ..bh.clone()
    };
    assert_eq!(&alone.encode()[..6], b"MBLK1\0");
    assert_eq!(BlockHashes::decode(&alone.encode()).unwrap(), alone);
    std::fs::write(dir.path().join("d.blk"), alone.encode()).unwrap();
    assert_eq!(read(0, 100).unwrap(), &data[..100]);
    assert!(read(BLOCK + 100, BLOCK + 200).is_err());
    std::fs::write(dir.path().join("d"), &data).unwrap();
    assert_eq!(read(0, data.len() as u64).unwrap(), data);
}

#[test]
fn one_pass_gives_the_list_and_the_files_blake3() {
    for len in [
        0,
        1,
        1000,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        2 * BLOCK,
        3 * BLOCK + 7,
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut h = BlockHasher::new();
        for c in data.chunks(300_000) {
            h.update(c);
            assert_eq!(
                h.whole_hex(),
                blake3::hash(&data[..h.size as usize]).to_hex().to_string()
            );
        }
        let (list, whole) = h.finish();
        assert_eq!(
            whole,
            blake3::hash(&data).to_hex().to_string(),
            "{len} bytes"
        );
        assert_eq!(&list.encode()[..6], b"MBLK2\0");
        let n = list.hashes.len() as u64;
        assert_eq!(n, len.div_ceil(BLOCK));
        for (i, b) in data.chunks(BLOCK as usize).enumerate() {
            assert!(list.verifies(i as u64, b), "block {i} of {len} bytes");
            let mut bad = b.to_vec();
            bad[0] ^= 1;
            assert!(!list.verifies(i as u64, &bad));
        }
    }
}

#[test]
fn the_attribute_is_read_in_one_call_and_a_longer_one_by_its_size() {
    use xattr::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d");
    std::fs::write(&p, b"x").unwrap();
    let f = File::open(&p).unwrap();
    let list = |blocks: u64| BlockHashes {
        block: BLOCK,
        size: BLOCK * blocks,
        hashes: (0..blocks).map(|i| [i as u8; 32]).collect(),
        alone: false,
    };
    let small = list(1);
    if !small.attach(&f) {
        eprintln!("skipped: the temp dir's filesystem takes no user attributes");
        return;
    }
    assert_eq!(BlockHashes::in_attribute(&f), Some(small.clone()));
    let blk = dir.path().join("d.blk");
    assert_eq!(BlockHashes::of(&f, &blk).unwrap(), small);
    // The largest list written in the attribute fills the buffer exactly.
    let largest = list(64);
    assert_eq!(largest.encode().len(), XATTR_MAX);
    assert!(largest.attach(&f));
    assert_eq!(BlockHashes::in_attribute(&f), Some(largest));
    // One longer than that (never written so) is still read, by its size.
    let longer = list(65);
    if f.set_xattr(XATTR, &longer.encode()).is_ok() {
        assert_eq!(BlockHashes::in_attribute(&f), Some(longer));
    }
    // A corrupt attribute: no list in place, and an error (not the sidecar) for `of`.
    std::fs::write(&blk, small.encode()).unwrap();
    f.set_xattr(XATTR, b"MBLK2\0junk").unwrap();
    assert_eq!(BlockHashes::in_attribute(&f), None);
    assert!(BlockHashes::of(&f, &blk).is_err());
    // No attribute at all: the sidecar.
    f.remove_xattr(XATTR).unwrap();
    assert_eq!(BlockHashes::in_attribute(&f), None);
    assert_eq!(BlockHashes::of(&f, &blk).unwrap(), small);
}
