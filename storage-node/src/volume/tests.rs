//! The volume conformance suite, run against both backends (btrfs on a loop-mounted image the
//! harness creates; it needs root and btrfs-progs, see [`super::loopback::for_test`]).

use std::collections::BTreeMap;
use std::path::Path;

use super::loopback;
use crate::api::new_id;
use crate::store::Store;

fn content(id: &str, len: usize) -> Vec<u8> {
    id.bytes().cycle().take(len).collect()
}

fn write(store: &Store, len: usize) -> String {
    let id = new_id();
    let mut w = store.writer(&id, false).unwrap();
    w.write(&content(&id, len)).unwrap();
    w.commit(&id).unwrap();
    id
}

/// Every file in `data/` under `root`, with its contents.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in std::fs::read_dir(root.join("data")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap();
            out.insert(
                f.file_name().to_string_lossy().to_string(),
                std::fs::read(f.path()).unwrap(),
            );
        }
    }
    out
}

fn conformance(node_dir: &Path, expect_kind: &str) {
    let store = Store::open(node_dir).unwrap();
    let vol = store.volume();
    assert_eq!(vol.kind(), expect_kind);
    // Only btrfs and a journaled ext4 are trusted to make a new file's name durable with the
    // file's own fsync (plain_volume_on_ext4_trusts_only_a_journal).
    assert_eq!(
        vol.file_fsync_keeps_its_name(),
        expect_kind == "btrfs" || super::plain::journaled_ext4(vol.root())
    );
    let a = write(&store, 3 << 20);
    let b = write(&store, 10);
    let before = files(vol.root());
    assert_eq!(
        before.len(),
        2,
        "two data files, their hashes in their attributes"
    );

    // Clone within the volume.
    let clone = vol.root().join("clone-of-a");
    vol.clone_file(&store.path(&a), &clone).unwrap();
    assert_eq!(std::fs::read(&clone).unwrap(), content(&a, 3 << 20));
    std::fs::remove_file(&clone).unwrap();

    // A snapshot holds the state at its creation, whatever happens after.
    let snap = vol.snapshot_create("s1").unwrap();
    assert!(vol.snapshot_create("s1").is_err(), "names are unique");
    assert!(vol.snapshot_create("../evil").is_err());
    store.delete(&b).unwrap();
    let c = write(&store, 1000);
    assert_eq!(files(&snap.path), before);
    let list = vol.snapshot_list().unwrap();
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["s1"]
    );

    // Restore brings the live volume back to the snapshot.
    vol.snapshot_restore("s1").unwrap();
    let store = Store::open(node_dir).unwrap();
    assert_eq!(files(store.volume().root()), before);
    assert!(!store.path(&c).exists());
    let mut r = store.reader(&b, 0, 10).unwrap();
    assert_eq!(r.next_chunk().unwrap().unwrap(), content(&b, 10));
    // The hashes came back with the files: a read verifies every block.
    let mut r = store.reader(&a, 0, 3 << 20).unwrap();
    let mut back = Vec::new();
    while let Some(c) = r.next_chunk() {
        back.extend(c.unwrap());
    }
    assert_eq!(back, content(&a, 3 << 20));

    store.volume().snapshot_delete("s1").unwrap();
    assert!(store.volume().snapshot_list().unwrap().is_empty());
    assert!(store.volume().snapshot_delete("s1").is_err());
}

/// A snapshot taken while 16 writers stream files in holds only whole files whose hashes verify.
fn snapshot_under_load(node_dir: &Path) {
    let store = Store::open(node_dir).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = new_id();
                    let body = content(&id, 300_000 + i * 1000);
                    let mut w = store.writer(&id, false).unwrap();
                    for piece in body.chunks(4096) {
                        w.write(piece).unwrap();
                    }
                    w.commit(&id).unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let snap = store.volume().snapshot_create("busy").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let in_snap = files(&snap.path);
    let ids: Vec<&String> = in_snap.keys().filter(|k| !k.ends_with(".blk")).collect();
    assert!(!ids.is_empty());
    for id in ids {
        let data = &in_snap[id];
        assert_eq!(data, &content(id, data.len()), "{id} is whole");
        let file = snap.path.join("data").join(&id[..2]).join(id);
        let blk = crate::blocks::BlockHashes::stored(&file).unwrap();
        assert_eq!(blk.size, data.len() as u64);
        let mut h = crate::blocks::BlockHasher::new();
        h.update(data);
        assert_eq!(h.finish().0, blk, "{id} verifies");
    }
    store.volume().snapshot_delete("busy").unwrap();
}

#[test]
fn plain_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(
        dir.path(),
        if super::btrfs::is_btrfs(dir.path()) {
            "btrfs"
        } else {
            "plain"
        },
    );
    let dir = tempfile::tempdir().unwrap();
    snapshot_under_load(dir.path());
}

#[test]
fn btrfs_backend_conforms() {
    let Some(fs) = loopback::for_test(1 << 30) else {
        return;
    };
    conformance(&fs.mountpoint.join("node"), "btrfs");
    snapshot_under_load(&fs.mountpoint.join("node2"));
}

/// A plain volume links a new file first and fsyncs it once on ext4 with a journal (whose commit
/// carries the link with the inode), and keeps the portable sequence on ext4 without one (which
/// syncs the inode alone); both conform.
#[test]
fn plain_volume_on_ext4_trusts_only_a_journal() {
    for (features, journaled) in [("has_journal", true), ("^has_journal", false)] {
        let Some(fs) = loopback::TempExt4::for_test(features) else {
            return;
        };
        assert_eq!(super::plain::journaled_ext4(&fs.mountpoint), journaled);
        let store = Store::open(&fs.mountpoint.join("node")).unwrap();
        assert_eq!(store.volume().kind(), "plain");
        assert_eq!(
            store.volume().file_fsync_keeps_its_name(),
            journaled,
            "{features}"
        );
        conformance(&fs.mountpoint.join("node2"), "plain");
        snapshot_under_load(&fs.mountpoint.join("node3"));
    }
}
