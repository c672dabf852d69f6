//! The crate's shape: no module imports one that imports it back (directly or
//! through others), and no layer imports one above it. Read from the sources, so
//! a new `use` that breaks either fails here rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers from the bottom up; a module may import only modules of its own
/// layer or of a layer before it (README, "Architecture").
const LAYERS: &[&[&str]] = &[
    &["human"],
    &["protocol"],
    &["net"],
    &["command", "filer", "trust"],
    &["render"],
    &["repl"],
    &["modes"],
    &["cli"],
    &["completions", "app", "main", "lib"],
];

/// Every `.rs` file under `src/` as (module path, source without its tests).
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
                    .unwrap();
                let mut m = rel.with_extension("").display().to_string();
                if let Some(parent) = m.strip_suffix("/mod") {
                    m = parent.to_string();
                }
                let src = std::fs::read_to_string(&p).unwrap();
                let body = src.split("#[cfg(test)]").next().unwrap_or("").to_string();
                out.insert(m.replace('/', "::"), body);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut out,
    );
    out
}

/// The modules `src` refers to by `crate::…`, `super::…` or `self::…` paths in
/// code (comment lines skipped), resolved to the longest known module.
fn imports(me: &str, src: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in src.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let bytes = code.as_bytes();
        for start in ["crate::", "super::", "self::"] {
            let mut from = 0;
            while let Some(i) = code[from..].find(start) {
                let at = from + i;
                from = at + start.len();
                if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                    continue;
                }
                let path: String = code[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut parts: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                let mut base: Vec<String> = match parts[0] {
                    "crate" => Vec::new(),
                    _ => me.split("::").map(String::from).collect(),
                };
                match parts[0] {
                    "crate" | "self" => {
                        parts.remove(0);
                    }
                    _ => {
                        while parts.first() == Some(&"super") {
                            base.pop();
                            parts.remove(0);
                        }
                    }
                }
                let full: Vec<String> = base
                    .into_iter()
                    .chain(parts.iter().map(|s| s.to_string()))
                    .collect();
                for n in (1..=full.len()).rev() {
                    let m = full[..n].join("::");
                    if known.contains(&m) {
                        if m != me && !me.starts_with(&format!("{m}::")) {
                            found.insert(m);
                        }
                        break;
                    }
                }
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, src)| (m.clone(), imports(m, src, &known)))
        .collect()
}

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

#[test]
fn no_layer_imports_one_above_it() {
    let mut bad = Vec::new();
    for (m, deps) in graph() {
        for d in deps {
            if layer_of(&d) > layer_of(&m) {
                bad.push(format!("{m} imports {d}"));
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn no_module_imports_itself_back() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(m, 1);
        stack.push(m);
        for d in g.get(m).into_iter().flatten() {
            match state.get(d.as_str()) {
                Some(1) => {
                    let i = stack.iter().position(|s| *s == d).unwrap();
                    cycles.push(format!("{} -> {d}", stack[i..].join(" -> ")));
                }
                Some(_) => {}
                None => visit(d, g, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(m, 2);
    }
    let (mut state, mut cycles) = (BTreeMap::new(), Vec::new());
    for m in g.keys() {
        if !state.contains_key(m.as_str()) {
            visit(m, &g, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_imports() {
    // The checks above pass trivially if nothing is found: make sure they see
    // the imports every layer is known to have.
    let g = graph();
    assert!(g["net::event_loop"].contains("net::handler"));
    assert!(g["modes::filer"].contains("filer::transfer"));
    assert!(g["net::context"].contains("net::core"));
}
