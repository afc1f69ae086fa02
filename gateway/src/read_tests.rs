//! Reads against fake nodes: a copy failing mid-body is continued on the next copy at the same
//! offset; a copy of the wrong size is skipped; with no copy left the body ends in an error.

use futures::StreamExt;
use mobula_storage_node::fake::Fault;

use super::{failover_stream, open};
use crate::testing::{bytes, gateway, url};

const ID: &str = "0123456789abcdef0123456789abcdef";

async fn read_all(
    gw: &std::sync::Arc<crate::Gateway>,
    size: u64,
    holders: &[&str],
    start: u64,
    end: u64,
) -> Result<Vec<u8>, String> {
    let order: Vec<(String, String)> = holders
        .iter()
        .map(|n| (n.to_string(), url(n[1..].parse().unwrap())))
        .collect();
    let first = open(gw, ID, size, order, start, end)
        .await
        .map_err(|e| e.to_string())?;
    let mut s = Box::pin(failover_stream(
        gw.clone(),
        ID.into(),
        size,
        first,
        start,
        end + 1,
    ));
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_copy_failing_mid_body_is_continued_on_the_next() {
    let (gw, fake) = gateway(3);
    let data = bytes(1 << 20);
    for i in 0..2 {
        fake.insert(&url(i), ID, data.clone());
    }
    fake.fail(&url(0), Fault::ReadFailsAfter(300_000));
    let size = data.len() as u64;
    assert_eq!(
        read_all(&gw, size, &["n0", "n1"], 0, size - 1)
            .await
            .unwrap(),
        data
    );
    assert!(gw.nodes.recently_failed("n0"));
    // A range, failing inside it.
    let (gw, fake) = gateway(3);
    for i in 0..2 {
        fake.insert(&url(i), ID, data.clone());
    }
    fake.fail(&url(0), Fault::ReadFailsAfter(1000));
    let got = read_all(&gw, size, &["n0", "n1"], 5000, 99_999)
        .await
        .unwrap();
    assert_eq!(got, &data[5000..100_000]);
}

#[tokio::test]
async fn a_copy_of_the_wrong_size_or_a_dead_node_is_skipped() {
    let (gw, fake) = gateway(3);
    let data = bytes(50_000);
    fake.insert(&url(0), ID, data[..100].to_vec());
    fake.fail(&url(1), Fault::Down);
    fake.insert(&url(2), ID, data.clone());
    let size = data.len() as u64;
    assert_eq!(
        read_all(&gw, size, &["n0", "n1", "n2"], 0, size - 1)
            .await
            .unwrap(),
        data
    );
    assert!(gw.nodes.recently_failed("n1"));
    assert!(
        !gw.nodes.recently_failed("n0"),
        "a short copy is the copy's fault, not the node's"
    );
}

#[tokio::test]
async fn no_copy_left_ends_the_body_in_an_error() {
    let (gw, fake) = gateway(2);
    let data = bytes(200_000);
    for i in 0..2 {
        fake.insert(&url(i), ID, data.clone());
        fake.fail(&url(i), Fault::ReadFailsAfter(70_000));
    }
    let size = data.len() as u64;
    let e = read_all(&gw, size, &["n0", "n1"], 0, size - 1)
        .await
        .unwrap_err();
    assert!(e.contains("ServiceUnavailable"), "{e}");
    assert!(!e.contains("http://"), "no node URL in a public error: {e}");
    // Nothing readable at all: the open itself fails.
    let (gw, fake) = gateway(2);
    fake.fail(&url(0), Fault::Down);
    fake.fail(&url(1), Fault::Down);
    assert!(read_all(&gw, 10, &["n0", "n1"], 0, 9).await.is_err());
}
