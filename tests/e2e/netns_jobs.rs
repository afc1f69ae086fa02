//! The jobs of the cluster of hosts (`netns.rs`): two jobs submitted through the two gateways
//! just before the kills — a map-only `md5sum` over 16 inputs (tasks slowed by a sleep so that
//! the kills land mid-job) and a map/reduce byte count — and, once the dust has settled, the
//! check that each was done exactly once: every input's output present once, no error, the
//! reduce's total exact.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::Net;

/// Inputs per job; input `i` holds body `i % 3` (10 B, 5,000 B, 300,000 B).
const INPUTS: usize = 16;
const SIZES: [usize; 3] = [10, 5000, 300_000];

pub struct Jobs {
    /// The md5sum job and the byte-count job: their paths.
    md5: String,
    count: String,
}

async fn curl(net: &Net, args: &str) -> String {
    net.sh("client", &format!("curl -s -m 20 {args}")).await
}

/// Create a job from the JSON in `{dir}/{name}.json` through `gw`, give it the inputs; its path.
async fn create(net: &Net, dir: &str, gw: &str, name: &str, spec: &str, inputs: &str) -> String {
    std::fs::write(format!("{dir}/{name}.json"), spec).unwrap();
    let head = curl(
        net,
        &format!(
            "-D - -o /dev/null -X POST -H 'content-type: application/json' \
             --data-binary @{dir}/{name}.json http://{gw}/admin/jobs"
        ),
    )
    .await;
    let job = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or(l.strip_prefix("Location: "))
        })
        .unwrap_or_else(|| panic!("job {name} not created: {head}"))
        .trim()
        .to_string();
    let code = curl(
        net,
        &format!(
            "-o /dev/null -w '%{{http_code}}' -X POST --data-binary @{inputs} \
             'http://{gw}{job}/live/in?end=true'"
        ),
    )
    .await;
    assert_eq!(code, "204", "inputs of {job}");
    job
}

impl Jobs {
    /// Store the inputs through `gws[0]`; submit one job through each gateway.
    pub async fn submit(net: &Net, dir: &str, gws: [&str; 2]) -> Jobs {
        let mkdir = format!(
            "-o /dev/null -w '%{{http_code}}' -X PUT -H 'content-type: application/json; \
             type=directory' http://{}/admin/stor/jin",
            gws[0]
        );
        assert_eq!(curl(net, &mkdir).await, "204");
        let mut list = String::new();
        for i in 0..INPUTS {
            let p = format!("/admin/stor/jin/f{i:02}");
            let put = format!(
                "-o /dev/null -w '%{{http_code}}' -X PUT --data-binary @{dir}/body{} http://{}{p}",
                i % 3,
                gws[0]
            );
            // The gateways learn of the nodes within a few seconds of "cluster up".
            let t = Instant::now();
            loop {
                match curl(net, &put).await.as_str() {
                    "204" => break,
                    "503" if t.elapsed() < Duration::from_secs(15) => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    code => panic!("PUT {p}: {code}"),
                }
            }
            list += &format!("{p}\n");
        }
        let inputs = format!("{dir}/job-inputs");
        std::fs::write(&inputs, list).unwrap();
        let md5 = r#"{"phases":[{"type":"map","exec":"sleep 2; md5sum"}]}"#;
        let count = r#"{"phases":[{"type":"map","exec":"sleep 1; wc -c"},
            {"type":"reduce","exec":"awk '{s+=$1} END {print s}'"}]}"#;
        Jobs {
            md5: create(net, dir, gws[0], "md5", md5, &inputs).await,
            count: create(net, dir, gws[1], "count", count, &inputs).await,
        }
    }

    /// Wait (through `gw`) for both jobs; check that each was done exactly once.
    pub async fn check(&self, net: &Net, gw: &str, md5s: &[String]) {
        for job in [&self.md5, &self.count] {
            let t = Instant::now();
            loop {
                let s: Value = serde_json::from_str(
                    &curl(net, &format!("http://{gw}{job}/live/status")).await,
                )
                .unwrap_or(Value::Null);
                if s["state"] == "done" {
                    if s["stats"]["errors"] != 0 {
                        let errs = curl(net, &format!("http://{gw}{job}/live/err")).await;
                        panic!("{job}: {s}; errors: {errs}");
                    }
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(120), "{job}: {s}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let mut got = self.outputs(net, gw, &self.md5).await;
        let mut want: Vec<String> = (0..INPUTS)
            .map(|i| format!("{}  -\n", md5s[i % 3]))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "every input's md5sum exactly once");
        let total: usize = (0..INPUTS).map(|i| SIZES[i % 3]).sum();
        let got = self.outputs(net, gw, &self.count).await;
        assert_eq!(got, vec![format!("{total}\n")], "the byte count");
    }

    async fn outputs(&self, net: &Net, gw: &str, job: &str) -> Vec<String> {
        let list = curl(net, &format!("http://{gw}{job}/live/out")).await;
        let mut out = Vec::new();
        for o in list.lines() {
            out.push(curl(net, &format!("http://{gw}{o}")).await);
        }
        out
    }
}
