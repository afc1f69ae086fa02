//! `mobula job …`: create a job and feed it, watch it, read its status, outputs and errors,
//! cancel it, list jobs, and print its outputs' contents (SPEC §4 through the gateway).
//!
//! Phases of `create` are the `-m` maps in order, then the `-r` reduces in order (a map after
//! a reduce needs `--phases JSON`). Input paths come from the arguments, or from stdin (one per
//! line) when there are none; the input is ended unless `--open`.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mobula_jobs::schedule::PhaseKind;
use mobula_jobs::spec::{JobSpec, Phase};
use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, ClientError};

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum JobOp {
    /// Create a job, add its inputs and end them; prints the job id.
    Create {
        /// Map phase command (repeat for several maps, in order).
        #[arg(short = 'm', long = "map")]
        map: Vec<String>,
        /// Reduce phase command (after the maps, in order).
        #[arg(short = 'r', long = "reduce")]
        reduce: Vec<String>,
        /// Reducers per reduce phase.
        #[arg(long)]
        count: Option<u32>,
        /// MiB of memory per task.
        #[arg(long)]
        memory: Option<u64>,
        /// GiB of scratch disk per task.
        #[arg(long)]
        disk: Option<u64>,
        /// Image the tasks run in (default: host).
        #[arg(long)]
        image: Option<String>,
        /// Command run before each task's command.
        #[arg(long)]
        init: Option<String>,
        /// Object made available to every task at `/assets/<path>` (repeatable).
        #[arg(short = 's', long = "asset")]
        assets: Vec<String>,
        /// The phases as JSON (instead of -m/-r).
        #[arg(long)]
        phases: Option<String>,
        /// The job's name.
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Leave the input open (add more with the API, end it later).
        #[arg(long)]
        open: bool,
        /// Watch the job until it is done, then print its outputs' paths.
        #[arg(short = 'w', long)]
        watch: bool,
        /// Input object paths (default: read from stdin).
        paths: Vec<String>,
    },
    /// Follow a job until it is done (per-phase progress on a terminal).
    Watch {
        /// The job's id or path.
        job: String,
    },
    /// A job's status (JSON).
    Status {
        /// The job's id or path.
        job: String,
    },
    /// Paths of a job's outputs.
    Outputs {
        /// The job's id or path.
        job: String,
    },
    /// A job's error records (JSON lines).
    Errors {
        /// The job's id or path.
        job: String,
    },
    /// Inputs that failed.
    Failures {
        /// The job's id or path.
        job: String,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id or path.
        job: String,
    },
    /// The account's jobs, newest last: id, state, name.
    List,
    /// Print the contents of a job's outputs (waits for the job to finish).
    Get {
        /// The job's id or path.
        job: String,
    },
}

/// `/:account/jobs/:id` from an id or a path.
fn job_path(c: &Client, job: &str) -> String {
    if job.starts_with('/') || job.starts_with("~~") {
        c.expand(job)
    } else {
        c.expand(&format!("~~/jobs/{job}"))
    }
}

async fn text(c: &Client, path: &str) -> Result<String, ClientError> {
    let r = c.send(Method::GET, path, "", None).await?;
    r.text().await.map_err(ClientError::local)
}

async fn status(c: &Client, job: &str) -> Result<Value, ClientError> {
    let t = text(c, &format!("{job}/live/status")).await?;
    serde_json::from_str(&t).map_err(|e| ClientError::local(format!("status: {e}")))
}

