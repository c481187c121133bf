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
