//! The library's modules depend on each other one way only: down the layers of [`LAYERS`].
//!
//! This test reads `src-tauri/` from `lib.rs` down through every `mod` declaration (all platforms,
//! tests left out: a test may drive its module from above), resolves each path into the crate
//! (`crate::…`, `super::…`, `self::…`, in `use` items, in code and in macro arguments) through the
//! re-exports it passes, and fails, naming the file and line, when a module imports one of a
//! higher layer, when two modules import each other through any chain, or when a module is in no
//! layer. The same list is drawn in the README's Layout section.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Top to bottom. A module may use any module of a lower layer, and one of its own layer as long
/// as no chain of imports leads back (a circle). A unit is a module with everything below it.
const LAYERS: &[&[&str]] = &[
    // The front ends: the tray app, the command line, the wrapper clients run Serena through.
    &["shell", "cli", "launch"],
    // The one owner of every long-lived task.
    &["core::background"],
    // The two HTTP servers (on `core::http`, a leaf).
    &["core::api", "core::tray_protocol"],
    // The handle to the running program: opens state, spawns nothing.
    &["core::app"],
    // The instance manager and the model's handle.
    &["core::sessions", "core::engine"],
    // What the model's handle drives: the refresh pass, killing trees.
    &["core::refresh", "core::reaper", "core::kill"],
    // Leaves: the model, files, processes, sockets, settings, the client of a running program.
    &[
        "core::running",
        "core::configure",
        "core::timeline",
        "core::cost",
        "core::classify",
        "core::clock",
        "core::probe",
        "core::registry",
        "core::token",
        "core::settings",
        "core::model",
        "core::events",
        "core::cmdline",
        "core::procs",
        "core::sockets",
        "core::watch",
        "core::writes",
        "core::files",
        "core::heap",
        "core::http",
    ],
];

/// Modules that only declare and re-export (no code of their own to place in a layer).
const FACADES: &[&str] = &["", "core"];

struct Module {
    file: PathBuf,
    /// `use` items of the module that re-export: name → absolute path.
    reexports: BTreeMap<String, Vec<String>>,
    /// Every path into the crate the module's code names: (absolute path, line).
    refs: Vec<(Vec<String>, usize)>,
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src-tauri")
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::List(list) if list.path.is_ident("cfg") => {
            let text = list.tokens.to_string();
            text.split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|w| w == "test")
                && !text.contains("not (test")
        }
        _ => false,
    })
}

/// Resolves a path as written in `module` to segments from the crate root, or None when it does
/// not point into the crate (std, a dependency, a local name).
fn absolute(module: &[String], segments: &[String]) -> Option<Vec<String>> {
    let (mut out, rest) = match segments.first()?.as_str() {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (module.to_vec(), &segments[1..]),
        "super" => (module.to_vec(), segments),
        _ => return None,
    };
    let supers = rest.iter().take_while(|s| *s == "super").count();
    out.truncate(out.len().saturating_sub(supers));
    out.extend(rest[supers..].iter().cloned());
    Some(out)
}

/// Flattens a `use` tree into its full paths (a glob ends in `*`).
fn flatten(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            let name = n.ident.to_string();
            if name != "self" {
                path.push(name.clone());
            }
            let bound = if name == "self" {
                prefix.last().cloned().unwrap_or_default()
            } else {
                name
            };
            out.push((path, bound));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            path.push(r.ident.to_string());
            out.push((path, r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => {
            let mut path = prefix.clone();
            path.push("*".into());
            out.push((path, "*".into()));
        }
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten(t, prefix, out);
            }
        }
    }
}

/// Collects the crate paths of one module's items (not its submodules: those are modules of
/// their own).
struct Collector<'a> {
    module: &'a [String],
    refs: Vec<(Vec<String>, usize)>,
    reexports: BTreeMap<String, Vec<String>>,
    /// `mod` declarations: (name, inline items if any, attributes' cfg(test)).
    submodules: Vec<(String, Option<Vec<syn::Item>>)>,
}

