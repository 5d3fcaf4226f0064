//! The README's tour, run: every command of its "A short tour" and
//! "Check-ins and the fleet view" sections, in order, in one shell, on a
//! scratch copy of the fixture, each output compared with the README's text
//! — so the documentation cannot drift from what the binary prints.
//!
//! What runs: ` ```sh ` blocks preceded by `<!-- tour: run -->` (setup,
//! output not compared), and every ` ```text ` block whose lines start with
//! `$ ` (each such line a command, the lines after it its output). Times,
//! ages, history entry ids (they hash the time) and the scratch folder
//! (written `/tmp/` in the README) are normalised; nothing else is.

use std::path::Path;
use std::process::Command;

/// One command of the tour and what the README says it prints.
struct Step {
    command: String,
    expected: Option<String>,
}

fn tour_steps(readme: &str) -> Vec<Step> {
    let start = readme.find("\n## A short tour").expect("a tour section");
    let end = readme[start..]
        .find("\n## The node agent")
        .map(|e| start + e)
        .expect("the section after the tour");
    let mut steps = Vec::new();
    let mut lines = readme[start..end].lines().peekable();
    let mut run_next_sh = false;
    while let Some(line) = lines.next() {
        if line.trim() == "<!-- tour: run -->" {
            run_next_sh = true;
        } else if line.starts_with("```sh") && run_next_sh {
            run_next_sh = false;
            for l in lines.by_ref().take_while(|l| !l.starts_with("```")) {
                let command = l.split("  #").next().unwrap().trim();
                if !command.is_empty() && !command.starts_with('#') {
                    steps.push(Step {
                        command: command.to_string(),
                        expected: None,
                    });
                }
            }
        } else if line.starts_with("```text") {
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            if !block.first().is_some_and(|l| l.starts_with("$ ")) {
                continue;
            }
            for l in block {
                match l.strip_prefix("$ ") {
                    Some(command) => steps.push(Step {
                        command: command.to_string(),
                        expected: Some(String::new()),
                    }),
                    None => {
                        let expected = steps.last_mut().unwrap().expected.as_mut().unwrap();
                        expected.push_str(l);
                        expected.push('\n');
                    }
                }
            }
        }
    }
    steps
}

/// Times become `TIME`, check-in ages `Ns ago`, the scratch folder `/tmp`.
fn normalise(text: &str, scratch: &str) -> String {
    let text = text.replace(scratch, "/tmp");
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        // 2026-11-25T05:23:57Z
        let window: String = chars[i..(i + 20).min(chars.len())].iter().collect();
        let is_time = window.len() == 20
            && window.chars().enumerate().all(|(k, c)| match k {
                4 | 7 => c == '-',
                10 => c == 'T',
                13 | 16 => c == ':',
                19 => c == 'Z',
                _ => c.is_ascii_digit(),
            });
        if is_time {
            out.push_str("TIME");
            i += 20;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    // "12s ago" -> " Ns ago", keeping the columns' width.
    let mut result = String::new();
    for line in out.lines() {
        let mut l = line.to_string();
        while let Some(pos) = l.find("s ago") {
            let digits = l[..pos]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .count();
            if digits == 0 {
                break;
            }
            let from = pos - digits;
            l.replace_range(from..pos + 5, &format!("{}N_s ago", " ".repeat(digits - 1)));
        }
        // A history entry's id hashes its time too.
        let is_entry = l.len() > 9
            && l[..8]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            && l[8..].starts_with(' ');
        if is_entry {
            l.replace_range(..8, "ENTRY-ID");
        }
        result.push_str(l.replace("N_s ago", "Ns ago").trim_end());
        result.push('\n');
    }
    result
}

#[test]
fn the_readme_tour_prints_what_the_readme_shows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = tour_steps(&readme);
    assert!(steps.len() > 10, "the tour has its commands");

    let scratch = tempfile::tempdir().unwrap();
    let scratch_path = scratch.path().to_str().unwrap().to_string();
    let mut script = String::from("exec 2>&1\n");
    for (i, step) in steps.iter().enumerate() {
        let command = step.command.replace("/tmp/", &format!("{scratch_path}/"));
        // The marker ends the step's output; `$?` survives it for `echo $?`.
        script.push_str(&format!(
            "{command}\n__s=$?; echo '@@step {i}@@'; (exit $__s)\n"
        ));
    }
    let binary = assert_cmd::cargo::cargo_bin("convergent");
    let path = format!("{}:/usr/bin:/bin", binary.parent().unwrap().display());
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env_clear()
        .env("PATH", path)
        .env("HOME", scratch.path())
        .env("CONVERGENT_CACHE_DIR", scratch.path().join("cache"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut rest = text.as_str();
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let marker = format!("@@step {i}@@\n");
        let at = rest
            .find(&marker)
            .unwrap_or_else(|| panic!("step {i} ({}) did not finish:\n{rest}", step.command));
        let actual = normalise(&rest[..at], &scratch_path);
        rest = &rest[at + marker.len()..];
        if let Some(expected) = &step.expected {
            let expected = normalise(expected, &scratch_path);
            if actual != expected {
                failures.push(format!(
                    "$ {}\n--- README says:\n{expected}--- it prints:\n{actual}",
                    step.command
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the README's tour drifted:\n\n{}",
        failures.join("\n")
    );
}

#[test]
fn normalising_keeps_what_matters() {
    assert_eq!(
        normalise(
            "at 2026-11-25T05:23:57Z in /x/y/view.yml, 12s ago  |\n",
            "/x/y"
        ),
        "at TIME in /tmp/view.yml,  Ns ago  |\n"
    );
    assert_eq!(
        normalise("0bd92320  TIME  x\n", "/s"),
        "ENTRY-ID  TIME  x\n"
    );
}
