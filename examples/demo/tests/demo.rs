//! The one-command demo, run as a newcomer runs it (less its build step:
//! the workspace's test build has built the three binaries beside it, see
//! `procs::build`). It exits non-zero unless every order settled and the
//! stock adds up; its table must show each refused order, in every mode,
//! with the participant's reason as the coordinator kept it.
//!
//! It runs the binaries found beside the demo's: `cargo nextest run
//! --workspace` (the README's test command) builds them first; with
//! `-p dtx-demo` alone, run `cargo build --workspace --bins` before, or it
//! runs whatever binaries an earlier build left.

use std::process::Command;

#[test]
fn the_demo_settles_every_order_and_says_why_each_refused_one_was_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_dtx-demo"))
        .env("DTX_DEMO_PREBUILT", "1")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    assert!(stdout.contains("the stock adds up"), "{stdout}");
    // Every mode: the coordinator's view carries the participant's reason
    // (for TCC, the one the order service's Try got, which its abort names).
    for mode in ["saga", "tcc", "2pc", "3pc"] {
        let refused = refused_orders(&stdout, mode);
        assert!(!refused.is_empty(), "no refused {mode} order:\n{stdout}");
        for detail in refused {
            assert!(
                detail
                    .iter()
                    .any(|l| l.starts_with("coordinator: branch inventory refused: not enough")),
                "a refused {mode} order without the coordinator's reason: {detail:?}\n{stdout}"
            );
        }
    }
}

/// The detail lines (indented, under the order's row) of every cancelled
/// order of `mode` in the demo's table.
fn refused_orders<'a>(stdout: &'a str, mode: &str) -> Vec<Vec<&'a str>> {
    let lines: Vec<&str> = stdout.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let is_row = columns.first().is_some_and(|c| c.parse::<u32>().is_ok());
        if is_row && columns.contains(&mode) && columns.contains(&"cancelled") {
            let detail = lines[i + 1..]
                .iter()
                .take_while(|l| l.starts_with("    "))
                .map(|l| l.trim())
                .collect();
            found.push(detail);
        }
    }
    found
}
