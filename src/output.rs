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
}
