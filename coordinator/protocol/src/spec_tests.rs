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

#[test]
fn branch_ids_are_the_characters_a_header_and_a_path_carry_as_they_are() {
    let longest = "a".repeat(BRANCH_ID_MAX);
    for ok in ["a", "A-z_0.9:x", "order-1", longest.as_str()] {
        assert_eq!(check_branch_id(ok), Ok(()), "{ok:?}");
    }
    let too_long = "a".repeat(BRANCH_ID_MAX + 1);
    let cases = [
        ("", "non-empty `id`"),
        ("a b", "a space (U+0020) at character 2"),
        ("café", "`é` (U+00E9) at character 4"),
        ("a\0b", "the control character U+0000 at character 2"),
        ("a\nb", "the control character U+000A"),
        ("a\tb", "the control character U+0009"),
        ("a/b", "`/` (U+002F)"),
        ("a%20b", "`%` (U+0025)"),
        ("a`b", "a backtick (U+0060)"),
        ("a\u{2003}b", "the whitespace character U+2003"),
        (too_long.as_str(), "is 129 characters long"),
    ];
    for (id, expected) in cases {
        let err = check_branch_id(id).expect_err(id);
        assert!(
            err.contains(expected),
            "{id:?}: {err:?} should say {expected:?}"
        );
        assert!(
            err.contains("1 to 128 characters"),
            "{err:?} states the rule"
        );
        assert!(
            !err.contains(['\0', '\n', '\t']),
            "{err:?} is one clean line"
        );
    }
}

#[test]
fn a_long_non_ascii_id_is_refused_and_quoted_by_characters() {
    // Byte slicing of this id panicked: byte 16 falls inside an `é`.
    let id = format!("x{}", "é".repeat(299));
    let err = check_branch_id(&id).unwrap_err();
    assert!(err.contains(&format!("`x{}…`", "é".repeat(39))), "{err:?}");
    let branch = BranchSpec {
        id,
        ..saga_branch("a", None)
    };
    assert!(validate_branch(Mode::Saga, &branch).is_err());
}

#[test]
fn every_registration_path_checks_ids_and_headers() {
    let bad_id = BranchSpec {
        id: "hé".into(),
        ..saga_branch("a", None)
    };
    let bad_header = BranchSpec {
        headers: BTreeMap::from([("Host".into(), "evil.test".into())]),
        ..saga_branch("a", None)
    };
    for (branch, expected) in [(bad_id, "branch id"), (bad_header, "`Host`")] {
        let err = saga_dependencies(std::slice::from_ref(&branch)).unwrap_err();
        assert!(err.contains(expected), "saga: {err:?}");
        let two_phase: BranchSpec = serde_json::from_value(json!({
            "id": branch.id, "headers": branch.headers,
            "prepare": "http://a", "commit": "http://a", "rollback": "http://a"
        }))
        .unwrap();
        let err = validate_branches(Mode::TwoPhase, &[two_phase]).unwrap_err();
        assert!(err.contains(expected), "2pc: {err:?}");
        let tcc: BranchSpec = serde_json::from_value(json!({
            "id": branch.id, "headers": branch.headers,
            "confirm": "http://a", "cancel": "http://a"
        }))
        .unwrap();
        let err = validate_branch(Mode::Tcc, &tcc).unwrap_err();
        assert!(err.contains(expected), "tcc: {err:?}");
    }
}

fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn headers_that_any_server_accepts_are_allowed() {
    let long_value = "v".repeat(HEADER_VALUE_MAX);
    let long_name = "n".repeat(HEADER_NAME_MAX);
    let cases = [
        headers(&[]),
        headers(&[("x-tenant", "acme"), ("Authorization", "Bearer abc.def")]),
        headers(&[("x-empty", ""), ("x-inner", "a b\tc")]),
        headers(&[("x!#$%&'*+-.^_`|~1", "token characters")]),
        headers(&[
            ("tracestate", "vendor=1"),
            ("proxy", "a name, not a prefix"),
        ]),
        headers(&[(long_name.as_str(), long_value.as_str())]),
    ];
    for h in cases {
        assert_eq!(check_branch_headers("b", &h), Ok(()), "{h:?}");
    }
}