impl Collector<'_> {
    fn add(&mut self, segments: Vec<String>, line: usize) {
        if let Some(abs) = absolute(self.module, &segments) {
            self.refs.push((abs, line));
        }
    }

    /// Paths inside a macro's arguments: `crate :: a :: b` (and `super`, `self`) as tokens.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.scan_tokens(g.stream()),
                TokenTree::Ident(id)
                    if ["crate", "super", "self"].contains(&id.to_string().as_str()) =>
                {
                    let line = id.span().start().line;
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        j += 3;
                    }
                    if segments.len() > 1 {
                        self.add(segments, line);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Type(t) => &t.attrs,
            syn::Item::Macro(m) => &m.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        match item {
            syn::Item::Mod(m) => {
                let items = m.content.as_ref().map(|(_, items)| items.clone());
                self.submodules.push((m.ident.to_string(), items));
            }
            syn::Item::Use(u) => {
                let mut flat = Vec::new();
                flatten(&u.tree, &mut Vec::new(), &mut flat);
                let line = u.use_token.span.start().line;
                for (path, bound) in flat {
                    let Some(abs) = absolute(self.module, &path) else {
                        continue;
                    };
                    if !matches!(u.vis, syn::Visibility::Inherited) && bound != "*" {
                        self.reexports.insert(bound, abs.clone());
                    }
                    self.refs.push((abs, line));
                }
            }
            _ => syn::visit::visit_item(self, item),
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = path.segments.first() {
            self.add(segments, first.ident.span().start().line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.scan_tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

/// Reads the module tree from `lib.rs`: module path (`core::refresh::plan`) → what it names.
fn read_modules() -> BTreeMap<String, Module> {
    let mut modules = BTreeMap::new();
    let root = source_root();
    let text = std::fs::read_to_string(root.join("lib.rs")).expect("read lib.rs");
    let file = syn::parse_file(&text).expect("parse lib.rs");
    read_module(
        &mut modules,
        Vec::new(),
        root.join("lib.rs"),
        root.clone(),
        file.items,
    );
    modules
}

fn read_module(
    modules: &mut BTreeMap<String, Module>,
    path: Vec<String>,
    file: PathBuf,
    dir: PathBuf,
    items: Vec<syn::Item>,
) {
    let mut c = Collector {
        module: &path,
        refs: Vec::new(),
        reexports: BTreeMap::new(),
        submodules: Vec::new(),
    };
    for item in &items {
        c.visit_item(item);
    }
    let (refs, reexports, submodules) = (c.refs, c.reexports, c.submodules);
    for (name, inline) in submodules {
        let mut child = path.clone();
        child.push(name.clone());
        match inline {
            Some(items) => read_module(modules, child, file.clone(), dir.join(&name), items),
            None => {
                let (child_file, child_dir) = if dir.join(format!("{name}.rs")).exists() {
                    (dir.join(format!("{name}.rs")), dir.join(&name))
                } else {
                    (dir.join(&name).join("mod.rs"), dir.join(&name))
                };
                let text = std::fs::read_to_string(&child_file)
                    .unwrap_or_else(|e| panic!("read {}: {e}", child_file.display()));
                let parsed = syn::parse_file(&text)
                    .unwrap_or_else(|e| panic!("parse {}: {e}", child_file.display()));
                read_module(modules, child, child_file, child_dir, parsed.items);
            }
        }
    }
    modules.insert(
        path.join("::"),
        Module {
            file,
            reexports,
            refs,
        },
    );
}

/// The module a path lands in: the longest known module prefix, following re-exports.
fn target(modules: &BTreeMap<String, Module>, path: &[String]) -> String {
    let mut at: Vec<String> = Vec::new();
    let mut rest: Vec<String> = path.to_vec();
    let mut hops = 0;
    while let Some(seg) = rest.first().cloned() {
        let mut next = at.clone();
        next.push(seg.clone());
        if modules.contains_key(&next.join("::")) {
            at = next;
            rest.remove(0);
            continue;
        }
        let Some(via) = modules
            .get(&at.join("::"))
            .and_then(|m| m.reexports.get(&seg))
        else {
            break;
        };
        hops += 1;
        assert!(hops < 32, "re-export loop at {}", path.join("::"));
        let mut resolved = via.clone();
        resolved.extend(rest.into_iter().skip(1));
        at = Vec::new();
        rest = resolved;
    }
    at.join("::")
}

fn unit_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, units)| units.iter().map(move |u| (layer, *u)))
        .filter(|(_, u)| module == *u || module.starts_with(&format!("{u}::")))
        .max_by_key(|(_, u)| u.len())
}

/// An import between two units: where it is written.
struct Edge {
    from: &'static str,
    to: &'static str,
    file: PathBuf,
    line: usize,
}

fn edges(modules: &BTreeMap<String, Module>) -> (Vec<Edge>, Vec<String>) {
    let mut out = Vec::new();
    let mut unplaced = Vec::new();
    for (name, module) in modules {
        if FACADES.contains(&name.as_str()) {
            continue;
        }
        let Some((_, from)) = unit_of(name) else {
            unplaced.push(format!(
                "{name} ({}) is in no layer of tests/layers.rs",
                module.file.display()
            ));
            continue;
        };
        for (path, line) in &module.refs {
            let to_module = target(modules, path);
            if FACADES.contains(&to_module.as_str()) {
                continue;
            }
            let Some((_, to)) = unit_of(&to_module) else {
                continue;
            };
            if to != from {
                out.push(Edge {
                    from,
                    to,
                    file: module.file.clone(),
                    line: *line,
                });
            }
        }
    }
    (out, unplaced)
}

fn layer(unit: &str) -> usize {
    unit_of(unit).map(|(l, _)| l).expect("a unit of LAYERS")
}

fn place(edge: &Edge) -> String {
    let file = edge
        .file
        .strip_prefix(source_root().parent().expect("root"))
        .unwrap_or(&edge.file);
    format!("{}:{}", file.display(), edge.line)
}

/// Units that reach themselves again through imports (each strongly connected set of two or more).
fn circles(edges: &[Edge]) -> Vec<BTreeSet<&'static str>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(e.from).or_default().insert(e.to);
    }
    let reach = |start: &'static str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(n) = todo.pop() {
            for &m in graph.get(n).into_iter().flatten() {
                if seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        seen
    };
    let units: BTreeSet<&'static str> = edges.iter().flat_map(|e| [e.from, e.to]).collect();
    let mut found: Vec<BTreeSet<&'static str>> = Vec::new();
    for &u in &units {
        let from_u = reach(u);
        if !from_u.contains(u) {
            continue;
        }
        let set: BTreeSet<&'static str> = from_u
            .iter()
            .copied()
            .filter(|&v| reach(v).contains(u))
            .collect();
        if !found.contains(&set) {
            found.push(set);
        }
    }
    found
}

