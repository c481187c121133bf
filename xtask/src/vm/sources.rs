//! The Debian suites `vm-test` takes kernels from besides the machine's own: Debian 11
//! (`bullseye`, `bullseye-security`: the 5.10 kernels) and `sid` (the newest kernel). Each is an
//! apt source of its own with a pin priority of 1, so apt never takes anything else from it: only
//! `apt-get download PKG=VERSION` of the kernels uses it. Written once (as root); the package
//! lists are updated when a file changed.

use std::{fs, path::Path};

use anyhow::{Context, Result};

use super::STEP;
use crate::util::{self, run};

const SOURCES: &str = "/etc/apt/sources.list.d/oomwatch-vm-kernels.sources";
const PREFERENCES: &str = "/etc/apt/preferences.d/oomwatch-vm-kernels";

/// The deb822 sources. `sid`'s Release file may be past its `Valid-Until` on a frozen mirror:
/// only kernels are downloaded from it, by exact version, so that date is not checked.
const SOURCES_TEXT: &str = "\
# Written by oomwatch's `cargo xtask vm-test`: Debian 11's 5.10 kernels and sid's newest kernel,
# pinned at priority 1 in /etc/apt/preferences.d/oomwatch-vm-kernels so that nothing else is ever
# installed from these suites.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bullseye-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Check-Valid-Until: no
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

const PREFERENCES_TEXT: &str = "\
# Written by oomwatch's `cargo xtask vm-test`: only its kernels come from these suites.
Package: *
Pin: release n=bullseye
Pin-Priority: 1

Package: *
Pin: release n=bullseye-security
Pin-Priority: 1

Package: *
Pin: release n=sid
Pin-Priority: 1
";

/// Writes the sources and their pins if they differ (root only), then updates the package lists.
/// Not root: a note, and the kernels of the machine's own suites only.
pub fn ensure() -> Result<()> {
    let current = |p: &str, want: &str| fs::read_to_string(p).is_ok_and(|s| s == want);
    if current(SOURCES, SOURCES_TEXT) && current(PREFERENCES, PREFERENCES_TEXT) {
        return Ok(());
    }
    if !util::is_root() {
        eprintln!(
            "[{STEP}] note: not root, the apt sources of the 5.10 (bullseye) and newest (sid) \
             kernels are not added ({SOURCES})"
        );
        return Ok(());
    }
    // The pins first: the suites are never visible unpinned.
    write(PREFERENCES, PREFERENCES_TEXT)?;
    write(SOURCES, SOURCES_TEXT)?;
    eprintln!("[{STEP}] added {SOURCES} (pinned at 1 in {PREFERENCES}): apt-get update");
    run(STEP, &mut util::apt_get(&["update"]))
}

fn write(path: &str, text: &str) -> Result<()> {
    if let Some(dir) = Path::new(path).parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text).with_context(|| format!("[{STEP}] cannot write {path}"))
}
