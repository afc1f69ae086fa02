//! Starting Mobula's roles: each alone (`mobula metadata|storage-node|gateway`) or all together
//! on this machine (`mobula up`), through the same functions. Tests start clusters with
//! [`Cluster::start`] on port 0 and drive them over real TCP.
//!
//! Data directory of `up`: `<data>/metadata/mobula.db` and `<data>/nodes/<i>/` per node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mobula_gateway::s3::S3Config;
use mobula_gateway::{Gateway, GatewayConfig};
use mobula_jobs::agent::{Agent, AgentConfig};
use mobula_metadata::{Db, MetadataClient};
use mobula_storage_node::NodeConfig;
use tokio::net::TcpListener;

/// The file in `up`'s data directory holding its metadata service's URL (for `mobula account`).
pub const METADATA_URL_FILE: &str = "metadata.url";
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A role running as a task of this process.
#[derive(Debug)]
pub struct Running {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stop gracefully: stop accepting, let requests in flight finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }

    /// Stop at once, dropping every connection (as if the process died).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Run `f` (given the stop signal) as a role of this process, known by `url`.
pub fn spawn_role<F>(url: String, f: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    Running {
        url,
        stop: Some(tx),
        task: tokio::spawn(f(rx)),
    }
}

async fn stopped(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Bind `addr` (port 0 for any free port) and return the listener with its URL.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, String)> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let url = format!("http://{}", l.local_addr()?);
    Ok((l, url))
}

/// Start the metadata service on `listener` with the database `database` names
/// (`sqlite:PATH`, a bare path, or `postgres://…`).
pub fn start_metadata(
    listener: TcpListener,
    url: String,
    database: &str,
) -> anyhow::Result<Running> {
    if !database.starts_with("postgres") {
        let path = Path::new(database.strip_prefix("sqlite:").unwrap_or(database));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let db = Arc::new(
        Db::connect(database)
            .with_context(|| format!("opening {}", mobula_metadata::redact_url(database)))?,
    );
    Ok(spawn_role(url, move |rx| async move {
        mobula_metadata::serve(listener, db, stopped(rx)).await
    }))
}

/// Start a storage node on `listener`.
pub fn start_node(listener: TcpListener, url: String, cfg: NodeConfig) -> Running {
    spawn_role(url, move |rx| async move {
        if let Err(e) = mobula_storage_node::run(cfg, listener, stopped(rx)).await {
            tracing::error!("storage node failed: {e}");
        }
    })
}

/// Start a gateway on `listener`.
pub fn start_gateway(listener: TcpListener, url: String, gw: Arc<Gateway>) -> Running {
    spawn_role(url, move |rx| async move {
        mobula_gateway::run(gw, listener, stopped(rx)).await
    })
}

/// Run the S3 listener of `gw` on `listener` (SPEC §8).
pub fn start_s3(listener: TcpListener, url: String, gw: Arc<Gateway>, cfg: S3Config) -> Running {
    spawn_role(url, move |rx| async move {
        mobula_gateway::s3::run(gw, cfg, listener, stopped(rx)).await
    })
}

/// Bind `addr` for a listener of `gw`: its URL is https when the gateway serves TLS (the
/// certificate is checked now, not in the background).
pub async fn bind_for(
    gw: &GatewayConfig,
    addr: SocketAddr,
) -> anyhow::Result<(TcpListener, String)> {
    let (l, mut url) = bind(addr).await?;
    if let Some((cert, key)) = &gw.tls {
        mobula_http::tls_acceptor(cert, key)?;
        url = url.replacen("http://", "https://", 1);
    }
    Ok((l, url))
}

/// Options of an all-in-one cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub nodes: usize,
    pub account: String,
    pub gateway: GatewayConfig,
    /// Run a job agent on every node (needs root), with this `mobula` binary.
    pub agent: Option<AgentOptions>,
    /// Run an S3 listener on this address.
    pub s3: Option<(SocketAddr, S3Config)>,
    /// The metadata database (default: SQLite at `<data>/metadata/mobula.db`).
    pub database: Option<String>,
}

