//! Listing: 10,000 entries paged with every option gives exactly the model's answer.

use std::collections::BTreeMap;

use futures::StreamExt;
use reqwest::Method;

use crate::T;

#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    kind: String,
    mtime: String,
}

async fn page(t: &T, query: &str) -> (Vec<Line>, u64) {
    let r = t
        .req(Method::GET, &format!("/admin/stor/big?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    let total = r.headers()["result-set-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = r.text().await.unwrap();
    let lines = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Line {
                name: v["name"].as_str().unwrap().into(),
                kind: v["type"].as_str().unwrap().into(),
                mtime: v["mtime"].as_str().unwrap().into(),
            }
        })
        .collect();
    (lines, total)
}

/// Page through with `limit`, feeding back the last name as the (inclusive) marker.
async fn all_pages(t: &T, opts: &str, limit: usize) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut q = format!("limit={limit}{opts}");
        if let Some(m) = &marker {
            q.push_str(&format!("&marker={}", urlencode(m)));
        }
        let (mut lines, total) = page(t, &q).await;
        assert_eq!(total, 10_000);
        assert!(lines.len() <= limit);
        if marker.is_some() {
            assert_eq!(
                lines.first().map(|l| &l.name),
                marker.as_ref(),
                "marker is inclusive"
            );
            lines.remove(0);
        }
        if lines.is_empty() {
            return out;
        }
        marker = Some(lines.last().unwrap().name.clone());
        out.extend(lines);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn ten_thousand_entries_page_exactly_like_the_model() {
    let t = T::start(3).await;
    t.mkdir("/admin/stor/big").await;
    // Names with shared prefixes, punctuation and multibyte characters; a few objects.
    let names: Vec<String> = (0..10_000)
        .map(|i| match i % 4 {
            0 => format!("e{i:05}"),
            1 => format!("E-{}", i * 7919 % 10_007),
            2 => format!("é {i}"),
            _ => format!("z.{}", 10_000 - i),
        })
        .collect();
    let results = futures::stream::iter(names.iter().enumerate())
        .map(|(i, n)| {
            let t = &t;
            async move {
                let path = format!("/admin/stor/big/{}", urlencode(n));
                if i % 50 == 0 {
                    t.put(&path, "o").await.status()
                } else {
                    t.mkdir(&path).await.status()
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(results.iter().all(|s| s.as_u16() == 204));

    let mut model: Vec<String> = names.clone();
    model.sort();
    let by_name = all_pages(&t, "", 1024).await;
    assert_eq!(
        by_name.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
        model
    );
    let kinds: BTreeMap<&str, usize> = by_name.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.kind.as_str()).or_default() += 1;
        m
    });
    assert_eq!(kinds.get("object"), Some(&200));

    let names_of = |v: Vec<Line>| v.into_iter().map(|l| l.name).collect::<Vec<_>>();
    let mut rev = model.clone();
    rev.reverse();
    assert_eq!(
        names_of(all_pages(&t, "&sort_order=reverse", 333).await),
        rev
    );
    assert_eq!(names_of(all_pages(&t, "&sort=name", 256).await), model);

    // mtime order: newest first, ties by name in the same direction.
    let mut by_mtime: Vec<(String, String)> = by_name
        .iter()
        .map(|l| (l.mtime.clone(), l.name.clone()))
        .collect();
    by_mtime.sort();
    let oldest_first: Vec<String> = by_mtime.iter().map(|(_, n)| n.clone()).collect();
    let mut newest_first = oldest_first.clone();
    newest_first.reverse();
    assert_eq!(
        names_of(all_pages(&t, "&sort=mtime", 500).await),
        newest_first
    );
    assert_eq!(
        names_of(all_pages(&t, "&sort=mtime&sort_order=reverse", 999).await),
        oldest_first
    );

    // A marker in the middle, the default limit, and a marker that names no entry.
    let (p, _) = page(&t, &format!("marker={}", urlencode(&model[5000]))).await;
    assert_eq!(names_of(p), model[5000..5256].to_vec());
    let between = format!("{}!", model[7000]);
    let (p, _) = page(&t, &format!("limit=3&marker={}", urlencode(&between))).await;
    assert_eq!(names_of(p), model[7001..7004].to_vec());
}
