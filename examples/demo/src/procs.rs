//! Building and running the demo's three processes: `cargo build` of the
//! binaries with the demo's own profile, then each started with its logs in
//! a file, its address read from its `... listening on http://ADDR` line,
//! and stopped with SIGTERM at the end.

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `target/<profile dir>`, where the demo itself was built: the other
/// binaries are built next to it.
pub fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("path of the demo binary")?;
    Ok(exe
        .parent()
        .context("the demo binary has no directory")?
        .to_path_buf())
}

/// Builds the coordinator and both services with the demo's profile, so one
/// `cargo run -p dtx-demo` is all a newcomer types. With
/// `DTX_DEMO_PREBUILT` set, the binaries beside the demo are used as they
/// are: the demo's test runs within a workspace test build, which built
/// them already, and a `cargo build` of three packages alone could resolve
/// other features and replace binaries that other tests are running.
pub fn build(profile_dir: &Path) -> anyhow::Result<()> {
    if std::env::var_os("DTX_DEMO_PREBUILT").is_some() {
        for binary in ["dtx", "inventory-service", "order-service"] {
            let path = profile_dir.join(binary);
            if !path.is_file() {
                bail!(
                    "DTX_DEMO_PREBUILT is set but {} is missing: build the workspace first",
                    path.display()
                );
            }
        }
        println!(
            "using the binaries built already in {}",
            profile_dir.display()
        );
        return Ok(());
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!("unexpected profile directory {}", profile_dir.display()),
    };
    let target_dir = profile_dir.parent().context("target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("building the coordinator and the sample services ({profile} profile)...");
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--profile", profile])
        .args([
            "-p",
            "dtx-coordinator",
            "-p",
            "inventory-service",
            "-p",
            "order-service",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

/// A running child process; killed if dropped without [`Proc::stop`].
pub struct Proc {
    pub name: &'static str,
    pub url: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `binary args`, logs (stderr) to `<dir>/<name>.log`, and waits
    /// for the line `<prefix>listening on http://ADDR` on stdout.
    pub async fn start(
        name: &'static str,
        binary: &Path,
        args: &[&str],
        prefix: &str,
        dir: &Path,
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let wanted = format!("{prefix}listening on http://");
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.trim().strip_prefix(&wanted) {
                    return Ok(format!("http://{addr}"));
                }
            }
            bail!("{name} exited before listening; see {}", log.display())
        })
        .await
        .with_context(|| format!("{name} did not start within 30 s; see {}", log.display()))??;
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc {
            name,
            url,
            log,
            child,
        })
    }

    /// SIGTERM, then waits up to 10 s for a clean exit (SIGKILL after).
    /// Returns whether it exited cleanly.
    pub async fn stop(mut self) -> bool {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = self.child.kill().await;
                false
            }
        }
    }
}
