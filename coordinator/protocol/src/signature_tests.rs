//! Tests of signed calls: the header format, keys, and every refusal of the
//! verifier (each a change of one thing to an accepted call).

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &str = "fedcba9876543210fedcba9876543210";
const NOW: u64 = 1_700_000_000;
const NONCE: [u8; NONCE_BYTES] = [7; NONCE_BYTES];

fn key(id: &str, secret: &str) -> SigningKey {
    SigningKey::new(id, secret).unwrap()
}

fn verifier(keys: &[&SigningKey]) -> Verifier {
    Verifier::new(Keyring::new(keys.iter().map(|&k| k.clone())).unwrap())
}

fn call() -> SignedCall<'static> {
    SignedCall {
        method: "POST",
        target: "/stock/try",
        body: br#"{"qty":3}"#,
        gid: "order-1",
        branch: "stock",
        op: "try",
        mode: "tcc",
    }
}

/// A fresh nonce per call, as a signer makes them.
fn nonce(n: u8) -> [u8; NONCE_BYTES] {
    [n; NONCE_BYTES]
}

#[test]
fn a_signed_call_is_accepted_with_the_id_of_its_key() {
    let k1 = key("k1", SECRET);
    let header = k1.sign(&call(), NOW, NONCE);
    assert_eq!(
        verifier(&[&k1]).verify(Some(&header), &call(), NOW),
        Ok("k1")
    );
}

#[test]
fn the_header_has_the_documented_shape_and_a_known_value() {
    let header = key("k1", SECRET).sign(&call(), NOW, NONCE);
    // The same value computed outside Rust (Python's hmac module over the
    // text the module documentation describes), so that other languages
    // can check their implementation against it.
    assert_eq!(
        header,
        "v2; key=k1; t=1700000000; n=07070707070707070707070707070707; \
         sig=95f2acce26bf030e889d9a6bb0a7791cfa621fdca107ceeaf4bf86dc8aec7a6f"
    );
}

