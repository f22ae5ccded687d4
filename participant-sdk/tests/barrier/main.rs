//! The sub-transaction barrier against real databases: every case in
//! `cases.rs` (the explicit form) and `closure.rs` (the closure form) runs on SQLite (a temp file, several connections) and on
//! PostgreSQL (a fresh database on the shared test server), each in a
//! multi-threaded runtime so racing tasks run in parallel.

mod cases;
mod closure;
mod support;

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::$case::<sqlx::Sqlite>().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::$case::<sqlx::Postgres>().await;
                }
            )*
        }
    };
}

use cases::*;
use closure::*;

on_every_backend!(
    first_call_applies,
    repeated_success_answers_like_the_first,
    repeated_refusal_answers_like_the_first_and_changes_nothing,
    refusal_after_a_failed_statement_is_recorded,
    cancel_without_try_is_a_null_compensation,
    try_after_cancel_is_suspended,
    compensate_after_action_undoes_it_once,
    phase_two_refusal_is_not_remembered,
    error_rolls_back_and_the_retry_runs,
    identical_calls_race_and_one_applies,
    cancel_racing_its_try_never_leaves_a_try_uncancelled,
    cleanup_removes_only_old_transactions,
    migrations_coexist_with_the_service_migrations,
    closure_form_commits_refuses_and_skips_like_the_explicit_one,
    closure_form_failure_rolls_back_and_the_retry_runs,
);