#[test]
fn headers_the_coordinator_or_its_http_client_sets_are_refused_in_any_case() {
    for name in [
        "host",
        "Host",
        "CONTENT-LENGTH",
        "Transfer-Encoding",
        "connection",
        "Keep-Alive",
        "upgrade",
        "TE",
        "trailer",
        "expect",
        "Content-Type",
        "content-encoding",
        "traceparent",
        "Proxy-Authorization",
        "proxy-connection",
        "dtx-gid",
        "DTX-Branch",
        "dtx-anything",
    ] {
        let err = check_branch_headers("b", &headers(&[(name, "x")])).expect_err(name);
        assert!(
            err.contains(&format!("header `{name}` is set by the coordinator")),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn header_names_must_be_tokens_used_once() {
    let too_long = "n".repeat(HEADER_NAME_MAX + 1);
    let cases = [
        (headers(&[("", "x")]), "is empty"),
        (
            headers(&[("bad name", "x")]),
            "a space (U+0020) at character 4",
        ),
        (headers(&[("x:y", "x")]), "`:` (U+003A)"),
        (headers(&[("x(y)", "x")]), "`(` (U+0028)"),
        (headers(&[("naïve", "x")]), "`ï` (U+00EF)"),
        (headers(&[("x\0", "x")]), "the control character U+0000"),
        (
            headers(&[("x\r\nHost", "x")]),
            "the control character U+000D",
        ),
        (
            headers(&[(too_long.as_str(), "x")]),
            "is 129 characters long",
        ),
        (headers(&[("X-A", "1"), ("x-a", "2")]), "is given twice"),
    ];
    for (h, expected) in cases {
        let err = check_branch_headers("b", &h).expect_err(expected);
        assert!(
            err.contains(expected),
            "{h:?}: {err:?} should say {expected:?}"
        );
        assert!(
            !err.contains(['\0', '\r', '\n']),
            "{err:?} is one clean line"
        );
    }
}

#[test]
fn header_values_must_be_visible_ascii_and_are_never_repeated() {
    let too_long = "s".repeat(HEADER_VALUE_MAX + 1);
    let cases = [
        (
            "secret\r\nHost: evil",
            "the control character U+000D at character 7",
        ),
        ("secret\nx", "the control character U+000A"),
        ("secret\0", "the control character U+0000"),
        ("secret\u{7f}", "the control character U+007F"),
        ("secrét", "`é` (U+00E9) at character 5"),
        (" secret", "starts or ends with whitespace"),
        ("secret\t", "starts or ends with whitespace"),
        (too_long.as_str(), "is 4097 characters long"),
    ];
    for (value, expected) in cases {
        let err =
            check_branch_headers("b", &headers(&[("authorization", value)])).expect_err(value);
        assert!(
            err.contains(expected),
            "{value:?}: {err:?} should say {expected:?}"
        );
        assert!(err.contains("header `authorization`"), "{err:?}");
        assert!(
            !err.contains("secr"),
            "{err:?} repeats a value, maybe a credential"
        );
    }
}

#[test]
fn header_count_and_size_are_bounded() {
    let many: BTreeMap<String, String> = (0..=BRANCH_HEADERS_MAX)
        .map(|i| (format!("x-{i}"), "v".into()))
        .collect();
    let err = check_branch_headers("b", &many).unwrap_err();
    assert!(err.contains("has 33 headers; at most 32"), "{err:?}");
    let big = "v".repeat(HEADER_VALUE_MAX);
    let err = check_branch_headers("b", &headers(&[("x-a", &big), ("x-b", &big)])).unwrap_err();
    assert!(err.contains("bytes of headers; at most 6144"), "{err:?}");
}

#[test]
fn an_unknown_dependency_is_quoted_safely() {
    let err = saga_dependencies(&[saga_branch("a", Some(&["nö\nway"]))]).unwrap_err();
    assert!(err.contains("depends on `nö\\nway`"), "{err:?}");
}

#[test]
fn excerpts_cut_by_characters_and_escape_what_is_invisible() {
    assert_eq!(excerpt("plain"), "plain");
    assert_eq!(excerpt("a`b\0c\td e"), "a\\u{60}b\\u{0}c\\td e");
    let long = "ü".repeat(41);
    assert_eq!(excerpt(&long), format!("{}…", "ü".repeat(40)));
}

#[test]
fn a_stored_saga_is_rebuilt_whatever_today_says_of_its_ids() {
    // Registered before the id rule: refused today, still driven to its end.
    let old = vec![saga_branch("step one", None), saga_branch("step two", None)];
    assert!(saga_dependencies(&old).is_err());
    assert_eq!(saga_graph(&old).unwrap(), vec![vec![], vec![0]]);
    // The graph's own rules still hold.
    let cycle = vec![
        saga_branch("a", Some(&["b"])),
        saga_branch("b", Some(&["a"])),
    ];
    assert!(saga_graph(&cycle).is_err());
}
