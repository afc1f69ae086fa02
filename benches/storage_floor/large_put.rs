//! The large PUT half of the storage floor: `STREAMS` streams of 256 MiB at once, each sent by a
//! loopback TCP client and taken in by a thread of its own, 1 MiB at a time:
//! - `nginx's way`: written to one file, never fsync'd;
//! - `MD5 + blake3, N copies fsync'd`: what the contract asks at the least — the MD5 of the
//!   whole (`Content-MD5`, the ETag), each block's blake3 once (what verified reads check), the
//!   bytes written to each copy's file and every copy fsync'd before the end.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use md5::Digest;

use super::{measure, BLOCK, LARGE, STREAMS};

/// Take `LARGE` bytes from `c` into `copies` files under `dir` (named after `n`).
fn take_in(dir: &Path, n: usize, mut c: TcpStream, copies: usize, contract: bool) {
    let mut files: Vec<File> = (0..copies)
        .map(|k| File::create(dir.join(format!("put{n}-{k}"))).unwrap())
        .collect();
    let mut md5 = md5::Md5::new();
    let mut blocks = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    let mut got = 0;
    while got < LARGE {
        let mut fill = 0;
        while fill < BLOCK {
            match c.read(&mut buf[fill..]).unwrap() {
                0 => break,
                k => fill += k,
            }
        }
        let block = &buf[..fill];
        if contract {
            md5.update(block);
            blocks.push(blake3::hash(block));
        }
        for f in &mut files {
            f.write_all(block).unwrap();
        }
        got += fill;
    }
    if contract {
        for f in &files {
            f.sync_all().unwrap();
        }
        std::hint::black_box((md5.finalize(), blocks));
    }
}

/// MB/s and CPU-s per GB (all cores, the senders' included).
fn large_put(dir: &Path, copies: usize, contract: bool) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body: Vec<u8> = (0..BLOCK).map(|i| (i * 7 + i / 4093) as u8).collect();
    let (wall, cpu, _) = measure(|| {
        std::thread::scope(|s| {
            for _ in 0..STREAMS {
                let body = &body;
                s.spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    for _ in 0..LARGE / BLOCK {
                        c.write_all(body).unwrap();
                    }
                });
            }
            for n in 0..STREAMS {
                let c = listener.accept().unwrap().0;
                s.spawn(move || take_in(dir, n, c, copies, contract));
            }
        })
    });
    for n in 0..STREAMS {
        for k in 0..copies {
            let _ = std::fs::remove_file(dir.join(format!("put{n}-{k}")));
        }
    }
    nix::unistd::sync();
    let gb = (STREAMS * LARGE) as f64 / 1e9;
    (gb * 1000.0 / wall, cpu / gb)
}

/// The large PUT table.
pub fn large_puts(dir: &Path) {
    println!("\n{STREAMS} × 256 MiB PUT at once | MB/s | CPU-s per GB | ÷ nginx's way");
    let mut base = 0.0;
    for (name, copies, contract) in [
        ("nginx's way (1 copy, no fsync)", 1, false),
        ("MD5 + blake3, 1 copy fsync'd", 1, true),
        ("MD5 + blake3, 2 copies fsync'd", 2, true),
    ] {
        let runs: Vec<(f64, f64)> = (0..3).map(|_| large_put(dir, copies, contract)).collect();
        let (rate, cpu) = super::best(&runs);
        if !contract {
            base = rate;
        }
        println!("{name:<32} | {rate:>6.0} | {cpu:.2} | {:.2}", rate / base);
    }
}
