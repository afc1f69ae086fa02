//! A done job's record as objects (SPEC §4): `/:account/jobs/:id/{job.json, in.txt, out.txt,
//! err.txt, fail.txt}`, each written to two healthy nodes (fsync'd) before it is committed.
//! Rewriting them is harmless, so a coordinator that dies between archiving and marking the
//! job done just archives again.

use base64::Engine;
use bytes::Bytes;
use md5::Digest;
use mobula_http::{ApiError, Code};
use mobula_metadata::api::{Data, JobRecords, PutObject};
use mobula_metadata::MetadataClient;
use mobula_storage_node::api::new_id;
use mobula_storage_node::NodeClient;
use rand::seq::SliceRandom;

use super::NodeView;

pub(super) async fn write(
    meta: &MetadataClient,
    client: &NodeClient,
    nodes: &[NodeView],
    id: &str,
) -> Result<(), ApiError> {
    let mut row = meta
        .job(id)
        .await?
        .ok_or_else(|| ApiError::new(Code::JobNotFound, format!("no job {id}")))?;
    row.state = "done".into();
    row.done = Some(mobula_metadata::api::now_ms());
    let dir = format!("/{}/jobs/{id}", row.account);
    let mut status = crate::status::status(&row).to_string();
    status.push('\n');
    let mut files = vec![(
        format!("{dir}/job.json"),
        Bytes::from(status),
        "application/json",
    )];
    for kind in ["in", "out", "err", "fail"] {
        let mut text = String::new();
        let mut from = 0;
        loop {
            let q = JobRecords {
                id: id.into(),
                kind: kind.into(),
                from,
                limit: 10_000,
            };
            let page = meta.job_records(&q).await?;
            if page.is_empty() {
                break;
            }
            from += page.len() as u64;
            for l in page {
                text.push_str(&l);
                text.push('\n');
            }
        }
        files.push((format!("{dir}/{kind}.txt"), text.into(), "text/plain"));
    }
    // All five at once: each waits on fsyncs, not on the others.
    let puts = files
        .into_iter()
        .map(|(path, bytes, ct)| async move { put(meta, client, nodes, &path, bytes, ct).await });
    futures::future::try_join_all(puts).await?;
    Ok(())
}

/// Store `bytes` as object `path` on up to two healthy nodes.
async fn put(
    meta: &MetadataClient,
    client: &NodeClient,
    nodes: &[NodeView],
    path: &str,
    bytes: Bytes,
    content_type: &str,
) -> Result<(), ApiError> {
    let mut up: Vec<&NodeView> = nodes.iter().filter(|n| n.up).collect();
    up.shuffle(&mut rand::thread_rng());
    let data_id = new_id();
    let puts = up.iter().take(2).map(|n| {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes.clone())]);
        let id = &data_id;
        async move {
            client
                .put(&n.url, id, body, None)
                .await
                .map(|_| n.id.clone())
        }
    });
    let held: Vec<String> = futures::future::join_all(puts)
        .await
        .into_iter()
        .flatten()
        .collect();
    if held.is_empty() {
        return Err(ApiError::new(
            Code::ServiceUnavailable,
            "no storage node took the job record",
        ));
    }
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&bytes));
    let data = Data {
        id: data_id,
        size: bytes.len() as u64,
        md5,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
        durability: held.len() as u8,
        nodes: held,
    };
    meta.put_object(&PutObject {
        parents: false,
        path: path.into(),
        data,
        content_type: content_type.into(),
        headers: Default::default(),
        preconditions: Default::default(),
    })
    .await?;
    Ok(())
}
