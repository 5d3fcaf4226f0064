//! YAML text we are given (views, plans, the config), handled as hostile:
//! its nesting is bounded before the parser sees it, and parse errors name
//! a position, never the text itself.
//!
//! The YAML parser's time grows with the square of the nesting depth of
//! flow collections (`{a: {a: …` 100,000 deep takes minutes of CPU), and
//! `--timeout` cannot interrupt it; a linear scan refuses such text first.
//! A file that is not ours (`--config /etc/shadow`) must not have its lines
//! echoed into a terminal or a log by an error message.

/// Deepest nesting of flow collections (`{…}`, `[…]`) accepted: far above
/// any real document, far below where parsing slows down.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Refuses text whose flow collections nest deeper than [`MAX_FLOW_DEPTH`],
/// naming the line; linear in the text's length.
///
/// The scan skips comments and quoted scalars. A `{` or `[` counts as an
/// opening where a node can start (at the start of a line, after `:`, `-`,
/// `?` or `,`, and anywhere inside a flow collection), so braces inside
/// plain text (`echo ${HOME}`) are not counted.
pub fn check_nesting(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1usize;
    // The last byte on this line that was not a space, or b'\n' at its start.
    let mut last = b'\n';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let node_start = depth > 0 || matches!(last, b'\n' | b':' | b'-' | b'?' | b',');
        match b {
            b'\n' => {
                line += 1;
                last = b'\n';
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' if node_start => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    match bytes[i] {
                        b'\\' => i += 1,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'\'' if node_start => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        // `''` is an escaped quote inside the scalar.
                        b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\'' => break,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'{' | b'[' if node_start => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(format!(
                        "line {line}: collections nest deeper than {MAX_FLOW_DEPTH} levels"
                    ));
                }
            }
            b'}' | b']' if depth > 0 => depth -= 1,
            _ => {}
        }
        last = b;
        i += 1;
    }
    Ok(())
}

/// A parser's error message with the file's content taken out: every
/// quoted or back-quoted part that is not a plain identifier (`state`,
/// `max_failed`) becomes `…`, so "unknown field `root:*:19000:…`" reads
/// "unknown field `…`" while "unknown field `stroe`, expected `store`"
/// stays useful. Positions ("at line 3 column 7") are kept.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = closing(after, quote) else {
            // An unterminated quote: nothing after it can be trusted.
            out.push(quote);
            out.push('…');
            return out;
        };
        let inner = &after[..close];
        out.push(quote);
        out.push_str(if is_plain(inner) { inner } else { "…" });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Where the quoted text `after` an opening `quote` ends; inside `"…"` a
/// backslash escapes the next character (parsers print strings that way).
fn closing(after: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in after.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// True for text safe to repeat from a file: a short plain name
/// (ASCII letters, digits, `_`, `-`, `.`), as our own fields and keys are.
pub fn is_plain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_in_linear_time() {
        let n = 100_000;
        let text = format!("a: {}1{}", "{a: ".repeat(n), "}".repeat(n));
        let started = std::time::Instant::now();
        let err = check_nesting(&text).unwrap_err();
        assert!(err.contains("line 1") && err.contains("64 levels"), "{err}");
        // The scan stops at the limit; a generous bound for a loaded machine.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let seq = format!("- {}1{}", "[".repeat(65), "]".repeat(65));
        assert!(check_nesting(&seq).is_err());
        let ok = format!("- {}1{}", "[".repeat(64), "]".repeat(64));
        assert!(check_nesting(&ok).is_ok());
    }

    #[test]
    fn braces_in_text_quotes_and_comments_do_not_count() {
        let deep = "{".repeat(100);
        for text in [
            format!("a: echo ${deep}\n"),
            format!("a: \"{deep}\"\n"),
            format!("a: '{deep} it''s'\n"),
            format!("a: 1 # {deep}\n"),
            format!("a: [\"{deep}\", '{deep}']\n"),
            format!("a: |\n  x {deep}\n"),
        ] {
            assert!(check_nesting(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn redaction_keeps_identifiers_and_positions_only() {
        assert_eq!(
            redact("unknown field `root:*:19000:0:99999:7:::`, expected one of `store`, `prefix` at line 1 column 1"),
            "unknown field `…`, expected one of `store`, `prefix` at line 1 column 1"
        );
        assert_eq!(
            redact("invalid type: string \"secret words\", expected a map"),
            "invalid type: string \"…\", expected a map"
        );
        assert_eq!(redact("duplicate key \"web\""), "duplicate key \"web\"");
        assert_eq!(
            redact(r#"invalid type: string "NAME=\"Debian\" ID=\"x\"", expected struct"#),
            "invalid type: string \"…\", expected struct"
        );
        assert_eq!(redact("open `abc"), "open `…");
    }
}
