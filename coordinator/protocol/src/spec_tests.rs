//! Table tests of registration checks.

use super::*;
use serde_json::json;

fn saga_branch(id: &str, depends_on: Option<&[&str]>) -> BranchSpec {
    let mut v = json!({"id": id, "action": "http://a/x", "compensate": "http://a/y"});
    if let Some(d) = depends_on {
        v["depends_on"] = json!(d);
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn urls_are_flat_fields_keyed_by_operation() {
    let b = saga_branch("a", None);
    assert_eq!(b.urls[&Op::Action], "http://a/x");
    assert_eq!(b.urls[&Op::Compensate], "http://a/y");
    let misspelt = serde_json::from_value::<BranchSpec>(json!({"id": "a", "acton": "http://a"}));
    assert!(misspelt.unwrap_err().to_string().contains("acton"));
}

#[test]
fn sequential_by_default() {
    let deps = saga_dependencies(&[
        saga_branch("a", None),
        saga_branch("b", None),
        saga_branch("c", None),
    ]);
    assert_eq!(deps.unwrap(), vec![vec![], vec![0], vec![1]]);
}

#[test]
fn graph_when_any_branch_names_dependencies() {
    let deps = saga_dependencies(&[
        saga_branch("a", None),
        saga_branch("b", None),
        saga_branch("c", Some(&["a", "b", "a"])),
    ]);
    assert_eq!(deps.unwrap(), vec![vec![], vec![], vec![0, 1]]);
}

#[test]
fn bad_sagas_are_rejected_with_a_reason() {
    let cases: Vec<(Vec<BranchSpec>, &str)> = vec![
        (vec![], "at least one branch"),
        (vec![saga_branch("", None)], "non-empty `id`"),
        (vec![saga_branch("a", None), saga_branch("a", None)], "used twice"),
        (vec![saga_branch("a", Some(&["z"]))], "not a branch"),
        (vec![saga_branch("a", Some(&["a"]))], "cycle"),
        (vec![saga_branch("a", Some(&["b"])), saga_branch("b", Some(&["a"]))], "cycle"),
        (
            vec![serde_json::from_value(json!({"id": "a", "action": "http://a"})).unwrap()],
            "no `compensate` URL",
        ),
        (
            vec![serde_json::from_value(json!({"id": "a", "action": "http://a", "compensate": "http://a", "confirm": "http://a"})).unwrap()],
            "does not use",
        ),
    ];
    for (branches, expected) in cases {
        let err = saga_dependencies(&branches).unwrap_err();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}

#[test]
fn tcc_branches_need_confirm_and_cancel_only() {
    let ok: BranchSpec =
        serde_json::from_value(json!({"id": "a", "confirm": "http://a", "cancel": "http://b"}))
            .unwrap();
    assert!(validate_branch(Mode::Tcc, &ok).is_ok());
    let with_deps = BranchSpec {
        depends_on: Some(vec![]),
        ..ok
    };
    assert!(
        validate_branch(Mode::Tcc, &with_deps)
            .unwrap_err()
            .contains("only for sagas")
    );
}

#[test]
fn options_are_checked() {
    assert!(TxOptions::default().validate().is_ok());
    let bad = [
        TxOptions {
            deadline_ms: 0,
            ..Default::default()
        },
        TxOptions {
            request_timeout_ms: 0,
            ..Default::default()
        },
        TxOptions {
            attention_after_ms: 0,
            ..Default::default()
        },
        TxOptions {
            retry: RetryPolicy {
                multiplier: 100.0,
                ..Default::default()
            },
            ..Default::default()
        },
    ];
    for options in bad {
        assert!(options.validate().is_err(), "{options:?}");
    }
}
