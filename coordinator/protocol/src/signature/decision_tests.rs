//! Tests of signed decision answers: the header's known value, and every
//! refusal of the verifier (each a change of one thing to an accepted
//! answer).

use super::*;
use crate::signature::SignedCall;
use crate::state::{Decision, Status};
use crate::wire::Mode;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &str = "fedcba9876543210fedcba9876543210";
const NOW: u64 = 1_700_000_000;

fn key(id: &str, secret: &str) -> SigningKey {
    SigningKey::new(id, secret).unwrap()
}

fn verifier(keys: &[&SigningKey]) -> DecisionVerifier {
    DecisionVerifier::new(Keyring::new(keys.iter().map(|&k| k.clone())).unwrap())
}

/// The nonce of the question the tests ask.
fn asked() -> DecisionNonce {
    DecisionNonce::from_bytes([7; NONCE_BYTES])
}

/// A 3PC transaction the coordinator decided to pre-commit.
fn answer() -> DecisionAnswer {
    DecisionAnswer::of(
        "order-1",
        Some(Mode::ThreePhase),
        Some(Status::PreCommitting),
    )
}

#[test]
fn a_signed_answer_is_accepted_with_the_id_of_its_key() {
    let k1 = key("k1", SECRET);
    let header = k1.sign_decision(&answer(), NOW, &asked());
    assert_eq!(
        verifier(&[&k1]).verify(Some(&header), "order-1", &asked(), &answer(), NOW),
        Ok("k1")
    );
}

#[test]
fn the_header_has_the_documented_shape_and_a_known_value() {
    // The values computed outside Rust (Python's hmac module over the text
    // the module documentation describes), so that other languages can
    // check their implementation against them.
    let k1 = key("k1", SECRET);
    assert_eq!(
        k1.sign_decision(&answer(), NOW, &asked()),
        "v2; key=k1; t=1700000000; n=07070707070707070707070707070707; \
         sig=873c07b18b9e349d116cf976f2c87ab0f61b8f65c0d39c1ccd8765ae46d9aeca"
    );
    // No record: mode and status are empty lines.
    let presumed_abort = DecisionAnswer::of("order-2", None, None);
    assert_eq!(
        k1.sign_decision(&presumed_abort, NOW, &asked()),
        "v2; key=k1; t=1700000000; n=07070707070707070707070707070707; \
         sig=d8c905f840497295ad2b0f5a57d78676f0bc9a7574d17d46ee4180964ba98b15"
    );
}

#[test]
fn a_change_to_any_covered_part_of_the_answer_is_a_mismatch() {
    let k1 = key("k1", SECRET);
    let header = k1.sign_decision(&answer(), NOW, &asked());
    let base = answer();
    let changed = [
        (
            "decision",
            DecisionAnswer {
                decision: Decision::Commit,
                ..base.clone()
            },
        ),
        (
            "status",
            DecisionAnswer {
                status: Some(Status::Committing),
                ..base.clone()
            },
        ),
        (
            "status removed",
            DecisionAnswer {
                status: None,
                ..base.clone()
            },
        ),
        (
            "mode",
            DecisionAnswer {
                mode: Some(Mode::TwoPhase),
                ..base.clone()
            },
        ),
    ];
    for (what, altered) in changed {
        assert_eq!(
            verifier(&[&k1]).verify(Some(&header), "order-1", &asked(), &altered, NOW),
            Err(DecisionSignatureError::Mismatch),
            "{what}"
        );
    }
    // The gid too, when the question was about the altered gid.
    let other_gid = DecisionAnswer {
        gid: "order-9".to_owned(),
        ..base
    };
    assert_eq!(
        verifier(&[&k1]).verify(Some(&header), "order-9", &asked(), &other_gid, NOW),
        Err(DecisionSignatureError::Mismatch)
    );
}

#[test]
fn an_answer_to_another_question_is_refused() {
    let k1 = key("k1", SECRET);
    let header = k1.sign_decision(&answer(), NOW, &asked());
    let later_question = DecisionNonce::from_bytes([8; NONCE_BYTES]);
    assert_eq!(
        verifier(&[&k1]).verify(Some(&header), "order-1", &later_question, &answer(), NOW),
        Err(DecisionSignatureError::OtherNonce),
        "a replayed answer carries the nonce of the question it answered"
    );
    assert_eq!(
        verifier(&[&k1]).verify(Some(&header), "order-2", &asked(), &answer(), NOW),
        Err(DecisionSignatureError::OtherGid {
            asked: "order-2".to_owned(),
            answered: "order-1".to_owned()
        })
    );
}

