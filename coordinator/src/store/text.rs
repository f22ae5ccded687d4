//! Free text made storable on every backend: what a participant or the
//! engine wrote into a branch's `last_error` or `refusal`, an event's
//! `detail` or a transaction's `attention` is cleaned here, once, before
//! either backend binds it.
//!
//! PostgreSQL refuses a NUL character in `text` ("invalid byte sequence for
//! encoding UTF8: 0x00"). A participant whose error body held one made every
//! write of its transaction fail, and the driver was restarted again and
//! again. SQLite stores NUL, but then the two backends would read back
//! different text. So every control character but tab and newline (NUL, the
//! rest of C0, DEL and C1, which also garble logs and terminals) becomes
//! U+FFFD, which keeps the text's length in characters.

use std::borrow::Cow;

use super::Update;

/// The most characters one field of free text keeps. Every text the engine
/// writes is far shorter (a participant's error body is cut to 300
/// characters by the transport); this bounds what a bug could write.
pub const STORED_TEXT_MAX_CHARS: usize = 2000;

/// What replaces a character that is not stored.
const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// Whether `c` is kept as it is.
fn is_storable(c: char) -> bool {
    c == '\t' || c == '\n' || !c.is_control()
}

/// `text` with every control character but tab and newline replaced by
/// U+FFFD, cut to its first `max_chars` characters (by characters, never
/// inside one). Borrows when nothing changes, the common case.
pub fn storable(text: &str, max_chars: usize) -> Cow<'_, str> {
    // More bytes than `max_chars` is necessary for more characters, and
    // cheap to check first.
    let too_long = text.len() > max_chars && text.chars().nth(max_chars).is_some();
    if !too_long && text.chars().all(is_storable) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .take(max_chars)
            .map(|c| if is_storable(c) { c } else { REPLACEMENT })
            .collect(),
    )
}

/// Makes `text` storable in place (see [`storable`]) with the store's bound.
fn clean(text: &mut String) {
    if let Cow::Owned(cleaned) = storable(text, STORED_TEXT_MAX_CHARS) {
        *text = cleaned;
    }
}

/// The update with its free text (attention, each branch's last error and
/// refusal, each event's detail) made storable. Both backends call it first
/// thing in `update`; the other writes carry no free text from outside
/// (branch ids and gids are checked at registration, specs are stored as
/// JSON, which escapes control characters).
pub(super) fn storable_update(mut update: Update) -> Update {
    if let Some(attention) = &mut update.attention {
        clean(attention);
    }
    for branch in &mut update.branches {
        if let Some(error) = &mut branch.last_error {
            clean(error);
        }
        if let Some(refusal) = &mut branch.refusal {
            clean(refusal);
        }
    }
    for event in &mut update.events {
        clean(&mut event.detail);
    }
    update
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_but_tab_and_newline_become_the_replacement_character() {
        let cases = [
            ("plain text", "plain text"),
            ("tab\tand\nnewline stay", "tab\tand\nnewline stay"),
            ("nul\0here", "nul\u{FFFD}here"),
            ("cr\r\nlf", "cr\u{FFFD}\nlf"),
            ("esc\u{1b}[31mred", "esc\u{FFFD}[31mred"),
            ("del\u{7f} c1\u{9b}", "del\u{FFFD} c1\u{FFFD}"),
            ("ünïcödé ✓ stays", "ünïcödé ✓ stays"),
        ];
        for (text, expected) in cases {
            assert_eq!(storable(text, 100), expected, "{text:?}");
        }
    }

    #[test]
    fn long_text_is_cut_by_characters() {
        assert_eq!(storable("ééé", 2), "éé");
        assert_eq!(storable("é\0é", 2), "é\u{FFFD}");
        assert_eq!(storable("abc", 3), "abc");
        // Three bytes, two characters: not too long for a bound of 2.
        assert!(matches!(storable("éa", 2), Cow::Borrowed(_)));
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(storable("ok\n", 10), Cow::Borrowed(_)));
        assert!(matches!(storable("\0", 10), Cow::Owned(_)));
    }
}
