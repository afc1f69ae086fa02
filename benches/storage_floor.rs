//! The floor of issue 20's storage goals: what SPEC's data contract costs on this machine at the
//! very least, each piece the plainest way the kernel offers and none of Mobula's own structure
//! (no HTTP, no async runtime) — so that a goal can be set against what is possible, as
//! `benches/floor.rs` did for jobs.
//!
//! **Large GET**: 4 streams at once, each a 256 MiB file (in the page cache, as the storage bench's
//! just-written objects are) sent over loopback TCP to a thread that reads and discards it:
//! - `sendfile`: nginx's way, nothing verified;
//! - `read + blake3 + write`: every 1 MiB block read into a buffer, hashed and compared with its
//!   stored hash, then written — the contract at its plainest (Mobula's node does this);
//! - `mmap + blake3 + write`: the block hashed straight from the page cache, then written;
//! - `mmap + blake3, then sendfile`: the least the contract allows — each block hashed from the
//!   page cache and sent without passing through user memory.
//!
//! **1 MiB GET**: 16 connections at once, each sent 256 files of 1 MiB one after another (256
//! distinct files, in the page cache; each opened per send), `sendfile` against `read + blake3
//! + write` as above.
//!
//! **Small PUT**: 32 writers, 4 KiB each:
//! - `1 copy, no fsync`: what nginx does on disk (a temp file renamed into place);
//! - `2 copies fsync'd`: per copy a temp file written and fsync'd, renamed into place and its
//!   directory fsync'd (two copies, here on one disk, as `mobula up`'s nodes are), the two
//!   written at once by two threads, as a PUT's fan-out writes them;
//! - `2 copies, linked then one fsync` (btrfs and journaled ext4 only, where that is durable:
//!   Mobula's rule there);
//! - `+ SQLite group commit`: the fsync'd copies, then a row per object committed by one writer
//!   thread that takes every row waiting and commits them in one transaction (WAL,
//!   `synchronous=FULL`), each writer answered after its own row's commit;
//! - `+ HTTP/1.1, MD5 and blake3` (`storage_floor/small_http.rs`): the same, each PUT arriving
//!   as a request on one of 32 kept-alive loopback connections, its body hashed as the contract
//!   asks and `204` written back — the server's CPU only.
//!
//! Figures (the best of 3 runs: a floor): throughput; for GETs, CPU of all cores per GB (from
//! `/proc/stat`: the readers' and the kernel's deferred work included); for PUTs, CPU of the
//! writing process per operation (from `/proc/self/stat`, as the storage bench counts a
//! server's; the kernel's own threads — journal, writeback — are not counted). `cargo bench --bench storage_floor`. Env:
//! DIR (where files go, default the temp dir: point it at the volume's file system), N (small
//! PUTs per line, default 20,000 — the storage bench's 4 KiB count: an ext4 journal filling
//! and checkpointing over that many files is part of what the bench's PUTs pay), ONLY (`get`, `large-put` or `put`: that table alone).
//!
//! **Large PUT** (`storage_floor/large_put.rs`): 4 streams of 256 MiB at once, taken in over
//! loopback TCP — nginx's way (one copy, no fsync) against the contract's least (MD5, each
//! block's blake3 once, 1 or 2 copies written and fsync'd).

#![allow(unsafe_code)]

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/load.rs"]
mod load;

#[path = "storage_floor/large_put.rs"]
mod large_put;
#[path = "storage_floor/small_http.rs"]
mod small_http;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A file written for a GET line, and its blocks' hashes.
type Stored = (PathBuf, Vec<blake3::Hash>);

const BLOCK: usize = 1 << 20;
const LARGE: usize = 256 << 20;
const STREAMS: usize = 4;
const WRITERS: usize = 32;
/// The 1 MiB GET line: 16 connections (the storage bench's), 256 distinct files, 4 GiB sent.
const MEDIUM_CONNS: usize = 16;
const MEDIUM_EACH: usize = 256;
const MEDIUM_FILES: usize = 256;

/// Wall seconds, CPU seconds of all cores (a settling pause's deferred work included) and
/// CPU seconds of this process alone, of `run`.
fn measure(run: impl FnOnce()) -> (f64, f64, f64) {
    let own = || load::cpu(&[std::process::id()]);
    let (b0, o0, t0) = (cpu::busy(), own(), Instant::now());
    run();
    let wall = t0.elapsed().as_secs_f64();
    let o1 = own();
    std::thread::sleep(Duration::from_millis(300));
    (wall, cpu::busy() - b0, o1 - o0)
}

