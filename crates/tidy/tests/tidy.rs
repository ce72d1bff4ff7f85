//! The tidy test: Kartu's house rules over every Rust file under `crates/`.
//!
//! - No function longer than [`MAX_LINES`]. [`ALLOWED`], the list of exceptions, is empty
//!   and may only stay so: split a long function into named steps rather than list it.
//! - No ignored test, no `dbg!`, no `todo!` or `unimplemented!`.
//! - No doc comment of one word (`/// Id.`): say something, or let the name speak.

use std::path::Path;

use tidy::{empty_doc, functions, rust_files, Function};

/// The longest a function may be, in lines from `fn` to its closing brace.
const MAX_LINES: usize = 70;

/// Functions allowed over the limit, with their length: `(file, name, lines)`. The list is
/// empty (every function, test scenarios included, is within the limit) and may only stay
/// so: a function that grows past the limit is split into named steps, not listed here.
/// The checks below still hold an entry to its figure, were one ever added.
const ALLOWED: &[(&str, &str, usize)] = &[];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("the workspace root")
}

fn sources() -> Vec<(String, String)> {
    rust_files(root())
        .into_iter()
        .map(|(rel, path)| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
            (rel, text)
        })
        .collect()
}

#[test]
fn functions_are_short() {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (rel, text) in sources() {
        for f in functions(&rel, &text) {
            let allowed = ALLOWED.iter().find(|(file, name, _)| *file == f.file && *name == f.name);
            match allowed {
                Some(&(_, _, max)) => {
                    seen.push((f.file.clone(), f.name.clone()));
                    if f.lines > max {
                        problems.push(format!(
                            "{}:{} fn {} grew to {} lines (allowed {max})",
                            f.file, f.line, f.name, f.lines
                        ));
                    } else if f.lines < max {
                        problems.push(format!(
                            "{}:{} fn {} is {} lines now: lower its figure in ALLOWED (it was {max}){}",
                            f.file,
                            f.line,
                            f.name,
                            f.lines,
                            if f.lines <= MAX_LINES { ", or rather remove it" } else { "" }
                        ));
                    }
                }
                None if f.lines > MAX_LINES => problems.push(format!(
                    "{}:{} fn {} is {} lines, over {MAX_LINES}: split it into named steps",
                    f.file, f.line, f.name, f.lines
                )),
                None => {}
            }
        }
    }
    for (file, name, _) in ALLOWED {
        if !file.contains("/tests/") {
            problems.push(format!("{file}: fn {name} is production code: it may not be in ALLOWED, split it"));
        }
        if !seen.iter().any(|(f, n)| f == file && n == name) {
            problems.push(format!("{file}: fn {name} is in ALLOWED but not found: remove it from the list"));
        }
    }
    assert!(problems.is_empty(), "{} function(s) break the length rule:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn no_leftovers() {
    // Spelt in pieces so that this file does not find itself.
    let banned =
        [["#[", "ignore"].concat(), ["dbg", "!("].concat(), ["todo", "!("].concat(), ["unimplemented", "!("].concat()];
    let mut problems = Vec::new();
    for (rel, text) in sources() {
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for b in &banned {
                if code.contains(b.as_str()) {
                    problems.push(format!("{rel}:{}: {b}", i + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "leftovers:\n{}", problems.join("\n"));
}

#[test]
fn doc_comments_say_something() {
    let mut problems = Vec::new();
    for (rel, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let previous = if i > 0 { lines[i - 1] } else { "" };
            if empty_doc(previous, line, lines.get(i + 1).copied().unwrap_or("")) {
                problems.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} doc comment(s) of one word: write what the reader needs, or drop it where the name says it all:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The scanner itself, on text whose answer is known.
#[test]
fn the_scanner_measures_functions() {
    let text = "fn one() {}\n\
                pub(crate) async fn two(\n    a: u8,\n) -> u8 {\n    a\n}\n\
                trait T {\n    fn decl(&self);\n    fn with_body(&self) -> u8 {\n        1\n    }\n}\n\
                fn generic<T>(t: T) -> T\nwhere\n    T: Copy,\n{\n    t\n}\n";
    let found: Vec<(String, usize, usize)> =
        functions("x.rs", text).into_iter().map(|Function { name, line, lines, .. }| (name, line, lines)).collect();
    let expect = [("one", 1, 1), ("two", 2, 5), ("with_body", 9, 3), ("generic", 13, 6)];
    let expect: Vec<(String, usize, usize)> = expect.iter().map(|(n, l, c)| ((*n).to_owned(), *l, *c)).collect();
    assert_eq!(found, expect);
    assert!(empty_doc("", "    /// Id.", "    pub id: i64,") && empty_doc("}", "/// Name", "struct Name;"));
    assert!(!empty_doc("", "/// The holder's id.", "") && !empty_doc("", "//! Id.", "") && !empty_doc("", "/// ", ""));
    assert!(!empty_doc("/// The amounts the writer must", "/// cover.", "fn f() {}"));
    assert!(!empty_doc("", "/// Kind.", "/// More about the kind."));
}

#[test]
fn no_import_cycles() {
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let src = entry.expect("a crate").path().join("src");
        if src.is_dir() {
            if let Some(cycle) = tidy::find_cycle(&tidy::module_uses(&src)) {
                problems.push(format!("{}: {}", src.display(), cycle.join(" -> ")));
            }
        }
    }
    assert!(problems.is_empty(), "modules that import each other:\n{}", problems.join("\n"));
}

/// The cycle finder on graphs whose answer is known.
#[test]
fn the_cycle_finder_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for (a, b) in edges {
            g.entry((*a).to_owned()).or_default().insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    };
    assert_eq!(tidy::find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(tidy::find_cycle(&graph(&[("a", "b"), ("b", "a")])), Some(vec!["a".into(), "b".into(), "a".into()]));
    let long = tidy::find_cycle(&graph(&[("x", "y"), ("y", "z"), ("z", "x")])).expect("a cycle");
    assert_eq!(long.len(), 4);
}
