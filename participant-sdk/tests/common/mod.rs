//! A real `dtx serve` process for the client's end-to-end tests, a proxy
//! that loses requests on their way to it (`lossy_proxy`), and a fake
//! coordinator whose answers to the termination query are forged
//! (`fake_coordinator`).
//!
//! `CARGO_BIN_EXE_dtx` exists only inside the coordinator's own package, and
//! a dev-dependency on it would not build its binary. So the tests build it
//! themselves with `cargo build -p dtx-coordinator --bin dtx`, into the same
//! target directory and profile as the running test (a no-op when it is
//! fresh, as it is after `cargo nextest run --workspace`), and start it from
//! there.
#![allow(dead_code)] // each test file uses its own subset

pub mod fake_coordinator;
pub mod lossy_proxy;

use dtx_tests::process::DtxProcess;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A coordinator process on its own temporary SQLite file; killed on drop.
pub struct Coordinator {
    pub process: DtxProcess,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    /// Starts `dtx serve` on a free port with short leases, plus `extra`
    /// arguments, and waits until it is ready.
    pub async fn start(extra: &[&str]) -> Coordinator {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite:{}", dir.path().join("dtx.db").display());
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--lease-ms",
            "1500",
            "--claim-interval-ms",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let process = DtxProcess::spawn(dtx_binary(), &args, &[])
            .await
            .expect("dtx serve starts");
        process
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("dtx becomes ready");
        Coordinator { process, _dir: dir }
    }

    /// `http://ADDR` of the coordinator.
    pub fn url(&self) -> String {
        self.process.base_url()
    }
}

/// The `dtx` binary, built once per test process.
pub fn dtx_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_dtx)
}

/// `target/<profile dir>`, where the test runs from (as
/// `deps/<test>-<hash>`) and where cargo puts binaries and examples.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn build_dtx() -> PathBuf {
    let profile_dir = profile_dir();
    let binary = profile_dir.join("dtx");
    // Under plain `cargo test`, cargo holds the build directory's lock while
    // tests run, so a nested build would wait forever; nextest builds first
    // and then runs, so it may. Without nextest, use the binary as built.
    if std::env::var_os("NEXTEST").is_none() {
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build -p dtx-coordinator` first, or run the tests \
             with `cargo nextest run -p dtx-sdk`, which builds it",
            binary.display()
        );
        return binary;
    }
    let target_dir = profile_dir.parent().expect("target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => panic!("unexpected profile directory {}", profile_dir.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "dtx-coordinator", "--bin", "dtx"])
        .args(["--profile", &profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the coordinator");
    assert!(status.success(), "cargo build -p dtx-coordinator failed");
    binary
}
