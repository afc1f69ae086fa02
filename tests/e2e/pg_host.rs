//! PostgreSQL as a host of the network-namespace cluster ([`crate::netns`]): Debian's server
//! binaries run as the `postgres` user (`initdb` refuses root) in the host's namespace, on a
//! fresh cluster in a directory of its own, trusting the test's private network.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The directory of PostgreSQL's server binaries (the newest installed), if any.
pub fn server() -> Option<String> {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|d| d.to_string_lossy().into_owned())
}

/// A running PostgreSQL in namespace `ns`.
pub struct Postgres {
    pub url: String,
    ns: String,
    ip: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// `args` run as the postgres user in namespace `ns` (`setpriv` execs: the child *is* the
/// program, so killing it kills PostgreSQL).
fn as_postgres(ns: &str, prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
    ])
    .args(["--init-groups", prog])
    .args(args)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    c
}

impl Postgres {
    /// A fresh cluster in `ns`, listening on `ip`:5432, superuser `mobula` (trusted).
    pub fn init(ns: &str, ip: &str) -> Postgres {
        let bin = server().expect("PostgreSQL server binaries");
        let dir = tempfile::Builder::new()
            .prefix("mobula-pg-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        for p in [dir.path(), data.as_path()] {
            nix::unistd::chown(p, Some(pg.uid), Some(pg.gid)).unwrap();
        }
        let initdb = format!("{bin}/initdb");
        let data_s = data.to_string_lossy();
        let st = std::process::Command::new("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                &initdb,
            ])
            .args([
                "-D",
                &data_s,
                "-A",
                "trust",
                "-U",
                "mobula",
                "--locale=C.UTF-8",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "initdb failed");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 0.0.0.0/0 trust\n",
        )
        .unwrap();
        let mut p = Postgres {
            url: format!("postgres://mobula@{ip}:5432/postgres"),
            ns: ns.to_string(),
            ip: ip.to_string(),
            dir,
            child: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let bin = server().unwrap();
        let data = self.dir.path().join("data");
        let sock = self.dir.path().to_string_lossy().into_owned();
        let listen = format!("listen_addresses={}", self.ip);
        let args = ["-D", &data.to_string_lossy(), "-k", &sock, "-c", &listen];
        self.child = Some(
            as_postgres(&self.ns, &format!("{bin}/postgres"), &args)
                .spawn()
                .unwrap(),
        );
        let t = Instant::now();
        let ready = format!("{bin}/pg_isready");
        while !std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, &ready, "-q", "-h", &self.ip])
            .status()
            .unwrap()
            .success()
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restart: a fast shutdown (SIGINT: connections cut, in-flight transactions rolled
    /// back), then a start on the same data.
    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
        }
        self.start();
    }
}
