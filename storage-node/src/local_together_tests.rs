//! Tests of writing every copy on one call (the gateway's small PUT, a job agent's output)
//! against real loop-mounted ext4 and btrfs images.
use futures::TryStreamExt;

use super::tests::NOWHERE;
use super::*;
use crate::volume::loopback::{self, TempBtrfs, TempExt4};

fn store(dir: &std::path::Path, name: &str) -> Store {
    Store::open(&dir.join(name)).unwrap()
}

/// Two nodes of this process on `dir`: their stores, where they are registered, and their
/// URLs (`http://<name>.invalid`); each stays registered while its `Registered` lives.
struct TwoNodes {
    stores: [Store; 2],
    local: LocalNodes,
    registered: [Registered; 2],
    urls: Vec<String>,
    bad: tokio::sync::mpsc::UnboundedSender<String>,
    /// Where the nodes report bad copies (kept open, as a node's supervisor keeps it).
    reported: tokio::sync::mpsc::UnboundedReceiver<String>,
}

fn two_nodes(dir: &std::path::Path, names: [&str; 2]) -> TwoNodes {
    let local = LocalNodes::default();
    let (bad, reported) = tokio::sync::mpsc::unbounded_channel();
    let stores = names.map(|n| store(dir, n));
    let urls: Vec<String> = names
        .iter()
        .map(|n| format!("http://{n}.invalid"))
        .collect();
    let registered = [0, 1].map(|i| local.register(&urls[i], stores[i].clone(), bad.clone()));
    TwoNodes {
        stores,
        local,
        registered,
        urls,
        bad,
        reported,
    }
}

/// Volumes that share no journal with a first ext4 image: a second journaled ext4, one
/// without a journal, a btrfs (which logs each subvolume on its own) — or `None`, skipped.
fn elsewhere() -> Option<(TempExt4, TempExt4, TempBtrfs)> {
    let second = TempExt4::for_test("has_journal")?;
    let unjournaled = TempExt4::for_test("^has_journal")?;
    Some((second, unjournaled, loopback::for_test(1 << 30)?))
}

/// Small copies to nodes of this process on volumes of one journal are written, linked and
/// fsync'd on one call; a copy that cannot be written fails alone and leaves nothing; nodes
/// elsewhere, stopped, or on volumes that do not share a journal are not offered the call.
#[tokio::test]
async fn copies_on_one_journal_are_written_together() {
    let Some(fs) = TempExt4::for_test("has_journal") else {
        return;
    };
    let TwoNodes {
        stores: [a, b],
        local,
        registered: [_ra, rb],
        urls,
        bad: tx,
        reported: _bad,
    } = two_nodes(&fs.mountpoint, ["a", "b"]);
    let data = LocalFirst::new(local.clone());
    assert!(data.can_put_together(&urls));

    let id = crate::api::new_id();
    let body = vec![
        bytes::Bytes::from_static(b"hello "),
        bytes::Bytes::from_static(b"together"),
    ];
    let answers = data.put_together(&urls, &id, body.clone()).unwrap().await;
    let hash = blake3::hash(b"hello together").to_hex().to_string();
    for (answer, url) in answers.iter().zip(&urls) {
        let w = answer.as_ref().unwrap();
        assert_eq!((w.size, &w.blake3), (14, &hash));
        let chunks: Vec<bytes::Bytes> = data
            .open(url, &id, None)
            .await
            .unwrap()
            .stream
            .try_collect()
            .await
            .unwrap();
        assert_eq!(chunks.concat(), b"hello together");
    }

    // b cannot write this id (its directory is gone): that copy fails alone, nothing of it left.
    let other = loop {
        let i = crate::api::new_id();
        if i[..2] != id[..2] {
            break i;
        }
    };
    let gone = b.path(&other).parent().unwrap().to_path_buf();
    std::fs::remove_dir(&gone).unwrap();
    let answers = data
        .put_together(&urls, &other, body.clone())
        .unwrap()
        .await;
    assert_eq!(answers[0].as_ref().unwrap().blake3, hash);
    let e = answers[1].as_ref().unwrap_err();
    assert!(e.answered().is_some() && !e.is_node_fault(), "{e}");
    assert!(a.path(&other).exists() && !gone.exists());
    let held: Vec<String> = b.ids().unwrap().into_iter().map(|(i, _)| i).collect();
    assert_eq!(held, vec![id.clone()]);
    std::fs::create_dir(&gone).unwrap();

    // Not offered: a node not in this process; a stopped one; volumes of another journal,
    // of none, or on btrfs (which logs each subvolume on its own).
    assert!(!data.can_put_together(&[urls[0].clone(), NOWHERE.to_string()]));
    assert!(data
        .put_together(&[urls[0].clone(), NOWHERE.to_string()], &id, body.clone())
        .is_none());
    drop(rb);
    assert!(!data.can_put_together(&urls));
    let Some((second, unjournaled, btrfs)) = elsewhere() else {
        return;
    };
    for dir in [
        &second.mountpoint,
        &unjournaled.mountpoint,
        &btrfs.mountpoint,
    ] {
        let _r = local.register(&urls[1], store(dir, "b"), tx.clone());
        assert!(!data.can_put_together(&urls), "{}", dir.display());
    }
    let _r = local.register(&urls[1], store(&unjournaled.mountpoint, "c"), tx.clone());
    let _s = local.register(&urls[0], store(&unjournaled.mountpoint, "d"), tx.clone());
    assert!(!data.can_put_together(&urls), "no journal, no sharing");
}

