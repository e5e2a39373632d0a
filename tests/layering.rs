//! The layering check: reads every file under `src/` and fails when a lower layer imports a
//! higher one, or when two files share a name. Plain Rust, no dependency: a lexer just good
//! enough to drop comments, strings and char literals, then a scan for `crate::` and `super::`
//! paths (grouped `use crate::{a, b::c}` included), resolved to the folder they name.
//!
//! The layers, lowest first (a file may import its own folder and anything of a lower or equal
//! rank):
//!
//! | rank | folders                | why there                                               |
//! |------|------------------------|---------------------------------------------------------|
//! | 0    | `os`                   | the kernel and the process; imports no other folder     |
//! | 1    | `config`               | reads files through `os::small_file`                    |
//! | 2    | `protocol`, `session`  | one layer: commands run on a `Session`, and a session   |
//! |      |                        | holds protocol state (RESP version, parser resume point, |
//! |      |                        | its `MULTI` queue), so these two may import each other   |
//! | 3    | `telemetry`            | counts reaps by `ReapReason`, takeovers, presence        |
//! | 4    | `fleet`                | the Redis side thread: encodes presence for the fleet   |
//! | 5    | `ops`                  | the operator side: reads statistics, sessions, config,  |
//! |      |                        | the fleet's view (`FLEET NODES`, `CLIENT LOOKUP`)       |
//! | 6    | `server`               | the loop, owner of every part                           |
//! | 7    | `cli`                  | parses the command line, builds a `Server`, runs it     |
//!
//! `lib.rs` and `main.rs` are the root that declares every module and are not checked.
//! A new top-level module fails the check until it is given a rank here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every top-level module of the crate and its rank.
const RANKS: &[(&str, u8)] = &[
    ("os", 0),
    ("config", 1),
    ("protocol", 2),
    ("session", 2),
    ("telemetry", 3),
    ("fleet", 4),
    ("ops", 5),
    ("server", 6),
    ("cli", 7),
];

/// Names a file may share with others: a folder's root and its unit tests.
const SHARED_NAMES_ALLOWED: &[&str] = &["mod.rs", "tests.rs"];

fn rank_of(module: &str) -> Option<u8> {
    RANKS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|&(_, rank)| rank)
}

