//! The layers hold: each crate depends only on the crates below it, and
//! inside a crate the top-level modules import each other without a
//! cycle (two modules that import each other are allowed, as a pair).
//! `cargo test --test integration layers -- --nocapture` prints the module
//! graph of each crate; `cargo tree -e normal --workspace | grep snap`
//! prints the crate graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's own crates each crate's manifest depends on (normal
/// dependencies; dev-dependencies aside).
fn path_dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(manifest).unwrap();
    let mut out = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]" && line.contains("path =") {
            out.insert(line.split_whitespace().next().unwrap().to_string());
        }
    }
    out
}

#[test]
fn crates_depend_only_downwards() {
    let want: [(&str, &[&str]); 5] = [
        ("crates/snap-format/Cargo.toml", &[]),
        ("crates/snap-storage/Cargo.toml", &["snap-format"]),
        ("crates/snap/Cargo.toml", &["snap-format", "snap-storage"]),
        ("Cargo.toml", &["snap"]),
        ("ffi/Cargo.toml", &["snap"]),
    ];
    for (manifest, deps) in want {
        let got = path_dependencies(&root().join(manifest));
        let deps: BTreeSet<String> = deps.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, deps, "{manifest}");
    }
}

/// Source text with `//` comments and string contents blanked.
fn code(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            // A char literal holding a quote must not open a string.
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn rs_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in fs::read_dir(path).unwrap() {
        out.extend(rs_files(&e.unwrap().path()));
    }
    out
}

/// The top-level modules a crate root declares (`mod x;`, or a name in an
/// `internal!(..)` list), with their files.
fn modules(src: &Path, root_file: &str) -> BTreeMap<String, Vec<PathBuf>> {
    let text = code(&fs::read_to_string(src.join(root_file)).unwrap());
    let mut names = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        if let Some(rest) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            names.push(rest.trim().to_string());
        }
    }
    if let Some(at) = text.find("internal!(") {
        let list = &text[at + 10..at + text[at..].find(')').unwrap()];
        names.extend(
            list.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        );
    }
    names
        .into_iter()
        .filter_map(|n| {
            let (file, dir) = (src.join(format!("{n}.rs")), src.join(&n));
            let mut files = Vec::new();
            if file.is_file() {
                files.push(file);
            }
            if dir.is_dir() {
                files.extend(rs_files(&dir));
            }
            (!files.is_empty()).then_some((n, files))
        })
        .collect()
}

/// x -> y when a file of x names `crate::y` or `crate::{.., y, ..}`.
fn edges(mods: &BTreeMap<String, Vec<PathBuf>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (m, files) in mods {
        let mut to = BTreeSet::new();
        for f in files {
            let text = code(&fs::read_to_string(f).unwrap());
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + 7..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    group.split(',').map(|s| s.trim()).collect()
                } else {
                    vec![rest]
                };
                for n in names {
                    let id: String = n
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if mods.contains_key(&id) && id != *m {
                        to.insert(id);
                    }
                }
            }
        }
        out.insert(m.clone(), to);
    }
    out
}

/// The modules on a cycle through three or more of them: a strongly
/// connected component that is more than one mutual pair.
fn long_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for t in &edges[&n] {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reach(m))).collect();
    let mut comps: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for m in edges.keys() {
        let comp: BTreeSet<String> = reaches[m]
            .iter()
            .filter(|o| reaches[*o].contains(m))
            .cloned()
            .collect();
        if comp.len() > 2 {
            comps.insert(comp);
        }
    }
    comps.into_iter().collect()
}

#[test]
fn no_crate_has_a_module_cycle() {
    let crates = [
        ("snap-format", "crates/snap-format/src", "lib.rs"),
        ("snap-storage", "crates/snap-storage/src", "lib.rs"),
        ("snap", "crates/snap/src", "lib.rs"),
        ("snap-cli", "src", "main.rs"),
        ("snap-ffi", "ffi/src", "lib.rs"),
    ];
    for (name, src, root_file) in crates {
        let mods = modules(&root().join(src), root_file);
        let graph = edges(&mods);
        eprintln!("{name}:");
        for (m, to) in &graph {
            let to: Vec<&str> = to.iter().map(|s| s.as_str()).collect();
            eprintln!("  {m} -> {}", to.join(" "));
        }
        assert!(
            long_cycles(&graph).is_empty(),
            "{name}: modules in a cycle: {:?}",
            long_cycles(&graph)
        );
    }
}

/// The check itself finds a cycle.
#[test]
fn the_cycle_check_finds_a_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .iter()
        .map(|(x, y)| (x.to_string(), BTreeSet::from([y.to_string()])))
        .collect();
    assert_eq!(
        long_cycles(&g),
        vec![BTreeSet::from(["a".into(), "b".into(), "c".into()])]
    );
    let pair: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "a")]
        .iter()
        .map(|(x, y)| (x.to_string(), BTreeSet::from([y.to_string()])))
        .collect();
    assert!(long_cycles(&pair).is_empty());
}

/// The CLI is a thin layer over the library: it names the root API and the
/// layers meant for tools, never the index, pack files, SQLite capture or
/// the encodings (those are reached through operations). The library's
/// private modules it cannot name at all (the compiler refuses).
#[test]
fn the_cli_uses_only_the_librarys_api_for_tools() {
    let allowed: BTreeSet<&str> = [
        // the library's layers for tools
        "ops",
        "repo",
        "local_dir",
        "lock",
        "keys",
        "objects",
        "spec",
        "retention",
        "exclude",
        "exit",
        "progress",
        // the crates below, as the library re-exports them
        "error",
        "tree",
        "snapshot",
        "config",
        "storage",
        "fault",
    ]
    .into();
    let lib = code(&fs::read_to_string(root().join("crates/snap/src/lib.rs")).unwrap());
    let mut used = BTreeMap::<String, BTreeSet<String>>::new();
    for f in rs_files(&root().join("src")) {
        let text = code(&fs::read_to_string(&f).unwrap());
        for (i, _) in text.match_indices("snap::") {
            if i > 0 && text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + 6..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(g) => g[..g.find('}').unwrap()]
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![rest],
            };
            for n in names {
                let id: String = n
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // Types and functions of the root API, and `self`.
                let at_root = id.starts_with(char::is_uppercase)
                    || lib.contains(&format!(" {id},"))
                    || lib.contains(&format!(" {id}}}"))
                    || lib.contains(&format!("pub fn {id}("));
                if !id.is_empty() && !at_root && !allowed.contains(id.as_str()) {
                    used.entry(id).or_default().insert(f.display().to_string());
                }
            }
        }
    }
    assert!(
        used.is_empty(),
        "the CLI reaches past the library's API: {used:?}"
    );
}
