//! The house rule of DESIGN.md: modules stand on floors, and imports only
//! point down (or along a floor); no two files import each other, however
//! long the way round. This test reads `src/` and fails naming the import
//! that breaks the rule, so a module that reaches up is caught at once.
//!
//! An import is any `crate::…` or `super::…` path (in a `use` or inline)
//! and any path through a child module a file declares with `mod`. A child
//! naming its own ancestors (`super::Shared`) is not counted: a module's
//! children are part of it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The floors, lowest first. A file may import its own floor and below.
const FLOORS: &[&[&str]] = &[
    // Ground: data, wire formats and plumbing that know nothing above.
    &[
        "config",
        "proto",
        "net",
        "relay",
        "datagram",
        "secret",
        "secret_file",
        "swap",
        "sources",
        "places",
        "fdlimit",
        "sdnotify",
        "shutdown",
        "proxy_header",
        "logging",
        "log_rate",
        "penalties",
        "game",
        "files",
        "tcp_info",
        "tcp_pacing",
        "dark_path",
        "history",
        "bans",
        "rate",
        "uplink_guard",
    ],
    // Credentials and carriers.
    &["tls", "token", "certgen", "quic"],
    // Doors and views shared by both roles.
    &["enrol", "admin", "metrics", "reload"],
    // The two roles.
    &["hub", "ep"],
    // The binary's front.
    &["cli", "demo"],
];

fn floor(top: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&top))
}

/// `src/hub/player.rs` → ["hub", "player"]; `src/hub/mod.rs` → ["hub"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments, strings and character literals blanked, so
/// that a path in a doc line or a message is not an import. Line breaks
/// inside what is blanked are kept, so a line number in the result is the
/// line number in the source.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let from = i;
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            keep_lines(&b[from..i.min(b.len())], &mut out);
        } else if c == 'r'
            && (next == Some('#') || next == Some('"'))
            && !ident(b.get(i.wrapping_sub(1)))
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            keep_lines(&b[i..j.min(b.len())], &mut out);
            i = j;
        } else if c == '"' {
            let from = i;
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            keep_lines(&b[from..i.min(b.len())], &mut out);
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{1F600}') or a lifetime.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn keep_lines(blanked: &[char], out: &mut String) {
    out.extend(blanked.iter().filter(|c| **c == '\n'));
}

fn ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Every path a `use` tree or an inline path names after `at` (the index
/// just past `crate::`, `super::` or `name::`), as segment lists.
fn paths_from(code: &[char], at: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    tree(code, at, Vec::new(), &mut out);
    out
}

fn skip_ws(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Parses one use-tree at `i` with `prefix`; returns where it ended.
fn tree(code: &[char], i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut i = skip_ws(code, i);
    let mut path = prefix;
    loop {
        if code.get(i) == Some(&'{') {
            i += 1;
            loop {
                i = skip_ws(code, i);
                if code.get(i) == Some(&'}') {
                    return i + 1;
                }
                i = tree(code, i, path.clone(), out);
                i = skip_ws(code, i);
                match code.get(i) {
                    Some(',') => i += 1,
                    Some('}') => return i + 1,
                    _ => return i,
                }
            }
        }
        let start = i;
        while i < code.len() && ident(code.get(i)) {
            i += 1;
        }
        if i == start {
            out.push(path);
            return i;
        }
        path.push(code[start..i].iter().collect());
        if code.get(i) == Some(&':') && code.get(i + 1) == Some(&':') {
            i += 2;
            continue;
        }
        out.push(path);
        return i;
    }
}

/// The deepest module of `modules` that `path` goes through.
fn resolve(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// The child modules a file declares (`mod name;` / `pub mod name;`).
fn declared_children(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let t = line.trim();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub(super) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ")
            && let Some(name) = rest.strip_suffix(';')
        {
            out.push(name.trim().to_string());
        }
    }
    out
}

/// File → the files it imports.
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        let chars: Vec<char> = code.chars().collect();
        let children = declared_children(&code);
        let mut found = BTreeSet::new();
        let mut i = 0;
        while i < chars.len() {
            if ident(chars.get(i.wrapping_sub(1)))
                || (i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':')
            {
                i += 1;
                continue;
            }
            let word_end = {
                let mut j = i;
                while j < chars.len() && ident(chars.get(j)) {
                    j += 1;
                }
                j
            };
            if word_end == i {
                i += 1;
                continue;
            }
            let word: String = chars[i..word_end].iter().collect();
            let sep = chars.get(word_end) == Some(&':') && chars.get(word_end + 1) == Some(&':');
            if !sep {
                i = word_end;
                continue;
            }
            let base: Option<Vec<String>> = match word.as_str() {
                "crate" => Some(Vec::new()),
                "super" => {
                    // super::super::… climbs one module per `super`.
                    let mut base = me.clone();
                    base.pop();
                    let mut j = word_end + 2;
                    while chars[j..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                        base.pop();
                        j += 7;
                    }
                    for p in paths_from(&chars, j) {
                        let mut full = base.clone();
                        full.extend(p);
                        if let Some(m) = resolve(&modules, &full) {
                            found.insert(m);
                        }
                    }
                    i = j;
                    continue;
                }
                w if children.iter().any(|c| c == w) => Some(me.clone()),
                _ => None,
            };
            let Some(base) = base else {
                i = word_end;
                continue;
            };
            let after = if word == "crate" { word_end + 2 } else { i };
            for p in paths_from(&chars, after) {
                let mut full = base.clone();
                full.extend(p);
                if let Some(m) = resolve(&modules, &full) {
                    found.insert(m);
                }
            }
            i = word_end + 2;
        }
        // A module's own ancestors are part of it; so is the module itself.
        found.retain(|m| !(m.len() <= me.len() && me[..m.len()] == m[..]));
        graph.insert(me, found);
    }
    graph
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("/")
    }
}

