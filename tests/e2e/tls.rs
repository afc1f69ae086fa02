//! HTTPS on the gateway (`--tls-cert`, `--tls-key`, rustls): a certificate made here with the
//! openssl CLI; reqwest (rustls) trusting it; a plain-HTTP request to the TLS port goes nowhere.

use crate::T;

/// A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI in `dir`.
pub async fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = tokio::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await
        .expect("the openssl CLI is installed");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path()).await;
    let (c2, k2) = (cert.clone(), key.clone());
    let t = T::start_with(3, move |c| c.gateway.tls = Some((c2, k2))).await;
    let url = t.c.url().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .use_rustls_tls()
        .build()
        .unwrap();
    let r = https
        .put(format!("{url}/admin/stor/secret"))
        .body("over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = https
        .get(format!("{url}/admin/stor/secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "over tls");
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = url.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/admin/stor/secret"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    // A client that does not trust the certificate refuses the connection.
    let strict = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(strict
        .get(format!("{url}/admin/stor/secret"))
        .send()
        .await
        .is_err());
}
