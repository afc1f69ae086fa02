//! The S3 listener with real third-party clients (SPEC §8): boto3 (the newest from PyPI and
//! Debian's older python3-boto3, whose checksum behaviour differs), the AWS CLI, s3cmd and rclone
//! each run their suite in `tests/s3/` against a real cluster and check the bytes. Over HTTPS,
//! boto3 sends unsigned aws-chunked bodies with a trailing CRC32.
//!
//! Interpreters: `MOBULA_BOTO3_PYTHON` (CI: a venv with PyPI's boto3; default `python3`) and
//! `MOBULA_OLD_BOTO3_PYTHON` (default `/usr/bin/python3`, Debian's boto3).

use std::net::SocketAddr;
use std::path::Path;

use mobula_gateway::s3::S3Config;
use reqwest::Method;

use crate::{skip, T};

const SUITES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3");

/// A cluster with an S3 listener, an access key for `admin`, and another account's bucket.
pub async fn start(
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> (T, Vec<(String, String)>) {
    start_with(tls, S3Config::default()).await
}

pub async fn start_with(
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    s3: S3Config,
) -> (T, Vec<(String, String)>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let t = T::start_with(3, move |c| {
        c.s3 = Some((addr, s3));
        c.gateway.tls = tls;
    })
    .await;
    let key = mobula_gateway::s3::keys::generate("admin");
    t.c.gw.meta.add_s3_key(&key).await.unwrap();
    t.c.gw.meta.create_account("other").await.unwrap();
    t.c.gw
        .meta
        .create_bucket("/other/buckets/private-data")
        .await
        .unwrap();
    let http = if t.c.url().starts_with("https") {
        None
    } else {
        Some(
            t.req(Method::PUT, "/other/buckets/private-data/objects/secret")
                .body("not yours")
                .send()
                .await
                .unwrap(),
        )
    };
    assert!(http.is_none_or(|r| r.status() == 204));
    let env = vec![
        ("AWS_ENDPOINT_URL".into(), t.c.s3_url().unwrap().to_string()),
        ("AWS_ACCESS_KEY_ID".into(), key.access_key),
        ("AWS_SECRET_ACCESS_KEY".into(), key.secret),
        ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
        ("OTHER_BUCKET".into(), "private-data".into()),
    ];
    (t, env)
}

/// Whether `python` can import boto3.
fn has_boto3(python: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import boto3"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `program args` with `env`; panic with its output unless it succeeds and says "ok".
async fn run(program: &str, args: &[&str], env: &[(String, String)]) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{program} {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

fn new_python() -> String {
    std::env::var("MOBULA_BOTO3_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn old_python() -> String {
    std::env::var("MOBULA_OLD_BOTO3_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

async fn boto3(python: &str, part: &str, tag: &str) {
    if !has_boto3(python) {
        return skip(&format!(
            "{python} has no boto3 (pip install boto3 / apt install python3-boto3)"
        ));
    }
    let cfg = S3Config {
        fast_get: true,
        ..S3Config::default()
    };
    let fast = cfg.fast_served.clone();
    let (t, mut env) = start_with(None, cfg).await;
    env.push(("S3_PART".into(), part.into()));
    env.push(("S3_TAG".into(), tag.into()));
    let suite = format!("{SUITES}/boto3_suite.py");
    let out = run(python, &[&suite], &env).await;
    eprintln!("{}", out.trim());
    if part == "all" {
        // boto3's plain get_object calls (signed in headers, and its presigned URL) take the
        // GET fast path; its ranged and failing ones are s3s's.
        let n = fast.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n >= 4, "{python}: {n} GETs took the fast path");
        // The copy is a snaplink: both keys share one data id (no byte moved, no file added).
        let src = t
            .data_of(&format!("/admin/buckets/{tag}-keep/objects/copy-src"))
            .await;
        let dst = t
            .data_of(&format!("/admin/buckets/{tag}-keep/objects/copy-dst"))
            .await;
        assert_eq!(src.id, dst.id);
    }
    // Another account's object was never touched.
    let r = t.get("/other/buckets/private-data/objects/secret").await;
    assert_eq!(r.text().await.unwrap(), "not yours");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boto3_round_trips() {
    boto3(&new_python(), "all", "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boto3_bad_input_gets_s3_errors_and_stores_nothing() {
    boto3(&new_python(), "bad", "newbad").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debian_boto3_round_trips() {
    boto3(&old_python(), "all", "old").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debian_boto3_bad_input() {
    boto3(&old_python(), "bad", "oldbad").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boto3_over_tls_sends_aws_chunked_with_trailing_checksums() {
    let python = new_python();
    if !has_boto3(&python) {
        return skip(&format!("{python} has no boto3"));
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::tls::self_signed(dir.path()).await;
    let (_t, mut env) = start(Some((cert.clone(), key))).await;
    assert!(env[0].1.starts_with("https://"), "{}", env[0].1);
    env.push(("S3_PART".into(), "tls".into()));
    env.push(("S3_TAG".into(), "tls".into()));
    env.push(("S3_CA".into(), cert.display().to_string()));
    run(&python, &[&format!("{SUITES}/boto3_suite.py")], &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn virtual_host_style_addressing() {
    let python = new_python();
    if !has_boto3(&python) {
        return skip(&format!("{python} has no boto3"));
    }
    let domains = vec!["s3.mobula.test".to_string()];
    let (_t, mut env) = start_with(None, S3Config::with_domains(domains)).await;
    env.push(("S3_PART".into(), "vhost".into()));
    env.push(("S3_TAG".into(), "vh".into()));
    env.push(("S3_DOMAIN".into(), "s3.mobula.test".into()));
    run(&python, &[&format!("{SUITES}/boto3_suite.py")], &env).await;
}

async fn cli(client: &str, program: &str) {
    if !Path::new(program).exists() && which(program).is_none() {
        return skip(&format!(
            "{program} is not installed (apt install {client})"
        ));
    }
    let python = new_python();
    let (_t, mut env) = start(None).await;
    env.push(("S3_CLIENT".into(), client.into()));
    env.push(("S3_TAG".into(), client.into()));
    env.push(("AWS_CLI".into(), program.into()));
    run(&python, &[&format!("{SUITES}/cli_suite.py")], &env).await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.exists())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_cli_copies_syncs_lists_and_removes() {
    // Debian's AWS CLI v2 (a pyenv shim may put another `aws` first on PATH).
    cli("aws", "/usr/bin/aws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3cmd_round_trips() {
    cli("s3cmd", "s3cmd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rclone_copies_checks_lists_and_deletes() {
    cli("rclone", "rclone").await;
}

/// Map/reduce beside the data of objects boto3 wrote; the result goes into a bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_over_objects_written_by_boto3() {
    use serde_json::json;
    let python = new_python();
    if !has_boto3(&python) {
        return skip(&format!("{python} has no boto3"));
    }
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let Some(t) =
        crate::jobs::cluster_with(3, move |c| c.s3 = Some((addr, S3Config::default()))).await
    else {
        return;
    };
    let key = mobula_gateway::s3::keys::generate("admin");
    t.c.gw.meta.add_s3_key(&key).await.unwrap();
    let script = r#"
import boto3, os
s3 = boto3.client("s3")
s3.create_bucket(Bucket="job-in")
s3.create_bucket(Bucket="job-out")
for i in range(6):
    s3.put_object(Bucket="job-in", Key=f"logs/day{i}.txt", Body=(" ".join(["w"] * (i + 1)) + "\n").encode())
print("ok")
"#;
    let env = vec![
        (
            "AWS_ENDPOINT_URL".to_string(),
            t.c.s3_url().unwrap().to_string(),
        ),
        ("AWS_ACCESS_KEY_ID".into(), key.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), key.secret.clone()),
        ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
    ];
    run(&python, &["-c", script], &env).await;
    let inputs: Vec<String> = (0..6)
        .map(|i| format!("/admin/buckets/job-in/objects/logs/day{i}.txt"))
        .collect();
    let job = crate::jobs::create(
        &t,
        json!({"name": "bucket-wc", "phases": [
            // Inside the task the object is the file /manta/:account/buckets/:bucket/objects/:key.
            {"type": "map", "exec":
                "test \"$MANTA_INPUT_FILE\" = \"/manta$MANTA_INPUT_OBJECT\" && wc -w < /manta/admin/buckets/job-in/objects/logs/$(basename $MANTA_INPUT_OBJECT)"},
            {"type": "reduce",
             "exec": "awk '{s+=$1} END {print s}' | mpipe /admin/buckets/job-out/objects/total.txt"}
        ]}),
    )
    .await;
    crate::jobs::add(&t, &job, &inputs, true).await;
    let s = crate::jobs::wait(&t, &job, 90).await;
    assert_eq!(s["stats"]["errors"], 0, "{s}");
    // Every map ran on a node holding its input.
    let log = crate::jobs::task_log(&t);
    let maps: Vec<_> = log.iter().filter(|l| l["input"].is_string()).collect();
    assert_eq!(maps.len(), 6);
    for m in maps {
        assert_eq!(m["local"], true, "{m}");
    }
    // The total (1 + 2 + … + 6 words) is in the bucket, readable with boto3 and the Manta API.
    assert_eq!(
        t.get_bytes("/admin/buckets/job-out/objects/total.txt")
            .await,
        b"21\n"
    );
    let check = r#"
import boto3
b = boto3.client("s3").get_object(Bucket="job-out", Key="total.txt")["Body"].read()
assert b == b"21\n", b
print("ok")
"#;
    run(&python, &["-c", check], &env).await;
}
