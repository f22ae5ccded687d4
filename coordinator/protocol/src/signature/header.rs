//! Reading the `dtx-signature` header: `v2; key=ID; t=UNIX; n=NONCE;
//! sig=HEX`, every field once and no others. A malformed header is refused
//! with a sentence saying what is wrong; a version 1 header (plain hex) is
//! recognised and named as such.

use super::{NONCE_BYTES, SignatureError, VERSION, is_key_id};

/// A parsed header.
pub(super) struct Header<'a> {
    pub(super) key: &'a str,
    pub(super) timestamp: u64,
    pub(super) nonce: &'a str,
    pub(super) mac: Vec<u8>,
}

/// Reads a `dtx-signature` header value; every field once, no others.
pub(super) fn parse_header(value: &str) -> Result<Header<'_>, SignatureError> {
    let malformed = |why: &str| SignatureError::Malformed(why.to_owned());
    let mut parts = value.split(';').map(str::trim);
    match parts.next() {
        Some(VERSION) => {}
        Some(v1) if v1.len() == 64 && v1.bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Err(malformed(
                "it is a version 1 signature (plain hex); this participant accepts version 2 only: \
                 upgrade the coordinator or initiator that sent it",
            ));
        }
        _ => return Err(malformed("it must start with `v2;`")),
    }
    let (mut key, mut timestamp, mut nonce, mut mac) = (None, None, None, None);
    for part in parts {
        let (name, field) = part
            .split_once('=')
            .ok_or_else(|| malformed("each field after `v2` is `name=value`"))?;
        let slot = match name {
            "key" => &mut key,
            "t" => &mut timestamp,
            "n" => &mut nonce,
            "sig" => &mut mac,
            _ => {
                return Err(malformed(
                    "its fields are `key`, `t`, `n` and `sig`, no others",
                ));
            }
        };
        if slot.replace(field).is_some() {
            return Err(malformed("a field appears twice"));
        }
    }
    let (Some(key), Some(timestamp), Some(nonce), Some(mac)) = (key, timestamp, nonce, mac) else {
        return Err(malformed("it needs all of `key`, `t`, `n` and `sig`"));
    };
    if !is_key_id(key) {
        return Err(malformed("`key` is not a valid key id"));
    }
    let timestamp = timestamp
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| timestamp.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| malformed("`t` must be the Unix time in whole seconds"))?;
    if nonce.len() != NONCE_BYTES * 2 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("`n` must be 32 hex digits"));
    }
    let mac = hex::decode(mac)
        .ok()
        .filter(|m| m.len() == 32)
        .ok_or_else(|| malformed("`sig` must be 64 hex digits"))?;
    Ok(Header {
        key,
        timestamp,
        nonce,
        mac,
    })
}
