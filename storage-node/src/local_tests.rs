//! Tests of the in-process data path against real store files (nothing listens at the URL).
use std::io::{Seek, SeekFrom, Write};

use futures::TryStreamExt;

use super::*;

/// Nothing listens here: whatever answers for this URL answered from the store.
pub(super) const NOWHERE: &str = "http://127.0.0.1:9";

fn stored(store: &Store, bytes: &[u8]) -> String {
    let id = crate::api::new_id();
    let mut w = store.writer(&id, false).unwrap();
    w.write(bytes).unwrap();
    w.commit(&id).unwrap();
    id
}

async fn read(data: &LocalFirst, id: &str, range: Option<(u64, u64)>) -> Vec<u8> {
    let opened = data.open(NOWHERE, id, range).await.unwrap();
    let chunks: Vec<bytes::Bytes> = opened.stream.try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test]
async fn reads_come_from_the_store_of_a_node_in_this_process_and_stop_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
    let id = stored(&store, &bytes);
    let local = LocalNodes::default();
    let data = LocalFirst::new(local.clone());
    let (bad_tx, mut bad_rx) = tokio::sync::mpsc::unbounded_channel();
    let registered = local.register(NOWHERE, store.clone(), bad_tx);
    assert!(local.contains(NOWHERE));

    let opened = data.open(NOWHERE, &id, None).await.unwrap();
    assert_eq!(opened.size, Some(bytes.len() as u64));
    drop(opened);
    assert_eq!(read(&data, &id, None).await, bytes);
    // Streamed ranges, and small ones read at once (within a block, or across a boundary).
    for (a, b) in [
        ((1 << 20) - 3, (2 << 20) + 9),
        (5, 90),
        ((2 << 20) - 7, (2 << 20) + 6),
    ] {
        assert_eq!(
            read(&data, &id, Some((a, b))).await,
            &bytes[a as usize..=b as usize]
        );
    }

    // The node's own errors, as GET /data/:id gives them.
    let past = bytes.len() as u64;
    let e = data
        .open(NOWHERE, &id, Some((past, past + 1)))
        .await
        .err()
        .unwrap();
    assert_eq!(
        e.answered().unwrap().code,
        Code::RequestedRangeNotSatisfiable
    );
    let e = data
        .open(NOWHERE, &crate::api::new_id(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.answered().unwrap().code, Code::ResourceNotFound);
    assert!(!e.is_node_fault());

    // A flipped byte in the second block: the first block is served, then the stream
    // breaks (the gateway goes on from another copy) and the node hears of the bad copy.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(store.path(&id))
        .unwrap();
    f.seek(SeekFrom::Start((1 << 20) + 7)).unwrap();
    f.write_all(&[bytes[(1 << 20) + 7] ^ 1]).unwrap();
    drop(f);
    let mut stream = data.open(NOWHERE, &id, None).await.unwrap().stream;
    let first = stream.try_next().await.unwrap().unwrap();
    assert_eq!(&first[..], &bytes[..first.len()]);
    let mut broke = None;
    while let Some(r) = stream.next().await {
        if let Err(e) = r {
            broke = Some(e);
            break;
        }
    }
    assert!(
        broke.is_some_and(|e| e.is_node_fault()),
        "the bad block is never served"
    );
    assert_eq!(bad_rx.recv().await.as_deref(), Some(id.as_str()));

    // Once the node stops, its URL is just a URL: nothing answers there, and a read that
    // was streaming from it breaks at its next block.
    let id = stored(&store, &bytes);
    let mut streaming = data.open(NOWHERE, &id, None).await.unwrap().stream;
    assert!(streaming.try_next().await.unwrap().is_some());
    drop(registered);
    let mut stopped = false;
    while let Some(r) = streaming.next().await {
        if r.is_err() {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "a read from a stopped node breaks");
    assert!(!local.contains(NOWHERE));
    let e = data.open(NOWHERE, &id, None).await.err().unwrap();
    assert!(matches!(e, NodeError::Unreachable(_)), "{e}");
}

fn body(chunks: Vec<Result<bytes::Bytes, std::io::Error>>) -> BodyStream {
    Box::pin(futures::stream::iter(chunks))
}

#[tokio::test]
async fn writes_go_into_the_store_with_the_nodes_own_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let local = LocalNodes::default();
    let data = LocalFirst::new(local.clone());
    let (bad_tx, _bad_rx) = tokio::sync::mpsc::unbounded_channel();
    let registered = local.register(NOWHERE, store.clone(), bad_tx);
    let files = || store.ids().unwrap().len();

    // Streamed bodies, and small ones written at once (`WRITE_AT_ONCE`), keep the same rules.
    for (kept, len) in [(2 << 20) + 3, 4096, crate::write::WRITE_AT_ONCE]
        .into_iter()
        .enumerate()
    {
        let bytes = bytes::Bytes::from(vec![7u8; len]);
        let md5 = {
            use md5::Digest;
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                md5::Md5::digest(&bytes),
            )
        };
        let id = crate::api::new_id();
        let halves = vec![Ok(bytes.slice(..1000)), Ok(bytes.slice(1000..))];
        let w = data
            .put(NOWHERE, &id, body(halves), Some(&md5))
            .await
            .unwrap();
        assert_eq!((w.size, w.md5.as_str()), (bytes.len() as u64, md5.as_str()));
        assert_eq!(w.blake3, blake3::hash(&bytes).to_hex().to_string());
        assert_eq!(read(&data, &id, None).await, bytes);
        assert_eq!(files(), kept + 1);

        // A wrong MD5 is the node's answer, and nothing is kept.
        let e = data
            .put(
                NOWHERE,
                &crate::api::new_id(),
                body(vec![Ok(bytes.clone())]),
                Some("AAAA"),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(e.answered().unwrap().code, Code::ContentMD5Mismatch);
        // The caller's abort is nobody's fault; a body that breaks otherwise is a broken
        // connection, as over HTTP. Neither leaves a file.
        let aborted = vec![Ok(bytes.clone()), Err(std::io::Error::other(UploadAborted))];
        let e = data
            .put(NOWHERE, &crate::api::new_id(), body(aborted), None)
            .await;
        assert!(matches!(e, Err(NodeError::Aborted)));
        let reset = vec![Ok(bytes.clone()), Err(std::io::Error::other("reset"))];
        let e = data
            .put(NOWHERE, &crate::api::new_id(), body(reset), None)
            .await;
        assert!(matches!(e, Err(NodeError::Unreachable(_))));
        assert_eq!(files(), kept + 1);
    }

    drop(registered);
    let e = data
        .put(NOWHERE, &crate::api::new_id(), body(vec![]), None)
        .await;
    assert!(
        matches!(e, Err(NodeError::Unreachable(_))),
        "stopped: over HTTP"
    );
}