#[derive(Clone, Copy, PartialEq)]
enum Send {
    Sendfile,
    ReadHashWrite,
    MmapHashWrite,
    MmapHashSendfile,
}

/// Send `file` (whose block hashes are `hashes`) to `out` the way `how` says.
fn send(how: Send, file: &File, hashes: &[blake3::Hash], out: &mut TcpStream) {
    let len = file.metadata().unwrap().len() as usize;
    let check = |i: usize, block: &[u8]| assert_eq!(blake3::hash(block), hashes[i], "block {i}");
    let sendfile = |out: &TcpStream, at: usize, n: usize| {
        let mut off = at as i64;
        while (off as usize) < at + n {
            let left = at + n - off as usize;
            nix::sys::sendfile::sendfile(out.as_fd(), file.as_fd(), Some(&mut off), left).unwrap();
        }
    };
    match how {
        Send::Sendfile => sendfile(out, 0, len),
        Send::ReadHashWrite => {
            let mut f = file;
            for i in 0..len.div_ceil(BLOCK) {
                let mut buf = Vec::with_capacity(BLOCK);
                (&mut f).take(BLOCK as u64).read_to_end(&mut buf).unwrap();
                check(i, &buf);
                out.write_all(&buf).unwrap();
            }
        }
        Send::MmapHashWrite | Send::MmapHashSendfile => {
            let n = NonZeroUsize::new(len).unwrap();
            // SAFETY: a read-only mapping of a file nothing truncates meanwhile,
            // unmapped below after its last use.
            let p = unsafe { mmap(None, n, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, file, 0) }
                .unwrap();
            // SAFETY: the mapping is `len` readable bytes and lives until `munmap` below.
            let all = unsafe { std::slice::from_raw_parts(p.as_ptr() as *const u8, len) };
            for (i, block) in all.chunks(BLOCK).enumerate() {
                check(i, block);
                match how {
                    Send::MmapHashWrite => out.write_all(block).unwrap(),
                    _ => sendfile(out, i * BLOCK, block.len()),
                }
            }
            // SAFETY: `all` is not used past this point.
            unsafe { munmap(p, len) }.unwrap();
        }
    }
}

/// MB/s and CPU-s per GB of `conns` loopback connections at once, each sent `each` bytes by
/// `send_on(connection index, socket)` on a thread of its own to a reader that discards them.
fn over_loopback(
    conns: usize,
    each: usize,
    send_on: impl Fn(usize, &mut TcpStream) + Sync,
) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let send_on = &send_on;
    let (wall, cpu, _) = measure(|| {
        std::thread::scope(|s| {
            for _ in 0..conns {
                s.spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    let mut buf = vec![0u8; 256 << 10];
                    let mut got = 0;
                    while let Ok(n @ 1..) = c.read(&mut buf) {
                        got += n;
                    }
                    assert_eq!(got, each);
                });
            }
            for c in 0..conns {
                let mut out = listener.accept().unwrap().0;
                s.spawn(move || send_on(c, &mut out));
            }
        })
    });
    let gb = (conns * each) as f64 / 1e9;
    (gb * 1000.0 / wall, cpu / gb)
}

/// MB/s and CPU-s per GB of `STREAMS` files sent at once to loopback readers.
fn large_get(how: Send, files: &[Stored]) -> (f64, f64) {
    over_loopback(files.len(), LARGE, |c, out| {
        let (path, hashes) = &files[c];
        send(how, &File::open(path).unwrap(), hashes, out)
    })
}

/// MB/s and CPU-s per GB of `MEDIUM_CONNS` connections each sent `MEDIUM_EACH` of `files` (1
/// MiB each, opened per send as a server opens a file per GET) one after another.
fn medium_get(how: Send, files: &[Stored]) -> (f64, f64) {
    over_loopback(MEDIUM_CONNS, MEDIUM_EACH * BLOCK, |c, out| {
        for k in 0..MEDIUM_EACH {
            let (path, hashes) = &files[(c * MEDIUM_EACH + k) % files.len()];
            send(how, &File::open(path).unwrap(), hashes, out);
        }
    })
}

