//! `--web.config.file`: TLS, basic authentication and response headers, in the format of the
//! Prometheus exporter-toolkit (the file node-exporter and every other exporter read):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # PEM; relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
//!   client_ca_file: ca.crt
//!   min_version: TLS12             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! ```
//!
//! The file is read again on SIGHUP and when it changes (checked every 5 s): new connections
//! and requests get the new configuration; one that does not load is a warning and the one in
//! use stays. Unknown keys are an error (as in exporter-toolkit), as are keys of that format this server
//! does not implement (`cipher_suites`, `curve_preferences`, `client_allowed_sans`, `http2:
//! true`), so a file never silently means less than it says.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, HeaderValue};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// Why the web configuration file is unusable (one line, naming the file).
#[derive(Debug, thiserror::Error)]
#[error("--web.config.file {path}: {what}")]
pub struct WebConfigError {
    path: PathBuf,
    what: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    tls_server_config: Option<TlsFormat>,
    #[serde(default)]
    http_server_config: Option<HttpFormat>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFormat {
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    http2: Option<bool>,
}

/// Headers a configuration may not set: the server's own.
const RESERVED: [&str; 6] = [
    "authorization",
    "www-authenticate",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
];

/// The loaded configuration.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    /// TLS on every connection, when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Basic authentication on every path but `/healthz`, when set.
    pub auth: Option<Arc<BasicAuth>>,
    /// Added to every answer (after the server's own security headers, which they replace).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The file it was read from: reloaded on SIGHUP and when it changes.
    pub path: Option<PathBuf>,
    /// That file and every file it names (certificate, key, client CA): a change to any of
    /// them reloads it (a renewed certificate in a Kubernetes Secret volume, for one).
    pub files: Vec<PathBuf>,
}

impl WebConfig {
    /// Reads and checks `path`: a one-line error naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let err = |what: String| WebConfigError {
            path: path.to_path_buf(),
            what,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: FileFormat = if text.trim().is_empty() {
            FileFormat::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| err(one_line(&e.to_string())))?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut files = vec![path.to_path_buf()];
        let tls = match file.tls_server_config {
            Some(t) => {
                let named = [
                    Some(&t.cert_file),
                    Some(&t.key_file),
                    t.client_ca_file.as_ref(),
                ];
                files.extend(named.into_iter().flatten().map(|f| dir.join(f)));
                Some(Arc::new(tls_config(&t, dir).map_err(err)?))
            }
            None => None,
        };
        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users).map_err(err)?)),
            _ => None,
        };
        let http = file.http_server_config;
        if http.as_ref().and_then(|h| h.http2) == Some(true) {
            return Err(err(
                "http_server_config.http2: true is not supported (HTTP/1.1 only)".into(),
            ));
        }
        let headers = headers(http.and_then(|h| h.headers).unwrap_or_default()).map_err(err)?;
        Ok(WebConfig {
            tls,
            auth,
            headers,
            path: Some(path.to_path_buf()),
            files,
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn headers(map: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    map.into_iter()
        .map(|(k, v)| {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|_| format!("http_server_config.headers: invalid header name {k:?}"))?;
            if RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "http_server_config.headers: {k} is set by the server and cannot be configured"
                ));
            }
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| format!("http_server_config.headers: invalid value for {k}"))?;
            Ok((name, value))
        })
        .collect()
}

fn read_pem(dir: &Path, p: &Path, what: &str) -> Result<Vec<u8>, String> {
    let path = dir.join(p);
    std::fs::read(&path).map_err(|e| format!("tls_server_config.{what} {}: {e}", path.display()))
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |v: Option<&str>, default: u8, key: &str| match v {
        None => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(other) => Err(format!(
            "tls_server_config.{key}: {other:?} is not supported (TLS12 or TLS13)"
        )),
    };
    let (lo, hi) = (rank(min, 12, "min_version")?, rank(max, 13, "max_version")?);
    let all = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)];
    let v: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| (lo..=hi).contains(n))
        .map(|(_, v)| v)
        .collect();
    if v.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    Ok(v)
}

