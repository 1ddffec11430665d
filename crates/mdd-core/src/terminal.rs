//! Text from outside (plugin output, names, descriptions) made safe to print on a terminal:
//! control characters and escape sequences are shown escaped (`\x1b`, `\t`, `\r`), never
//! obeyed, so a plugin cannot move the cursor, retitle the window or hide a line of a report.

use std::borrow::Cow;
use std::fmt::Write;

/// One line of text with every control character shown escaped.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if is_control(c) => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// C0 and C1 control characters and DEL: what a terminal may act on.
fn is_control(c: char) -> bool {
    c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert!(matches!(printable("DISK OK - 22%"), Cow::Borrowed(_)));
        assert_eq!(
            printable("\u{1b}[2J\u{1b}]0;pwned\u{7}OK\tfine\r"),
            "\\x1b[2J\\x1b]0;pwned\\x07OK\\tfine\\r"
        );
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("\u{9b}31m"), "\\x9b31m", "C1 CSI too");
        assert_eq!(printable("ünïcødé ✓"), "ünïcødé ✓");
    }
}
