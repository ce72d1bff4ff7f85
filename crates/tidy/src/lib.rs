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

/// The crate's top-level modules (a file `src/x.rs` or a directory `src/x/`) that each one
/// names as `crate::y`, outside comments and `#[cfg(test)]` modules. `lib.rs` and
/// `main.rs` are the crate's root, not modules.
///
/// # Panics
/// When a file cannot be read.
#[must_use]
pub fn module_uses(src: &Path) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut uses: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let top =
                rel.components().next().map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned());
            let Some(top) = top.filter(|t| path.extension().is_some_and(|x| x == "rs") && t != "lib" && t != "main")
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let named = uses.entry(top.clone()).or_default();
            for name in crate_paths(&text) {
                if name != top {
                    named.insert(name);
                }
            }
        }
    }
    let modules: std::collections::BTreeSet<String> = uses.keys().cloned().collect();
    for named in uses.values_mut() {
        named.retain(|n| modules.contains(n));
    }
    uses
}

/// The first segment after every `crate::` in code (not comments, not test modules),
/// including each name of a `crate::{a, b::c}` group.
fn crate_paths(text: &str) -> Vec<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push(name);
            }
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

/// A cycle among the modules, as a path that comes back to its start, if there is one.
#[must_use]
pub fn find_cycle(
    uses: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        uses: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in uses.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, uses, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    uses.keys().find_map(|m| visit(m, uses, &mut Vec::new(), &mut done))
}