/// How storage nodes run their job agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The `mobula` binary (sandbox helper and in-task tools).
    pub exe: PathBuf,
    /// Tasks per node at once (default: by cores and memory).
    pub slots: Option<u32>,
}

/// The job agent for the node in `dir`, reached at `url`, as the node's `/tasks/` handler.
pub fn agent_for(
    dir: &Path,
    url: &str,
    metadata_url: &str,
    a: &AgentOptions,
    local: Option<mobula_storage_node::LocalNodes>,
) -> anyhow::Result<mobula_storage_node::Extension> {
    let store = mobula_storage_node::Store::open(dir)?;
    let cfg = AgentConfig {
        node_dir: dir.to_path_buf(),
        node_id: store.node_id()?,
        url: url.to_string(),
        metadata_url: metadata_url.to_string(),
        exe: a.exe.clone(),
        slots: a.slots.unwrap_or_else(AgentConfig::default_slots),
        local,
    };
    let agent = Agent::new(cfg).with_context(|| format!("job agent in {}", dir.display()))?;
    Ok(agent.extension())
}

impl ClusterConfig {
    /// Defaults for a cluster in `data` with a gateway on `listen`.
    pub fn new(data: &Path, listen: SocketAddr) -> Self {
        ClusterConfig {
            data: data.to_path_buf(),
            listen,
            nodes: 3,
            account: "admin".into(),
            gateway: GatewayConfig::new(""),
            agent: None,
            s3: None,
            database: None,
        }
    }

    /// The metadata database spec.
    pub fn database(&self) -> String {
        match &self.database {
            Some(d) => d.clone(),
            None => format!(
                "sqlite:{}",
                self.data.join("metadata").join("mobula.db").display()
            ),
        }
    }
}

/// Metadata, storage nodes and a gateway running in this process.
#[derive(Debug)]
pub struct Cluster {
    pub cfg: ClusterConfig,
    pub metadata: Option<Running>,
    pub nodes: Vec<Option<Running>>,
    pub gateway: Option<Running>,
    /// The S3 listener, when asked for.
    pub s3: Option<Running>,
    pub gw: Arc<Gateway>,
}

