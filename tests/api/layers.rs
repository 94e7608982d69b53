//! The import graph of `src/`, read from the source: no file imports a file that imports it back,
//! and the layers `docs/architecture.md` describes hold. A cycle compiles fine in Rust, so only a
//! test like this one stops the next one from creeping in; it reads files and needs no database.
//!
//! Each file is parsed with `syn`, and every path it names (`use` trees, paths in code, types,
//! patterns, bounds and macro names, and the paths inside macro bodies and attribute arguments,
//! which syn leaves as tokens) is resolved the way rustc resolves it (`crate::`, `self::`, chained `super::`, a child
//! module's name) and mapped to the file that defines the longest prefix.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use syn::buffer::{Cursor, TokenBuffer};
use syn::visit::{self, Visit};

/// A module's path from the crate root: `store/postgres/mod.rs` is `["store", "postgres"]`,
/// `lib.rs` is `[]`.
type ModPath = Vec<String>;

struct Graph {
    /// Each file's module path and its path under `src/`, for messages.
    files: BTreeMap<ModPath, String>,
    /// importer → imported → the paths, as written in the importer, that make the edge.
    edges: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>>,
}

/// `None` for files that are not modules of the library crate: `main.rs` and `bin/` are crate
/// roots of their own that reach the library as `clerk_sync::`.
fn module_path(relative: &str) -> Option<ModPath> {
    let stem = relative.strip_suffix(".rs")?;
    if stem == "main" || stem.starts_with("bin/") {
        return None;
    }
    let mut parts: ModPath = stem.split('/').map(str::to_owned).collect();
    if stem == "lib" || parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    Some(parts)
}

fn parse(relative: &str, source: &str) -> syn::File {
    syn::parse_file(source).unwrap_or_else(|e| panic!("src/{relative} does not parse: {e}"))
}

/// Every path one file names, each with the module it is written in: the file's own module, or
/// an inline module inside it, whose `super::` is the file.
struct Paths {
    scope: ModPath,
    found: Vec<(ModPath, String)>,
}

impl Paths {
    fn push(&mut self, path: String) {
        self.found.push((self.scope.clone(), path));
    }

