//! `--web.config.file` (the Prometheus exporter-toolkit format) against real clients: `curl`
//! over TLS with and without basic-auth credentials and client certificates, a plain-HTTP
//! client on the TLS port, and a real Prometheus scraping the agent with `basic_auth` and
//! `tls_config`. Certificates are made by `openssl` for each run.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, metric_value, real_kernel_or_skip, Agent};

const USER: &str = "prom";
const PASSWORD: &str = "s3cret pass";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn certificates(dir: &Path) {
    let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=oomwatch test CA",
    ]);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        ossl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

/// `curl` on `https://127.0.0.1:port{path}` trusting the test CA: (status code, headers and
/// body). Status 0: no HTTP answer (handshake refused).
fn curl(dir: &Path, port: u16, path: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--max-time", "5", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .current_dir(dir)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until Prometheus reports the target's `up` (1 or 0) for the job; returns it with the
/// last error Prometheus gave for the target.
fn prometheus_up(port: u16, within: Duration) -> (Option<String>, String) {
    let end = Instant::now() + within;
    let mut last = (None, String::new());
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        let out = Command::new("curl")
            .args(["-s", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{port}/api/v1/targets"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(t) = v["data"]["activeTargets"].get(0) {
            let health = t["health"].as_str().map(str::to_owned);
            last = (
                health.clone(),
                t["lastError"].as_str().unwrap_or("").to_owned(),
            );
            if health.as_deref() == Some("up") {
                break;
            }
        }
    }
    last
}

#[test]
fn tls_basic_auth_headers_and_a_real_prometheus_scrape() {
    if !real_kernel_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certificates(dir);
    let hash = bcrypt::hash(PASSWORD, 6).unwrap();
    let web = dir.join("web.yml");
    fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  {USER}: {hash}\n\
             http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n"
        ),
    )
    .unwrap();
    let agent = Agent::start(&["--web.config.file", web.to_str().unwrap()]);
    let port = agent.port;
    let creds = format!("{USER}:{PASSWORD}");

    let (code, text) = curl(dir, port, "/metrics", &[]);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("www-authenticate: Basic"), "{text}");
    let (code, _) = curl(dir, port, "/metrics", &["-u", "prom:wrong"]);
    assert_eq!(code, 401);
    let (code, text) = curl(dir, port, "/metrics", &["-u", &creds]);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("oomwatch_build_info"), "{text}");
    for h in [
        "strict-transport-security: max-age=31536000",
        "x-content-type-options: nosniff",
        "content-security-policy: default-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            text.to_lowercase().contains(h),
            "{h} missing:\n{}",
            &text[..600]
        );
    }
    let (code, _) = curl(dir, port, "/healthz", &[]);
    assert_eq!(code, 200, "liveness probes need no credentials");
    let (code, _) = curl(dir, port, "/events", &["-u", &creds]);
    assert_eq!(code, 200);
    // Plain HTTP on the TLS port: no answer, counted.
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");

    // A real Prometheus with basic_auth and tls_config.
    fs::write(dir.join("password"), PASSWORD).unwrap();
    let prom_port = free_port();
    fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n- job_name: oomwatch\n  scheme: https\n\
             \x20 basic_auth:\n    username: {USER}\n    password_file: {}\n\
             \x20 tls_config:\n    ca_file: {}\n\
             \x20 static_configs:\n  - targets: ['127.0.0.1:{port}']\n",
            dir.join("password").display(),
            dir.join("ca.crt").display()
        ),
    )
    .unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    let (health, error) = prometheus_up(prom_port, Duration::from_secs(30));
    eprintln!("prometheus scrape over TLS with basic auth: {health:?} {error:?}");
    assert_eq!(health.as_deref(), Some("up"), "{error}");

    let (_, m) = curl(dir, port, "/metrics", &["-u", &creds]);
    let handshakes = metric_value(
        &m,
        "oomwatch_http_connection_errors_total{reason=\"tls_handshake\"}",
    );
    assert!(
        handshakes >= Some(1.0),
        "plain HTTP not counted: {handshakes:?}"
    );
    assert!(
        metric_value(&m, "oomwatch_http_requests_total{code=\"401\"}") >= Some(2.0),
        "401s not counted"
    );
}

#[test]
fn client_certificates_and_metrics_only() {
    if !real_kernel_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certificates(dir);
    let web = dir.join("web.yml");
    fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         \x20 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
         \x20 min_version: TLS13\n",
    )
    .unwrap();
    let agent = Agent::start(&["--web.config.file", web.to_str().unwrap(), "--metrics-only"]);
    let port = agent.port;
    let (code, _) = curl(dir, port, "/metrics", &[]);
    assert_eq!(code, 0, "answered without a client certificate");
    let cert: PathBuf = dir.join("client.crt");
    let key: PathBuf = dir.join("client.key");
    let with_cert = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (code, text) = curl(dir, port, "/metrics", &with_cert);
    assert_eq!(code, 200, "{text}");
    let (code, _) = curl(dir, port, "/events", &with_cert);
    assert_eq!(code, 404, "/events with --metrics-only");
    let (code, _) = curl(dir, port, "/", &with_cert);
    assert_eq!(code, 404, "/ with --metrics-only");
    let (code, _) = curl(
        dir,
        port,
        "/metrics",
        &[&with_cert[..], &["--tls-max", "1.2"]].concat(),
    );
    assert_eq!(code, 0, "TLS 1.2 accepted with min_version TLS13");

    // A bad file stops the agent at start, in one line naming it.
    fs::write(
        &web,
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: k\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["run", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--web.config.file")
        .arg(&web)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("--web.config.file") && last.contains("nope.crt"),
        "{err}"
    );
}

