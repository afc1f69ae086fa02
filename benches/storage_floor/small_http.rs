//! The small PUT's floor with the request it arrives in: each 4 KiB PUT a request of HTTP/1.1 on
//! a kept-alive loopback connection, read by a plain thread per connection (headers to the blank
//! line, then `Content-Length` bytes), its MD5 (`Content-MD5`, the ETag) and blake3 computed,
//! its two copies made durable as the line before (this thread and a helper at once), its row
//! group-committed, then `204` written back. No async runtime, no routing, no JSON.
//!
//! The server's CPU only, as the storage bench counts a server's: this process's CPU less the
//! client threads' own (each reads its `CLOCK_THREAD_CPUTIME_ID` at its end). The kernel's
//! loopback work done while a client sends is counted to the client and so left out: a floor
//! that errs low.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use md5::Digest;

use super::{committer, durable, measure, Row, WRITERS};

/// This thread's CPU seconds so far.
fn thread_cpu() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9
}

/// Serve one connection's PUTs until it closes.
fn serve(conn: TcpStream, homes: &[PathBuf], link_first: bool, rows: mpsc::Sender<Row>) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let (go, jobs) = mpsc::channel::<(String, Vec<u8>, mpsc::SyncSender<()>)>();
    let second = homes[1].clone();
    let helper = std::thread::spawn(move || {
        for (name, body, done) in jobs {
            durable(&second, &name, &body, true, link_first);
            done.send(()).unwrap();
        }
    });
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let name = line
            .split(' ')
            .nth(1)
            .unwrap()
            .trim_start_matches('/')
            .to_string();
        let mut len = 0;
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let md5 = md5::Md5::digest(&body);
        let b3 = blake3::hash(&body);
        std::hint::black_box((md5, b3));
        let (done, written) = mpsc::sync_channel(1);
        go.send((name.clone(), body.clone(), done)).unwrap();
        durable(&homes[0], &name, &body, true, link_first);
        written.recv().unwrap();
        let (done, wait) = mpsc::sync_channel(1);
        rows.send((name, done)).unwrap();
        wait.recv().unwrap();
        out.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    }
    drop(go);
    helper.join().unwrap();
}

/// One client connection: PUT `names` one after another; its thread's CPU seconds.
fn client(addr: std::net::SocketAddr, names: Vec<String>, body: &[u8]) -> f64 {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut answer = [0u8; 27];
    for name in names {
        let head = format!(
            "PUT /{name} HTTP/1.1\r\nHost: floor\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(&[head.as_bytes(), body].concat()).unwrap();
        c.read_exact(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 204"));
    }
    thread_cpu()
}

/// Ops/s and the server's CPU-ms per op of `n` 4 KiB PUTs over `WRITERS` connections.
pub(super) fn small_http_put(dir: &Path, n: usize, link_first: bool) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let homes: Vec<PathBuf> = (0..2).map(|c| dir.join(format!("copy{c}"))).collect();
    for h in &homes {
        std::fs::create_dir_all(h).unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel::<Row>();
    let meta = dir.join("meta.db");
    let body = vec![7u8; 4096];
    let mut clients_cpu = 0.0;
    let (wall, _, cpu) = measure(|| {
        std::thread::scope(|s| {
            s.spawn(|| committer(&meta, rx));
            let clients: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let names = (w..n).step_by(WRITERS).map(|i| format!("obj{i}")).collect();
                    let body = &body;
                    s.spawn(move || client(addr, names, body))
                })
                .collect();
            for _ in 0..WRITERS {
                let (conn, _) = listener.accept().unwrap();
                conn.set_nodelay(true).unwrap();
                let (tx, homes) = (tx.clone(), &homes);
                s.spawn(move || serve(conn, homes, link_first, tx));
            }
            drop(tx);
            clients_cpu = clients.into_iter().map(|c| c.join().unwrap()).sum();
        });
    });
    let _ = std::fs::remove_dir_all(dir);
    (n as f64 / wall, (cpu - clients_cpu) * 1000.0 / n as f64)
}