    /// `crate::{a::B, c::{d, e as f}}` → `crate::a::B`, `crate::c::d`, `crate::c::e`: the rename
    /// is the importer's own name, the path before `as` is what it imports.
    fn push_use_tree(&mut self, prefix: String, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                self.push_use_tree(format!("{prefix}{}::", path.ident), &path.tree)
            }
            syn::UseTree::Name(name) => self.push(format!("{prefix}{}", name.ident)),
            syn::UseTree::Rename(rename) => self.push(format!("{prefix}{}", rename.ident)),
            syn::UseTree::Glob(_) => self.push(format!("{prefix}*")),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.push_use_tree(prefix.clone(), tree);
                }
            }
        }
    }

    /// A macro's body and an attribute's arguments are tokens to syn, yet their paths are real
    /// dependencies: `format!` arguments, `#[error("{}", super::holder::message(..))]`, and the
    /// `$crate::` or `crate::` paths of a `macro_rules!` body, which belong to the file that
    /// defines the macro.
    fn push_token_paths(&mut self, tokens: TokenBuffer) {
        token_paths(tokens.begin(), &mut |path| self.push(path));
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // Inline `mod tests` blocks are skipped: test code may reach anything it tests, and its
        // fixtures would otherwise count as the tested file's imports. A test module in a file
        // of its own (`mod tests;`) stays a node of the graph, whose imports are its own.
        let Some((_, items)) = &item.content else {
            return;
        };
        if item.ident == "tests" {
            return;
        }
        self.scope.push(item.ident.to_string());
        for item in items {
            self.visit_item(item);
        }
        self.scope.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let lead = item.leading_colon.as_ref().map_or("", |_| "::");
        self.push_use_tree(lead.to_owned(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        // A single name is a local item, a variable or a prelude type, never a module.
        if path.segments.len() > 1 {
            let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            let lead = path.leading_colon.as_ref().map_or("", |_| "::");
            self.push(format!("{lead}{}", names.join("::")));
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        self.push_token_paths(TokenBuffer::new2(mac.tokens.clone()));
    }

    fn visit_meta_list(&mut self, list: &'ast syn::MetaList) {
        visit::visit_meta_list(self, list);
        self.push_token_paths(TokenBuffer::new2(list.tokens.clone()));
    }
}

/// The `a::b::c` runs of names in a macro's tokens; `$crate::a` yields `crate::a`, as `$` is a
/// token of its own. A name right after `::` continues a path whose start is not a name
/// (`<T as Trait>::f`, `Vec::<u8>::new`), so it starts none.
fn token_paths(mut cursor: Cursor, found: &mut impl FnMut(String)) {
    fn after(cursor: Cursor, ch: char) -> Option<Cursor> {
        let (punct, next) = cursor.punct()?;
        (punct.as_char() == ch).then_some(next)
    }
    let mut colons = 0;
    while let Some((_, next)) = cursor.token_tree() {
        if let Some((inside, _, _, rest)) = cursor.any_group() {
            token_paths(inside, found);
            (cursor, colons) = (rest, 0);
            continue;
        }
        if colons < 2
            && let Some((first, mut rest)) = cursor.ident()
        {
            let mut path = first.to_string();
            while let Some((name, next)) = after(rest, ':')
                .and_then(|c| after(c, ':'))
                .and_then(Cursor::ident)
            {
                path = format!("{path}::{name}");
                rest = next;
            }
            if path.contains("::") {
                found(path);
            }
            (cursor, colons) = (rest, 0);
            continue;
        }
        colons = if after(cursor, ':').is_some() {
            colons + 1
        } else {
            0
        };
        cursor = next;
    }
}

/// Which crate a file of `src/` belongs to: `main.rs` declares the binary's own modules (`cli`),
/// whose `crate::` is `main.rs` and which reach the library by its name.
struct Crates {
    library: String,
    binary_modules: BTreeSet<String>,
}

impl Crates {
    fn of(sources: &BTreeMap<String, String>) -> Crates {
        let items = sources
            .get("main.rs")
            .map(|main| parse("main.rs", main).items)
            .unwrap_or_default();
        let binary_modules = items
            .iter()
            .filter_map(|item| match item {
                syn::Item::Mod(module) if module.content.is_none() => {
                    Some(module.ident.to_string())
                }
                _ => None,
            })
            .collect();
        Crates {
            library: env!("CARGO_PKG_NAME").replace('-', "_"),
            binary_modules,
        }
    }

    fn in_binary(&self, module: &[String]) -> bool {
        module
            .first()
            .is_some_and(|first| self.binary_modules.contains(first))
    }
}

/// The file a path written in module `scope` lands in, or `None` for paths outside `src/`'s
/// files (`std::`, other crates, `Self::`, local enums and types, items of `main.rs`).
fn resolve(
    path: &str,
    scope: &ModPath,
    files: &BTreeMap<ModPath, String>,
    crates: &Crates,
) -> Option<ModPath> {
    // A leading `::` names an external crate.
    if path.starts_with("::") {
        return None;
    }
    let from_binary = crates.in_binary(scope);
    let mut into_binary = from_binary;
    let mut segments = path.split("::").peekable();
    let mut full = match *segments.peek()? {
        "crate" => {
            segments.next();
            Vec::new()
        }
        "self" | "super" => {
            let mut base = scope.clone();
            while let Some(&word @ ("self" | "super")) = segments.peek() {
                if word == "super" {
                    // Above the crate root: not a path rustc would accept, so not ours.
                    base.pop()?;
                }
                segments.next();
            }
            base
        }
        name if from_binary && name == crates.library => {
            segments.next();
            into_binary = false;
            Vec::new()
        }
        first => {
            let mut child = scope.clone();
            child.push(first.to_owned());
            if !files.contains_key(&child) {
                return None;
            }
            scope.clone()
        }
    };
    // A trailing `self` (`a::{self, B}`) or glob names the module before it.
    full.extend(
        segments
            .filter(|&s| s != "self" && s != "*")
            .map(str::to_owned),
    );
    // Both crates' roots are `[]` here; a path that lands in the other crate's files is an
    // item of `main.rs` (skipped), not an import of the library's root or modules.
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|prefix| files.contains_key(prefix))
        .filter(|target| crates.in_binary(target) == into_binary)
}

/// The graph of a crate's `src/`, given as file path under `src/` (`store/mod.rs`) → source.
fn analyse(sources: &BTreeMap<String, String>) -> Graph {
    let crates = Crates::of(sources);
    let mut files = BTreeMap::new();
    let mut parsed = BTreeMap::new();
    for (relative, source) in sources {
        let Some(module) = module_path(relative) else {
            continue;
        };
        if let Some(other) = files.insert(module.clone(), relative.clone()) {
            panic!("{other} and {relative} are the same module; rustc refuses that too");
        }
        parsed.insert(module, parse(relative, source));
    }
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>> = BTreeMap::new();
    for (module, file) in &parsed {
        let mut paths = Paths {
            scope: module.clone(),
            found: Vec::new(),
        };
        paths.visit_file(file);
        let from = edges.entry(module.clone()).or_default();
        for (scope, path) in paths.found {
            if let Some(target) = resolve(&path, &scope, &files, &crates).filter(|t| t != module) {
                from.entry(target).or_default().insert(path);
            }
        }
    }
    Graph { files, edges }
}

impl Graph {
    /// The strongly connected components with more than one file (Tarjan), each sorted.
    fn cycles(&self) -> Vec<Vec<ModPath>> {
        struct Tarjan<'g> {
            graph: &'g Graph,
            next: usize,
            index: BTreeMap<&'g ModPath, usize>,
            low: BTreeMap<&'g ModPath, usize>,
            stack: Vec<&'g ModPath>,
            on_stack: BTreeSet<&'g ModPath>,
            found: Vec<Vec<ModPath>>,
        }
        impl<'g> Tarjan<'g> {
            fn visit(&mut self, v: &'g ModPath) {
                self.index.insert(v, self.next);
                self.low.insert(v, self.next);
                self.next += 1;
                self.stack.push(v);
                self.on_stack.insert(v);
                for w in self.graph.edges.get(v).into_iter().flat_map(BTreeMap::keys) {
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let low = self.low[v].min(self.low[w]);
                        self.low.insert(v, low);
                    } else if self.on_stack.contains(w) {
                        let low = self.low[v].min(self.index[w]);
                        self.low.insert(v, low);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack.remove(w);
                        component.push(w.clone());
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.found.push(component);
                    }
                }
            }
        }
        let mut tarjan = Tarjan {
            graph: self,
            next: 0,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for v in self.files.keys() {
            if !tarjan.index.contains_key(v) {
                tarjan.visit(v);
            }
        }
        tarjan.found
    }

    fn file(&self, module: &ModPath) -> String {
        format!("src/{}", self.files[module])
    }

    /// The paths, as written, that make `from` import `to`, for messages.
    fn because(&self, from: &ModPath, to: &ModPath) -> String {
        let paths: Vec<&str> = self.edges[from][to].iter().map(String::as_str).collect();
        format!(
            "{} -> {}: {}",
            self.file(from),
            self.file(to),
            paths.join(", ")
        )
    }

    /// The shortest loop inside a component, first file repeated last: one import in it has to
    /// go, and a short loop shows which far better than a component of dozens of files does.
    fn shortest_loop<'g>(&'g self, component: &'g [ModPath]) -> Vec<&'g ModPath> {
        let mut best: Option<Vec<&ModPath>> = None;
        for start in component {
            let mut reached_from: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
            let mut queue = VecDeque::from([start]);
            let mut closing = None;
            'search: while let Some(v) = queue.pop_front() {
                for w in self.edges[v].keys().filter(|w| component.contains(w)) {
                    if w == start {
                        closing = Some(v);
                        break 'search;
                    }
                    if !reached_from.contains_key(w) {
                        reached_from.insert(w, v);
                        queue.push_back(w);
                    }
                }
            }
            let Some(mut v) = closing else { continue };
            let mut path = vec![start, v];
            while v != start {
                v = reached_from[v];
                path.push(v);
            }
            path.reverse();
            if best.as_ref().is_none_or(|best| path.len() < best.len()) {
                best = Some(path);
            }
        }
        best.unwrap_or_default()
    }

    /// Each cycle's files, its shortest loop and, for a larger component, every import inside
    /// it, each with the paths that make it: what to move.
    fn describe_cycles(&self, cycles: &[Vec<ModPath>]) -> String {
        let mut message = String::new();
        for component in cycles {
            let names: Vec<String> = component.iter().map(|m| self.file(m)).collect();
            message.push_str(&format!("cycle among {}:\n", names.join(", ")));
            message.push_str("  shortest loop:\n");
            for hop in self.shortest_loop(component).windows(2) {
                message.push_str(&format!("    {}\n", self.because(hop[0], hop[1])));
            }
            if component.len() > 2 {
                message.push_str("  every import inside the cycle:\n");
                for from in component {
                    for to in self.edges[from].keys().filter(|to| component.contains(to)) {
                        message.push_str(&format!("    {}\n", self.because(from, to)));
                    }
                }
            }
        }
        message
    }

    /// The edges between top-level modules (`""` for `lib.rs`) that `forbidden(importer,
    /// imported)` rules out, one line each with the paths that make it.
    fn imports_across(&self, forbidden: impl Fn(&str, &str) -> bool) -> Vec<String> {
        let top = |m: &ModPath| m.first().cloned().unwrap_or_default();
        let mut violations = Vec::new();
        for (importer, targets) in &self.edges {
            for target in targets.keys() {
                if top(importer) != top(target) && forbidden(&top(importer), &top(target)) {
                    violations.push(self.because(importer, target));
                }
            }
        }
        violations
    }

    /// Fails on a module name that no longer exists, so a renamed module cannot make its rule
    /// pass by matching nothing.
    fn assert_modules_exist(&self, names: &[&str]) {
        let modules = self.top_level_modules();
        for name in names {
            assert!(
                modules.contains(*name),
                "no module `{name}` in src/ any more: update the layer rules here and in \
                 docs/architecture.md"
            );
        }
    }

    fn top_level_modules(&self) -> BTreeSet<String> {
        self.files
            .keys()
            .filter_map(|m| m.first().cloned())
            .collect()
    }
}