/// The status of `GET http://127.0.0.1:port/metrics` with `user:password`.
fn plain_status(port: u16, creds: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            creds,
        ])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Polls until `user:password` gets `want`, for at most `within`.
fn until_status(port: u16, creds: &str, want: u16, within: Duration) -> u16 {
    let end = Instant::now() + within;
    loop {
        let got = plain_status(port, creds);
        if got == want || Instant::now() >= end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_file_is_reloaded_on_sighup_and_when_it_changes() {
    if !real_kernel_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let web = tmp.path().join("web.yml");
    let users = |user: &str| {
        let hash = bcrypt::hash(PASSWORD, 4).unwrap();
        // Written aside and renamed: a reader never sees half a file.
        let next = tmp.path().join("web.yml.new");
        fs::write(&next, format!("basic_auth_users:\n  {user}: {hash}\n")).unwrap();
        fs::rename(&next, &web).unwrap();
    };
    users("alice");
    let agent = Agent::start(&["--web.config.file", web.to_str().unwrap()]);
    let port = agent.port;
    let creds = |u: &str| format!("{u}:{PASSWORD}");
    assert_eq!(plain_status(port, &creds("alice")), 200);
    assert_eq!(plain_status(port, &creds("bob")), 401);

    // SIGHUP: at once.
    users("bob");
    // SAFETY: kill with our own child's pid.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    assert_eq!(
        until_status(port, &creds("bob"), 200, Duration::from_secs(3)),
        200
    );
    // Polled too: under a loaded CI machine one curl can time out (status 000), which says
    // nothing about the configuration; any answer other than 401 still fails.
    assert_eq!(
        until_status(port, &creds("alice"), 401, Duration::from_secs(10)),
        401
    );

    // A broken file: a warning, and the configuration in use stays.
    fs::write(&web, "basic_auth_users:\n  carol: not-a-hash\n").unwrap();
    // SAFETY: kill with our own child's pid.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(plain_status(port, &creds("bob")), 200);
    assert!(
        agent
            .log_text()
            .contains("keeping the web configuration in use"),
        "{}",
        agent.log_text()
    );

    // A change without a signal: within the 5 s check.
    users("carol");
    let t = Instant::now();
    assert_eq!(
        until_status(port, &creds("carol"), 200, Duration::from_secs(12)),
        200
    );
    eprintln!("change picked up after {:?}", t.elapsed());
    assert_eq!(plain_status(port, &creds("bob")), 401);
}

/// A Kubernetes Secret volume's layout in `secret`: the files are links through `..data`,
/// itself a link to a timestamped directory, swapped atomically when the Secret changes.
/// `from` holds `ca.crt`, `server.crt` and `server.key` (as `certificates` makes them).
fn secret_volume(secret: &Path, version: &str, from: &Path) {
    let data = secret.join(version);
    fs::create_dir_all(&data).unwrap();
    for (name, src) in [
        ("tls.crt", "server.crt"),
        ("tls.key", "server.key"),
        ("ca.crt", "ca.crt"),
    ] {
        fs::copy(from.join(src), data.join(name)).unwrap();
        let link = secret.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    let next = secret.join("..data_tmp");
    std::os::unix::fs::symlink(version, &next).unwrap();
    fs::rename(&next, secret.join("..data")).unwrap();
}

#[test]
fn the_tls_overlays_web_config_serves_https_and_follows_a_renewed_secret() {
    if !real_kernel_or_skip() {
        return;
    }
    // deploy/overlays/tls as the pod sees it: the ConfigMap's file at web/web-config.yml,
    // the Secret `oomwatch-tls` at tls/.
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    for d in [&first, &second] {
        fs::create_dir_all(d).unwrap();
        certificates(d);
    }
    let web_dir = tmp.path().join("web");
    fs::create_dir_all(&web_dir).unwrap();
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/overlays/tls");
    let web = web_dir.join("web-config.yml");
    fs::copy(overlay.join("web-config.yml"), &web).unwrap();
    let secret = tmp.path().join("tls");
    fs::create_dir_all(&secret).unwrap();
    secret_volume(&secret, "..2026_12_05_01", &first);

    let agent = Agent::start(&["--web.config.file", web.to_str().unwrap()]);
    let port = agent.port;
    let (code, text) = curl(&first, port, "/metrics", &[]);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{text}"
    );
    assert_eq!(curl(&first, port, "/healthz", &[]).0, 200);
    assert_eq!(plain_status(port, "x:y"), 0, "plain HTTP on the TLS port");
    assert_eq!(curl(&second, port, "/metrics", &[]).0, 0, "another CA");

    // The Secret is renewed (a new CA and certificate): the agent serves the new one without
    // a restart, within its 5 s poll.
    secret_volume(&secret, "..2026_12_05_02", &second);
    let end = Instant::now() + Duration::from_secs(15);
    let mut code = 0;
    while code != 200 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        code = curl(&second, port, "/metrics", &[]).0;
    }
    assert_eq!(code, 200, "{}", agent.log_text());
    assert_eq!(
        curl(&first, port, "/metrics", &[]).0,
        0,
        "the old certificate"
    );
    assert!(
        agent.log_text().contains("web configuration reloaded"),
        "{}",
        agent.log_text()
    );
}
