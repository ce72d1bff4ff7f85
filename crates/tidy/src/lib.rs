//! The house rules of Kartu's sources, checked by `tests/tidy.rs` in `make test` (the
//! TigerBeetle way: a rule a machine can check is not left to review).
//!
//! The scanner reads rustfmt-formatted Rust line by line; it needs no parser because
//! rustfmt puts a function's closing brace alone on a line at the function's indentation.

use std::path::{Path, PathBuf};

/// A function and how many lines it spans, signature to closing brace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The file, relative to the workspace root.
    pub file: String,
    /// The function's name.
    pub name: String,
    /// The line of its `fn`, 1-based.
    pub line: usize,
    /// Lines from the `fn` line to the closing brace, both included.
    pub lines: usize,
}

/// The name of the function declared on `line`, if one is: `fn` after optional
/// visibility and qualifiers at the start of the line.
#[must_use]
pub fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        let before = rest;
        for word in ["pub(crate) ", "pub(super) ", "pub ", "const ", "async ", "unsafe ", "extern \"C\" "] {
            if let Some(r) = rest.strip_prefix(word) {
                rest = r;
            }
        }
        if before == rest {
            break;
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0).then(|| &rest[..end])
}

/// Every function with a body in a file's text.
#[must_use]
pub fn functions(file: &str, text: &str) -> Vec<Function> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let indent = &line[..line.len() - line.trim_start().len()];
        if let Some(last) = body_end(&lines, i, indent) {
            found.push(Function { file: file.to_owned(), name: name.to_owned(), line: i + 1, lines: last - i + 1 });
        }
    }
    found
}

/// The index of the line that closes the function declared at `start`; `None` for a
/// declaration without a body (a trait's `fn f();`).
fn body_end(lines: &[&str], start: usize, indent: &str) -> Option<usize> {
    let first = lines[start].trim_end();
    if first.contains('{') && first.ends_with('}') {
        return Some(start);
    }
    let closing = format!("{indent}}}");
    let mut opened = false;
    for (j, line) in lines.iter().enumerate().skip(start) {
        let t = line.trim_end();
        if !opened {
            if t.ends_with(';') {
                return None;
            }
            opened = t.ends_with('{');
        } else if t == closing {
            return Some(j);
        }
    }
    None
}

/// The Rust files of the workspace's crates, relative paths sorted.
///
/// # Panics
/// When a directory cannot be read.
#[must_use]
pub fn rust_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
                out.push((rel, path));
            }
        }
    }
    out.sort();
    out
}

/// A doc comment that says nothing beyond its item's name: a whole doc comment of one
/// word, maybe with a full stop (`/// Id.`, `/// Name`), not the last line of a longer one.
#[must_use]
pub fn empty_doc(previous: &str, line: &str, next: &str) -> bool {
    let doc = |l: &str| l.trim_start().starts_with("///");
    let Some(text) = line.trim_start().strip_prefix("/// ") else { return false };
    let word = text.trim().trim_end_matches('.');
    !doc(previous)
        && !doc(next)
        && !word.is_empty()
        && word.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}
