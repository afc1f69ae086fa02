//! A cluster of hosts (issue 18): every role in a network namespace of its own — a metadata
//! service, two gateways, four storage nodes — joined by veth pairs to a bridge in a "switch"
//! namespace of the test's own (private addresses exist only inside these namespaces), and a
//! client in its own namespace speaking HTTP with curl. Then, under load and with two jobs
//! running (`netns_jobs.rs`: each done exactly once): `kill -9` of a gateway (the jobs
//! coordinator's lease moves) and of a storage node mid-task (restarted); a node's link cut (reads fail over, the node is declared
//! dead, its copies come back to durability 2 on the others); a node drained (it ends holding
//! nothing, with no failed request). Every acknowledged object reads back exact at the end.
//!
//! Twice: with SQLite in one metadata service, and with PostgreSQL in a host of its own behind
//! two metadata services (gateway 1 and nodes 0–1 use the first, the rest the second), where a
//! metadata service is killed with SIGKILL too and PostgreSQL is restarted mid-load.

use std::process::Stdio;
use std::time::{Duration, Instant};

use md5::Digest;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::netns_jobs::Jobs;
use crate::skip;

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

/// The namespaces and bridge of one test; deleted on drop.
pub struct Net {
    tag: String,
    subnet: String,
    hosts: Vec<String>,
    /// Where each role's stderr goes (`{logs}/{host}.log`), for a failure's message.
    logs: String,
}

fn ip(args: &[&str]) {
    let o = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Net {
    fn new(k: u8, logs: &str) -> Net {
        let n = std::process::id() % 200;
        let net = Net {
            tag: format!("mb{k}{n}"),
            subnet: format!("10.{}.{n}", 231 + k),
            hosts: Vec::new(),
            logs: logs.to_string(),
        };
        let sw = net.ns("sw");
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.tag)
    }

    /// A host `name` at `.octet`; its address.
    fn host(&mut self, name: &str, octet: u8) -> String {
        let (ns, sw) = (self.ns(name), self.ns("sw"));
        let peer = format!("v{octet}");
        ip(&["netns", "add", &ns]);
        ip(&[
            "-n", &sw, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &sw, "link", "set", &peer, "master", "br0", "up"]);
        let addr = format!("{}.{octet}", self.subnet);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        self.hosts.push(ns);
        addr
    }

    /// Run `mobula ARGS` in host `name`'s namespace.
    fn mobula(&self, name: &str, args: &[&str]) -> Child {
        // nsenter, not `ip netns exec`: that remounts /sys for the namespace, and with it
        // hides the cgroup2 tree the nodes' job agents need.
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns(name)))
            .arg(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(self.log_file(name))
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        let path = format!("{}/{name}.log", self.logs);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        f.unwrap()
    }

    /// The last lines each role wrote to stderr (for a failure's message).
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for h in &self.hosts {
            let name = h.strip_prefix(&format!("{}-", self.tag)).unwrap_or(h);
            let text = std::fs::read_to_string(format!("{}/{name}.log", self.logs));
            let text = text.unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n    ");
            out += &format!("\n  {name}:\n    {tail}");
        }
        out
    }

    /// A shell command in host `name`'s namespace: its stdout.
    pub async fn sh(&self, name: &str, script: &str) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns(name), "sh", "-c", script])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.ns("sw"))) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

/// The client's load loop: PUT then GET, objects `<tag><i>` through gateway `gw`, until `stop`
/// exists; one line per request in `log`: `PUT path body code` and `GET path body code md5`.
fn load_script(gw: &str, tag: &str, dir: &str) -> String {
    format!(
        "i=0; while [ ! -e {dir}/stop-{tag} ]; do b=$((i % 4)); p=/admin/stor/load/{tag}$i; \
         c=$(curl -s -m 20 -o /dev/null -w '%{{http_code}}' -X PUT --data-binary @{dir}/body$b \
         http://{gw}$p); echo \"PUT $p $b $c\" >> {dir}/log-{tag}; \
         if [ \"$c\" = 204 ]; then g=$(curl -s -m 20 -o {dir}/got-{tag} -w '%{{http_code}}' \
         http://{gw}$p); m=$(md5sum < {dir}/got-{tag} | cut -d' ' -f1); \
         echo \"GET $p $b $g $m\" >> {dir}/log-{tag}; fi; i=$((i + 1)); done"
    )
}

