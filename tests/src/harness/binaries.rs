//! The programs the harness puts into containers: `dtx`, `inventory-service`
//! and `order-service`, built by cargo on this machine.
//!
//! The containers run Debian bookworm, like the machines this project builds
//! on, so a binary cargo built here runs there as it is (same glibc). They
//! are built in the dev profile by default, which the test run has compiled
//! already; `--release` is for the long soak.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::TestSupportError;

/// The binaries of one build.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The coordinator.
    pub dtx: PathBuf,
    /// The sample inventory service.
    pub inventory: PathBuf,
    /// The sample order service.
    pub orders: PathBuf,
}

/// (package, binary) of every program a cluster runs.
const PROGRAMS: [(&str, &str); 3] = [
    ("dtx-coordinator", "dtx"),
    ("inventory-service", "inventory-service"),
    ("order-service", "order-service"),
];

impl Binaries {
    /// Runs `cargo build` for the three programs (a no-op when nothing
    /// changed) and returns where cargo wrote them, wherever the target
    /// directory is.
    pub fn build(release: bool) -> Result<Binaries, TestSupportError> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(&cargo);
        command
            .arg("build")
            .arg("--message-format=json-render-diagnostics");
        if release {
            command.arg("--release");
        }
        for (package, bin) in PROGRAMS {
            command.args(["-p", package, "--bin", bin]);
        }
        let shown = format!("{command:?}");
        let failed = |why: String| TestSupportError::Build {
            command: shown.clone(),
            why,
        };
        let mut child = command
            .current_dir(workspace_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot run {cargo}: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut found = BTreeMap::new();
        // One JSON message per line; a binary's artifact message names the
        // file cargo wrote.
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.map_err(|e| failed(format!("read cargo's output: {e}")))?;
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let is_bin = message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
            if let (true, Some(name), Some(exe)) = (
                message["reason"] == "compiler-artifact" && is_bin,
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            ) {
                found.insert(name.to_owned(), PathBuf::from(exe));
            }
        }
        let status = child
            .wait()
            .map_err(|e| failed(format!("wait for cargo: {e}")))?;
        if !status.success() {
            return Err(failed(format!("cargo exited with {status}")));
        }
        let mut take = |bin: &str| {
            found
                .remove(bin)
                .ok_or_else(|| failed(format!("cargo reported no executable for `{bin}`")))
        };
        Ok(Binaries {
            dtx: take("dtx")?,
            inventory: take("inventory-service")?,
            orders: take("order-service")?,
        })
    }
}

/// The workspace root: `tests/` is this package's folder.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}
