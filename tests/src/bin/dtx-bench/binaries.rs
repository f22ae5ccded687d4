//! Finding the programs the bench runs: the release `dtx` binary and the
//! peer, dtmrs.
//!
//! dtx: unless `--dtx-bin` names one, the bench runs
//! `cargo build --release -p dtx-coordinator --bin dtx` first and takes the
//! path cargo reports. Building every time (a no-op when nothing changed)
//! means a measurement can never be of a stale binary, which is the easy
//! mistake while the coordinator is being optimised.
//!
//! dtmrs: `--peer-bin` if given; else the binary that
//! `shared/peers/install-dtmrs.sh` installs. A full run calls that script
//! (it builds dtmrs the first time, about 8 minutes, then answers at
//! once); a quick run only looks for an already installed binary and
//! skips the peer otherwise, so that it stays quick.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root: `tests/` is this package's folder.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Builds the release `dtx` and returns its path.
pub fn build_dtx() -> Result<PathBuf, String> {
    // `cargo run` sets CARGO to the cargo that runs us; use the same one.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = workspace_root();
    eprintln!(
        "dtx-bench: building the coordinator: cargo build --release -p dtx-coordinator --bin dtx"
    );
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "dtx-coordinator",
            "--bin",
            "dtx",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("cargo's stdout was not captured")?;
    let mut executable = None;
    // cargo prints one JSON message per line; the artifact message of the
    // `dtx` binary names the file it wrote (wherever the target dir is).
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("read cargo's output: {e}"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "dtx"
            && let Some(path) = message["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    let status = child.wait().map_err(|e| format!("wait for cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --release -p dtx-coordinator failed ({status})"
        ));
    }
    executable.ok_or_else(|| "cargo built dtx-coordinator but named no `dtx` executable".to_owned())
}

/// Checks that `path` is a file the bench can run.
pub fn check_file(path: &Path, what: &str) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(path.to_owned())
    } else {
        Err(format!("{what} {} does not exist", path.display()))
    }
}

/// Where the install script lives: `shared/` beside the repository.
pub fn install_script() -> PathBuf {
    workspace_root().join("../shared/peers/install-dtmrs.sh")
}

/// Runs the install script (a full run) and returns the path it prints on
/// its last line.
pub fn install_peer() -> Result<PathBuf, String> {
    let script = install_script();
    if !script.is_file() {
        return Err(format!(
            "the peer's install script {} is missing",
            script.display()
        ));
    }
    eprintln!(
        "dtx-bench: bash {} (builds dtmrs the first time, about 8 minutes)",
        script.display()
    );
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", script.display(), output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout.lines().last().unwrap_or("").trim();
    check_file(Path::new(path), "the installed dtmrs")
}

/// The already installed dtmrs, if any (a quick run): the install script
/// puts it at `${DTX_PEERS_DIR:-$HOME/.cache/dtx-peers}/dtmrs-VERSION/bin/dtmrs`.
pub fn installed_peer() -> Option<PathBuf> {
    let dir = match std::env::var_os("DTX_PEERS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/dtx-peers"),
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("dtmrs-"))
        .map(|entry| entry.path().join("bin/dtmrs"))
        .filter(|path| path.is_file())
        .collect();
    // The newest version by name, if several are installed.
    found.sort();
    found.pop()
}