#[test]
fn an_unsigned_answer_or_one_of_an_unknown_key_or_secret_is_refused() {
    let k1 = key("k1", SECRET);
    let v = verifier(&[&k1]);
    assert_eq!(
        v.verify(None, "order-1", &asked(), &answer(), NOW),
        Err(DecisionSignatureError::Unsigned)
    );
    let stranger = key("k9", SECRET).sign_decision(&answer(), NOW, &asked());
    assert_eq!(
        v.verify(Some(&stranger), "order-1", &asked(), &answer(), NOW),
        Err(DecisionSignatureError::UnknownKey { key: "k9".into() })
    );
    let impostor = key("k1", OTHER_SECRET).sign_decision(&answer(), NOW, &asked());
    assert_eq!(
        v.verify(Some(&impostor), "order-1", &asked(), &answer(), NOW),
        Err(DecisionSignatureError::Mismatch)
    );
    let garbled = v.verify(Some("v2; key=k1"), "order-1", &asked(), &answer(), NOW);
    assert!(
        matches!(garbled, Err(DecisionSignatureError::Malformed(_))),
        "{garbled:?}"
    );
}

#[test]
fn a_key_of_the_ring_verifies_during_a_rotation() {
    let (old, new) = (key("old", SECRET), key("new", OTHER_SECRET));
    let header = new.sign_decision(&answer(), NOW, &asked());
    assert_eq!(
        verifier(&[&old, &new]).verify(Some(&header), "order-1", &asked(), &answer(), NOW),
        Ok("new")
    );
}

#[test]
fn an_answer_outside_the_window_is_refused_either_way() {
    let k1 = key("k1", SECRET);
    let v = verifier(&[&k1]).window(Duration::from_secs(60));
    let signed_at = |t| k1.sign_decision(&answer(), t, &asked());
    let check = |header: &str| v.verify(Some(header), "order-1", &asked(), &answer(), NOW);
    assert_eq!(check(&signed_at(NOW - 60)), Ok("k1"), "the bound is inside");
    assert_eq!(check(&signed_at(NOW + 60)), Ok("k1"), "the bound is inside");
    assert_eq!(
        check(&signed_at(NOW - 61)),
        Err(DecisionSignatureError::Stale {
            age: 61,
            window: 60
        })
    );
    assert_eq!(
        check(&signed_at(NOW + 61)),
        Err(DecisionSignatureError::Future {
            ahead: 61,
            window: 60
        })
    );
}

#[test]
fn a_signed_call_never_passes_for_a_signed_answer() {
    // Same key, same nonce, same gid: only the domain line differs.
    let k1 = key("k1", SECRET);
    let call = SignedCall {
        method: "GET",
        target: "/v1/transactions/order-1/decision",
        body: b"",
        gid: "order-1",
        branch: "pre_committing",
        op: "pending",
        mode: "3pc",
    };
    let header = k1.sign(&call, NOW, [7; NONCE_BYTES]);
    assert_eq!(
        verifier(&[&k1]).verify(Some(&header), "order-1", &asked(), &answer(), NOW),
        Err(DecisionSignatureError::Mismatch)
    );
}

#[test]
fn a_nonce_is_32_hex_digits_and_reads_back_as_written() {
    let nonce: DecisionNonce = "0123456789abcdefABCDEF0123456789".parse().unwrap();
    assert_eq!(nonce.to_string(), "0123456789abcdefabcdef0123456789");
    for bad in [
        "",
        "0123",
        "0123456789abcdef0123456789abcdefff",
        "g".repeat(32).as_str(),
    ] {
        assert!(
            matches!(
                bad.parse::<DecisionNonce>(),
                Err(DecisionSignatureError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn debug_shows_key_ids_and_never_a_secret() {
    let shown = format!("{:?}", verifier(&[&key("k1", SECRET)]));
    assert!(shown.contains("k1") && !shown.contains(SECRET), "{shown}");
}