fn read_src() -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(root).expect("under src/");
                let relative: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let source = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert(relative.join("/"), source);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    walk(&root, &root, &mut sources);
    sources
}

/// The real tree, checked to be the crate and not an empty or moved directory, so the rules
/// below cannot pass by finding nothing.
fn real_graph() -> Graph {
    let graph = analyse(&read_src());
    assert!(
        graph.files.contains_key(&Vec::new()),
        "src/lib.rs not found"
    );
    let edges: usize = graph.edges.values().map(BTreeMap::len).sum();
    assert!(
        graph.files.len() > 20 && edges > 20,
        "src/ has {} files and {edges} edges: the walk or the scan is broken",
        graph.files.len()
    );
    graph
}

#[test]
fn no_file_of_src_imports_a_file_that_imports_it_back() {
    let graph = real_graph();
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "files of src/ import each other; a parent module file only declares and re-exports its \
         children, and children import siblings (super::sibling::Item) or crate::…, never their \
         parent's own items:\n{}",
        graph.describe_cycles(&cycles)
    );
}

#[test]
fn sync_imports_no_other_module_of_the_crate() {
    let graph = real_graph();
    graph.assert_modules_exist(&["sync"]);
    // The rules stay pure (no I/O, no SQL, no HTTP, no Clerk wire types), so they can be
    // unit-tested and reused by every source of events.
    let violations = graph.imports_across(|from, _| from == "sync");
    assert!(
        violations.is_empty(),
        "sync imports other modules of the crate; move what it needs into sync, or the \
         conversion next to the other side's types:\n{}",
        violations.join("\n")
    );
}