pub async fn job(c: &Client, op: JobOp) -> Result<(), ClientError> {
    match op {
        JobOp::Create {
            map,
            reduce,
            count,
            memory,
            disk,
            image,
            init,
            assets,
            phases,
            name,
            open,
            watch,
            paths,
        } => {
            let bad = |m: String| ClientError {
                code: "InvalidJob".into(),
                message: m,
            };
            let phases: Vec<Phase> = match phases {
                Some(j) => serde_json::from_str(&j).map_err(|e| bad(format!("--phases: {e}")))?,
                None => {
                    let mk = |kind, exec: &String| Phase {
                        kind,
                        exec: exec.clone(),
                        init: init.clone(),
                        assets: assets.iter().map(|a| c.expand(a)).collect(),
                        count: (kind == PhaseKind::Reduce).then_some(count).flatten(),
                        memory,
                        disk,
                        image: image.clone(),
                    };
                    map.iter()
                        .map(|m| mk(PhaseKind::Map, m))
                        .chain(reduce.iter().map(|r| mk(PhaseKind::Reduce, r)))
                        .collect()
                }
            };
            if phases.is_empty() {
                return Err(bad("give at least one -m or -r phase".into()));
            }
            let spec = JobSpec {
                name: name.unwrap_or_default(),
                phases,
            };
            let body = serde_json::to_vec(&spec).map_err(|e| bad(e.to_string()))?;
            let r = c
                .send(
                    Method::POST,
                    "~~/jobs",
                    "",
                    Some(("application/json", body)),
                )
                .await?;
            let loc = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let id = loc.rsplit('/').next().unwrap_or_default().to_string();
            let mut inputs: Vec<String> = paths.iter().map(|p| c.expand(p)).collect();
            if paths.is_empty() && !std::io::stdin().is_terminal() {
                for l in std::io::stdin().lock().lines() {
                    let l = l.map_err(|e| bad(format!("stdin: {e}")))?;
                    if !l.trim().is_empty() {
                        inputs.push(c.expand(l.trim()));
                    }
                }
            }
            for (i, chunk) in inputs.chunks(10_000).enumerate() {
                let last = (i + 1) * 10_000 >= inputs.len();
                let q = if last && !open { "end=true" } else { "" };
                let body = chunk.join("\n").into_bytes();
                c.send(
                    Method::POST,
                    &format!("{loc}/live/in"),
                    q,
                    Some(("text/plain", body)),
                )
                .await?;
            }
            if inputs.is_empty() && !open {
                c.send(Method::POST, &format!("{loc}/live/in/end"), "", None)
                    .await?;
            }
            println!("{id}");
            if watch {
                watch_job(c, &loc).await?;
                print!("{}", text(c, &format!("{loc}/live/out")).await?);
            }
        }
        JobOp::Watch { job } => watch_job(c, &job_path(c, &job)).await?,
        JobOp::Status { job } => {
            let s = status(c, &job_path(c, &job)).await?;
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        }
        JobOp::Outputs { job } => print!(
            "{}",
            text(c, &format!("{}/live/out", job_path(c, &job))).await?
        ),
        JobOp::Errors { job } => print!(
            "{}",
            text(c, &format!("{}/live/err", job_path(c, &job))).await?
        ),
        JobOp::Failures { job } => print!(
            "{}",
            text(c, &format!("{}/live/fail", job_path(c, &job))).await?
        ),
        JobOp::Cancel { job } => {
            c.send(
                Method::POST,
                &format!("{}/live/cancel", job_path(c, &job)),
                "",
                None,
            )
            .await?;
        }
        JobOp::List => {
            for e in c.list("~~/jobs").await? {
                let s = status(c, &job_path(c, &e.name)).await;
                let (state, name) = match &s {
                    Ok(s) => (
                        s["state"].as_str().unwrap_or("?").to_string(),
                        s["name"].as_str().unwrap_or("").to_string(),
                    ),
                    Err(_) => ("?".into(), String::new()),
                };
                println!("{}\t{state}\t{name}", e.name);
            }
        }
        JobOp::Get { job } => {
            let jp = job_path(c, &job);
            wait_done(c, &jp, |_| {}).await?;
            for o in text(c, &format!("{jp}/live/out")).await?.lines() {
                let mut r = c.send(Method::GET, o, "", None).await?;
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                while let Some(chunk) = r.chunk().await.map_err(ClientError::local)? {
                    let _ = out.write_all(&chunk);
                }
            }
        }
    }
    Ok(())
}

/// The job's status and its version (`Job-Version`), waiting first until the version differs
/// from `since` when one is given (the gateway holds the request up to 10 s).
async fn status_since(
    c: &Client,
    job: &str,
    since: Option<&str>,
) -> Result<(Value, Option<String>), ClientError> {
    let query = since.map(|v| format!("since={v}")).unwrap_or_default();
    let r = c
        .send(Method::GET, &format!("{job}/live/status"), &query, None)
        .await?;
    let version = r
        .headers()
        .get("job-version")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
        .map(str::to_string);
    let t = r.text().await.map_err(ClientError::local)?;
    let s = serde_json::from_str(&t).map_err(|e| ClientError::local(format!("status: {e}")))?;
    Ok((s, version))
}

/// Follow the job until it is done, calling `each` with every status seen: each request waits
/// at the gateway for the next change, so the end is seen as soon as it is logged (a gateway
/// without `Job-Version` is polled instead).
async fn wait_done(
    c: &Client,
    job: &str,
    mut each: impl FnMut(&Value),
) -> Result<Value, ClientError> {
    let mut seen: Option<String> = None;
    let mut delay = Duration::from_millis(50);
    loop {
        let (s, version) = status_since(c, job, seen.as_deref()).await?;
        each(&s);
        if s["state"] == "done" {
            return Ok(s);
        }
        if version.is_none() {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        seen = version;
    }
}

async fn watch_job(c: &Client, job: &str) -> Result<(), ClientError> {
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let mut bars: Vec<ProgressBar> = Vec::new();
    let mut last = String::new();
    let style = ProgressStyle::with_template("{prefix:>12} {wide_bar} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let s = wait_done(c, job, |s| {
        let phases = s["phaseStats"].as_array().cloned().unwrap_or_default();
        let kinds = s["phases"].as_array().cloned().unwrap_or_default();
        if tty {
            while bars.len() < phases.len() {
                let kind = kinds
                    .get(bars.len())
                    .and_then(|k| k["type"].as_str())
                    .unwrap_or("map");
                let b = multi.add(ProgressBar::new(0).with_style(style.clone()));
                b.set_prefix(format!("{} {kind}", bars.len()));
                bars.push(b);
            }
            for (b, p) in bars.iter().zip(&phases) {
                b.set_length(p["tasks"].as_u64().unwrap_or(0));
                b.set_position(p["tasksDone"].as_u64().unwrap_or(0));
            }
        } else {
            let line = format!(
                "{}: {} tasks, {} done, {} errors, {} outputs",
                s["state"].as_str().unwrap_or("?"),
                s["stats"]["tasks"],
                s["stats"]["tasksDone"],
                s["stats"]["errors"],
                s["stats"]["outputs"]
            );
            if line != last {
                eprintln!("{line}");
                last = line;
            }
        }
    })
    .await?;
    for b in bars {
        b.finish();
    }
    eprintln!(
        "job {}: {}{}, {} outputs, {} errors",
        s["id"].as_str().unwrap_or(""),
        s["state"].as_str().unwrap_or(""),
        if s["cancelled"] == true {
            " (cancelled)"
        } else {
            ""
        },
        s["stats"]["outputs"],
        s["stats"]["errors"]
    );
    Ok(())
}
