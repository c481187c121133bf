//! podman's names for its containers, from containers/storage's container list
//! `<storage root>/overlay-containers/containers.json` (podman 4 and 5; `vfs-containers` with the
//! vfs driver). podman's own OCI `config.json` carries neither the name nor the image, and its
//! libpod database (BoltDB or SQLite) is not read. Each entry:
//!
//! ```json
//! {"id":"<64 hex>","names":["web"],"image":"<image id>",
//!  "metadata":"{\"image-name\":\"localhost/app:1\",\"name\":\"web\",…}", …}
//! ```
//!
//! Only `id`, `names` and `metadata`'s `image-name` are kept; everything else is skipped
//! unparsed. CRI-O keeps its containers in the same list.
//!
//! Labels (`com.docker.compose.project`/`service`, which podman-compose sets) are only in
//! podman's own database: podman 4's BoltDB `<storage root>/libpod/bolt_state.db`, bucket
//! `ctr` → bucket `<id>` → key `config`, a JSON object whose `labels` are read ([`labels`];
//! the rest, the OCI spec with the container's environment among it, is skipped unparsed).
//! podman 5's SQLite database (`db.sql`) is not read.
use std::collections::BTreeMap;

use serde::Deserialize;

use super::boltdb::Db;

/// podman 4's BoltDB state, below the storage root.
pub const BOLT_DB: &str = "libpod/bolt_state.db";

/// Directories below a storage root holding `containers.json`, one per storage driver.
pub const CONTAINER_DIRS: [&str; 2] = ["overlay-containers", "vfs-containers"];
/// The list's file name.
pub const LIST_FILE: &str = "containers.json";

/// One container of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageContainer {
    pub id: String,
    /// The first of its names (podman's container name).
    pub name: Option<String>,
    /// The image as podman names it (`localhost/app:1`).
    pub image: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    metadata: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default, rename = "image-name")]
    image_name: Option<String>,
}

/// The container's labels in podman's BoltDB state (`bytes`: the whole file); None when the
/// file is not such a database or does not hold the container.
pub fn labels(bytes: &[u8], id: &str) -> Option<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
    }
    let db = Db::open(bytes)?;
    let config = db.get(&[b"ctr", id.as_bytes()], b"config")?;
    serde_json::from_slice::<Config>(config).ok()?.labels
}

/// Parses `containers.json`; an error when it is not a JSON array of entries. An entry's
/// unreadable `metadata` only loses the image.
pub fn parse(bytes: &[u8]) -> Result<Vec<StorageContainer>, serde_json::Error> {
    let entries: Vec<Entry> = serde_json::from_slice(bytes)?;
    Ok(entries
        .into_iter()
        .map(|e| StorageContainer {
            name: e.names.into_iter().find(|n| !n.is_empty()),
            image: e
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str::<Metadata>(m).ok())
                .and_then(|m| m.image_name)
                .filter(|s| !s.is_empty()),
            id: e.id,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "a2029b539c9f174cb8f9d21b0fca3dc46d08447f7877fc7ec5c925489399990a";

    #[test]
    fn podman_4_3_list() {
        // As podman 4.3.1 wrote it on Debian 12.
        let text = format!(
            r#"[{{"id":"{ID}","names":["wta-pplain"],"image":"0b88dc99","layer":"93952a7c","metadata":"{{\"image-name\":\"localhost/oomwatch-test/busybox:1\",\"image-id\":\"0b88dc99\",\"name\":\"wta-pplain\",\"created-at\":1796471121}}","created":"2026-12-05T11:45:21.694367071Z","flags":{{"MountLabel":"","ProcessLabel":""}}}}]"#
        );
        let got = parse(text.as_bytes()).unwrap();
        assert_eq!(
            got,
            [StorageContainer {
                id: ID.into(),
                name: Some("wta-pplain".into()),
                image: Some("localhost/oomwatch-test/busybox:1".into()),
            }]
        );
    }

    #[test]
    fn bad_metadata_loses_only_the_image_and_bad_lists_are_errors() {
        let text = format!(r#"[{{"id":"{ID}","names":["","web"],"metadata":"{{not json"}}]"#);
        let got = parse(text.as_bytes()).unwrap();
        assert_eq!(got[0].name.as_deref(), Some("web"));
        assert_eq!(got[0].image, None);
        assert!(parse(b"{}").is_err());
        assert!(parse(b"[{\"names\":[]}]").is_err());
        assert!(parse(b"").is_err());
        assert_eq!(parse(b"[]").unwrap(), []);
    }
}