/// A job agent's output committed with its peers' copies on one call: every copy durable and
/// the same bytes; a peer's copy that fails or differs leaves nothing there; nothing is written
/// to a peer when the own copy cannot be linked; stores offered only when they share the own
/// copy's journal and their nodes run in this process now.
#[test]
fn an_agents_output_is_committed_with_its_peers_copies() {
    let Some(fs) = TempExt4::for_test("has_journal") else {
        return;
    };
    let own = store(&fs.mountpoint, "own");
    let TwoNodes {
        stores: [b, c],
        local,
        registered: [_rb, rc],
        urls,
        bad: tx,
        reported: _bad,
    } = two_nodes(&fs.mountpoint, ["b", "c"]);
    let peers = local.sharing_journal(&own, &urls).expect("one journal");
    assert_eq!(peers.len(), 2);

    let output = |id: &str, bytes: &[u8]| {
        let mut w = own.writer(id, true).unwrap();
        w.write(bytes).unwrap();
        w
    };
    let whole = [bytes::Bytes::from_static(b"42 words\n")];
    let hash = blake3::hash(b"42 words\n").to_hex().to_string();
    let id = crate::api::new_id();
    let (mine, copies) = crate::commit_with_copies(output(&id, b"42 words\n"), &id, &whole, &peers);
    let mine = mine.unwrap();
    assert_eq!((mine.size, &mine.blake3), (9, &hash));
    assert!(mine.md5.is_some());
    for (copy, s) in copies.iter().zip([&b, &c]) {
        assert_eq!(copy.as_ref().unwrap().blake3, hash);
        assert_eq!(std::fs::read(s.path(&id)).unwrap(), b"42 words\n");
        assert_eq!(crate::scrub::verified_hash(s, &id).unwrap().blake3, hash);
    }
    assert_eq!(std::fs::read(own.path(&id)).unwrap(), b"42 words\n");

    // Bytes kept that are not what was written: the peers' copies are refused and removed.
    let id = crate::api::new_id();
    let (mine, copies) = crate::commit_with_copies(output(&id, b"other"), &id, &whole, &peers);
    assert!(mine.is_ok() && copies.iter().all(Result::is_err));
    assert!(!b.path(&id).exists() && !c.path(&id).exists() && own.path(&id).exists());

    // c cannot write this id (its directory is gone): that copy fails alone.
    let id = crate::api::new_id();
    let gone = c.path(&id).parent().unwrap().to_path_buf();
    let c_held = c.ids().unwrap().len();
    std::fs::rename(&gone, fs.mountpoint.join("aside")).unwrap();
    let (mine, copies) = crate::commit_with_copies(output(&id, b"42 words\n"), &id, &whole, &peers);
    assert!(mine.is_ok() && copies[0].is_ok() && copies[1].is_err());
    std::fs::rename(fs.mountpoint.join("aside"), &gone).unwrap();
    assert_eq!(c.ids().unwrap().len(), c_held);

    // The own copy cannot be linked: nothing is written to any peer.
    let id = crate::api::new_id();
    let w = output(&id, b"42 words\n");
    let mine_dir = own.path(&id).parent().unwrap().to_path_buf();
    std::fs::rename(&mine_dir, fs.mountpoint.join("aside")).unwrap();
    let (mine, copies) = crate::commit_with_copies(w, &id, &whole, &peers);
    assert!(mine.is_err() && copies.is_empty());
    std::fs::rename(fs.mountpoint.join("aside"), &mine_dir).unwrap();
    assert!(!b.path(&id).exists() && !c.path(&id).exists() && !own.path(&id).exists());

    // Not offered: a node not in this process, a stopped one, or another journal, none, btrfs.
    assert!(local
        .sharing_journal(&own, &[NOWHERE.to_string()])
        .is_none());
    drop(rc);
    assert!(local.sharing_journal(&own, &urls).is_none());
    assert!(local.sharing_journal(&own, &urls[..1]).is_some());
    let Some((second, unjournaled, btrfs)) = elsewhere() else {
        return;
    };
    assert!(local
        .sharing_journal(&store(&second.mountpoint, "own"), &urls[..1])
        .is_none());
    for dir in [&unjournaled.mountpoint, &btrfs.mountpoint] {
        let _r = local.register(&urls[1], store(dir, "c"), tx.clone());
        let mine = store(dir, "own");
        assert!(
            local.sharing_journal(&mine, &urls[1..]).is_none(),
            "{}",
            dir.display()
        );
    }
}