#[test]
fn modules_depend_one_way_down_the_layers() {
    let modules = read_modules();
    assert!(
        modules.len() > 40,
        "read only {} modules: is the tree still rooted in lib.rs?",
        modules.len()
    );
    let (edges, unplaced) = edges(&modules);
    assert!(
        edges.len() > 50,
        "found only {} imports between units: is the reader broken?",
        edges.len()
    );
    // One line per place, however many names it imports from the layer above.
    let upward: BTreeSet<String> = edges
        .iter()
        .filter(|e| layer(e.to) < layer(e.from))
        .map(|e| {
            format!(
                "{}: {} imports {}, a layer above it",
                place(e),
                e.from,
                e.to
            )
        })
        .collect();
    let mut problems: Vec<String> = unplaced.into_iter().chain(upward).collect();
    for circle in circles(&edges) {
        let mut lines = vec![format!(
            "a circle through {}:",
            circle.iter().copied().collect::<Vec<_>>().join(", ")
        )];
        let mut seen = BTreeSet::new();
        for e in edges
            .iter()
            .filter(|e| circle.contains(e.from) && circle.contains(e.to))
        {
            if seen.insert((e.from, e.to)) {
                lines.push(format!("  {}: {} imports {}", place(e), e.from, e.to));
            }
        }
        problems.push(lines.join("\n"));
    }
    assert!(
        problems.is_empty(),
        "imports that do not run down the layers:\n{}",
        problems.join("\n")
    );
}

/// Every unit of the list exists: a renamed module cannot leave its old name (and so its rules)
/// behind.
#[test]
fn every_listed_unit_is_a_module() {
    let modules = read_modules();
    for unit in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            modules.contains_key(*unit),
            "tests/layers.rs lists {unit}, which is no module"
        );
    }
}
