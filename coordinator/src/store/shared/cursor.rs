//! Where a listing stands: the opaque cursor a page hands back, the size of
//! a page, and the cutting of the rows read into a page and the cursor to
//! the next.

use super::rows::TxRow;
use crate::store::{Page, StoreError};

/// Listing pages hold at most this many transactions, whatever was asked.
pub(in crate::store) const MAX_PAGE: u32 = 1000;

/// The opaque listing cursor for "after this transaction": its creation time
/// and its gid in hex, so that no character of a client-chosen gid can clash
/// with the separator.
pub(in crate::store) fn encode_cursor(created_at_ms: i64, gid: &str) -> String {
    let hex: String = gid.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{created_at_ms}.{hex}")
}

/// Reads a cursor made by [`encode_cursor`].
pub(in crate::store) fn decode_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let invalid = || {
        StoreError::InvalidInput(format!(
            "invalid listing cursor `{cursor}`: pass back a `next_cursor` unchanged"
        ))
    };
    let (created, hex) = cursor.split_once('.').ok_or_else(invalid)?;
    let created = created.parse::<i64>().map_err(|_| invalid())?;
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let gid = String::from_utf8(bytes).map_err(|_| invalid())?;
    Ok((created, gid))
}

/// The page size to fetch for a requested limit: 0 (nothing asked) and
/// anything above [`MAX_PAGE`] mean [`MAX_PAGE`].
pub(in crate::store) fn page_size(limit: u32) -> u32 {
    if limit == 0 {
        MAX_PAGE
    } else {
        limit.min(MAX_PAGE)
    }
}

/// The page of `size` transactions from `rows`, which were read one row
/// longer than the page: that row, when there is one, tells that another
/// page follows, which starts after the page's last transaction.
pub(in crate::store) fn cut_page(mut rows: Vec<TxRow>, size: usize) -> Result<Page, StoreError> {
    let more = rows.len() > size;
    rows.truncate(size);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(encode_cursor(last.created_at_ms, &last.gid)),
        _ => None,
    };
    let transactions = rows
        .into_iter()
        .map(|row| row.into_record(Vec::new()))
        .collect::<Result<_, _>>()?;
    Ok(Page {
        transactions,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_any_gid() {
        for gid in ["plain", "with.dots.and:colons", "ünïcode ✓", ""] {
            let cursor = encode_cursor(1_700_000_000_123, gid);
            assert_eq!(
                decode_cursor(&cursor).unwrap(),
                (1_700_000_000_123, gid.to_owned())
            );
        }
    }

    #[test]
    fn malformed_cursor_is_refused() {
        for bad in ["", "12", "x.00", "12.0", "12.zz", "12.ff"] {
            assert!(decode_cursor(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn page_size_is_capped() {
        assert_eq!(page_size(0), MAX_PAGE);
        assert_eq!(page_size(10), 10);
        assert_eq!(page_size(5000), MAX_PAGE);
    }
}