fn tls_config(t: &TlsFormat, dir: &Path) -> Result<rustls::ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(&read_pem(dir, &t.cert_file, "cert_file")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_server_config.cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("tls_server_config.cert_file: no certificate in it".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&read_pem(dir, &t.key_file, "key_file")?)
        .map_err(|e| format!("tls_server_config.key_file: {e}"))?;
    // ring rather than aws-lc-rs: no C toolchain beyond cc, a small build. rustls deprecates
    // it for lacking post-quantum key exchange, which a scrape inside a cluster can do without.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let vers = versions(t.min_version.as_deref(), t.max_version.as_deref())?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&vers)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca = t.client_ca_file.as_ref().ok_or_else(|| {
                format!("tls_server_config.client_auth_type {auth_type} needs client_ca_file")
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read_pem(dir, ca, "client_ca_file")?) {
                let c = c.map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if auth_type == "VerifyClientCertIfGiven" {
                v.allow_unauthenticated()
            } else {
                v
            };
            let verifier = v
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type {other:?} is not supported (NoClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ))
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: the key does not fit the certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Users and their bcrypt hashes; checks `Authorization: Basic` headers.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Headers already verified (bcrypt costs ~50 ms at cost 10): a scraper's every scrape
    /// would otherwise pay it. Bounded; cleared when full.
    verified: Mutex<HashSet<String>>,
}

/// Headers remembered as verified at most.
const VERIFIED: usize = 64;

/// Checked against when the user is unknown, so an unknown user costs as long as a known one.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<Self, String> {
        for (user, hash) in &users {
            // Neither the hash nor bcrypt's message (which quotes it) goes into the error: a
            // password hash has no place in a log, and its bytes may hold a line break.
            <bcrypt::HashParts as std::str::FromStr>::from_str(hash).map_err(|_| {
                format!(
                    "basic_auth_users.{}: not a bcrypt hash ($2a$, $2b$, $2x$ or $2y$, a cost, \
                     53 more characters)",
                    user.escape_debug()
                )
            })?;
        }
        Ok(BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether the value of an `Authorization` header names a user with the right password.
    /// Slow the first time for each header (bcrypt): call it off the event loop.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(header) = header else {
            return false;
        };
        let lock = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if lock().contains(header) {
            return true;
        }
        let Some((user, pass)) = decode(header) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let ok = bcrypt::verify(pass.as_bytes(), hash).unwrap_or(false) && known;
        if ok {
            let mut v = lock();
            if v.len() >= VERIFIED {
                v.clear();
            }
            v.insert(header.to_string());
        }
        ok
    }
}

/// `Basic base64(user:password)` → (user, password).
fn decode(header: &str) -> Option<(String, String)> {
    let (scheme, b64) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<WebConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, text).unwrap();
        WebConfig::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let c = load(&format!("basic_auth_users:\n  prom: {hash}\n")).unwrap();
        let auth = c.auth.unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let good = format!("Basic {}", b64("prom:secret"));
        assert!(auth.allows(Some(&good)));
        assert!(auth.allows(Some(&good)), "cached");
        assert!(!auth.allows(Some(&format!("Basic {}", b64("prom:wrong")))));
        assert!(!auth.allows(Some(&format!("Basic {}", b64("other:secret")))));
        assert!(!auth.allows(Some("Bearer x")));
        assert!(!auth.allows(Some("Basic !!!")));
        assert!(!auth.allows(None));
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        for (text, says) in [
            ("tls_server_config:\n  cert_file: a\n", "key_file"),
            ("nonsense: 1\n", "unknown field"),
            ("basic_auth_users:\n  u: plain\n", "not a bcrypt hash"),
            // The fuzzer's find: a hash with a line break in it, quoted by bcrypt's message.
            (
                "basic_auth_users:\n  cert_file: 'basic_auth_users:\n\n'",
                "not a bcrypt hash",
            ),
            ("basic_auth_users:\n  \"a\\nb\": plain\n", "a\\nb"),
            (
                "http_server_config:\n  headers:\n    Content-Type: x\n",
                "set by the server",
            ),
            ("http_server_config:\n  http2: true\n", "HTTP/1.1 only"),
            (
                "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: k\n",
                "/nonexistent.crt",
            ),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(says) && !e.contains('\n'), "{text:?}: {e}");
        }
        let c = load("").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none() && c.headers.is_empty());
        let c = load("http_server_config:\n  headers:\n    X-Test: 1\n").unwrap();
        assert_eq!(c.headers[0].0.as_str(), "x-test");
    }
}
