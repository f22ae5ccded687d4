//! Smoke test of `dtx-bench` (issue 4): the quick mode's machinery, for a
//! few seconds, against a real `dtx` on SQLite, without the peer. It checks
//! that the bench runs end to end and reports a positive throughput for dtx
//! and for the raw reference; it asserts no performance figure.
//!
//! It measures the `dtx` binary of the same build profile, found next to
//! this test's own binary (`target/debug/dtx` in a debug build), which
//! `cargo nextest run --workspace` builds with the coordinator's tests.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `target/<profile>/dtx`, beside `target/<profile>/deps/<this test>`.
fn dtx_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let dtx = profile_dir.join("dtx");
    assert!(
        dtx.is_file(),
        "{} is missing: build it first with `cargo build -p dtx-coordinator` \
         (`cargo nextest run --workspace` builds it too)",
        dtx.display()
    );
    dtx
}

#[test]
fn quick_bench_reports_dtx_and_raw_throughput_on_sqlite() {
    let out =
        std::env::temp_dir().join(format!("dtx-bench-smoke-{}", uuid::Uuid::new_v4().simple()));
    let output = Command::new(env!("CARGO_BIN_EXE_dtx-bench"))
        .args([
            "--quick",
            "--no-peer",
            "--stores",
            "sqlite",
            "--scenarios",
            "saga-2",
        ])
        .args(["--concurrency", "4", "--warmup", "0.5", "--duration", "2"])
        .arg("--out")
        .arg(&out)
        .arg("--dtx-bin")
        .arg(dtx_binary())
        .output()
        .expect("run dtx-bench");
    let printed = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "dtx-bench failed ({}):\n{printed}",
        output.status
    );

    let json = std::fs::read_to_string(out.join("bench.json"))
        .unwrap_or_else(|e| panic!("read {}/bench.json: {e}\n{printed}", out.display()));
    let report: Value = serde_json::from_str(&json).expect("bench.json is JSON");
    let scenario = &report["scenarios"][0];
    assert_eq!(scenario["name"], "saga-2 sqlite c4", "{json}");
    for system in ["dtx", "raw"] {
        let tps = scenario[system]["tps"].as_f64().unwrap_or(0.0);
        assert!(
            tps > 0.0,
            "{system} finished no transaction:\n{json}\n{printed}"
        );
        assert_eq!(
            scenario[system]["errors"], 0,
            "{system} had errors:\n{json}"
        );
    }
    assert!(scenario["peer"].is_null(), "the peer was not asked for");
    assert!(
        scenario["ratios"]["tps_dtx_over_raw"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    let _ = std::fs::remove_dir_all(&out);
}
