//! Imported images (a `docker save` tarball and an OCI layout with gzip layers, both built here
//! from busybox-static) run with their own userland, honour whiteouts and get a copy-on-write
//! root.

use std::io::Write;

use mobula_sandbox::{Input, TaskSpec};
use sha2::Digest;

use super::sandbox::{sandbox, BIN};

const BUSYBOX: &str = "/bin/busybox";

fn busybox() -> Option<Vec<u8>> {
    match std::fs::read(BUSYBOX) {
        Ok(b) => Some(b),
        Err(e) => {
            let why = format!("{BUSYBOX}: {e} (apt-get install busybox-static)");
            crate::skip(&why);
            None
        }
    }
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, body).unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    b.append_link(&mut h, path, target).unwrap();
}

/// Two layers: busybox userland; then whiteouts (a file and an opaque directory) and changes.
fn layers(bb: &[u8]) -> [Vec<u8>; 2] {
    let mut l1 = tar::Builder::new(Vec::new());
    add(&mut l1, "bin/busybox", bb, 0o755);
    for t in ["sh", "cat", "ls", "echo", "id", "touch"] {
        link(&mut l1, &format!("bin/{t}"), "busybox");
    }
    add(&mut l1, "etc/os-release", b"NAME=layer-one\n", 0o644);
    add(&mut l1, "etc/gone.txt", b"deleted by layer two\n", 0o644);
    add(&mut l1, "etc/dir/a", b"a\n", 0o644);
    let mut l2 = tar::Builder::new(Vec::new());
    add(&mut l2, "etc/.wh.gone.txt", b"", 0o644);
    add(&mut l2, "etc/dir/.wh..wh..opq", b"", 0o644);
    add(&mut l2, "etc/dir/b", b"b\n", 0o644);
    add(&mut l2, "etc/os-release", b"NAME=layer-two\n", 0o644);
    [l1.into_inner().unwrap(), l2.into_inner().unwrap()]
}

fn docker_save(bb: &[u8]) -> Vec<u8> {
    let [l1, l2] = layers(bb);
    let mut t = tar::Builder::new(Vec::new());
    add(&mut t, "aaa/layer.tar", &l1, 0o644);
    add(&mut t, "bbb/layer.tar", &l2, 0o644);
    add(&mut t, "config.json", b"{}", 0o644);
    let manifest = r#"[{"Config":"config.json","RepoTags":["test:1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#;
    add(&mut t, "manifest.json", manifest.as_bytes(), 0o644);
    t.into_inner().unwrap()
}

fn oci_layout(bb: &[u8]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    let blob = |t: &mut tar::Builder<Vec<u8>>, body: &[u8]| {
        let d = hex(&sha2::Sha256::digest(body));
        add(t, &format!("blobs/sha256/{d}"), body, 0o644);
        format!("sha256:{d}")
    };
    let mut digests = Vec::new();
    for l in layers(bb) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&l).unwrap();
        digests.push(blob(&mut t, &gz.finish().unwrap()));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "layers": digests.iter().map(|d| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d})).collect::<Vec<_>>(),
    });
    let m = blob(&mut t, manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": m}]});
    add(&mut t, "index.json", index.to_string().as_bytes(), 0o644);
    add(
        &mut t,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    t.into_inner().unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn docker_and_oci_images_run_with_their_own_userland() {
    let Some((sb, dir)) = sandbox() else { return };
    let Some(bb) = busybox() else { return };
    for (name, tarball, format) in [
        ("dockerimg", docker_save(&bb), "docker"),
        ("ociimg", oci_layout(&bb), "oci"),
    ] {
        let file = dir.path().join(format!("{name}.tar"));
        std::fs::write(&file, tarball).unwrap();
        let out = tokio::process::Command::new(BIN)
            .args(["image", "import", name])
            .arg(&file)
            .arg("--node-dir")
            .arg(dir.path())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("({format} image, 2 layer(s))")),
            "{stdout}"
        );

        let run = |cmd: &'static str| {
            let mut s = TaskSpec::new(vec!["sh".into(), "-c".into(), cmd.into()]);
            s.image = name.into();
            s
        };
        let c = sb
            .run(
                &run(
                    "cat /etc/os-release; ls /etc; ls /etc/dir; ls /usr/bin/python3 2>&1; \
                      echo changed > /etc/os-release; touch /new; ls /new; id -u",
                ),
                Input::Null,
                1 << 20,
            )
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&c.stdout);
        assert_eq!(
            out,
            "NAME=layer-two\ndir\nos-release\nb\nls: /usr/bin/python3: No such file or directory\n/new\n0\n",
            "{format}: {}",
            String::from_utf8_lossy(&c.stderr)
        );
        let c = sb
            .run(
                &run("cat /etc/os-release; ls /new 2>&1"),
                Input::Null,
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&c.stdout),
            "NAME=layer-two\nls: /new: No such file or directory\n",
            "the copy-on-write root's changes vanished with the task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_imported_from_an_object_into_every_node() {
    let Some((sb, dir)) = sandbox() else { return };
    let Some(bb) = busybox() else { return };
    let t = crate::T::start(3).await;
    assert_eq!(
        t.put("/admin/stor/img.tar", docker_save(&bb))
            .await
            .status(),
        204
    );
    // Two node directories under an `up`-style data dir: --all imports into both.
    let data = dir.path().join("data");
    for i in 0..2 {
        std::fs::create_dir_all(data.join("nodes").join(i.to_string())).unwrap();
    }
    let out = tokio::process::Command::new(BIN)
        .args(["image", "import", "fromobj", "/admin/stor/img.tar", "--all"])
        .arg(&data)
        .env("MOBULA_URL", t.c.url())
        .env("MOBULA_ACCOUNT", "admin")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.matches("imported fromobj (docker image, 2 layer(s))")
            .count(),
        2,
        "{said}"
    );
    for i in 0..2 {
        let rootfs = data
            .join("nodes")
            .join(i.to_string())
            .join("images/fromobj/rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/os-release")).unwrap(),
            "NAME=layer-two\n"
        );
    }
    // A missing object is a clear error and imports nothing.
    let out = tokio::process::Command::new(BIN)
        .args([
            "image",
            "import",
            "nope",
            "/admin/stor/missing.tar",
            "--node-dir",
        ])
        .arg(dir.path())
        .env("MOBULA_URL", t.c.url())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ResourceNotFound"));
    assert!(!sb.images().list().contains(&"nope".to_string()));
}