/// Acknowledged PUTs of a load's log: (path, body index); panics on wrong bytes served, and on
/// a failed request unless `may_fail` (an outage: an error, never wrong bytes).
fn check_log(dir: &str, tag: &str, md5s: &[String], may_fail: bool) -> Vec<(String, usize)> {
    let log = std::fs::read_to_string(format!("{dir}/log-{tag}")).unwrap_or_default();
    let mut acked = Vec::new();
    for l in log.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let b: usize = f[2].parse().unwrap();
        match f[0] {
            "PUT" if f[3] == "204" => acked.push((f[1].to_string(), b)),
            "PUT" => assert!(may_fail, "{tag}: a PUT failed: {l}"),
            _ if f[3] == "200" => assert_eq!(f[4], md5s[b], "{tag}: wrong bytes: {l}"),
            _ => assert!(may_fail, "{tag}: a GET failed: {l}"),
        }
    }
    acked
}

async fn rpc(net: &Net, meta: &str, method: &str, body: &str) -> Value {
    let out = net
        .sh(
            "client",
            &format!("curl -s -m 10 -X POST -d '{body}' http://{meta}/rpc/{method}"),
        )
        .await;
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_hosts_survives_kills_a_cut_link_and_a_drain() {
    cluster_of_hosts(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_postgresql_survives_kills_a_postgres_restart_a_cut_link_and_a_drain() {
    if crate::pg_host::server().is_none() {
        return skip("PostgreSQL's server binaries are not installed (package postgresql)");
    }
    cluster_of_hosts(true).await
}

async fn cluster_of_hosts(pg: bool) {
    if !nix::unistd::geteuid().is_root() {
        return skip("network namespaces need root");
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_string_lossy().to_string();
    let mut net = Net::new(pg as u8, &dir);
    let meta_ip = net.host("meta", 2);
    let meta2_ip = net.host("meta2", 6);
    let pg_ip = net.host("pg", 5);
    let mut postgres = pg.then(|| crate::pg_host::Postgres::init(&net.ns("pg"), &pg_ip));
    let database = postgres.as_ref().map(|p| p.url.clone());
    let gw_ips = [net.host("gw1", 3), net.host("gw2", 4)];
    let node_ips: Vec<String> = (0..4).map(|i| net.host(&format!("n{i}"), 10 + i)).collect();
    net.host("client", 100);
    let meta = format!("{meta_ip}:7070");
    let murl = format!("http://{meta}");
    // Metadata service `i` (1, or 2 with PostgreSQL); its URL.
    let start_meta = |i: usize| {
        let ip = if i == 1 { &meta_ip } else { &meta2_ip };
        let listen = format!("{ip}:7070");
        let data = format!("{dir}/meta");
        let mut args = vec!["metadata", "--listen", &listen, "--create-account", "admin"];
        match &database {
            Some(url) => args.extend(["--database", url.as_str()]),
            None => args.extend(["--data", data.as_str()]),
        }
        net.mobula(if i == 1 { "meta" } else { "meta2" }, &args)
    };
    let mut metas = vec![start_meta(1)];
    let murl2 = if pg {
        metas.push(start_meta(2));
        format!("http://{meta2_ip}:7070")
    } else {
        murl.clone()
    };
    // Nodes 0-1 and gateway 1 use metadata service 1; nodes 2-3 and gateway 2 service 2.
    let murl_of = |i: usize| if i < 2 { &murl } else { &murl2 };
    let start_node = |i: usize| {
        let listen = format!("{}:7100", node_ips[i]);
        net.mobula(
            &format!("n{i}"),
            &[
                "storage-node",
                "--data",
                &format!("{dir}/n{i}"),
                "--metadata",
                murl_of(i),
                "--listen",
                &listen,
                "--slots",
                "2",
            ],
        )
    };
    let mut nodes: Vec<Child> = (0..4).map(start_node).collect();
    let start_gw = |i: usize| {
        let listen = format!("{}:8080", gw_ips[i]);
        net.mobula(
            &format!("gw{}", i + 1),
            &[
                "gateway",
                "--listen",
                &listen,
                "--metadata",
                murl_of(2 * i),
                "--dead-after",
                "5s",
            ],
        )
    };
    let mut gws = [start_gw(0), start_gw(1)];
    let (gw1, gw2) = (format!("{}:8080", gw_ips[0]), format!("{}:8080", gw_ips[1]));
    // Bodies of a few sizes, and their MD5s.
    let mut md5s = Vec::new();
    for (b, size) in [10usize, 5000, 300_000, 3 << 20].iter().enumerate() {
        let body = crate::bytes(*size, b as u64);
        std::fs::write(format!("{dir}/body{b}"), &body).unwrap();
        md5s.push(format!("{:x}", md5::Md5::digest(&body)));
    }
    // Up: the client sees both gateways, which see 4 nodes.
    let t = Instant::now();
    loop {
        let nodes = rpc(&net, &meta, "node.list", "null").await;
        let up = net
            .sh(
                "client",
                &format!(
                    "curl -s -o /dev/null -w '%{{http_code}}' http://{gw2}/ping http://{gw1}/ping"
                ),
            )
            .await;
        if nodes.as_array().is_some_and(|n| n.len() == 4) && up == "200200" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "cluster not up: {nodes} {up}; logs:{}",
            net.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mkdir = format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -X PUT -H 'content-type: application/json; type=directory' http://{gw1}/admin/stor/load"
    );
    assert_eq!(net.sh("client", &mkdir).await, "204");

    eprintln!("netns: cluster up");
    // Two jobs, one through each gateway, running while the kills below happen.
    let jobs = Jobs::submit(&net, &dir, [&gw1, &gw2]).await;
    // Load through gw2 while gw1 and node 0 are killed with SIGKILL (node 0 restarted).
    let bg = |tag: &str, gw: &str| {
        let script = load_script(gw, tag, &dir);
        Command::new("ip")
            .args(["netns", "exec", &net.ns("client"), "sh", "-c", &script])
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut load = bg("a", &gw2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    gws[0].kill().await.unwrap();
    nodes[0].kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[0] = start_node(0);
    gws[0] = start_gw(0);
    if let Some(p) = postgres.as_mut() {
        // A metadata service killed with SIGKILL and restarted; then PostgreSQL restarted.
        tokio::time::sleep(Duration::from_secs(2)).await;
        metas[0].kill().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        metas[0] = start_meta(1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.restart().await;
        eprintln!("netns: PostgreSQL restarted");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::write(format!("{dir}/stop-a"), "").unwrap();
    load.wait().await.unwrap();
    // A request may fail while its copy's node, its metadata service or PostgreSQL is down (an
    // error, never acknowledged); no acknowledged object may be lost or served wrong.
    let mut acked = check_log(&dir, "a", &md5s, true);
    assert!(acked.len() > 10, "{} PUTs acknowledged", acked.len());
    jobs.check(&net, &gw2, &md5s).await;
    eprintln!("netns: jobs done exactly once");

    eprintln!("netns: kills survived");
    // Node 1's link is cut: reads fail over; it is declared dead; its copies come back.
    let n1 = rpc(&net, &meta, "node.list", "null")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["url"].as_str().unwrap().contains(&node_ips[1]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    net.sh("n1", "ip link set eth0 down").await;
    let check_all = |acked: Vec<(String, usize)>, gw: String| {
        let (net, md5s) = (&net, &md5s);
        async move {
            for (p, b) in &acked {
                let m = net
                    .sh(
                        "client",
                        &format!("curl -s -m 20 http://{gw}{p} | md5sum | cut -d' ' -f1"),
                    )
                    .await;
                assert_eq!(m.trim(), md5s[*b], "{p} through {gw}");
            }
        }
    };
    check_all(acked.clone(), gw1.clone()).await;
    let t = Instant::now();
    loop {
        let s = rpc(&net, &meta, "cluster.summary", "null").await;
        let left = rpc(
            &net,
            &meta,
            "node.copies",
            &format!("{{\"name\":\"{n1}\"}}"),
        )
        .await;
        if s["under_replicated"] == 0 && left == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "{s} {left}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("netns: node 1 re-replicated");
    let states = rpc(&net, &meta, "node.list", "null").await;
    let dead = states
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == n1.as_str())
        .unwrap();
    assert_eq!(dead["state"], "dead");

    // Node 2 is drained under load: no failed request at all, and it ends holding nothing.
    let n2 = states
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["url"].as_str().unwrap().contains(&node_ips[2]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut load = bg("b", &gw1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let drain = net
        .sh(
            "client",
            &format!("{BIN} node drain {n2} --metadata-url {murl}"),
        )
        .await;
    assert!(drain.contains("is drained"), "{drain}");
    std::fs::write(format!("{dir}/stop-b"), "").unwrap();
    load.wait().await.unwrap();
    acked.extend(check_log(&dir, "b", &md5s, false));
    eprintln!("netns: drained");
    // PUTs placed before gw1 saw the drain are re-made by the gateways' next pass.
    let t = Instant::now();
    while rpc(
        &net,
        &meta,
        "node.copies",
        &format!("{{\"name\":\"{n2}\"}}"),
    )
    .await
        != 0
    {
        assert!(t.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    check_all(acked, gw2.clone()).await;
}