/// Each module with the modules above it, which it must not import (docs/architecture.md).
const LAYERS_BELOW: &[(&str, &[&str])] = &[
    // Persistence sees domain values only; what an event does is decided above it.
    (
        "store",
        &["app", "clerk", "config", "http", "ingest", "jobs"],
    ),
    // Clerk's side of the wire knows nothing of where its values go.
    (
        "clerk",
        &["app", "config", "http", "ingest", "jobs", "store"],
    ),
];

#[test]
fn store_and_clerk_import_no_layer_above_them() {
    let graph = real_graph();
    for (module, above) in LAYERS_BELOW {
        graph.assert_modules_exist(&[module]);
        graph.assert_modules_exist(above);
    }
    let violations = graph.imports_across(|from, to| {
        LAYERS_BELOW
            .iter()
            .any(|(module, above)| *module == from && above.contains(&to))
    });
    assert!(
        violations.is_empty(),
        "imports across layers that docs/architecture.md rules out:\n{}",
        violations.join("\n")
    );
}

#[test]
fn only_app_and_the_cli_import_config() {
    let graph = real_graph();
    graph.assert_modules_exist(&["app", "cli", "config"]);
    // The types config fills live with the module they configure (`store::DatabaseTarget`,
    // `http::LimitSettings`), so a library embedding the pieces needs none of config's parsing.
    let violations =
        graph.imports_across(|from, to| to == "config" && !["app", "cli"].contains(&from));
    assert!(
        violations.is_empty(),
        "config sits above the rest of the library; move the settings type into the module it \
         configures and re-export it from config:\n{}",
        violations.join("\n")
    );
}

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(path, source)| (path.to_string(), source.to_string()))
        .collect()
}

