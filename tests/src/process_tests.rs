//! Tests of the process control against a shell stand-in for `dtx`: it
//! prints the listening line for an address taken from the environment,
//! then sleeps (`exec`, so signals reach the sleeping process itself).

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::json;

use super::{DtxProcess, Http};
use crate::participant::{Answer, FakeParticipant};

const STAND_IN: &str = r#"echo "preparing"; echo "to stderr" >&2; echo "dtx: listening on http://$ADDR"; echo "after listening" >&2; exec sleep 30"#;

async fn stand_in(addr: &str) -> DtxProcess {
    spawn_sh(STAND_IN, addr).await.expect("spawn the stand-in")
}

async fn spawn_sh(script: &str, addr: &str) -> Result<DtxProcess, String> {
    DtxProcess::spawn(
        Path::new("sh"),
        &["-c".to_owned(), script.to_owned()],
        &[("ADDR".to_owned(), addr.to_owned())],
    )
    .await
}

/// Blocks (on a blocking thread, bounded) until the kernel reports that
/// `pid` stopped or continued: the exact event, with no polling.
async fn wait_for_job_control(pid: u32, flag: WaitPidFlag) -> WaitStatus {
    let pid = Pid::from_raw(i32::try_from(pid).unwrap());
    let waiting = tokio::task::spawn_blocking(move || waitpid(pid, Some(flag)));
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("no job-control event within 5 s")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn spawn_returns_once_the_listening_line_is_printed() {
    let process = stand_in("127.0.0.1:1").await;
    assert_eq!(process.base_url(), "http://127.0.0.1:1");
    assert_eq!(
        process.url("/v1/transactions"),
        "http://127.0.0.1:1/v1/transactions"
    );
    assert_eq!(process.addr().port(), 1);
    assert!(process.pid() > 0);
    // Output after the line, on stderr, is still collected.
    process
        .wait_for_log("after listening", Duration::from_secs(5))
        .await
        .unwrap();
    let log = process.log();
    for line in [
        "preparing",
        "to stderr",
        "dtx: listening on http://127.0.0.1:1",
    ] {
        assert!(log.contains(line), "{line:?} missing from {log:?}");
    }
}

#[tokio::test]
async fn spawn_fails_with_the_output_when_the_process_exits_first() {
    let err = spawn_sh(
        "echo 'opening the store'; echo 'bad DTX_DATABASE_URL' >&2; exit 3",
        "",
    )
    .await
    .unwrap_err();
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("opening the store"), "{err}");
    assert!(err.contains("bad DTX_DATABASE_URL"), "{err}");
}

#[tokio::test]
async fn spawn_fails_for_a_missing_binary_or_a_bad_address() {
    let err = DtxProcess::spawn(Path::new("/nonexistent/dtx"), &[], &[])
        .await
        .unwrap_err();
    assert!(err.contains("cannot start /nonexistent/dtx"), "{err}");

    let err = spawn_sh(STAND_IN, "not-an-address").await.unwrap_err();
    assert!(err.contains("not-an-address"), "{err}");
}

#[tokio::test]
async fn wait_for_log_times_out_with_the_log() {
    let process = stand_in("127.0.0.1:1").await;
    let err = process
        .wait_for_log("never printed", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        err.contains("never printed") && err.contains("preparing"),
        "{err}"
    );
}

#[tokio::test]
async fn kill9_kills_with_sigkill_and_reaps() {
    let mut process = stand_in("127.0.0.1:1").await;
    let status = process.kill9().await;
    assert_eq!(status.signal(), Some(9), "{status}");
    // A second call reports the same exit without signalling a reaped pid.
    assert_eq!(process.kill9().await.signal(), Some(9));
}

#[tokio::test]
async fn sigterm_then_wait_exit_reports_the_signal() {
    let mut process = stand_in("127.0.0.1:1").await;
    assert_eq!(process.wait_exit(Duration::from_millis(50)).await, None);
    process.sigterm();
    let status = process
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits after SIGTERM");
    assert_eq!(status.signal(), Some(15), "{status}");
}

#[tokio::test]
async fn pause_stops_and_resume_continues_the_process() {
    let mut process = stand_in("127.0.0.1:1").await;
    process.pause();
    let stopped = wait_for_job_control(process.pid(), WaitPidFlag::WUNTRACED).await;
    assert!(
        matches!(
            stopped,
            WaitStatus::Stopped(_, nix::sys::signal::Signal::SIGSTOP)
        ),
        "{stopped:?}"
    );

    process.resume();
    let continued = wait_for_job_control(process.pid(), WaitPidFlag::WCONTINUED).await;
    assert!(
        matches!(continued, WaitStatus::Continued(_)),
        "{continued:?}"
    );

    // Still alive after resuming, and a paused process can be killed too.
    assert_eq!(process.wait_exit(Duration::from_millis(50)).await, None);
    process.pause();
    assert_eq!(process.kill9().await.signal(), Some(9));
}

#[tokio::test]
async fn wait_ready_polls_readyz_until_200() {
    let fake = FakeParticipant::start().await;
    fake.script("/readyz", [Answer::Status(503), Answer::Status(503)]);
    let process = stand_in(&fake.addr().to_string()).await;
    process.wait_ready(Duration::from_secs(5)).await.unwrap();
    let calls = fake.calls_to("/readyz");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.method == "GET"));
}

#[tokio::test]
async fn wait_ready_gives_up_with_the_last_answer() {
    let fake = FakeParticipant::start().await;
    fake.set_default("/readyz", Answer::Status(503));
    let process = stand_in(&fake.addr().to_string()).await;
    let err = process
        .wait_ready(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.contains("503") && err.contains("preparing"), "{err}");
}

#[tokio::test]
async fn http_helpers_return_status_json_and_content_type() {
    let fake = FakeParticipant::start().await;
    fake.script("/v1/x", [Answer::Json(201, json!({"gid": "g-1"}))]);
    let http = Http::new();

    let (status, body, content_type) = http.post_json(&fake.url("/v1/x"), &json!({"a": 1})).await;
    assert_eq!((status, content_type.as_str()), (201, "application/json"));
    assert_eq!(body, json!({"gid": "g-1"}));
    assert_eq!(fake.calls_to("/v1/x")[0].body, json!({"a": 1}));

    let (status, body) = http.get_json(&fake.url("/v1/y")).await;
    assert_eq!((status, body), (200, json!({})));
}
