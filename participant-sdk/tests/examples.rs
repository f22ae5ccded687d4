//! The crate's examples run as written: each is started as its own process,
//! in a fresh empty directory (its SQLite file does not exist yet), against
//! a real coordinator, and must print the outcome its documentation
//! describes. The coordinator signs its calls, and the examples read its
//! key from `DTX_SIGNING_KEY`, as their documentation says.
//!
//! `cargo test` and `cargo nextest run` build the examples with the tests,
//! into `target/<profile>/examples`.

mod common;

use common::{Coordinator, profile_dir};
use std::path::Path;
use std::time::Duration;

const KEY: &str = "example:an example secret of 32 bytes or more";

/// Runs example `name` in `dir` against `coordinator`; its stdout lines.
async fn run_example(name: &str, coordinator: &Coordinator, dir: &Path) -> Vec<String> {
    let binary = profile_dir().join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the examples (`cargo build -p dtx-sdk --examples`)",
        binary.display()
    );
    let run = tokio::process::Command::new(&binary)
        .current_dir(dir)
        .env("DTX_COORDINATOR", coordinator.url())
        .env("DTX_SIGNING_KEY", KEY)
        .env_remove("EXAMPLE_DB")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .unwrap_or_else(|_| panic!("the {name} example did not finish within 90 s"))
        .expect("start the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the {name} example failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn the_saga_example_commits_one_saga_and_reports_why_the_other_was_refused() {
    let coordinator = Coordinator::start(&["--signing-key", KEY]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Twice: the second run finds its database and starts from the same stock.
    for run in 1..=2 {
        let lines = run_example("saga", &coordinator, dir.path()).await;
        assert_eq!(lines.len(), 4, "run {run}: {lines:#?}");
        assert_eq!(lines[0], "saga for 3 apples and 2 pears: committed");
        assert!(
            lines[1].starts_with("saga for 3 apples and 5 pears: aborted: ")
                && lines[1].ends_with("(pears: not enough pear in stock for 5)"),
            "run {run}: the refusal's reason reaches the initiator: {}",
            lines[1]
        );
        assert_eq!(lines[2..], ["stock: apple 7", "stock: pear 1"], "run {run}");
    }
    assert!(dir.path().join("saga-example.db").exists());
}

#[tokio::test]
async fn the_tcc_example_confirms_one_scope_and_cancels_the_refused_one() {
    let coordinator = Coordinator::start(&["--signing-key", KEY]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    for run in 1..=2 {
        let lines = run_example("tcc", &coordinator, dir.path()).await;
        assert_eq!(
            lines,
            [
                "TCC for 4 apples: committed",
                "TCC for 20 apples: refused by apples: not enough apple for 20 unit(s)",
                "TCC for 20 apples: aborted",
                "stock: apple available 6, held 0, sold 4",
            ],
            "run {run}"
        );
    }
    assert!(dir.path().join("tcc-example.db").exists());
}