/// Write `body` as `dir/name` durably: temp file, fsync, rename, directory fsync — or, with
/// `link_first`, link into place then one fsync (btrfs logs the new name with the inode; ext4's
/// journal commits it with the inode's transaction).
fn durable(dir: &Path, name: &str, body: &[u8], fsync: bool, link_first: bool) {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).unwrap();
    f.write_all(body).unwrap();
    if !fsync {
        fs::rename(&tmp, dir.join(name)).unwrap();
        return;
    }
    if link_first {
        fs::rename(&tmp, dir.join(name)).unwrap();
        f.sync_all().unwrap();
    } else {
        f.sync_all().unwrap();
        fs::rename(&tmp, dir.join(name)).unwrap();
        File::open(dir).unwrap().sync_all().unwrap();
    }
}

type Row = (String, mpsc::SyncSender<()>);

/// One writer thread committing every waiting row in one transaction.
fn committer(db: &Path, rows: mpsc::Receiver<Row>) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS o (k TEXT PRIMARY KEY, v TEXT)",
    )
    .unwrap();
    while let Ok(first) = rows.recv() {
        let mut batch = vec![first];
        batch.extend(rows.try_iter());
        c.execute_batch("BEGIN").unwrap();
        for (k, _) in &batch {
            c.execute(
                "INSERT INTO o VALUES (?1, 'a row the size of an entry')",
                [k],
            )
            .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
        for (_, done) in batch {
            done.send(()).unwrap();
        }
    }
}

/// Ops/s and CPU-ms per op of `n` small PUTs by `WRITERS` threads.
fn small_put(
    dir: &Path,
    n: usize,
    copies: usize,
    fsync: bool,
    link_first: bool,
    db: bool,
) -> (f64, f64) {
    let _ = fs::remove_dir_all(dir);
    let homes: Vec<PathBuf> = (0..copies).map(|c| dir.join(format!("copy{c}"))).collect();
    for h in &homes {
        fs::create_dir_all(h).unwrap();
    }
    let (tx, rx) = mpsc::channel::<Row>();
    let meta = dir.join("meta.db");
    let body = vec![7u8; 4096];
    let (wall, _, cpu) = measure(|| {
        std::thread::scope(|s| {
            if db {
                s.spawn(|| committer(&meta, rx));
            }
            for w in 0..WRITERS {
                let (tx, homes, body) = (tx.clone(), &homes, &body);
                // The copies of one object are written at once, each by a thread of its own
                // (as a PUT's fan-out does); this writer writes the first.
                let helpers: Vec<_> = homes[1..]
                    .iter()
                    .map(|h| {
                        let (go, jobs) = mpsc::channel::<(String, mpsc::SyncSender<()>)>();
                        s.spawn(move || {
                            for (name, done) in jobs {
                                durable(h, &name, body, fsync, link_first);
                                done.send(()).unwrap();
                            }
                        });
                        go
                    })
                    .collect();
                s.spawn(move || {
                    for i in (w..n).step_by(WRITERS) {
                        let name = format!("obj{i}");
                        let (done, written) = mpsc::sync_channel(homes.len());
                        for go in &helpers {
                            go.send((name.clone(), done.clone())).unwrap();
                        }
                        durable(&homes[0], &name, body, fsync, link_first);
                        for _ in &helpers {
                            written.recv().unwrap();
                        }
                        if db {
                            let (done, wait) = mpsc::sync_channel(1);
                            tx.send((name, done)).unwrap();
                            wait.recv().unwrap();
                        }
                    }
                });
            }
            drop(tx);
        })
    });
    let _ = fs::remove_dir_all(dir);
    (n as f64 / wall, cpu * 1000.0 / n as f64)
}

/// The fastest run's (rate, cpu).
fn best(runs: &[(f64, f64)]) -> (f64, f64) {
    runs.iter()
        .copied()
        .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
}

