//! Table tests of request checks: every bad request is refused with a
//! sentence naming the problem.

use super::*;
use serde_json::json;

fn saga(branches: serde_json::Value) -> serde_json::Value {
    json!({"mode": "saga", "branches": branches})
}

fn check(body: serde_json::Value) -> Result<NewTransaction, String> {
    let request: RegisterRequest = serde_json::from_value(body).map_err(|e| e.to_string())?;
    new_transaction(request, &OutboundPolicy::default(), &Limits::default()).map_err(|e| match e {
        ApiError::BadRequest(m) => m,
        other => format!("{other:?}"),
    })
}

fn branch(id: &str, action: &str) -> serde_json::Value {
    json!({"id": id, "action": action, "compensate": "http://h/c"})
}

#[test]
fn bad_registrations_are_refused_with_a_reason() {
    let cases = [
        (
            json!({"mode": "xa", "branches": []}),
            "unknown variant `xa`",
        ),
        (
            json!({"mode": "saga", "branches": [], "colour": 1}),
            "unknown field `colour`",
        ),
        (saga(json!([])), "at least one branch"),
        (saga(json!([branch("", "http://h/a")])), "non-empty `id`"),
        (
            saga(json!([
                branch("a", "http://h/a"),
                branch("a", "http://h/a")
            ])),
            "used twice",
        ),
        (
            saga(json!([branch("a", "ftp://h/a")])),
            "must use http or https",
        ),
        (saga(json!([branch("a", "not a url")])), "is not a URL"),
        (
            saga(
                json!([{"id": "a", "action": "http://h", "compensate": "http://h", "depends_on": ["a"]}]),
            ),
            "cycle",
        ),
        (
            saga(
                json!([{"id": "a", "action": "http://h", "compensate": "http://h", "headers": {"dtx-gid": "x"}}]),
            ),
            "header `dtx-gid` is set by the coordinator",
        ),
        (
            saga(
                json!([{"id": "a", "action": "http://h", "compensate": "http://h", "headers": {"bad name": "x"}}]),
            ),
            "header name `bad name` has a space",
        ),
        (
            json!({"mode": "saga", "gid": "a b", "branches": [branch("a", "http://h/a")]}),
            "`gid` must be",
        ),
        (
            json!({"mode": "saga", "gid": "", "branches": [branch("a", "http://h/a")]}),
            "`gid` must be",
        ),
        (
            json!({"mode": "saga", "branches": [branch("a", "http://h/a")], "options": {"deadline_ms": 0}}),
            "deadline_ms",
        ),
        (
            json!({"mode": "tcc", "branches": [branch("a", "http://h/a")]}),
            "opens without branches",
        ),
    ];
    for (body, expected) in cases {
        let err = check(body.clone()).expect_err(&body.to_string());
        assert!(
            err.contains(expected),
            "{body}: {err:?} should mention {expected:?}"
        );
    }
}

#[test]
fn same_body_same_fingerprint_whatever_the_gid() {
    let a = check(json!({"gid": "g1", "mode": "saga", "branches": [branch("a", "http://h/a")]}))
        .unwrap();
    let b = check(json!({"gid": "g2", "mode": "saga", "branches": [branch("a", "http://h/a")]}))
        .unwrap();
    let c =
        check(json!({"gid": "g1", "mode": "saga", "branches": [branch("a", "http://h/other")]}))
            .unwrap();
    assert_eq!(a.request_hash, b.request_hash);
    assert_ne!(a.request_hash, c.request_hash);
}

#[test]
fn missing_gid_is_generated() {
    let a = check(saga(json!([branch("a", "http://h/a")]))).unwrap();
    let b = check(saga(json!([branch("a", "http://h/a")]))).unwrap();
    assert_ne!(a.gid, b.gid);
    assert!(check_gid(&a.gid).is_ok());
}

#[test]
fn tcc_branches_are_checked_by_the_same_rules_as_the_others() {
    let tcc = |extra: serde_json::Value| -> Result<(), String> {
        let mut branch = json!({"id": "hotel", "confirm": "http://h/c", "cancel": "http://h/x"});
        for (k, v) in extra.as_object().unwrap() {
            branch[k] = v.clone();
        }
        let spec: BranchSpec = serde_json::from_value(branch).unwrap();
        check_tcc_branch(&spec, &OutboundPolicy::default(), &Limits::default()).map_err(|e| match e
        {
            ApiError::BadRequest(m) => m,
            other => format!("{other:?}"),
        })
    };
    assert_eq!(tcc(json!({})), Ok(()));
    for (extra, expected) in [
        (json!({"id": "hôtel"}), "`ô` (U+00F4)"),
        (json!({"id": "ö".repeat(300)}), "branch id"),
        (json!({"headers": {"Host": "x"}}), "header `Host` is set"),
        (json!({"headers": {"x-a": "a\u{0}"}}), "U+0000"),
        (json!({"confirm": "ftp://h/c"}), "http or https"),
    ] {
        let err = tcc(extra.clone()).expect_err(&extra.to_string());
        assert!(
            err.contains(expected),
            "{extra}: {err:?} should say {expected:?}"
        );
    }
}

#[test]
fn a_bad_url_is_quoted_by_characters_on_one_line() {
    let url = format!("ftp://h/\n{}", "ü".repeat(100));
    let err = check(saga(json!([branch("a", &url)]))).unwrap_err();
    assert!(err.contains("`ftp://h/\\n"), "{err:?}");
    assert!(err.contains("…` must use http or https"), "{err:?}");
    assert!(!err.contains('\n'), "{err:?}");
}