#[test]
fn imports_only_point_down_the_floors() {
    let graph = imports();
    let mut wrong = Vec::new();
    for (from, tos) in &graph {
        let Some(top) = from.first() else { continue };
        let Some(mine) = floor(top) else {
            wrong.push(format!(
                "src/{} stands on no floor: add it to FLOORS",
                name(from)
            ));
            continue;
        };
        for to in tos {
            match floor(&to[0]) {
                Some(theirs) if theirs <= mine => {}
                Some(theirs) => wrong.push(format!(
                    "{} (floor {mine}) imports {} (floor {theirs}): the thing it needs lives in the wrong place",
                    name(from),
                    name(to)
                )),
                None => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other_however_far_round() {
    let graph = imports();
    // Depth-first search for a back edge; report each circle found.
    let mut state: BTreeMap<&Vec<String>, u8> = BTreeMap::new();
    let mut circles = Vec::new();
    fn visit<'a>(
        m: &'a Vec<String>,
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<&'a Vec<String>, u8>,
        stack: &mut Vec<&'a Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        state.insert(m, 1);
        stack.push(m);
        for next in graph.get(m).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let at = stack.iter().position(|s| *s == next).unwrap();
                    let names: Vec<String> = stack[at..].iter().map(|s| name(s)).collect();
                    circles.push(format!("{} → {}", names.join(" → "), name(next)));
                }
                Some(_) => {}
                None => visit(next, graph, state, stack, circles),
            }
        }
        stack.pop();
        state.insert(m, 2);
    }
    for m in graph.keys() {
        if !state.contains_key(m) {
            visit(m, &graph, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_reader_sees_imports_and_not_comments_or_strings() {
    let code = code_only(
        "use crate::{a::b, c};\n// crate::x::y\nlet s = \"crate::z::w\";\nlet r = r#\"crate::q\"#;\nlet ch = '\"'; crate::d::e(1);\n",
    );
    let chars: Vec<char> = code.chars().collect();
    let at = code.find("crate::").unwrap() + "crate::".len();
    let p = paths_from(&chars, at);
    assert_eq!(p, vec![vec!["a".to_string(), "b".into()], vec!["c".into()]]);
    assert!(!code.contains("crate::x"));
    assert!(!code.contains("crate::z"));
    assert!(!code.contains("crate::q"));
    assert!(code.contains("crate::d::e"));
}

/// The longest a function may be, from its `fn` line to its closing brace
/// (DESIGN.md, under the floors): a longer one is several pieces that want
/// names.
const MAX_FN_LINES: usize = 80;

/// Byte ranges of the items marked `#[cfg(test)]`: tests may be as long as
/// the story they tell.
fn test_items(code: &[char]) -> Vec<(usize, usize)> {
    let mark: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + mark.len() <= code.len() {
        if code[i..i + mark.len()] != mark[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + mark.len();
        // The item ends at its body's closing brace, or at a `;` before any
        // body (`mod tests;`, `use …;`).
        while j < code.len() && code[j] != '{' && code[j] != ';' {
            j += 1;
        }
        let end = if code.get(j) == Some(&'{') {
            closing_brace(code, j)
        } else {
            j
        };
        out.push((start, end));
        i = end + 1;
    }
    out
}

/// The index of the `}` that closes the `{` at `open`.
fn closing_brace(code: &[char], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, c) in code.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    code.len() - 1
}

/// Every function with a body outside test items in `code` (blanked by
/// `code_only`): its name, first line (1-based) and length in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let tests = test_items(&chars);
    let line_at = |k: usize| chars[..k].iter().filter(|c| **c == '\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < chars.len() {
        let is_fn = chars[i] == 'f'
            && chars[i + 1] == 'n'
            && !ident(chars.get(i.wrapping_sub(1)))
            && chars[i + 2].is_whitespace();
        if !is_fn || tests.iter().any(|&(s, e)| s <= i && i <= e) {
            i += 1;
            continue;
        }
        let at = skip_ws(&chars, i + 2);
        let mut name_end = at;
        while ident(chars.get(name_end)) {
            name_end += 1;
        }
        if name_end == at {
            // `fn(u8) -> u8`, a pointer type.
            i += 2;
            continue;
        }
        let mut j = name_end;
        while j < chars.len() && chars[j] != '{' && chars[j] != ';' {
            j += 1;
        }
        if chars.get(j) == Some(&'{') {
            let end = closing_brace(&chars, j);
            let name = chars[at..name_end].iter().collect();
            out.push((name, line_at(i), line_at(end) - line_at(i) + 1));
        }
        i = name_end;
    }
    out
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut long = Vec::new();
    for f in &files {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for (name, line, len) in functions(&code) {
            if len > MAX_FN_LINES {
                let rel = f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
                long.push(format!("{}:{line} fn {name}: {len} lines", rel.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named pieces):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_length_count_runs_from_fn_to_its_brace_and_skips_tests() {
    let code = code_only(
        "fn a() {\n    let s = \"{\n\";\n}\ntrait T { fn b(&self); }\nfn c(f: fn(u8) -> u8) -> u8 where u8: Copy {\n    f(1)\n}\n#[cfg(test)]\nmod tests {\n    fn d() {}\n}\n",
    );
    assert_eq!(
        functions(&code),
        vec![("a".to_string(), 1, 4), ("c".to_string(), 6, 3)]
    );
}
