//! The cluster page: storage nodes (space, health, tasks), the data's health (under-replicated
//! items, pending repairs and deletions), and small charts of the last minutes from samples this
//! gateway takes every [`SAMPLE_EVERY`] ([`History`]): requests per second through it and free
//! space across the nodes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Response;
use mobula_http::{ApiError, Body};
use mobula_metadata::api::STALE;

use super::page::{esc, page, size};
use super::session::Session;
use crate::Gateway;

/// How often the charts are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept (10 minutes).
const KEEP: usize = 120;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Requests answered by this process's listeners so far (Manta, jobs and S3).
    requests: f64,
    free: f64,
}

/// The last samples, oldest first.
#[derive(Debug, Default)]
pub struct History(Mutex<VecDeque<Sample>>);

/// Requests answered so far by this process's public listeners, from its metrics.
fn requests_so_far() -> f64 {
    if !mobula_http::telemetry::enabled() {
        return 0.0;
    }
    mobula_http::telemetry::render()
        .lines()
        .filter(|l| l.starts_with("mobula_requests_total{"))
        .filter(|l| {
            l.contains("api=\"manta\"") || l.contains("api=\"jobs\"") || l.contains("api=\"s3\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

impl History {
    /// Take a sample now.
    pub async fn sample(&self, gw: &Gateway) {
        let free = match gw.meta.nodes().await {
            Ok(nodes) => nodes.iter().map(|n| n.free_bytes as f64).sum(),
            Err(_) => return,
        };
        let s = Sample {
            at: Instant::now(),
            requests: requests_so_far(),
            free,
        };
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        h.push_back(s);
        while h.len() > KEEP {
            h.pop_front();
        }
    }

    fn points(&self) -> (Vec<f64>, Vec<f64>) {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let rates = h
            .iter()
            .zip(h.iter().skip(1))
            .map(|(a, b)| {
                let dt = b.at.duration_since(a.at).as_secs_f64().max(0.001);
                ((b.requests - a.requests) / dt).max(0.0)
            })
            .collect();
        (rates, h.iter().map(|s| s.free).collect())
    }
}

/// A small line chart of `values` (an inline SVG; no script).
fn chart(id: &str, title: &str, values: &[f64], label: impl Fn(f64) -> String) -> String {
    let (w, h) = (300.0, 60.0);
    let max = values.iter().cloned().fold(0.0_f64, f64::max);
    let min = values.iter().cloned().fold(max, f64::min);
    let span = (max - min).max(1e-9);
    let n = values.len().max(2) as f64 - 1.0;
    let mut pts = String::new();
    for (i, v) in values.iter().enumerate() {
        let x = i as f64 * w / n;
        let y = h - (v - min) / span * (h - 4.0) - 2.0;
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    let last = values.last().map_or("no samples yet".into(), |v| label(*v));
    format!(
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{} — now {}</figcaption>\
         <svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"2\" points=\"{pts}\"/>\
         </svg></figure>",
        esc(title),
        esc(&last)
    )
}

/// Tasks running on each node, from this process's metrics (nodes in this process only).
fn running_tasks() -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    if !mobula_http::telemetry::enabled() {
        return out;
    }
    for l in mobula_http::telemetry::render().lines() {
        let Some(rest) = l.strip_prefix("mobula_tasks_running{node=\"") else {
            continue;
        };
        if let Some((node, v)) = rest.split_once("\"} ") {
            out.insert(node.to_string(), v.parse().unwrap_or(0.0));
        }
    }
    out
}

pub async fn show(gw: &Arc<Gateway>, s: &Session) -> Result<Response<Body>, ApiError> {
    gw.console.history.sample(gw).await;
    let nodes = gw.meta.nodes().await?;
    let summary = gw.meta.summary().await?;
    let tasks = running_tasks();
    let mut body = format!(
        "<p id=\"data-health\">{} data items, {} under-replicated, {} copies awaiting repair, \
         {} awaiting deletion</p>",
        summary.data, summary.under_replicated, summary.repairs, summary.garbage
    );
    body.push_str(
        "<table id=\"nodes\"><tr><th>Node</th><th>URL</th><th>Health</th><th>Free</th>\
         <th>Used</th><th>Tasks</th><th>Last heartbeat</th></tr>",
    );
    for n in &nodes {
        let fresh = n.last_seen_ago_ms < STALE.as_millis() as i64;
        let used = 100.0 * (1.0 - n.free_bytes as f64 / n.total_bytes.max(1) as f64);
        let running = tasks.get(&n.id).map_or("-".into(), |v| format!("{v:.0}"));
        body.push_str(&format!(
            "<tr class=\"node\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{used:.0}%</td>\
             <td>{running}/{}</td><td>{:.1} s ago</td></tr>",
            esc(&n.id),
            esc(&n.url),
            if fresh { "healthy" } else { "silent" },
            size(n.free_bytes),
            n.slots,
            n.last_seen_ago_ms as f64 / 1000.0,
        ));
    }
    body.push_str("</table>");
    let (rates, free) = gw.console.history.points();
    body.push_str(&chart(
        "chart-requests",
        "Requests per second (this gateway)",
        &rates,
        |v| format!("{v:.1}/s"),
    ));
    body.push_str(&chart("chart-free", "Free space, all nodes", &free, |v| {
        size(v as u64)
    }));
    Ok(page("Cluster", Some(s), &body))
}