fn main() {
    if std::env::args().any(|a| a == "--bench") && std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::var("DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let dir = tempfile::tempdir_in(&base).unwrap();
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let btrfs = nix::sys::statfs::statfs(dir.path())
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC);
    // Where a storage node links a new file first and fsyncs it once (Volume::file_fsync_keeps_its_name).
    let link_first = btrfs || mobula_storage_node::volume::plain::journaled_ext4(dir.path());
    println!(
        "storage floor on {} ({}; one fsync per new file: {link_first})",
        base.display(),
        if btrfs { "btrfs" } else { "not btrfs" }
    );

    let only = std::env::var("ONLY").unwrap_or_default();
    if only.is_empty() || only == "get" {
        large_gets(dir.path());
    }
    if only.is_empty() || only == "large-put" {
        large_put::large_puts(dir.path());
    }
    if only.is_empty() || only == "put" {
        small_puts(&dir.path().join("small"), n, link_first);
    }
}

/// `count` files of `len` bytes of text-like data under `dir`, written and fsync'd (no writeback
/// left to disturb what follows), with their blocks' hashes.
fn files(dir: &Path, name: &str, count: usize, len: usize) -> Vec<Stored> {
    (0..count)
        .map(|f| {
            let path = dir.join(format!("{name}{f}"));
            let data: Vec<u8> = (0..len)
                .map(|i| (i * 31 + f) as u8 ^ (i >> 13) as u8)
                .collect();
            let mut f = File::create(&path).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
            (path, data.chunks(BLOCK).map(blake3::hash).collect())
        })
        .collect()
}

/// Print the table `title` of `ways` (the first is `sendfile`, the ratios' base), each the best
/// of 3 runs of `get`; then delete `files`.
fn get_table(
    title: &str,
    ways: &[(&str, Send)],
    files: Vec<Stored>,
    get: fn(Send, &[Stored]) -> (f64, f64),
) {
    println!("\n{title} | MB/s | CPU-s per GB | ÷ sendfile");
    let mut base_rate = 0.0;
    for &(name, how) in ways {
        let runs: Vec<(f64, f64)> = (0..3).map(|_| get(how, &files)).collect();
        let (rate, cpu) = best(&runs);
        if how == Send::Sendfile {
            base_rate = rate;
        }
        println!(
            "{name:<32} | {rate:>6.0} | {cpu:.2} | {:.2}",
            rate / base_rate
        );
    }
    for (path, _) in files {
        fs::remove_file(path).unwrap();
    }
}

/// The GET half: its two tables.
fn large_gets(dir: &Path) {
    get_table(
        &format!("{STREAMS} × 256 MiB GET at once"),
        &[
            ("sendfile (nginx, unverified)", Send::Sendfile),
            ("read + blake3 + write", Send::ReadHashWrite),
            ("mmap + blake3 + write", Send::MmapHashWrite),
            ("mmap + blake3, then sendfile", Send::MmapHashSendfile),
        ],
        files(dir, "large", STREAMS, LARGE),
        large_get,
    );
    get_table(
        &format!("{MEDIUM_CONNS} connections × {MEDIUM_EACH} GETs of 1 MiB"),
        &[
            ("sendfile (nginx, unverified)", Send::Sendfile),
            ("read + blake3 + write", Send::ReadHashWrite),
        ],
        files(dir, "medium", MEDIUM_FILES, BLOCK),
        medium_get,
    );
    nix::unistd::sync();
}

/// The small PUT half: its table.
fn small_puts(small: &Path, n: usize, link_first: bool) {
    println!("\n{n} × 4 KiB PUT, {WRITERS} writers | ops/s | CPU-ms per op");
    let mut lines = vec![
        ("1 copy, no fsync (nginx)", 1, false, false, false),
        ("2 copies fsync'd", 2, true, false, false),
        (
            "2 copies fsync'd + SQLite group commit",
            2,
            true,
            false,
            true,
        ),
    ];
    if link_first {
        lines.push(("2 copies, linked then one fsync", 2, true, true, false));
        lines.push(("  + SQLite group commit", 2, true, true, true));
    }
    for (name, copies, fsync, link_first, db) in lines {
        let runs: Vec<(f64, f64)> = (0..3)
            .map(|_| small_put(small, n, copies, fsync, link_first, db))
            .collect();
        let (rate, cpu) = best(&runs);
        println!("{name:<40} | {rate:>6.0} | {cpu:.3}");
    }
    let runs: Vec<(f64, f64)> = (0..3)
        .map(|_| small_http::small_http_put(small, n, link_first))
        .collect();
    let (rate, cpu) = best(&runs);
    let name = "  + HTTP/1.1, MD5 and blake3 (server CPU)";
    println!("{name:<40} | {rate:>6.0} | {cpu:.3}");
}
