//! nginx 1.22 (Debian's `nginx-light`) as the storage bench's peer: static GET with `sendfile`,
//! `dav_methods PUT`. Skipped with a note when not installed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::load::free_port;

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// nginx with `sendfile` and DAV PUT, 2 workers, one copy, no fsync; the child and its URL.
pub async fn start_nginx(dir: &Path) -> Option<(Child, String)> {
    let bin = nginx_binary()?;
    let port = free_port();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("body")).unwrap();
    let conf = format!(
        "user root; worker_processes 2; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_max_body_size 0;
  client_body_temp_path {d}/body; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {d}/www;
    location / {{ dav_methods PUT DELETE; create_full_put_path on; }} }} }}",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(&url).await.is_ok() {
            return Some((child, url));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The master's and its workers' pids (every process charged for nginx's CPU).
pub fn pids(master: u32) -> Vec<u32> {
    let mut all = vec![master];
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default();
    all.extend(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    all
}

/// Stop nginx and its workers (a SIGKILLed master leaves its workers running).
pub async fn stop(mut master: Child) {
    if let Some(pid) = master.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = master.wait().await;
}
