//! Scrub: read every data file on the node and verify each block against its hashes, at a
//! bounded rate. Bad copies are sent to the node's `bad` channel, which quarantines them and
//! reports them to metadata so they are re-copied from a good copy elsewhere.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::api::ScrubReport;
use crate::store::Store;

/// Ids metadata believes `node` holds that are not on disk (e.g. lost in a restore).
/// Each is reported like a bad copy, so it gets repaired.
pub async fn find_missing(
    store: &Store,
    node: &str,
    meta: &mobula_metadata::MetadataClient,
) -> Result<Vec<String>, mobula_http::ApiError> {
    let mut missing = Vec::new();
    let mut after = String::new();
    loop {
        let ids = meta.data_on_node(node, &after, 1000).await?;
        let Some(last) = ids.last().cloned() else {
            return Ok(missing);
        };
        for id in ids {
            if !store.path(&id).exists() {
                missing.push(id);
            }
        }
        after = last;
    }
}

/// Verify one file; `Ok(bytes)` when good, `Err` when bad (or unreadable).
fn verify(store: &Store, id: &str) -> std::io::Result<u64> {
    let size = store.size(id)?;
    let mut r = store.reader(id, 0, size)?;
    while let Some(chunk) = r.next_chunk() {
        chunk?;
    }
    Ok(size)
}

/// Verify one file and hash it whole: what a write of it committed (size and blake3), or
/// `Err` when it is bad (or unreadable).
pub fn verified_hash(store: &Store, id: &str) -> std::io::Result<crate::store::Committed> {
    let size = store.size(id)?;
    let mut r = store.reader(id, 0, size)?;
    // A tree list names the file's blake3 itself, once every block verifies against it.
    let listed = r.root();
    let mut h = blake3::Hasher::new();
    while let Some(chunk) = r.next_chunk() {
        let chunk = chunk?;
        if listed.is_none() {
            h.update(&chunk);
        }
    }
    Ok(crate::store::Committed {
        size,
        blake3: listed.unwrap_or_else(|| h.finalize()).to_hex().to_string(),
        md5: None,
    })
}

/// Verify every data file, at most `rate` bytes per second (unbounded when `None`).
pub async fn scrub(
    store: &Store,
    bad: &mpsc::UnboundedSender<String>,
    rate: Option<u64>,
) -> std::io::Result<ScrubReport> {
    let t = Instant::now();
    let s = store.clone();
    let ids = tokio::task::spawn_blocking(move || s.ids())
        .await
        .map_err(std::io::Error::other)??;
    let mut report = ScrubReport::default();
    let node = store.node_id()?;
    let verified = metrics::counter!("mobula_copies_verified_total", "node" => node.clone());
    let checked = metrics::gauge!("mobula_scrub_files_checked", "node" => node.clone());
    checked.set(0.0);
    for (id, _) in ids {
        checked.increment(1.0);
        let (s, i) = (store.clone(), id.clone());
        match tokio::task::spawn_blocking(move || verify(&s, &i))
            .await
            .map_err(std::io::Error::other)?
        {
            Ok(n) => {
                verified.increment(1);
                report.files += 1;
                report.bytes += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !store.path(&id).exists() => {
                // Deleted while we were scrubbing.
            }
            Err(e) => {
                tracing::error!("scrub: data {id} is bad: {e}");
                report.bad.push(id.clone());
                let _ = bad.send(id);
            }
        }
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(report.bytes as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(t.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    report.seconds = t.elapsed().as_secs_f64();
    metrics::counter!("mobula_scrub_passes_total", "node" => node.clone()).increment(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    metrics::gauge!("mobula_scrub_last_pass_timestamp_seconds", "node" => node)
        .set(now.map_or(0.0, |d| d.as_secs_f64()));
    Ok(report)
}