fn module(path: &str) -> ModPath {
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn targets(graph: &Graph, from: &str) -> Vec<String> {
    graph.edges[&module(from)]
        .keys()
        .map(|m| m.join("::"))
        .collect()
}

#[test]
fn the_analysis_finds_two_siblings_importing_each_other() {
    let graph = analyse(&tree(&[
        ("lib.rs", "mod fake;"),
        ("fake/mod.rs", "mod a;\nmod b;"),
        ("fake/a.rs", "use super::b::X;\npub struct Y;"),
        ("fake/b.rs", "use super::a::Y;\npub struct X;"),
    ]));
    let cycles = graph.cycles();
    assert_eq!(cycles, vec![vec![module("fake::a"), module("fake::b")]]);
    let message = graph.describe_cycles(&cycles);
    assert!(
        message.contains("src/fake/a.rs -> src/fake/b.rs: super::b::X")
            && message.contains("src/fake/b.rs -> src/fake/a.rs: super::a::Y"),
        "{message}"
    );
}

#[test]
fn the_analysis_resolves_paths_the_way_rustc_does() {
    let graph = analyse(&tree(&[
        (
            "lib.rs",
            "pub mod fake;\npub mod other;\nmod deep;\nmod macros;",
        ),
        (
            "main.rs",
            "mod cli;\nstruct Args;\nfn main() { cli::run(); }",
        ),
        (
            "cli/mod.rs",
            "mod serve;\nuse crate::Args;\nuse clerk_sync::other::Z;\npub fn run() { super::Args; }",
        ),
        (
            "cli/serve.rs",
            "use crate::cli::run; use super::super::Args;",
        ),
        (
            "fake/mod.rs",
            r####"
mod a;
mod child;
mod renamed;
pub(crate) use self::a::{B, c::{D, E as F}};
use crate::{other as elsewhere, fake::renamed as r};
/* a /* nested */ comment: crate::deep */
// crate::deep
const SQL: &str = "select crate::deep";
const RAW: &str = r#"super::deep "quoted" crate::deep"#;
fn f<'a>(x: &'a str) -> &'a str { child::helper(); std::mem::drop(1); x }
#[cfg(test)]
mod tests {
    use super::*;
    use crate::deep;
}
fn after_the_tests() -> crate::deep::x::Later { Default::default() }
"####,
        ),
        ("fake/a.rs", "pub struct B;"),
        ("fake/a/c.rs", "pub struct D; pub struct E;"),
        ("fake/child.rs", "pub fn helper() {}"),
        ("fake/renamed.rs", ""),
        ("other.rs", "pub struct Z;"),
        ("deep/mod.rs", "mod x;"),
        (
            "deep/x/mod.rs",
            "mod y;\nmod z;\nmod inline { use super::y::W; mod nested { fn f(_: super::super::z::V) {} } }",
        ),
        ("deep/x/z.rs", "pub struct V;"),
        (
            "macros.rs",
            r#"
macro_rules! point {
    () => { $crate::other::Z };
}
#[error("{}", crate::fake::a::c::message())]
struct Failure;
fn f() {
    crate::fake::child::made!(1);
    println!("crate::fake::renamed {}", crate::deep::x::y::NAME);
}
"#,
        ),
        (
            "deep/x/y.rs",
            "use super::super::super::other::Z; pub struct W(crate::fake::a::c::D);",
        ),
    ]));
    assert_eq!(
        targets(&graph, "fake"),
        [
            "deep::x",
            "fake::a",
            "fake::a::c",
            "fake::child",
            "fake::renamed",
            "other"
        ],
        "{:?}",
        graph.edges[&module("fake")]
    );
    assert_eq!(targets(&graph, "deep::x::y"), ["fake::a::c", "other"]);
    // `super` inside an inline module is the file itself, `super::super` in one nested in it too.
    assert_eq!(targets(&graph, "deep::x"), ["deep::x::y", "deep::x::z"]);
    // Macro names, and paths in macro bodies and attribute arguments, which syn leaves as tokens.
    assert_eq!(
        targets(&graph, "macros"),
        ["deep::x::y", "fake::a::c", "fake::child", "other"]
    );
    // The binary's `crate::` and `super::` reach `main.rs`, not the library's root.
    assert_eq!(targets(&graph, "cli"), ["other"]);
    assert_eq!(targets(&graph, "cli::serve"), ["cli"]);
    assert!(!graph.files.contains_key(&module("main")));
    assert!(graph.cycles().is_empty());
}

