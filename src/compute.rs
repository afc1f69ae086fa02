//! `mobula sandbox …` and `mobula image …`: operators' and tests' access to exactly the sandbox
//! and image store a storage node's tasks use. A node's compute state lives in its directory
//! (`<node dir>/images`, `<node dir>/sandbox`); `--node-dir` picks one (default: node 0 of
//! `mobula up`'s data directory); `image import --all` imports into every node under `--data`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use mobula_sandbox::image::ImageStore;
use mobula_sandbox::{Bind, Input, Sandbox, SandboxConfig, TaskSpec};

const DEFAULT_NODE_DIR: &str = "./mobula-data/nodes/0";

#[derive(Subcommand, Debug)]
pub enum SandboxOp {
    /// Run a command in a task sandbox; exits with its status. Report on stderr with --report.
    Run {
        /// The storage node directory whose sandbox and images to use.
        #[arg(long, default_value = DEFAULT_NODE_DIR)]
        node_dir: PathBuf,
        /// Image the command runs in.
        #[arg(long, default_value = "host")]
        image: String,
        /// Memory limit, MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u64,
        /// Scratch space (/tmp, copy-on-write root), MiB.
        #[arg(long, default_value_t = 1024)]
        disk: u64,
        /// Most processes at once.
        #[arg(long, default_value_t = 512)]
        pids: u64,
        /// CPU cap in cores (0 = none).
        #[arg(long, default_value_t = 0.0)]
        cpu: f64,
        /// Wall-clock limit, seconds (0 = none).
        #[arg(long, default_value_t = 0.0)]
        timeout: f64,
        /// HOSTFILE:/manta/PATH, bound read-only (repeatable).
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// NAME=VALUE (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// Print the report (JSON) on stderr at the end.
        #[arg(long)]
        report: bool,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageOp {
    /// Import a rootfs, `docker save` or OCI layout tarball (a local file, or an object path).
    Import {
        /// Name the image is known by.
        name: String,
        /// The tarball: a local file, or an object path.
        source: String,
        /// The storage node directory whose sandbox and images to use.
        #[arg(long, default_value = DEFAULT_NODE_DIR)]
        node_dir: PathBuf,
        /// Import into every node under this `mobula up` data directory instead.
        #[arg(long)]
        all: Option<PathBuf>,
    },
    /// List a node's images.
    List {
        /// The storage node directory whose sandbox and images to use.
        #[arg(long, default_value = DEFAULT_NODE_DIR)]
        node_dir: PathBuf,
    },
    /// Remove an image from a node.
    Rm {
        /// The image's name.
        name: String,
        /// The storage node directory whose sandbox and images to use.
        #[arg(long, default_value = DEFAULT_NODE_DIR)]
        node_dir: PathBuf,
    },
}

fn sandbox_for(node_dir: &Path) -> anyhow::Result<Sandbox> {
    std::fs::create_dir_all(node_dir)?;
    Ok(Sandbox::new(SandboxConfig::under(node_dir)?)?)
}

/// A node's image store alone (no zygote, sweep or cgroup tuning: nothing runs).
fn images_of(node_dir: &Path) -> anyhow::Result<ImageStore> {
    let cfg = SandboxConfig::under(node_dir)?;
    Ok(ImageStore::open(&cfg.images, cfg.id_base)?)
}

pub async fn sandbox(op: SandboxOp) -> anyhow::Result<i32> {
    let SandboxOp::Run {
        node_dir,
        image,
        memory,
        disk,
        pids,
        cpu,
        timeout,
        inputs,
        env,
        report,
        cmd,
    } = op;
    let sb = sandbox_for(&node_dir)?;
    let mut spec = TaskSpec::new(cmd);
    spec.image = image;
    spec.limits.memory_mib = memory;
    spec.limits.disk_mib = disk;
    spec.limits.pids = pids;
    spec.limits.cpu = cpu;
    spec.limits.timeout_ms = (timeout * 1000.0) as u64;
    for i in inputs {
        let (host, inside) = i
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--input {i}: want HOSTFILE:/PATH"))?;
        spec.binds.push(Bind {
            host: host.into(),
            inside: inside.into(),
            writable: false,
        });
    }
    for e in env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {e}: want NAME=VALUE"))?;
        spec.env.push((k.into(), v.into()));
    }
    let mut t = sb.spawn(&spec, Input::Inherit)?;
    let (mut out, mut err) = (t.stdout.take(), t.stderr.take());
    let copy_out = async {
        if let Some(o) = out.as_mut() {
            let _ = tokio::io::copy(o, &mut tokio::io::stdout()).await;
        }
    };
    let copy_err = async {
        if let Some(e) = err.as_mut() {
            let _ = tokio::io::copy(e, &mut tokio::io::stderr()).await;
        }
    };
    let wait = async {
        tokio::join!(copy_out, copy_err);
        t.wait().await
    };
    // Ctrl-C / SIGTERM stop the task (the helper cleans up and still reports).
    let r = wait.await?;
    if report {
        eprintln!("{}", serde_json::to_string(&r)?);
    }
    if let Some(e) = &r.error {
        anyhow::bail!("sandbox: {e}");
    }
    if r.oom_killed {
        eprintln!("mobula sandbox: task killed: out of memory ({memory} MiB)");
    } else if r.timed_out {
        eprintln!("mobula sandbox: task killed: timeout ({timeout} s)");
    }
    Ok(r.status_code())
}

pub async fn image(op: ImageOp, client: &crate::client::Client) -> anyhow::Result<()> {
    match op {
        ImageOp::Import {
            name,
            source,
            node_dir,
            all,
        } => {
            let local = Path::new(&source);
            let mut fetched = None;
            let file = if local.exists() {
                local.to_path_buf()
            } else if source.starts_with('/') {
                let tmp = tempfile::NamedTempFile::new()?;
                client
                    .get(&source, tmp.path())
                    .await
                    .map_err(|e| anyhow::anyhow!("{source}: {}: {}", e.code, e.message))?;
                let p = tmp.path().to_path_buf();
                fetched = Some(tmp);
                p
            } else {
                anyhow::bail!("{source}: no such file (object paths start with /)");
            };
            let dirs: Vec<PathBuf> = match all {
                Some(data) => std::fs::read_dir(data.join("nodes"))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect(),
                None => vec![node_dir],
            };
            for d in dirs {
                let info = images_of(&d)?.import(&name, &file)?;
                println!(
                    "{}: imported {name} ({} image, {} layer(s))",
                    d.display(),
                    info.format,
                    info.layers
                );
            }
            drop(fetched);
        }
        ImageOp::List { node_dir } => {
            for n in images_of(&node_dir)?.list() {
                println!("{n}");
            }
        }
        ImageOp::Rm { name, node_dir } => images_of(&node_dir)?.remove(&name)?,
    }
    Ok(())
}
