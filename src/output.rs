//! Printing results: one complete write to stdout, in the chosen format.

use std::io::{ErrorKind, Write};

use clap::ValueEnum;
use serde::Serialize;

use crate::error::{Error, Result};

/// Output formats (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
    /// Aligned text for people.
    Table,
}

impl Format {
    /// Its name, as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Table => "table",
        }
    }
}

/// Renders a serializable value as JSON (pretty, with a final newline) or YAML.
pub fn render<T: Serialize>(value: &T, format: Format) -> String {
    match format {
        Format::Yaml => crate::yaml::to_yaml(&serde_json::to_value(value).expect("serializable")),
        Format::Json | Format::Table => {
            let mut text = serde_json::to_string_pretty(value).expect("serializable as JSON");
            text.push('\n');
            text
        }
    }
}

/// Writes `text` to stdout in one go. A closed pipe (`| head`) is not an
/// error worth reporting.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(Error::CannotWrite {
            path: "standard output".into(),
            reason: e,
        }),
        _ => Ok(()),
    }
}

/// Writes human-readable text to stdout with every control character but
/// the line break made visible (`\u{1b}`): keys, actors, reasons and values
/// come from whoever can write the store, and must not reach an operator's
/// terminal as escape sequences (OSC 52 clipboard, titles, cursor moves).
/// JSON and YAML go through [`print`] unchanged: their formats escape.
pub fn print_text(text: &str) -> Result<()> {
    print(&visible_lines(text))
}

/// [`visible`] but keeping line breaks: for whole paragraphs.
pub fn visible_lines(text: &str) -> String {
    escape_controls(text, true)
}

/// `text` with control characters (C0, DEL, C1) written as `\u{..}` escapes,
/// line breaks included: for one cell or one line.
pub fn visible(text: &str) -> String {
    escape_controls(text, false)
}

fn escape_controls(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !(keep_newlines && c == '\n') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes one message to stderr (a warning or the final error; a list of
/// problems spans lines), control characters but line breaks made visible.
/// A stderr that cannot be written (closed, a full pipe) is ignored: the
/// exit code still tells what happened.
pub fn warn(line: &str) {
    stderr_line(&visible_lines(line));
}

/// Writes one line to stderr as it is (JSON errors: already escaped),
/// ignoring a stderr that cannot be written.
pub fn stderr_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|()| err.write_all(b"\n"))
        .and_then(|()| err.flush());
}

/// `1 node`, `3 nodes`: a count and its noun, plural when it is not one.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The width of text on screen: characters outside ANSI colour sequences.
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// Lays out rows as columns separated by two spaces, the last column
/// unpadded; cells may carry colour codes.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| visible_width(s))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c < last {
                let pad = widths[c] - visible_width(cell) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        // An empty last column would leave padding behind.
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let rows = vec![
            vec!["KEY".to_string(), "VALUE".to_string(), "LAYER".to_string()],
            vec![
                "state".to_string(),
                "\"off\"".to_string(),
                "node override".to_string(),
            ],
        ];
        assert_eq!(
            columns(&rows),
            "KEY    VALUE  LAYER\nstate  \"off\"  node override\n"
        );
    }

    #[test]
    fn control_characters_are_made_visible() {
        let hostile = "a\x1b]52;c;SGVsbG8=\x07b\x1b[2J\u{9b}\x7f\r\tc\nd";
        assert_eq!(
            visible(hostile),
            "a\\u{1b}]52;c;SGVsbG8=\\u{7}b\\u{1b}[2J\\u{9b}\\u{7f}\\u{d}\\u{9}c\\u{a}d"
        );
        assert_eq!(escape_controls("x\ny\x1b", true), "x\ny\\u{1b}");
        assert_eq!(visible("plain wörds"), "plain wörds");
    }
}
