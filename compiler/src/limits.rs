//! Every limit the compiler puts on its input, in one place, so that the
//! diagnostics and the documentation (docs/language.md, "Limits") quote the
//! same numbers. Each limit keeps a small hostile input from costing time or
//! memory out of proportion to its size; real policies stay far below them.

/// How many consts one chain of `$const` references may pass through
/// (`const a = $b`, `const b = $c`, ... counts one per const).
pub const MAX_CONST_DEPTH: usize = 64;

/// How many elements one const, or one value in a rule, table or test, may
/// hold once every `$const` in it is expanded. Two copies of a const in a
/// set double it, so 30 short lines could otherwise ask for 2^30 elements.
pub const MAX_EXPANDED_ELEMENTS: u64 = 1 << 20;

/// How many elements all the values of one policy may take from consts in
/// total: a const of a million elements used in a thousand rules is
/// within the per-value limit each time, but not a thousand times over.
pub const MAX_EXPANDED_TOTAL: u64 = 1 << 23;

/// The largest table file read (64 MiB: a million IPv6 CIDRs fit twice).
pub const MAX_TABLE_FILE_BYTES: u64 = 64 << 20;

/// How many bytes of table files one policy may read in total.
pub const MAX_TABLE_FILES_TOTAL_BYTES: u64 = 256 << 20;

/// How many characters of the input a diagnostic message quotes (a name,
/// a table line): longer text is cut, with `…` at the end.
pub const MAX_QUOTED_CHARS: usize = 64;

/// How many bytes one message, label, help or note may have when rendered.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// How many bytes of one source line the human output shows: longer lines
/// are shown as excerpts around the labels, with `…` where text is left out.
pub const MAX_SHOWN_LINE_BYTES: usize = 200;

/// `text` quoted for a message: cut to [`MAX_QUOTED_CHARS`] characters
/// (with `…`), and control characters escaped (`\u{1b}`), so that a quote
/// can neither flood the output nor drive the terminal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_QUOTED_CHARS * 4));
    for (count, c) in text.chars().enumerate() {
        if count == MAX_QUOTED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] bytes (at a character
/// boundary, ending in `…` when cut).
pub fn bound_message(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_MESSAGE_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("web"), "web");
        assert_eq!(quote("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        let long = "x".repeat(10_000_000);
        let q = quote(&long);
        assert_eq!(q.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(q.ends_with('…'));
    }

    #[test]
    fn messages_are_bounded_at_a_char_boundary() {
        assert_eq!(bound_message("short"), "short");
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let b = bound_message(&long);
        assert!(b.len() <= MAX_MESSAGE_BYTES);
        assert!(b.ends_with('…'));
    }
}
