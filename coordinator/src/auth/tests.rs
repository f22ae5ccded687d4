//! Token files: parsing, hashing, new tokens.

use super::*;

#[test]
fn a_new_token_is_found_through_its_line() {
    let (token, line) = new_token("orders", Role::Initiator, "shop").unwrap();
    assert!(token.starts_with("dtx_") && token.len() == 68, "{token}");
    assert!(
        !line.contains(&token),
        "the line holds the hash, never the token"
    );
    let tokens = Tokens::parse(&format!("# comment\n\n{line}\n")).unwrap();
    let caller = tokens.caller(&token).unwrap();
    assert_eq!(caller.name, "orders");
    assert_eq!(caller.role, Role::Initiator);
    assert_eq!(caller.namespace, "shop");
    assert!(tokens.caller("dtx_wrong").is_none());
    let (other, _) = new_token("orders", Role::Initiator, "shop").unwrap();
    assert_ne!(token, other, "tokens are random");
}

#[test]
fn bad_token_files_are_refused_with_the_line() {
    let hash = format!("sha256:{}", "a".repeat(64));
    let cases = [
        (String::new(), "lists no token"),
        ("a b c".to_owned(), "line 1: expected"),
        (format!("a admin ns {hash}"), "unknown role `admin`"),
        (format!("a reader n/s {hash}"), "namespace `n/s`"),
        ("a reader ns sha256:abc".to_owned(), "64 hex digits"),
        ("a reader ns md5:abc".to_owned(), "64 hex digits"),
        (
            format!("a reader ns {hash}\na reader ns2 sha256:{}", "b".repeat(64)),
            "line 2: token name `a` is used twice",
        ),
        (
            format!("a reader ns {hash}\nb reader ns {hash}"),
            "line 2: the same token",
        ),
    ];
    for (text, expected) in cases {
        let error = Tokens::parse(&text).unwrap_err();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
}

#[test]
fn roles_and_namespaces_decide_what_a_caller_sees() {
    let caller = |role| Caller {
        name: "t".into(),
        role,
        namespace: "shop".into(),
        anonymous: false,
    };
    assert!(caller(Role::Initiator).may_write());
    assert!(!caller(Role::Reader).may_write());
    assert!(caller(Role::Operator).may_write());
    assert!(caller(Role::Reader).sees("shop"));
    assert!(!caller(Role::Reader).sees("bank"));
    assert!(!caller(Role::Initiator).sees("bank"));
    assert!(caller(Role::Operator).sees("bank"));
    assert_eq!(caller(Role::Reader).listing_namespace(), Some("shop"));
    assert_eq!(caller(Role::Operator).listing_namespace(), None);
    assert_eq!(Caller::open().role, Role::Operator);
}
