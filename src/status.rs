//! `mobula status`: one screen for the operator — which roles answer, every storage node (state,
//! free space, copies held, tasks running, last scrub), the data as a whole (under-replicated
//! objects, pending repairs and deletions) and the running jobs.
//!
//! It needs only what `mobula up` printed: the metadata service (`MOBULA_METADATA_URL`, or
//! `<data>/metadata.url`), the gateway (`MOBULA_URL`) and the admin listener
//! (`MOBULA_ADMIN_URL`, or `<data>/admin.url`), whose metrics give the per-node figures. A part
//! that does not answer is shown as down, not as an error; only an unreachable metadata service
//! (which holds everything else) fails the command.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use mobula_metadata::api::{NodeInfo, STALE};
use mobula_metadata::MetadataClient;

/// The file in `up`'s data directory holding its admin listener's URL.
pub const ADMIN_URL_FILE: &str = "admin.url";

/// Where `mobula status` looks.
#[derive(Debug, Clone)]
pub struct Targets {
    pub metadata: String,
    pub gateway: String,
    pub admin: Option<String>,
}

/// Per-node figures from the admin listener's metrics: (metric, node id) → value.
type NodeMetrics = HashMap<(String, String), f64>;

async fn answers(http: &reqwest::Client, url: &str) -> Result<(), String> {
    match http.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(e) => Err(format!("unreachable ({})", without_url(&e))),
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "");
    }
    s
}

/// The per-node samples of the admin listener's metrics.
async fn node_metrics(http: &reqwest::Client, admin: &str) -> Option<NodeMetrics> {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let node = labels
            .trim_end_matches('}')
            .split(',')
            .find_map(|l| l.strip_prefix("node=\""))
            .map(|v| v.trim_end_matches('"').to_string());
        if let (Some(node), Ok(v)) = (node, value.parse::<f64>()) {
            *out.entry((name.to_string(), node)).or_default() += v;
        }
    }
    Some(out)
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (bytes as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn ago(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s ago"),
        s if s < 7200.0 => format!("{:.0} min ago", s / 60.0),
        s if s < 172_800.0 => format!("{:.0} h ago", s / 3600.0),
        s => format!("{:.0} days ago", s / 86400.0),
    }
}

fn node_line(out: &mut String, n: &NodeInfo, pinged: &Result<(), String>, m: &Option<NodeMetrics>) {
    let fresh = n.last_seen_ago_ms < STALE.as_millis() as i64;
    let state = match (fresh, pinged) {
        (true, Ok(())) => "up".to_string(),
        (false, _) => format!("silent {}", ago(n.last_seen_ago_ms as f64 / 1000.0)),
        (true, Err(e)) => format!("heartbeats, but its listener {e}"),
    };
    let metric = |name: &str| {
        m.as_ref()
            .map(|m| m.get(&(name.to_string(), n.id.clone())).copied())
    };
    // With metrics, a figure never recorded is zero (no task ran, no scrub yet); without, "-".
    let count = |name: &str| match metric(name) {
        Some(v) => format!("{:.0}", v.unwrap_or(0.0)),
        None => "-".into(),
    };
    let tasks = format!("{}/{}", count("mobula_tasks_running"), n.slots);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let scrub = match metric("mobula_scrub_last_pass_timestamp_seconds") {
        Some(Some(t)) if t > 0.0 => ago(now - t),
        Some(_) => "never".into(),
        None => "-".into(),
    };
    let used = 100.0 * (1.0 - n.free_bytes as f64 / n.total_bytes.max(1) as f64);
    let _ = writeln!(
        out,
        "  {:<18} {:<24} {:>10} {:>5.0}% {:>8} {:>6} {:>12}  {state}",
        n.id,
        n.url,
        size(n.free_bytes),
        used,
        count("mobula_node_copies"),
        tasks,
        scrub,
    );
}

/// The status screen (an error only when the metadata service does not answer).
pub async fn render(t: &Targets) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let meta = MetadataClient::new(&t.metadata);
    let silent = |e| {
        anyhow::anyhow!(
            "the metadata service at {} does not answer: {e}",
            t.metadata
        )
    };
    // The summary is read before the node listing: a node that has gone silent stays silent,
    // so one the summary already counts as gone is never listed healthy on the same screen.
    let summary = meta.summary().await.map_err(silent)?;
    let nodes = meta.nodes().await.map_err(silent)?;
    let mut out = String::new();
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "up".to_string(),
        Err(e) => format!("DOWN: {e}"),
    };
    let _ = writeln!(out, "roles");
    let _ = writeln!(out, "  metadata  {:<28} up", t.metadata);
    let gw = answers(&http, &format!("{}/ping", t.gateway)).await;
    let _ = writeln!(out, "  gateway   {:<28} {}", t.gateway, show(&gw));
    let metrics = match &t.admin {
        Some(a) => {
            let ready = answers(&http, &format!("{a}/health/ready")).await;
            let said = match &ready {
                Ok(()) => "ready".to_string(),
                Err(e) => format!("NOT READY: {e}"),
            };
            let _ = writeln!(out, "  admin     {a:<28} {said}");
            node_metrics(&http, a).await
        }
        None => None,
    };
    let healthy = nodes
        .iter()
        .filter(|n| n.last_seen_ago_ms < STALE.as_millis() as i64)
        .count();
    let _ = writeln!(out, "nodes: {} registered, {healthy} healthy", nodes.len());
    let _ = writeln!(
        out,
        "  {:<18} {:<24} {:>10} {:>6} {:>8} {:>6} {:>12}  STATE",
        "ID", "URL", "FREE", "USED", "COPIES", "TASKS", "LAST SCRUB"
    );
    for n in &nodes {
        let pinged = answers(&http, &format!("{}/ping", n.url)).await;
        node_line(&mut out, n, &pinged, &metrics);
    }
    let _ = writeln!(
        out,
        "data: {} items, {} under-replicated, {} copies awaiting repair, {} awaiting deletion",
        summary.data, summary.under_replicated, summary.repairs, summary.garbage
    );
    let active = meta.jobs_active().await?;
    let _ = writeln!(out, "jobs: {} running", active.len());
    for id in active {
        if let Some(j) = meta.job(&id).await? {
            let stats: serde_json::Value = serde_json::from_str(&j.stats).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}  {}/{:<10} {} tasks, {} done, {} errors",
                j.id,
                j.account,
                if j.name.is_empty() { "-" } else { &j.name },
                stats["tasks"].as_u64().unwrap_or(0),
                stats["tasks_done"].as_u64().unwrap_or(0),
                stats["errors"].as_u64().unwrap_or(0),
            );
        }
    }
    Ok(out)
}
