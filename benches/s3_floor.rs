//! The floor of the S3 wire layer: what `s3s` (the library issue 15 prescribes for S3's wire
//! format and SigV4) costs per request by itself, against plain HTTP serving the same bytes.
//!
//! Two servers in this process, on the same `mobula_http::serve_with` loop, each answering a
//! GET of one 4 KiB object from memory with the same headers Mobula's GET sends (ETag,
//! Last-Modified, Content-Type, Content-Length): `plain` answers straight from the handler;
//! `s3s` goes through an `S3Service` with a one-key `SimpleAuth`, whose `get_object` returns the
//! bytes — request routing, SigV4 presigned-URL verification, `GetObjectInput` parsing and
//! `GetObjectOutput` serialisation, nothing of Mobula's. The load is `wrk` (Debian's package, a
//! separate process: the CPU counted is the servers' alone, from /proc/self/stat), 32
//! connections, servers alternated over `--rounds N` (default 5) rounds of `--secs S` (default
//! 5) each. The difference of the two CPU costs per request is the fixed cost any S3 path built
//! on `s3s` pays on top of the same work served over plain HTTP.
//!
//! `cargo bench --bench s3_floor [-- --rounds N --secs S]`

#[path = "s3/sigv4.rs"]
#[allow(dead_code)] // the listing URLs are the s3 bench's
mod sigv4;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use mobula_http::{Body, Request};
use s3s::dto::{GetObjectInput, GetObjectOutput, StreamingBlob, Timestamp};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Request, S3Response, S3Result, S3};

const AK: &str = "MBFLOORBENCHKEY00000";
const SK: &str = "floorbenchsecretfloorbenchsecretfloorben";

fn body() -> Bytes {
    Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// An S3 implementation that only answers GetObject, from memory.
#[derive(Debug, Clone)]
struct Fixed(Bytes);

#[async_trait::async_trait]
impl S3 for Fixed {
    async fn get_object(
        &self,
        _req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let b = self.0.clone();
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(b.len() as i64),
            body: Some(StreamingBlob::from(s3s::Body::from(b))),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(s3s::dto::ETag::Strong(
                "d41d8cd98f00b204e9800998ecf8427e".into(),
            )),
            last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
            content_type: Some("application/octet-stream".into()),
            ..Default::default()
        }))
    }
}

async fn via_s3s(svc: S3Service, req: Request) -> Response<Body> {
    let resp = match svc.call(req.map(s3s::Body::from)).await {
        Ok(r) => r,
        Err(e) => panic!("s3s: {e:?}"),
    };
    resp.map(|b| b.map_err(|e| -> mobula_http::BoxError { e }).boxed_unsync())
}

async fn plain(b: Bytes) -> Response<Body> {
    let mut r = Response::new(mobula_http::full(b.clone()));
    let h = r.headers_mut();
    h.insert(
        "etag",
        HeaderValue::from_static("\"d41d8cd98f00b204e9800998ecf8427e\""),
    );
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    h.insert("last-modified", HeaderValue::from_str(&date).unwrap());
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("content-length", b.len().into());
    r
}

fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// One `wrk` run: requests per second and this process's CPU µs per request.
fn wrk(url: &str, secs: u64) -> (f64, f64) {
    let t0 = cpu_ticks();
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{secs}s"), url])
        .output()
        .expect("wrk (apt-get install wrk)");
    let t1 = cpu_ticks();
    let text = String::from_utf8_lossy(&out.stdout);
    let n: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("wrk's summary");
    assert!(!text.contains("Non-2xx"), "{text}");
    let tick_us = 1e6
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64;
    (n / secs as f64, (t1 - t0) as f64 * tick_us / n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).map(|i| a[i + 1].clone())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = arg("--rounds").map_or(5, |r| r.parse().unwrap());
    let secs: u64 = arg("--secs").map_or(5, |r| r.parse().unwrap());
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    let b = body();
    let plain_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s3_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_url = format!("http://{}/bench/obj", plain_l.local_addr().unwrap());
    let s3_host = s3_l.local_addr().unwrap().to_string();
    let limits = || mobula_http::Limits::default();
    let pb = b.clone();
    tokio::spawn(mobula_http::serve_with(
        plain_l,
        None,
        move |_req| plain(pb.clone()),
        std::future::pending(),
        Duration::from_secs(1),
        limits(),
    ));
    let mut sb = S3ServiceBuilder::new(Fixed(b.clone()));
    sb.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let svc = sb.build();
    tokio::spawn(mobula_http::serve_with(
        s3_l,
        None,
        move |req| via_s3s(svc.clone(), req),
        std::future::pending(),
        Duration::from_secs(1),
        limits(),
    ));
    let signer = sigv4::Signer::new(&s3_host, AK, SK);
    let s3_url = signer.presign("GET", "bench", "obj", &[]);
    let check = reqwest::get(&s3_url).await.unwrap();
    assert_eq!(check.status(), 200, "{}", check.text().await.unwrap());
    assert_eq!(check.bytes().await.unwrap(), b);
    let (mut p, mut s) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (pu, su) = (plain_url.clone(), s3_url.clone());
        let a = tokio::task::spawn_blocking(move || wrk(&pu, secs))
            .await
            .unwrap();
        let c = tokio::task::spawn_blocking(move || wrk(&su, secs))
            .await
            .unwrap();
        println!(
            "round {round}: plain {:.0} req/s {:.1} µs CPU; s3s {:.0} req/s {:.1} µs CPU",
            a.0, a.1, c.0, c.1
        );
        p.push(a);
        s.push(c);
    }
    let (pr, pc) = (
        median(p.iter().map(|x| x.0).collect()),
        median(p.iter().map(|x| x.1).collect()),
    );
    let (sr, sc) = (
        median(s.iter().map(|x| x.0).collect()),
        median(s.iter().map(|x| x.1).collect()),
    );
    println!("| 4 KiB GET from memory, wrk 32 connections | plain HTTP | through s3s (SigV4 presigned) |");
    println!("|---|---|---|");
    println!("| requests/s | {pr:.0} | {sr:.0} |");
    println!("| server CPU per request | {pc:.1} µs | {sc:.1} µs |");
    println!(
        "s3s's own cost per request: {:.1} µs of CPU (median of the rounds' differences: {:.1} µs)",
        sc - pc,
        median(p.iter().zip(&s).map(|(a, c)| c.1 - a.1).collect())
    );
}