#[test]
fn a_change_to_any_covered_part_is_a_mismatch() {
    let k1 = key("k1", SECRET);
    let header = k1.sign(&call(), NOW, NONCE);
    let base = call();
    let changed = [
        (
            "path",
            SignedCall {
                target: "/stock/confirm",
                ..base
            },
        ),
        (
            "query",
            SignedCall {
                target: "/stock/try?x=1",
                ..base
            },
        ),
        (
            "method",
            SignedCall {
                method: "PUT",
                ..base
            },
        ),
        (
            "body",
            SignedCall {
                body: br#"{"qty":30}"#,
                ..base
            },
        ),
        (
            "gid",
            SignedCall {
                gid: "order-2",
                ..base
            },
        ),
        (
            "branch",
            SignedCall {
                branch: "pay",
                ..base
            },
        ),
        (
            "op",
            SignedCall {
                op: "confirm",
                ..base
            },
        ),
        (
            "mode",
            SignedCall {
                mode: "saga",
                ..base
            },
        ),
    ];
    for (what, other) in changed {
        // A fresh verifier each time: the replay cache plays no part.
        let fresh = verifier(&[&k1]);
        let result = fresh.verify(Some(&header), &other, NOW);
        assert_eq!(result, Err(SignatureError::Mismatch), "{what}");
    }
    let same_id_other_secret = verifier(&[&key("k1", OTHER_SECRET)]);
    assert_eq!(
        same_id_other_secret.verify(Some(&header), &call(), NOW),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_changed_header_field_is_a_mismatch() {
    let k1 = key("k1", SECRET);
    let header = k1.sign(&call(), NOW, NONCE);
    let later = header.replace("t=1700000000", "t=1700000001");
    let other_nonce = header.replace("n=0707", "n=0708");
    for forged in [later, other_nonce] {
        let fresh = verifier(&[&k1]);
        let result = fresh.verify(Some(&forged), &call(), NOW);
        assert_eq!(result, Err(SignatureError::Mismatch), "{forged}");
    }
}

#[test]
fn the_window_holds_both_ways_and_its_edges_are_inside() {
    let k1 = key("k1", SECRET);
    let window = DEFAULT_WINDOW.as_secs();
    let cases = [
        (NOW - window, Ok("k1")),
        (NOW + window, Ok("k1")),
        (
            NOW - window - 1,
            Err(SignatureError::Stale {
                age: window + 1,
                window,
            }),
        ),
        (NOW - 3600, Err(SignatureError::Stale { age: 3600, window })),
        (
            NOW + window + 1,
            Err(SignatureError::Future {
                ahead: window + 1,
                window,
            }),
        ),
    ];
    for (signed_at, expected) in cases {
        let header = k1.sign(&call(), signed_at, NONCE);
        let fresh = verifier(&[&k1]);
        let result = fresh.verify(Some(&header), &call(), NOW);
        assert_eq!(
            result,
            expected,
            "signed at NOW{:+}",
            signed_at as i64 - NOW as i64
        );
    }
}

#[test]
fn a_custom_window_applies() {
    let k1 = key("k1", SECRET);
    let short = verifier(&[&k1]).window(Duration::from_secs(10));
    let header = k1.sign(&call(), NOW - 11, NONCE);
    assert_eq!(
        short.verify(Some(&header), &call(), NOW),
        Err(SignatureError::Stale {
            age: 11,
            window: 10
        })
    );
}

#[test]
fn a_replay_is_refused_and_a_resend_with_a_fresh_nonce_is_not() {
    let k1 = key("k1", SECRET);
    let verifier = verifier(&[&k1]);
    let header = k1.sign(&call(), NOW, nonce(1));
    assert_eq!(verifier.verify(Some(&header), &call(), NOW), Ok("k1"));
    assert_eq!(
        verifier.verify(Some(&header), &call(), NOW + 1),
        Err(SignatureError::Replayed)
    );
    // A retry of the same call in the same second, signed again.
    let retry = k1.sign(&call(), NOW, nonce(2));
    assert_eq!(verifier.verify(Some(&retry), &call(), NOW), Ok("k1"));
    // Past the window the replay is stale, whether remembered or not.
    let later = NOW + DEFAULT_WINDOW.as_secs() + 1;
    assert!(matches!(
        verifier.verify(Some(&header), &call(), later),
        Err(SignatureError::Stale { .. })
    ));
}

#[test]
fn a_refused_call_is_not_remembered() {
    let k1 = key("k1", SECRET);
    let verifier = verifier(&[&k1]);
    let header = k1.sign(&call(), NOW, NONCE);
    let other_path = SignedCall {
        target: "/elsewhere",
        ..call()
    };
    assert_eq!(
        verifier.verify(Some(&header), &other_path, NOW),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(verifier.verify(Some(&header), &call(), NOW), Ok("k1"));
}

#[test]
fn an_unknown_key_is_named() {
    let header = key("k9", SECRET).sign(&call(), NOW, NONCE);
    assert_eq!(
        verifier(&[&key("k1", SECRET)]).verify(Some(&header), &call(), NOW),
        Err(SignatureError::UnknownKey { key: "k9".into() })
    );
}

#[test]
fn a_rotated_key_is_accepted_while_both_are_in_the_ring() {
    let old = key("2024", SECRET);
    let new = key("2025", OTHER_SECRET);
    let during = verifier(&[&old, &new]);
    for (n, signer) in [&old, &new].into_iter().enumerate() {
        let header = signer.sign(&call(), NOW, nonce(n as u8));
        assert_eq!(during.verify(Some(&header), &call(), NOW), Ok(signer.id()));
    }
    let after = verifier(&[&new]);
    let header = old.sign(&call(), NOW, nonce(9));
    assert_eq!(
        after.verify(Some(&header), &call(), NOW),
        Err(SignatureError::UnknownKey { key: "2024".into() })
    );
}

#[test]
fn a_missing_or_malformed_header_is_refused_with_what_is_wrong() {
    let v = verifier(&[&key("k1", SECRET)]);
    assert_eq!(v.verify(None, &call(), NOW), Err(SignatureError::Missing));
    let good_sig = "a".repeat(64);
    let nonce = "0".repeat(32);
    let cases = [
        (good_sig.clone(), "version 1"),
        ("v3; key=k1".into(), "`v2;`"),
        (String::new(), "`v2;`"),
        (format!("v2; key=k1; t=1; n={nonce}"), "all of"),
        (
            format!("v2; key=k1; key=k1; t=1; n={nonce}; sig={good_sig}"),
            "twice",
        ),
        (
            format!("v2; key=k1; t=1; n={nonce}; sig={good_sig}; x=1"),
            "no others",
        ),
        (
            format!("v2; key=k1; t; n={nonce}; sig={good_sig}"),
            "`name=value`",
        ),
        (
            format!("v2; key=k 1; t=1; n={nonce}; sig={good_sig}"),
            "key id",
        ),
        (
            format!("v2; key=k1; t=-1; n={nonce}; sig={good_sig}"),
            "`t`",
        ),
        (
            format!("v2; key=k1; t=+1; n={nonce}; sig={good_sig}"),
            "`t`",
        ),
        (
            format!("v2; key=k1; t=99999999999999999999; n={nonce}; sig={good_sig}"),
            "`t`",
        ),
        (format!("v2; key=k1; t=1; n=00; sig={good_sig}"), "`n`"),
        (format!("v2; key=k1; t=1; n={nonce}; sig=abcd"), "`sig`"),
        (
            format!("v2; key=k1; t=1; n={nonce}; sig={}", "z".repeat(64)),
            "`sig`",
        ),
    ];
    for (header, says) in cases {
        match v.verify(Some(&header), &call(), NOW) {
            Err(e @ SignatureError::Malformed(_)) => {
                let message = e.to_string();
                assert!(message.contains(says), "{header}: {message}");
                assert!(message.contains("`dtx-signature`"), "{message}");
            }
            other => panic!("{header}: expected malformed, got {other:?}"),
        }
    }
}

#[test]
fn a_full_replay_cache_refuses_until_its_oldest_call_leaves_the_window() {
    let k1 = key("k1", SECRET);
    let verifier = verifier(&[&k1]).replay_capacity(2);
    let window = DEFAULT_WINDOW.as_secs();
    for (n, at) in [(1, NOW), (2, NOW + 10)] {
        let header = k1.sign(&call(), at, nonce(n));
        assert_eq!(verifier.verify(Some(&header), &call(), at), Ok("k1"));
    }
    let third = k1.sign(&call(), NOW + 20, nonce(3));
    let refused = verifier.verify(Some(&third), &call(), NOW + 20);
    assert_eq!(
        refused,
        Err(SignatureError::ReplayCacheFull {
            retry_after: window + 1 - 20
        })
    );
    assert_eq!(refused.unwrap_err().retry_after(), Some(window - 19));
    // The remembered calls are still refused as replays, not forgotten.
    let first = k1.sign(&call(), NOW, nonce(1));
    assert_eq!(
        verifier.verify(Some(&first), &call(), NOW + 20),
        Err(SignatureError::Replayed)
    );
    // Once the first call has left the window there is room again.
    let later = NOW + window + 1;
    let fourth = k1.sign(&call(), later, nonce(4));
    assert_eq!(verifier.verify(Some(&fourth), &call(), later), Ok("k1"));
}

#[test]
fn the_replay_cache_forgets_what_left_the_window() {
    let mut cache = ReplayCache::new(10);
    for t in 0..5 {
        cache.admit(NOW + t, [t as u8; 32], NOW + t, 60).unwrap();
    }
    assert_eq!(cache.len(), 5);
    cache.admit(NOW + 62, [99; 32], NOW + 62, 60).unwrap();
    // Entries signed at NOW and NOW+1 are more than 60 s old at NOW+62.
    assert_eq!(cache.len(), 4);
}

#[test]
fn keys_need_a_valid_id_and_a_long_secret() {
    assert!(SigningKey::new("k1", "x".repeat(MIN_SECRET_BYTES)).is_ok());
    assert_eq!(
        SigningKey::new("k1", "x".repeat(MIN_SECRET_BYTES - 1)).unwrap_err(),
        KeyError::ShortSecret {
            id: "k1".into(),
            len: 31
        }
    );
    assert_eq!(
        SigningKey::new("k1", "").unwrap_err(),
        KeyError::EmptySecret { id: "k1".into() }
    );
    for id in [
        "",
        "a b",
        "a;b",
        "a=b",
        "ä",
        &"k".repeat(MAX_KEY_ID_CHARS + 1),
    ] {
        assert!(
            matches!(SigningKey::new(id, SECRET), Err(KeyError::BadId { .. })),
            "{id:?}"
        );
    }
    assert!(SigningKey::new("prod-2025.01_a", SECRET).is_ok());
}

#[test]
fn a_key_is_read_as_id_colon_secret() {
    let key: SigningKey = format!("k1:{SECRET}:with:colons").parse().unwrap();
    assert_eq!(key.id(), "k1");
    assert_eq!(&*key.secret, format!("{SECRET}:with:colons").as_bytes());
    assert_eq!(
        "k1".parse::<SigningKey>().unwrap_err(),
        KeyError::NoSeparator
    );
    assert_eq!(
        "k1:".parse::<SigningKey>().unwrap_err(),
        KeyError::EmptySecret { id: "k1".into() }
    );
    assert!(matches!(
        "k1:short".parse::<SigningKey>(),
        Err(KeyError::ShortSecret { len: 5, .. })
    ));
    let message = "k1:short".parse::<SigningKey>().unwrap_err().to_string();
    assert!(message.contains("at least 32"), "{message}");
}

#[test]
fn a_keyring_has_keys_with_distinct_ids() {
    assert_eq!(Keyring::new([]).unwrap_err(), KeyError::EmptyKeyring);
    assert_eq!(
        Keyring::new([key("k1", SECRET), key("k1", OTHER_SECRET)]).unwrap_err(),
        KeyError::DuplicateId { id: "k1".into() }
    );
    let ring = Keyring::new([key("b", SECRET), key("a", OTHER_SECRET)]).unwrap();
    assert_eq!(ring.ids().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn debug_never_shows_a_secret() {
    let k1 = key("k1", SECRET);
    let shown = format!("{k1:?} {:?}", verifier(&[&k1]));
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("k1"), "{shown}");
}
