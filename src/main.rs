//! `mobula`: the one binary. Server roles (`up`, `metadata`, `storage-node`, `gateway`) and the
//! client (`put`, `get`, `ls`, `mkdir`, `rm`, `ln`, `info`). Configuration is read here, once:
//! flags and environment (`MOBULA_URL`, `MOBULA_ACCOUNT`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mobula::client::{Client, ClientError};
use mobula::cluster::{self, Cluster, ClusterConfig};
use mobula_gateway::s3::S3Config;
use mobula_gateway::{Gateway, GatewayConfig};
use mobula_storage_node::NodeConfig;

mod alloc;

/// mimalloc for the servers, glibc's malloc for the sandbox's zygote (`alloc.rs`).
#[global_allocator]
static ALLOC: alloc::Alloc = alloc::Alloc;

#[derive(Parser, Debug)]
#[command(name = "mobula", version, about = "Compute-on-storage object store")]
struct Cli {
    /// Gateway URL for client commands.
    #[arg(
        long,
        global = true,
        env = "MOBULA_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Account that `~~` stands for (and that `up` creates).
    #[arg(long, global = true, env = "MOBULA_ACCOUNT", default_value = "admin")]
    account: String,
    /// OpenSSH private key to sign requests with. Without it, a key held by ssh-agent
    /// (`SSH_AUTH_SOCK`) whose fingerprint is in MOBULA_KEY_ID (or MANTA_KEY_ID) is used.
    #[arg(long, global = true, env = "MOBULA_KEY")]
    key: Option<PathBuf>,
    /// Metadata service URL for `account` commands (default: the one `mobula up` recorded in
    /// `<data>/metadata.url`, else http://127.0.0.1:7070).
    #[arg(long = "metadata-url", global = true, env = "MOBULA_METADATA_URL")]
    metadata_url: Option<String>,
    /// Log lines of server roles: text, or one JSON object per line (with the request id
    /// each line was written for).
    #[arg(
        long,
        global = true,
        env = "MOBULA_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How server roles write their log lines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum NodeAdmin {
    /// Snapshots of a node's volume.
    Snapshot {
        #[command(subcommand)]
        op: SnapshotOp,
    },
    /// Verify every data file of a running node now; bad copies are quarantined and repaired.
    Scrub {
        /// The node's URL.
        #[arg(long)]
        node: String,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotOp {
    /// Take a consistent read-only snapshot of a running node's volume.
    Create {
        /// The snapshot's name.
        name: String,
        /// The node's URL.
        #[arg(long)]
        node: String,
    },
    /// List a running node's snapshots.
    List {
        /// The node's URL.
        #[arg(long)]
        node: String,
    },
    /// Delete a snapshot.
    Delete {
        /// The snapshot's name.
        name: String,
        /// The node's URL.
        #[arg(long)]
        node: String,
    },
    /// Restore a stopped node's volume from a snapshot (works on its data directory).
    Restore {
        /// The snapshot's name.
        name: String,
        /// The stopped node's data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a whole cluster (metadata, storage nodes, gateway) on this machine.
    Up {
        /// Directory holding all of the cluster's state.
        #[arg(long, default_value = "./mobula-data")]
        data: PathBuf,
        /// Address the gateway listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Number of storage nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Storage nodes' volume: btrfs in a sparse image `<data>/nodes.img` when root with
        /// btrfs-progs (auto), always btrfs, or a plain directory.
        #[arg(long, value_enum, default_value = "auto")]
        volume: mobula::upvolume::VolumeChoice,
        /// Keep the storage nodes on a btrfs filesystem in this image file (created and
        /// loop-mounted on `<data>/nodes`; needs root and btrfs-progs).
        #[arg(long)]
        btrfs_image: Option<PathBuf>,
        /// Size of a new btrfs image (e.g. 20G).
        #[arg(long, default_value = "10G")]
        btrfs_size: String,
        /// Trust the account named in the path instead of requiring signed requests (local
        /// experiments only).
        #[arg(long)]
        no_auth: bool,
        /// Serve HTTPS: PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Run no job agents (jobs need root for their sandboxes).
        #[arg(long)]
        no_jobs: bool,
        /// Tasks each storage node runs at once (default: by cores and memory).
        #[arg(long)]
        slots: Option<u32>,
        /// Address the S3 listener listens on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        s3_listen: SocketAddr,
        /// Run no S3 listener.
        #[arg(long)]
        no_s3: bool,
        /// Base domain of virtual-host-style S3 requests (`bucket.DOMAIN`); repeatable.
        #[arg(long)]
        s3_domain: Vec<String>,
        /// Address of the admin listener: Prometheus metrics at /metrics, /health/ready, /health/live.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// A storage node silent this long is declared dead and its copies re-made (e.g. 10m).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        dead_after: Duration,
        /// Metadata database: sqlite:PATH or postgres://USER:PASSWORD@HOST/DB (default: SQLite
        /// in <data>/metadata/mobula.db).
        #[arg(long, env = "MOBULA_DATABASE")]
        database: Option<String>,
    },
    /// Run the metadata service alone.
    Metadata {
        /// Directory of the metadata database (SQLite; unused with a PostgreSQL --database).
        #[arg(long, default_value = "./mobula-data/metadata")]
        data: PathBuf,
        /// Metadata database: sqlite:PATH or postgres://USER:PASSWORD@HOST/DB (default: SQLite
        /// in <data>/mobula.db). Several metadata services may share one PostgreSQL.
        #[arg(long, env = "MOBULA_DATABASE")]
        database: Option<String>,
        /// Address to listen on (also where `mobula account` reaches it).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Create these accounts if missing.
        #[arg(long = "create-account")]
        create_account: Vec<String>,
        /// Serve metrics (/metrics) and health (/health/ready, /health/live) on this address.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Run one storage node alone, or administer one (snapshots, scrub).
    #[command(args_conflicts_with_subcommands = true)]
    StorageNode {
        #[command(subcommand)]
        admin: Option<NodeAdmin>,
        /// The node's data directory (required to run a node).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Metadata service URL (required to run a node).
        #[arg(long)]
        metadata: Option<String>,
        /// URL other parts reach this node at (default: http://<listen address>).
        #[arg(long)]
        advertise: Option<String>,
        /// Seconds between background scrubs (0: only on demand).
        #[arg(long, default_value_t = 86400)]
        scrub_every: u64,
        /// Background scrub read rate, MiB/s.
        #[arg(long, default_value_t = 64)]
        scrub_rate: u64,
        /// Run no job agent on this node.
        #[arg(long)]
        no_jobs: bool,
        /// Tasks this node runs at once (default: by cores and memory).
        #[arg(long)]
        slots: Option<u32>,
        /// Serve metrics (/metrics) and health (/health/ready, /health/live) on this address.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Run a gateway alone.
    Gateway {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Metadata service URL.
        #[arg(long)]
        metadata: String,
        /// Seconds without body bytes before an upload is cut off.
        #[arg(long, default_value_t = 60)]
        upload_timeout: u64,
        /// Require signed requests (HTTP Signature or signed URLs); anonymous callers may only
        /// read `/:account/public`.
        #[arg(long)]
        require_signatures: bool,
        /// Serve HTTPS: PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Also serve the S3 API on this address (SPEC §8).
        #[arg(long)]
        s3_listen: Option<SocketAddr>,
        /// Base domain of virtual-host-style S3 requests (`bucket.DOMAIN`); repeatable.
        #[arg(long, requires = "s3_listen")]
        s3_domain: Vec<String>,
        /// Serve metrics (/metrics) and health (/health/ready, /health/live) on this address.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// A storage node silent this long is declared dead and its copies re-made (e.g. 10m).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        dead_after: Duration,
        /// Bytes per second this gateway re-copies when repairing or draining (e.g. 256M).
        #[arg(long, default_value = "256M")]
        repair_rate: String,
    },
    /// Upload a file (`-` for stdin).
    Put {
        /// Local file to upload (`-`: stdin).
        file: PathBuf,
        /// Object path (`~~` is /$MOBULA_ACCOUNT).
        path: String,
        /// Extra header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Number of copies (1-6).
        #[arg(short = 'c', long)]
        copies: Option<u8>,
        /// Create missing parent directories.
        #[arg(short = 'p', long)]
        parents: bool,
    },
    /// Download an object (to stdout, or FILE).
    Get {
        /// Object path.
        path: String,
        /// Local file to write (`-`: stdout).
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// List a directory.
    Ls {
        /// Directory path.
        path: String,
        /// Long listing: type, size, time, name.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Create a directory.
    Mkdir {
        /// Directory path.
        path: String,
        /// Create missing parents too (no error if it exists).
        #[arg(short = 'p', long)]
        parents: bool,
    },
    /// Delete an object or directory.
    Rm {
        /// Object or directory path.
        path: String,
        /// Delete a directory and everything below it.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Make a snaplink DST to object SRC.
    Ln {
        /// The object linked to.
        src: String,
        /// The new link's path.
        dst: String,
    },
    /// Show an object's or directory's headers.
    Info {
        /// Object or directory path.
        path: String,
    },
    /// Print a signed URL for GET of PATH (needs --key).
    Sign {
        /// Object path.
        path: String,
        /// Seconds the URL stays valid.
        #[arg(long, default_value_t = 3600)]
        expires: u64,
    },
    /// Run a command in exactly the sandbox a task gets.
    Sandbox {
        #[command(subcommand)]
        op: mobula::compute::SandboxOp,
    },
    /// A storage node's task images.
    Image {
        #[command(subcommand)]
        op: mobula::compute::ImageOp,
    },
    /// Accounts and their SSH keys (talks to the metadata service).
    Account {
        /// The `mobula up` data directory whose metadata service to use when no
        /// --metadata-url is given.
        #[arg(long, global = true, default_value = "./mobula-data")]
        data: PathBuf,
        #[command(subcommand)]
        op: AccountOp,
    },
    /// Storage nodes' lifecycle: list, drain, remove, rebalance (talks to the metadata service).
    Node {
        /// The `mobula up` data directory whose metadata service to use when no
        /// --metadata-url is given.
        #[arg(long, global = true, default_value = "./mobula-data")]
        data: PathBuf,
        #[command(subcommand)]
        op: mobula::nodecli::NodeOp,
    },
    /// One screen for the operator: roles, storage nodes, the data's health, running jobs.
    Status {
        /// The `mobula up` data directory whose recorded URLs to use when none is given.
        #[arg(long, default_value = "./mobula-data")]
        data: PathBuf,
        /// Admin listener for per-node figures (default: the one `mobula up` recorded).
        #[arg(long = "admin-url", env = "MOBULA_ADMIN_URL")]
        admin_url: Option<String>,
    },
    /// Map/reduce jobs over objects, run beside the data.
    Job {
        #[command(subcommand)]
        op: mobula::jobcli::JobOp,
    },
}

#[derive(Subcommand, Debug)]
enum AccountOp {
    /// Create an account (idempotent).
    Create {
        /// Account name ([a-z][a-z0-9_-]{0,63}).
        name: String,
    },
    /// List accounts.
    List,
    /// An account's keys.
    Key {
        #[command(subcommand)]
        op: KeyOp,
    },
    /// An account's S3 access keys.
    S3Key {
        #[command(subcommand)]
        op: S3KeyOp,
    },
}

#[derive(Subcommand, Debug)]
enum S3KeyOp {
    /// Make a new access key for an account; prints AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// (the secret is shown only this once).
    Create {
        /// Account name.
        name: String,
    },
    /// List an account's access key ids.
    List {
        /// Account name.
        name: String,
    },
    /// Remove an access key (it stops working within seconds).
    Remove {
        /// Account name.
        name: String,
        /// The access key id.
        access_key: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyOp {
    /// Add an OpenSSH public key file to an account.
    Add {
        /// Account name.
        name: String,
        /// OpenSSH public key file (`.pub`).
        file: PathBuf,
    },
    /// List an account's keys.
    List {
        /// Account name.
        name: String,
    },
    /// Remove a key (by MD5 or SHA256 fingerprint).
    Remove {
        /// Account name.
        name: String,
        /// The key's MD5 (`aa:bb:…`) or SHA256 (`SHA256:…`) fingerprint.
        fingerprint: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
}

/// Resolves at Ctrl-C or SIGTERM. The handlers are installed when this is called, not when it
/// is first awaited, so a signal that arrives while a role is starting is not lost (it would
/// otherwise kill the process before `up` could unmount its volume).
fn terminate() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    }
}

async fn serve(cmd: Cmd, up_account: String, log: LogFormat) -> anyhow::Result<()> {
    init_logging(log);
    // Before any role starts: the handles they take at start must record.
    mobula_http::telemetry::install();
    let stop = terminate();
    match cmd {
        Cmd::Up {
            data,
            listen,
            nodes,
            volume,
            btrfs_image,
            btrfs_size,
            no_auth,
            tls_cert,
            tls_key,
            no_jobs,
            slots,
            s3_listen,
            no_s3,
            s3_domain,
            admin_listen,
            dead_after,
            database,
        } => {
            // Absolute at the edge: roles and sandboxes work from other directories.
            let data = std::path::absolute(&data)?;
            let nodes_dir = data.join("nodes");
            let volume = match (volume, &btrfs_image) {
                (mobula::upvolume::VolumeChoice::Auto, Some(_)) => {
                    mobula::upvolume::VolumeChoice::Btrfs
                }
                (v, _) => v,
            };
            let (said, mounted) = mobula::upvolume::prepare(
                &data,
                volume,
                btrfs_image.as_deref(),
                parse_size(&btrfs_size)?,
            )?;
            println!("mobula up: {said}");
            let mut cfg = ClusterConfig::new(&data, listen);
            cfg.nodes = nodes;
            cfg.database = database;
            cfg.account = up_account.clone();
            cfg.gateway.require_signatures = !no_auth;
            cfg.gateway.dead_after = dead_after;
            cfg.gateway.tls = tls_cert.zip(tls_key);
            cfg.agent = agent_options(no_jobs, slots)?;
            if !no_s3 {
                cfg.s3 = Some((s3_listen, S3Config::with_domains(s3_domain)));
            }
            let key = mobula::upkey::find_or_make(&data)?;
            let c = Cluster::start(cfg).await?;
            mobula::upkey::register(&c.gw.meta, &up_account, &key).await?;
            // `mobula account …` run beside this data directory finds the metadata service.
            std::fs::write(
                data.join(cluster::METADATA_URL_FILE),
                format!("{}\n", c.metadata_url()),
            )?;
            let admin = mobula::admin::start(admin_listen, mobula::admin::for_cluster(&c)).await?;
            std::fs::write(
                data.join(mobula::status::ADMIN_URL_FILE),
                format!("{}\n", admin.url),
            )?;
            println!("mobula up: gateway listening on {}", c.url());
            println!(
                "  data: {}  nodes: {nodes}  account: {up_account}  key: {}{}",
                data.display(),
                key.private.display(),
                if no_auth {
                    "  (--no-auth: requests are not verified)"
                } else {
                    ""
                }
            );
            println!(
                "{}",
                mobula::upkey::environment(
                    c.url(),
                    &up_account,
                    &key,
                    c.metadata_url(),
                    &admin.url
                )
            );
            if let Some(s3) = c.s3_url() {
                let k = mobula::ups3::find_or_make(&data, &c.gw.meta, &up_account).await?;
                println!("mobula up: S3 listening on {s3}");
                println!("{}", mobula::ups3::environment(s3, &k));
            }
            println!(
                "mobula up: metrics at {0}/metrics, health at {0}/health",
                admin.url
            );
            stop.await;
            println!("mobula up: stopping");
            admin.stop().await;
            c.shutdown().await;
            if mounted {
                mobula_storage_node::volume::loopback::unmount(&nodes_dir)?;
            }
        }
        Cmd::Metadata {
            data,
            database,
            listen,
            create_account,
            admin_listen,
        } => {
            let (l, url) = cluster::bind(listen).await?;
            let database =
                database.unwrap_or_else(|| format!("sqlite:{}", data.join("mobula.db").display()));
            let m = cluster::start_metadata(l, url.clone(), &database)?;
            let client = mobula_metadata::MetadataClient::new(&url);
            for a in create_account {
                client.create_account(&a).await?;
            }
            println!("mobula metadata listening on {url}");
            let admin = start_admin(admin_listen, |h| mobula::admin::metadata(h, &url)).await?;
            stop.await;
            stop_admin(admin).await;
            m.stop().await;
        }
        Cmd::StorageNode {
            admin: Some(admin), ..
        } => node_admin(admin).await?,
        Cmd::StorageNode {
            admin: None,
            data,
            listen,
            metadata,
            advertise,
            scrub_every,
            scrub_rate,
            no_jobs,
            slots,
            admin_listen,
        } => {
            let data = data.ok_or_else(|| anyhow::anyhow!("--data is required"))?;
            let metadata = metadata.ok_or_else(|| anyhow::anyhow!("--metadata is required"))?;
            let (l, url) = cluster::bind(listen).await?;
            let mut cfg = NodeConfig::new(data, &metadata);
            cfg.advertise_url = advertise.clone();
            cfg.scrub_every = (scrub_every > 0).then(|| Duration::from_secs(scrub_every));
            cfg.scrub_rate = scrub_rate << 20;
            if let Some(a) = agent_options(no_jobs, slots)? {
                let me = advertise.clone().unwrap_or_else(|| url.clone());
                cfg.extension = Some(cluster::agent_for(&cfg.dir, &me, &metadata, &a, None)?);
            }
            println!("mobula storage-node listening on {url}");
            let admin = start_admin(admin_listen, |h| {
                mobula::admin::node(h, "node", &url, &metadata)
            })
            .await?;
            let n = cluster::start_node(l, url, cfg);
            stop.await;
            stop_admin(admin).await;
            n.stop().await;
        }
        Cmd::Gateway {
            listen,
            metadata,
            upload_timeout,
            require_signatures,
            tls_cert,
            tls_key,
            s3_listen,
            s3_domain,
            admin_listen,
            dead_after,
            repair_rate,
        } => {
            let (l, mut url) = cluster::bind(listen).await?;
            let mut cfg = GatewayConfig::new(&metadata);
            cfg.dead_after = dead_after;
            cfg.repair_rate = parse_size(&repair_rate)?;
            cfg.upload_timeout = Duration::from_secs(upload_timeout);
            cfg.require_signatures = require_signatures;
            if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                mobula_http::tls_acceptor(cert, key)?;
                url = url.replacen("http://", "https://", 1);
            }
            cfg.tls = tls_cert.zip(tls_key);
            let gw = Gateway::new(cfg);
            let s3 = match s3_listen {
                Some(addr) => {
                    let (sl, surl) = cluster::bind_for(&gw.cfg, addr).await?;
                    println!("mobula gateway: S3 listening on {surl}");
                    let cfg = S3Config::with_domains(s3_domain);
                    Some(cluster::start_s3(sl, surl, gw.clone(), cfg))
                }
                None => None,
            };
            let admin =
                start_admin(admin_listen, |h| mobula::admin::gateway(h, gw.clone())).await?;
            let g = cluster::start_gateway(l, url.clone(), gw);
            println!("mobula gateway listening on {url}");
            stop.await;
            stop_admin(admin).await;
            if let Some(s) = s3 {
                s.stop().await;
            }
            g.stop().await;
        }
        _ => unreachable!("client commands are handled by client()"),
    }
    Ok(())
}

/// Start the admin listener when `addr` is given, with the checks `f` adds; says where.
async fn start_admin(
    addr: Option<SocketAddr>,
    f: impl FnOnce(&mut mobula_http::telemetry::Health),
) -> anyhow::Result<Option<cluster::Running>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let mut h = mobula_http::telemetry::Health::default();
    f(&mut h);
    let admin = mobula::admin::start(addr, h).await?;
    println!(
        "admin: metrics at {0}/metrics, health at {0}/health",
        admin.url
    );
    Ok(Some(admin))
}

async fn stop_admin(admin: Option<cluster::Running>) {
    if let Some(a) = admin {
        a.stop().await;
    }
}

/// Parse `10G`, `512M`, `4096` into bytes.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("bad size {s:?}"))?;
    Ok(n * mult)
}

async fn node_admin(admin: NodeAdmin) -> anyhow::Result<()> {
    let c = mobula_storage_node::NodeClient::new();
    match admin {
        NodeAdmin::Scrub { node } => {
            let r = c.scrub(&node).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        NodeAdmin::Snapshot { op } => match op {
            SnapshotOp::Create { name, node } => {
                let s = c.snapshot_create(&node, &name).await?;
                println!("{}", serde_json::to_string_pretty(&s)?);
            }
            SnapshotOp::List { node } => {
                for s in c.snapshots(&node).await? {
                    println!("{}\t{}\t{}", s.name, s.created, s.path.display());
                }
            }
            SnapshotOp::Delete { name, node } => c.snapshot_delete(&node, &name).await?,
            SnapshotOp::Restore { name, data } => {
                let store = mobula_storage_node::Store::open(&data)?;
                store.volume().snapshot_restore(&name)?;
                println!("restored {} from snapshot {name}", data.display());
            }
        },
    }
    Ok(())
}

async fn client(c: Client, cmd: Cmd) -> Result<(), ClientError> {
    match cmd {
        Cmd::Put {
            file,
            path,
            headers,
            copies,
            parents,
        } => {
            let mut h: Vec<(String, String)> = headers
                .iter()
                .filter_map(|s| s.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            if let Some(n) = copies {
                h.push(("durability-level".into(), n.to_string()));
            }
            if parents {
                let full = c.expand(&path);
                if let Some((dir, _)) = full.rsplit_once('/') {
                    c.mkdir(dir, true).await?;
                }
            }
            c.put(&file, &path, &h).await
        }
        Cmd::Get { path, file } => c.get(&path, &file).await,
        Cmd::Ls { path, long } => {
            for e in c.list(&path).await? {
                // Directories and buckets hold entries; a bucket listing's groups (common
                // prefixes) already end with their delimiter.
                let holds = matches!(e.kind.as_str(), "directory" | "bucket");
                if long {
                    let kind = if holds || e.kind == "group" { "d" } else { "-" };
                    let mtime = e.mtime.as_deref().unwrap_or("-");
                    println!("{kind} {:>12} {mtime} {}", e.size.unwrap_or(0), e.name);
                } else if holds {
                    println!("{}/", e.name);
                } else {
                    println!("{}", e.name);
                }
            }
            Ok(())
        }
        Cmd::Mkdir { path, parents } => c.mkdir(&path, parents).await,
        Cmd::Rm { path, recursive } => c.rm(&path, recursive).await,
        Cmd::Ln { src, dst } => c.ln(&src, &dst).await,
        Cmd::Info { path } => {
            let h = c.info(&path).await?;
            let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
            names.sort();
            for k in names {
                if let Some(v) = h.get(&k).and_then(|v| v.to_str().ok()) {
                    println!("{k}: {v}");
                }
            }
            Ok(())
        }
        Cmd::Sign { path, expires } => {
            println!("{}", c.sign_url(&path, expires)?);
            Ok(())
        }
        _ => unreachable!("server commands are handled by serve()"),
    }
}

/// With the `failpoints` feature: `MOBULA_CRASH_AT=a,b` makes the process abort (no cleanup, as
/// a SIGKILL would) when it reaches any of those crash points; `a@N` at the Nth time it does.
#[cfg(feature = "failpoints")]
fn arm_crash_points() {
    if let Ok(points) = std::env::var("MOBULA_CRASH_AT") {
        for p in points.split(',').filter(|p| !p.is_empty()) {
            let (name, nth) = match p.split_once('@') {
                Some((n, k)) => (n.to_string(), k.parse::<usize>().expect("point@N")),
                None => (p.to_string(), 1),
            };
            let hits = std::sync::atomic::AtomicUsize::new(0);
            let point = name.clone();
            fail::cfg_callback(point, move || {
                if hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= nth {
                    eprintln!("mobula: crash point {name} reached: aborting");
                    std::process::abort();
                }
            })
            .expect("valid crash point");
        }
    }
}

/// Job agents for the nodes this process runs, unless `--no-jobs` (or not root: said once).
fn agent_options(
    no_jobs: bool,
    slots: Option<u32>,
) -> anyhow::Result<Option<cluster::AgentOptions>> {
    if no_jobs {
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("mobula: not root, so no job agents (task sandboxes need root); jobs will queue");
        return Ok(None);
    }
    Ok(Some(cluster::AgentOptions {
        exe: std::env::current_exe()?,
        slots,
    }))
}

fn main() -> ExitCode {
    // Inside a task, this binary is also the in-task tools (mpipe, mcat, mtee, msplit).
    let args: Vec<String> = std::env::args().collect();
    if let Some(tool) = args.first().and_then(|a| a.rsplit('/').next()) {
        if mobula_jobs::tools::TOOLS.contains(&tool) {
            return ExitCode::from(mobula_jobs::tools::main(tool, &args[1..]) as u8);
        }
    }
    // The sandbox zygote must start before any runtime thread exists: it forks.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == mobula_sandbox::ZYGOTE_ARG)
    {
        return ExitCode::from(mobula_sandbox::zygote::main() as u8);
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => {
            eprintln!("mobula: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A client command ends quietly when its reader goes away (`mobula get … | head`), as Unix
/// tools do, instead of panicking on a failed print: SIGPIPE back to its default. (Rust
/// ignores it, so that servers see `EPIPE` on a closed socket; the server roles keep that.)
/// `unsafe`: setting a signal's disposition is, by nix's contract.
#[allow(unsafe_code)]
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler; nothing in this process relies on SIGPIPE ignored.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

async fn async_main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    arm_crash_points();
    let cli = Cli::parse();
    if !matches!(
        cli.cmd,
        Cmd::Up { .. }
            | Cmd::Metadata { .. }
            | Cmd::StorageNode { .. }
            | Cmd::Gateway { .. }
            | Cmd::Sandbox { .. }
    ) {
        default_sigpipe();
    }
    match cli.cmd {
        cmd @ (Cmd::Up { .. }
        | Cmd::Metadata { .. }
        | Cmd::StorageNode { .. }
        | Cmd::Gateway { .. }) => match serve(cmd, cli.account, cli.log_format).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mobula: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Sandbox { op } => match mobula::compute::sandbox(op).await {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("mobula: {e:#}");
                ExitCode::from(125)
            }
        },
        Cmd::Node { data, op } => {
            let meta = mobula_metadata::MetadataClient::new(&metadata_url(cli.metadata_url, &data));
            match mobula::nodecli::run(&meta, op).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mobula: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Status { data, admin_url } => {
            let admin = admin_url.or_else(|| {
                std::fs::read_to_string(data.join(mobula::status::ADMIN_URL_FILE))
                    .ok()
                    .map(|s| s.trim().to_string())
            });
            let t = mobula::status::Targets {
                metadata: metadata_url(cli.metadata_url, &data),
                gateway: cli.url.clone(),
                admin,
            };
            match mobula::status::render(&t).await {
                Ok(s) => {
                    print!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mobula: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Account { data, op } => match account(cli.metadata_url, &data, op).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mobula: {e:#}");
                ExitCode::FAILURE
            }
        },
        cmd => {
            let c = match signed_client(&cli.url, &cli.account, cli.key.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mobula: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let r = match cmd {
                // Image commands fail locally as often as remotely: anyhow errors.
                Cmd::Image { op } => match mobula::compute::image(op, &c).await {
                    Ok(()) => return ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("mobula: {e:#}");
                        return ExitCode::FAILURE;
                    }
                },
                Cmd::Job { op } => mobula::jobcli::job(&c, op).await,
                cmd => client(c, cmd).await,
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mobula: {}: {}", e.code, e.message);
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A client for `url` acting as `account`, signing with the key file, or with the ssh-agent key
/// named by MOBULA_KEY_ID / MANTA_KEY_ID, or unsigned when neither is configured.
fn signed_client(
    url: &str,
    account: &str,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Client> {
    let c = Client::new(url, account);
    let key_id = std::env::var("MOBULA_KEY_ID")
        .or_else(|_| std::env::var("MANTA_KEY_ID"))
        .ok();
    let fp = match (key, key_id) {
        (Some(k), _) => return Ok(c.with_signer(mobula::sign::Signer::from_file(k, account)?)),
        (None, None) => return Ok(c),
        (None, Some(fp)) => fp,
    };
    // Like node-manta: the agent's key with that fingerprint, else the key file in ~/.ssh.
    let agent_err = match mobula::ssh_agent::Agent::from_env() {
        Some(agent) => match mobula::sign::Signer::from_agent(agent, &fp, account) {
            Ok(s) => return Ok(c.with_signer(s)),
            Err(e) => format!("{e:#}"),
        },
        None => "no ssh-agent (SSH_AUTH_SOCK is not set)".to_string(),
    };
    let ssh = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".ssh"))
        .unwrap_or_default();
    match mobula::keyfile::find(&ssh, &fp) {
        Some(file) => Ok(c.with_signer(mobula::sign::Signer::from_file(&file, account)?)),
        None => anyhow::bail!(
            "no key with fingerprint {fp} (MOBULA_KEY_ID / MANTA_KEY_ID): {agent_err}, and none \
             in {}",
            ssh.display()
        ),
    }
}

/// The metadata service `account` commands talk to: the flag or `MOBULA_METADATA_URL`, else
/// the one a `mobula up` on `data` recorded, else the default port of `mobula metadata`.
fn metadata_url(given: Option<String>, data: &std::path::Path) -> String {
    given
        .or_else(|| {
            std::fs::read_to_string(data.join(mobula::cluster::METADATA_URL_FILE))
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "http://127.0.0.1:7070".into())
}

async fn account(
    given: Option<String>,
    data: &std::path::Path,
    op: AccountOp,
) -> anyhow::Result<()> {
    let url = metadata_url(given, data);
    let m = mobula_metadata::MetadataClient::new(&url);
    // A clear word when nothing answers there (the error alone names no address).
    if let Err(e) = m.accounts().await {
        anyhow::bail!(
            "metadata service at {url}: {e} (start `mobula up`, or pass --metadata-url / \
             MOBULA_METADATA_URL)"
        );
    }
    match op {
        AccountOp::Create { name } => {
            anyhow::ensure!(
                mobula_gateway::path::ApiPath::parse(&format!("/{name}")).is_ok(),
                "bad account name {name:?} ([a-z][a-z0-9_-]{{0,63}})"
            );
            m.create_account(&name).await?;
        }
        AccountOp::List => {
            for a in m.accounts().await? {
                println!("{a}");
            }
        }
        AccountOp::Key { op } => match op {
            KeyOp::Add { name, file } => {
                let text = std::fs::read_to_string(&file)?;
                let (md5, sha256) = mobula_metadata::api::fingerprints(&text)?;
                m.add_key(&mobula_metadata::api::AccountKey {
                    account: name,
                    md5: md5.clone(),
                    sha256,
                    public_key: text.trim().to_string(),
                    created: mobula_metadata::api::now_ms(),
                })
                .await?;
                println!("{md5}");
            }
            KeyOp::List { name } => {
                for k in m.keys(&name).await? {
                    println!("{}\t{}\t{}", k.md5, k.sha256, k.public_key);
                }
            }
            KeyOp::Remove { name, fingerprint } => m.remove_key(&name, &fingerprint).await?,
        },
        AccountOp::S3Key { op } => match op {
            S3KeyOp::Create { name } => {
                let k = mobula_gateway::s3::keys::generate(&name);
                m.add_s3_key(&k).await?;
                println!("AWS_ACCESS_KEY_ID={}", k.access_key);
                println!("AWS_SECRET_ACCESS_KEY={}", k.secret);
            }
            S3KeyOp::List { name } => {
                for k in m.s3_keys(&name).await? {
                    let at = std::time::UNIX_EPOCH + Duration::from_millis(k.created.max(0) as u64);
                    println!(
                        "{}\tcreated {}",
                        k.access_key,
                        humantime::format_rfc3339_seconds(at)
                    );
                }
            }
            S3KeyOp::Remove { name, access_key } => m.remove_s3_key(&name, &access_key).await?,
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and every flag or argument of `mobula --help`, all the way down, has a
    /// description of its own.
    #[test]
    fn every_command_and_flag_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("{here}: no description"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                match a.get_help() {
                    None => missing.push(format!("{here} --{id}: no description")),
                    Some(h) if h.to_string().contains('\n') => {
                        missing.push(format!("{here} --{id}: not one line"))
                    }
                    _ => {}
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
        // Each top-level description is its own (no two glued together).
        let help = super::Cli::command().render_help().to_string();
        let line = |name: &str| {
            help.lines()
                .find(|l| l.trim_start().starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {help}"))
                .to_string()
        };
        assert!(!line("sandbox").contains("Account"), "{help}");
        assert!(line("account").contains("Accounts"), "{help}");
    }
}