impl Cluster {
    /// Start everything and wait until the gateway sees every node.
    pub async fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&cfg.data)?;
        let (ml, murl) = bind("127.0.0.1:0".parse()?).await?;
        let metadata = start_metadata(ml, murl.clone(), &cfg.database())?;
        let meta = MetadataClient::new(&murl);
        meta.create_account(&cfg.account).await?;
        let mut gcfg = cfg.gateway.clone();
        gcfg.metadata_url = murl.clone();
        // The nodes run in this process: the gateway reads their copies from their stores.
        gcfg.local_nodes = Some(gcfg.local_nodes.unwrap_or_default());
        let gw = Gateway::new(gcfg);
        let mut c = Cluster {
            cfg,
            metadata: Some(metadata),
            nodes: Vec::new(),
            gateway: None,
            s3: None,
            gw: gw.clone(),
        };
        for i in 0..c.cfg.nodes {
            let n = c.spawn_node(i).await?;
            c.nodes.push(Some(n));
        }
        let (gl, gurl) = bind_for(&c.cfg.gateway, c.cfg.listen).await?;
        c.gateway = Some(start_gateway(gl, gurl, gw.clone()));
        if let Some((addr, s3cfg)) = c.cfg.s3.clone() {
            let (sl, surl) = bind_for(&c.cfg.gateway, addr).await?;
            c.s3 = Some(start_s3(sl, surl, gw, s3cfg));
        }
        c.wait_for_nodes(c.cfg.nodes).await?;
        Ok(c)
    }

    /// The metadata service's URL.
    pub fn metadata_url(&self) -> &str {
        self.gw.meta.url()
    }

    /// The gateway's URL.
    pub fn url(&self) -> &str {
        &self.gateway.as_ref().expect("gateway running").url
    }

    /// The S3 listener's URL, when it runs.
    pub fn s3_url(&self) -> Option<&str> {
        self.s3.as_ref().map(|r| r.url.as_str())
    }

    /// Data directory of node `i`.
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.cfg.data.join("nodes").join(i.to_string())
    }

    async fn spawn_node(&self, i: usize) -> anyhow::Result<Running> {
        let (l, url) = bind("127.0.0.1:0".parse()?).await?;
        let mut ncfg = NodeConfig::new(self.node_dir(i), self.metadata_url());
        ncfg.heartbeat = Duration::from_millis(500);
        ncfg.local = self.gw.cfg.local_nodes.clone();
        if let Some(a) = &self.cfg.agent {
            let local = ncfg.local.clone();
            let agent = agent_for(&self.node_dir(i), &url, self.metadata_url(), a, local)?;
            ncfg.extension = Some(agent);
        }
        Ok(start_node(l, url, ncfg))
    }

    /// Kill node `i` (connections dropped at once).
    pub async fn kill_node(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.kill().await;
        }
    }

    /// Start node `i` again (on a new port; it re-registers).
    pub async fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_node(i).await;
        let n = self.spawn_node(i).await?;
        self.nodes[i] = Some(n);
        Ok(())
    }

    /// Wait until the gateway's registry shows `count` fresh nodes, each running node at
    /// its current address.
    pub async fn wait_for_nodes(&self, count: usize) -> anyhow::Result<()> {
        for _ in 0..200 {
            self.gw.nodes.refresh().await.ok();
            let registered = self.gw.meta.nodes().await.unwrap_or_default();
            let current = self
                .nodes
                .iter()
                .flatten()
                .all(|n| registered.iter().any(|r| r.url == n.url));
            let fresh = registered
                .iter()
                .filter(|r| r.last_seen_ago_ms < 2000)
                .count();
            if current && fresh >= count {
                return self.gw.nodes.refresh().await.map_err(Into::into);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("storage nodes did not register in time")
    }

    /// Kill the metadata service and start it again on the same address and database.
    pub async fn restart_metadata(&mut self) -> anyhow::Result<()> {
        let old = self.metadata.take().expect("metadata running");
        let url = old.url.clone();
        old.kill().await;
        let addr: SocketAddr = url.trim_start_matches("http://").parse()?;
        let (l, _) = bind(addr).await?;
        self.metadata = Some(start_metadata(l, url, &self.cfg.database())?);
        Ok(())
    }

    /// Kill the gateway (every connection dropped, its coordinator gone) and start a new one
    /// on the same address.
    pub async fn restart_gateway(&mut self) -> anyhow::Result<()> {
        let old = self.gateway.take().expect("gateway running");
        let url = old.url.clone();
        let addr: SocketAddr = url
            .rsplit_once("://")
            .map(|(_, a)| a)
            .unwrap_or(&url)
            .parse()?;
        old.kill().await;
        let mut gcfg = self.gw.cfg.clone();
        gcfg.metadata_url = self.metadata_url().to_string();
        self.gw = Gateway::new(gcfg);
        let (gl, _) = bind(addr).await?;
        self.gateway = Some(start_gateway(gl, url, self.gw.clone()));
        if let (Some(old), Some((_, s3cfg))) = (self.s3.take(), self.cfg.s3.clone()) {
            let url = old.url.clone();
            let addr: SocketAddr = url
                .rsplit_once("://")
                .map_or(&url[..], |(_, a)| a)
                .parse()?;
            old.kill().await;
            let (sl, _) = bind(addr).await?;
            self.s3 = Some(start_s3(sl, url, self.gw.clone(), s3cfg));
        }
        Ok(())
    }

    /// Stop everything gracefully.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.s3.take() {
            s.stop().await;
        }
        if let Some(g) = self.gateway.take() {
            g.stop().await;
        }
        for n in self.nodes.iter_mut().filter_map(Option::take) {
            n.stop().await;
        }
        if let Some(m) = self.metadata.take() {
            m.stop().await;
        }
    }
}
