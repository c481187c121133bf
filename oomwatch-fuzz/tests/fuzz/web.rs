//! The web configuration file (`--web.config.file`, exporter-toolkit format) and the
//! `Authorization` header: arbitrary and token-soup input never panics, every refusal is one
//! line naming the file, and a header that is not a right `Basic` credential never passes.
use oomwatch::server::WebConfig;
use proptest::prelude::*;

use crate::harness::{self, check, Bytes};

const WEB_TOKENS: &[&str] = &[
    "tls_server_config:\n",
    "  cert_file: ",
    "  key_file: ",
    "  client_ca_file: ",
    "  client_auth_type: ",
    "RequireAndVerifyClientCert",
    "NoClientCert",
    "  min_version: ",
    "TLS13",
    "basic_auth_users:\n",
    "  prom: ",
    "$2y$04$",
    "http_server_config:\n",
    "  headers:\n",
    "    X-A: ",
    "    Content-Type: ",
    "  http2: ",
    "true",
    "/dev/zero",
    "\n",
    "  ",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "&a ",
    "*a",
    "!!binary ",
    "\"",
    "'",
];

#[test]
fn web_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    check(
        "web_config_file",
        2,
        harness::soup(WEB_TOKENS, 40),
        |text: Bytes| {
            std::fs::write(&path, &text.0).unwrap();
            if let Err(e) = WebConfig::load(&path) {
                let e = e.to_string();
                assert!(!e.contains('\n'), "not one line: {e:?}");
                assert!(e.starts_with("--web.config.file "), "{e}");
            }
        },
    );
}

#[test]
fn basic_auth_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    let hash = bcrypt::hash("right", 4).unwrap();
    std::fs::write(&path, format!("basic_auth_users:\n  prom: {hash}\n")).unwrap();
    let auth = WebConfig::load(&path).unwrap().auth.unwrap();
    let header = prop_oneof![
        harness::bytes(b"Basic cHJvbTp3cm9uZw== :=", 64).prop_map(|b| b.text()),
        any::<String>(),
    ];
    check("basic_auth_header", 8, header, |h: String| {
        assert!(!auth.allows(Some(&h)), "{h:?} passed");
    });
}

/// Markup and quote soup for the names a workload chooses (comm, cgroup, pod, container).
const HOSTILE: &[&str] = &[
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "\"",
    "'",
    "\" onmouseover=\"x",
    "</td></tr>",
    "&amp;",
    "&#60;",
    "\n",
    "\r\n",
    "\u{0}",
    "\u{202e}",
    "javascript:",
    "/kubepods/",
    "a",
    "ü",
];

/// The built-in page with events whose every workload-chosen name is hostile: nothing of the
/// names reaches the page unescaped (no tag, no attribute break), whatever they hold.
#[test]
fn page_with_hostile_names() {
    use oomwatch::record::OomEvent;
    use oomwatch::server::page::{render, Page};
    check(
        "page_with_hostile_names",
        4,
        prop::collection::vec(harness::soup(HOSTILE, 12), 4),
        |names: Vec<Bytes>| {
            let texts: Vec<String> = names.iter().map(|b| b.text()).collect();
            let mut ev = OomEvent::new(7, 1, std::time::SystemTime::UNIX_EPOCH, texts[0].clone());
            ev.comm = Some(texts[1].clone());
            ev.cgroup = Some(texts[2].clone());
            ev.workload.pod = Some(texts[3].clone());
            ev.workload.namespace = Some(texts[3].clone());
            ev.workload.container = Some(texts[1].clone());
            ev.sync_victim();
            let events = [ev];
            let html = render(&Page {
                node: Some(&texts[0]),
                version: "0.1.0",
                events: &events,
                seen: 1,
                capacity: 100,
                host: None,
                probes: &[(texts[2].clone(), true)],
                now: std::time::SystemTime::UNIX_EPOCH,
            });
            // Escaped text may still spell `onerror=`: only a tag or a broken attribute is harm.
            for bad in ["<script", "<img", "\" onmouseover"] {
                assert!(!html.contains(bad), "{bad} reached the page: {texts:?}");
            }
        },
    );
}
