//! 32 concurrent clients PUT, overwrite and GET the same and different paths; a reader always
//! sees one whole version, never a mix of two.

use rand::{Rng, SeedableRng};

use crate::{md5_b64, T};

fn version_body(v: u8) -> Vec<u8> {
    vec![v; 20_000 + v as usize * 997]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_mix_of_versions() {
    let t = std::sync::Arc::new(T::start(3).await);
    t.mkdir("/admin/stor/c").await;
    for p in 0..4 {
        assert_eq!(
            t.put(&format!("/admin/stor/c/shared{p}"), version_body(0))
                .await
                .status(),
            204
        );
    }
    let mut tasks = Vec::new();
    for task in 0..32u8 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(task as u64);
            for round in 0..8u8 {
                let v = task.wrapping_mul(8).wrapping_add(round).max(1);
                let shared = format!("/admin/stor/c/shared{}", rng.gen_range(0..4));
                let own = format!("/admin/stor/c/own{task}");
                let target = if rng.gen_bool(0.7) { &shared } else { &own };
                let r = t.put(target, version_body(v)).await;
                assert_eq!(r.status(), 204);
                for path in [&shared, &own] {
                    let r = t.get(path).await;
                    if r.status() == 404 {
                        continue; // own path not written yet
                    }
                    assert_eq!(r.status(), 200);
                    let md5 = r.headers()["content-md5"].to_str().unwrap().to_string();
                    let body = r.bytes().await.unwrap();
                    let first = body[0];
                    assert_eq!(
                        body.as_ref(),
                        &version_body(first)[..],
                        "a mix of versions at {path}"
                    );
                    assert_eq!(md5, md5_b64(&body), "headers and body of one version");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every overwritten version's data is reclaimed: two copies per live object remain.
    let live: usize = t.get("/admin/stor/c").await.headers()["result-set-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(live >= 4);
    t.wait_data_files(live * 2).await;
}