/// Source text with comments (doc comments included), string and char literals blanked out,
/// line breaks kept so that line numbers still hold.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    // Blanks b[from..to], keeping newlines.
    let blank = |out: &mut String, from: usize, to: usize| {
        for &c in &b[from..to.min(b.len())] {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && ident(b[i - 1]);
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r'))) && !prev_ident && {
            // A raw string: r"..", r#".."#, br#".."#.
            let mut j = i + if c == b'b' { 2 } else { 1 };
            while b.get(j) == Some(&b'#') {
                j += 1;
            }
            b.get(j) == Some(&b'"')
        } {
            let start = i;
            let mut j = i + if c == b'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = src[j..]
                .find(&close)
                .map_or(b.len(), |n| j + n + close.len());
            blank(&mut out, start, end);
            i = end;
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if c == b'\'' && (!prev_ident || (b[i - 1] == b'b' && (i < 2 || !ident(b[i - 2])))) {
            // A char literal ('x', '\n', '\'', '{'), or a lifetime ('a), which is kept.
            let end = if b.get(i + 1) == Some(&b'\\') {
                src[i + 3..].find('\'').map(|n| i + 3 + n + 1)
            } else {
                // One character, possibly several bytes, then the closing quote.
                src[i + 1..]
                    .chars()
                    .next()
                    .map(|ch| i + 1 + ch.len_utf8())
                    .filter(|&j| b.get(j) == Some(&b'\''))
                    .map(|j| j + 1)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The module path of a file under `src/`: `os/sys.rs` -> `[os, sys]`, `os/mod.rs` -> `[os]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// One import of a top-level module: where, which module, and the path as written.
#[derive(Debug, PartialEq)]
struct Import {
    line: usize,
    module: String,
    written: String,
}

/// Every top-level module that the file at `rel` (relative to `src/`) names through
/// `crate::` or `super::` paths, in comments-free code.
fn imports(rel: &Path, src: &str) -> Vec<Import> {
    let code = code_only(src);
    let file_module = module_of(rel);
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let word_at = |i: usize| -> &str {
        let end = (i..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
        &code[i..end]
    };
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    // `mod name {` blocks inside the file: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if !ident(c) || (i > 0 && (ident(b[i - 1]) || b[i - 1] == b'$')) {
            i += 1;
            continue;
        }
        let word = word_at(i);
        let after = i + word.len();
        if word == "mod" {
            let j = skip_ws(after);
            let name = word_at(j).to_string();
            let k = skip_ws(j + name.len());
            if !name.is_empty() && b.get(k) == Some(&b'{') {
                inline.push((name, depth + 1));
            }
            i = after;
            continue;
        }
        if word != "crate" && word != "super" {
            i = after;
            continue;
        }
        // The path from here: `crate::a::b`, `super::super::x`, `crate::{a, b::c}`.
        let start = i;
        let mut base: Vec<String> = if word == "crate" {
            Vec::new()
        } else {
            let mut m = file_module.clone();
            m.extend(inline.iter().map(|(n, _)| n.clone()));
            m
        };
        let mut j = after;
        let mut segment = word;
        loop {
            if segment == "super" {
                base.pop();
            }
            if !code[j..].starts_with("::") {
                break;
            }
            j = skip_ws(j + 2);
            let next = word_at(j);
            if next == "super" {
                segment = next;
                j += next.len();
                continue;
            }
            break;
        }
        let line = code[..start].matches('\n').count() + 1;
        let mut push = |module: String, written: String| {
            found.push(Import {
                line,
                module,
                written,
            })
        };
        if let Some(top) = base.first() {
            // A `super::` path that stays inside a top-level module.
            let end = (j..b.len())
                .find(|&k| !(ident(b[k]) || b[k] == b':'))
                .unwrap_or(b.len());
            push(top.clone(), code[start..end].to_string());
        } else if code[j..].starts_with('{') {
            // `crate::{a, b::c}`: the first word of every top-level item of the group.
            let mut level = 0;
            let mut expect = true;
            let mut k = j;
            while k < b.len() {
                match b[k] {
                    b'{' => {
                        level += 1;
                        expect = level == 1;
                    }
                    b'}' => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    b',' if level == 1 => expect = true,
                    c if expect && level == 1 && ident(c) => {
                        let w = word_at(k);
                        if w != "self" {
                            push(w.to_string(), format!("crate::{w}"));
                        }
                        expect = false;
                        k += w.len();
                        continue;
                    }
                    _ => {}
                }
                k += 1;
            }
        } else {
            let w = word_at(j);
            if !w.is_empty() && code[..j].trim_end().ends_with("::") {
                let end = (j..b.len())
                    .find(|&k| !(ident(b[k]) || b[k] == b':'))
                    .unwrap_or(b.len());
                push(w.to_string(), code[start..end].to_string());
            }
        }
        i = j.max(after);
    }
    // `pub(crate)` and `pub(super)` are visibility, not paths: they never reach the push above,
    // because `crate`/`super` there is not followed by `::`.
    found
}

/// What is wrong with one file's imports, one line each.
fn violations(rel: &Path, src: &str) -> Vec<String> {
    let module = module_of(rel);
    let Some(top) = module.first() else {
        return Vec::new(); // lib.rs, main.rs: the root
    };
    let shown = Path::new("src").join(rel).display().to_string();
    let Some(own) = rank_of(top) else {
        return vec![format!(
            "{shown}: `{top}` has no layer; give it a rank in tests/layering.rs"
        )];
    };
    let mut out = Vec::new();
    for imp in imports(rel, src) {
        if imp.module == *top {
            continue;
        }
        match rank_of(&imp.module) {
            Some(rank) if rank <= own => {}
            Some(rank) => out.push(format!(
                "{shown}:{}: `{top}` (rank {own}) imports `{}` (`{}`, rank {rank}), a higher layer",
                imp.line, imp.written, imp.module
            )),
            None => out.push(format!(
                "{shown}:{}: `{}` names `{}`, which has no layer in tests/layering.rs",
                imp.line, imp.written, imp.module
            )),
        }
    }
    out
}

/// File names used by more than one file, with their paths.
fn shared_names(files: &[PathBuf]) -> Vec<String> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        by_name
            .entry(name)
            .or_default()
            .push(Path::new("src").join(f).display().to_string());
    }
    by_name
        .into_iter()
        .filter(|(name, paths)| paths.len() > 1 && !SHARED_NAMES_ALLOWED.contains(&name.as_str()))
        .map(|(name, paths)| format!("{name} is the name of {}", paths.join(" and ")))
        .collect()
}

/// Every `.rs` file under `dir`, relative to it.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Code outside `#[cfg(test)]` items: a test module may reach anything, and its imports are not
/// the module's dependencies.
fn without_test_items(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(at) = out[from..].find("#[cfg(test)]").map(|n| from + n) {
        let Some(open) = out[at..].find(['{', ';']).map(|n| at + n) else {
            break;
        };
        let mut end = open + 1;
        if out.as_bytes()[open] == b'{' {
            let mut depth = 0;
            for (k, c) in out[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = open + k + 1;
                    break;
                }
            }
        }
        let blanked: String = out[at..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(at..end, &blanked);
        from = end;
    }
    out
}

/// The paths a `use` tree or an inline path starting at `i` names, relative to its root
/// (`a::b`, `a::{b, c::d}`, `a::*`), and where it ends.
fn path_tree(code: &str, mut i: usize) -> (Vec<Vec<String>>, usize) {
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut prefix = Vec::new();
    loop {
        i = skip_ws(i);
        if b.get(i) == Some(&b'{') {
            let mut paths = Vec::new();
            i += 1;
            loop {
                i = skip_ws(i);
                match b.get(i) {
                    None => return (paths, i),
                    Some(b'}') => return (paths, i + 1),
                    Some(b',') => i += 1,
                    Some(_) => {
                        let (inner, end) = path_tree(code, i);
                        for p in inner {
                            let mut full = prefix.clone();
                            full.extend(p.into_iter().filter(|w| w != "self"));
                            paths.push(full);
                        }
                        if end == i {
                            i += 1;
                        } else {
                            i = end;
                        }
                    }
                }
            }
        }
        let end = (i..b.len()).find(|&k| !ident(b[k])).unwrap_or(b.len());
        if end == i {
            return (vec![prefix], i);
        }
        prefix.push(code[i..end].to_string());
        i = skip_ws(end);
        if code[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The crate modules (files, as module paths) the file at `rel` depends on, outside its test
/// items; a module's own ancestors and descendants are not counted (a parent declares its
/// children, a child may use its parent: that is nesting, not a cycle).
fn module_deps(rel: &Path, src: &str, modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let code = without_test_items(&code_only(src));
    let own = module_of(rel);
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut deps = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let at_word = ident(b[i]) && (i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'$'));
        let word = if at_word {
            let end = (i..b.len()).find(|&k| !ident(b[k])).unwrap_or(b.len());
            &code[i..end]
        } else {
            ""
        };
        if word != "crate" && word != "super" {
            i += word.len().max(1);
            continue;
        }
        let (paths, end) = path_tree(&code, i);
        for path in paths {
            let mut full: Vec<String> = Vec::new();
            let mut words = path.into_iter().peekable();
            if words.peek().map(String::as_str) == Some("crate") {
                words.next();
            } else {
                full = own.clone();
                while words.peek().map(String::as_str) == Some("super") {
                    words.next();
                    full.pop();
                }
            }
            full.extend(words);
            // The deepest module the path names (the rest are items in it).
            let found = (1..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|m| modules.contains(m));
            if let Some(m) = found {
                let nested = m.starts_with(&own) || own.starts_with(&m);
                if !nested {
                    deps.insert(m);
                }
            }
        }
        i = end.max(i + word.len());
    }
    deps
}

/// Import cycles between modules, each as the chain of modules that closes it.
fn cycles(deps: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    // Depth-first search; a module found again on the current path closes a cycle.
    fn visit(
        m: &Vec<String>,
        deps: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            let chain: Vec<String> = path[at..].iter().chain([m]).map(|p| p.join("::")).collect();
            found.push(chain.join(" -> "));
            return;
        }
        if !done.insert(m.clone()) {
            return;
        }
        path.push(m.clone());
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        visit(m, deps, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn no_module_imports_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
    let mut deps = BTreeMap::new();
    let mut edges = 0;
    for rel in &files {
        let text = fs::read_to_string(src.join(rel)).unwrap();
        let d = module_deps(rel, &text, &modules);
        edges += d.len();
        deps.insert(module_of(rel), d);
    }
    assert!(
        edges > 150,
        "only {edges} module dependencies found under src/"
    );
    let found = cycles(&deps);
    assert!(found.is_empty(), "import cycles:\n  {}", found.join("\n  "));
}

#[test]
fn the_cycle_check_follows_groups_super_and_inline_paths() {
    let modules: BTreeSet<Vec<String>> =
        ["os/a.rs", "os/b.rs", "os/c.rs", "os/d/mod.rs", "os/d/e.rs"]
            .iter()
            .map(|f| module_of(Path::new(f)))
            .collect();
    let v = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let a = module_deps(
        Path::new("os/a.rs"),
        "use crate::os::{b::X, d::{self, e::Y}};\n#[cfg(test)]\nmod tests { use crate::os::c; }\n",
        &modules,
    );
    assert_eq!(a, [v("os::b"), v("os::d"), v("os::d::e")].into(), "{a:?}");
    let b = module_deps(
        Path::new("os/b.rs"),
        "fn f() { super::c::g(); }\n",
        &modules,
    );
    assert_eq!(b, [v("os::c")].into(), "{b:?}");
    // A child using its parent is nesting, not a dependency.
    let e = module_deps(Path::new("os/d/e.rs"), "use super::Z;\n", &modules);
    assert!(e.is_empty(), "{e:?}");

    let mut deps: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    deps.insert(v("os::a"), [v("os::b")].into());
    deps.insert(v("os::b"), [v("os::c")].into());
    deps.insert(v("os::c"), BTreeSet::new());
    assert!(cycles(&deps).is_empty());
    deps.insert(v("os::c"), [v("os::a")].into());
    let found = cycles(&deps);
    assert_eq!(found, ["os::a -> os::b -> os::c -> os::a"], "{found:?}");
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let mut problems = Vec::new();
    let mut seen = 0;
    for rel in &files {
        let text = fs::read_to_string(src.join(rel)).unwrap();
        seen += imports(rel, &text).len();
        problems.extend(violations(rel, &text));
    }
    // A lexer that lost its way would find nothing and pass: the tree has hundreds of imports.
    assert!(seen > 200, "only {seen} crate imports found under src/");
    assert!(
        problems.is_empty(),
        "layering violations:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn no_two_files_share_a_name() {
    let files = rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let shared = shared_names(&files);
    assert!(shared.is_empty(), "{}", shared.join("\n"));
}

#[test]
fn the_checker_flags_a_lower_layer_importing_a_higher_one() {
    let bad = "//! Docs naming crate::server are fine.\n\
               use crate::os::sys; // and so is crate::ops in a comment\n\
               use crate::{os::sockopt, server::Server};\n\
               fn f() -> &'static str { \"crate::server\" }\n\
               fn g() { let _ = crate::telemetry::stats::Stats::default(); }\n";
    let found = violations(Path::new("os/probe.rs"), bad);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].contains("src/os/probe.rs:3") && found[0].contains("`server`"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("src/os/probe.rs:5") && found[1].contains("crate::telemetry::stats"),
        "{found:#?}"
    );

    // `super::super::` out of a nested folder, and a `super` inside an inline test module.
    let nested = "use super::super::ops::Ops;\nmod tests { use super::*; }\n";
    let found = violations(Path::new("telemetry/a/b.rs"), nested);
    assert_eq!(
        found.len(),
        0,
        "telemetry::a::b's super::super is telemetry: {found:#?}"
    );
    let found = violations(Path::new("telemetry/b.rs"), nested);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("`ops`"), "{found:#?}");

    // A higher layer may import a lower one; protocol and session are one rank.
    let ok = "use crate::os::sys;\nuse crate::session::Session;\nuse crate::config::Config;\n";
    assert_eq!(
        violations(Path::new("protocol/x.rs"), ok),
        Vec::<String>::new()
    );

    // An unknown top-level module is an error, not a pass.
    let found = violations(Path::new("os/x.rs"), "use crate::gadget::G;\n");
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn the_checker_flags_shared_names() {
    let files: Vec<PathBuf> = ["os/mod.rs", "ops/mod.rs", "os/auth.rs", "server/auth.rs"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let shared = shared_names(&files);
    assert_eq!(shared.len(), 1, "{shared:#?}");
    assert!(
        shared[0].contains("src/os/auth.rs and src/server/auth.rs"),
        "{shared:?}"
    );
}

#[test]
fn the_lexer_drops_comments_strings_and_chars_but_keeps_lifetimes() {
    let src = "aaa /* bbb /* nested */ ccc */ ddd // eee\n\"fff\\\"ggg\" r#\"hhh\"# '{' b'{' '\\'' 'x: iii";
    let code = code_only(src);
    assert_eq!(code.lines().count(), 2);
    for gone in ["bbb", "nested", "ccc", "eee", "fff", "ggg", "hhh", "{"] {
        assert!(!code.contains(gone), "{gone:?} left in {code:?}");
    }
    for kept in ["aaa", "ddd", "'x: iii"] {
        assert!(code.contains(kept), "{kept:?} lost from {code:?}");
    }
}