#[test]
#[should_panic(expected = "src/fake.rs does not parse")]
fn the_analysis_names_a_file_it_cannot_parse() {
    analyse(&tree(&[
        ("lib.rs", "mod fake;"),
        ("fake.rs", "fn broken( {}"),
    ]));
}

#[test]
fn the_analysis_reports_a_child_importing_its_parent_in_the_real_tree() {
    let mut sources = read_src();
    let graph = analyse(&sources);
    // Any parent that re-exports from a child will do: the child then imports its parent back.
    let (parent, child) = graph
        .edges
        .iter()
        .flat_map(|(from, targets)| targets.keys().map(move |to| (from, to)))
        .find(|(from, to)| to.len() == from.len() + 1 && to.starts_with(from))
        .expect("no parent in src/ uses its children");
    let (parent, child) = (parent.clone(), child.clone());
    let file = graph.files[&child].clone();
    let source = sources.get_mut(&file).expect("child source");
    // Appended, since inner attributes (`//!`) must come before any item.
    source.push_str("\nuse super::*;\n");

    let broken = analyse(&sources);
    let cycles = broken.cycles();
    assert!(
        cycles
            .iter()
            .any(|c| c.contains(&parent) && c.contains(&child)),
        "src/{file} importing its parent was not reported: {cycles:?}"
    );
    let message = broken.describe_cycles(&cycles);
    let hop = format!("src/{file} -> src/{}: super::*", graph.files[&parent]);
    assert!(message.contains(&hop), "{message}");
}
