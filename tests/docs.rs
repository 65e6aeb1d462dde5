//! Documentation coverage of the library's public API, checked from the source so that it cannot regress on the
//! stable toolchain (rustdoc's `--show-coverage` is unstable).
//!
//! Every item a user of the crate can name (a `pub` item reachable through public modules or a `pub use`, and the
//! `pub` methods of inherent impls of such types) must have:
//!
//! * an example: a fenced code block in its docs (`no_run` where it needs root; examples that need no privilege
//!   run as doctests);
//! * for a function returning `Result`: an `# Errors` section saying when it fails, and a `# Kernel` section
//!   saying which kernel it needs (or that it makes no system call).
//!
//! `#![deny(missing_docs)]` in `lib.rs` already makes every such item documented; clippy's `missing_errors_doc`
//! and `missing_panics_doc` (warned in `lib.rs`, denied in CI) check the same `# Errors` from the compiler's side.
//! The lists of offenders and the counts are printed (`cargo test --test docs -- --nocapture`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One item found in the source.
struct Candidate {
    /// `module::Name` or `Type::method`, for messages.
    name: String,
    /// The item's own name (what a `pub use` names).
    ident: String,
    kind: &'static str,
    file: PathBuf,
    line: usize,
    docs: String,
    /// `pub` (not `pub(crate)` or private).
    is_pub: bool,
    /// Every module from the crate root down to it is `pub`.
    chain_public: bool,
    returns_result: bool,
    /// For a method: the type of its inherent impl.
    owner: Option<String>,
}

#[derive(Default)]
struct Crate {
    items: Vec<Candidate>,
    /// Names re-exported by a `pub use` anywhere in the crate.
    reexported: HashSet<String>,
}

fn docs_of(attrs: &[syn::Attribute]) -> String {
    let mut out = String::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value {
                out.push_str(&s.value());
                out.push('\n');
            } else {
                // `#[doc = include_str!(...)]`: documented elsewhere; count it as complete.
                out.push_str("```\n```\n# Errors\n# Kernel\n");
            }
        }
    }
    out
}

/// Items compiled only for tests (or doctests) are no part of the API.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && {
            let s = a.meta.require_list().map(|l| l.tokens.to_string()).unwrap_or_default();
            s == "test" || s == "doctest"
        }
    }) || attrs.iter().any(|a| {
        a.path().is_ident("doc") && a.meta.require_list().map(|l| l.tokens.to_string() == "hidden").unwrap_or(false)
    })
}

fn is_pub(vis: &syn::Visibility) -> bool {
    matches!(vis, syn::Visibility::Public(_))
}

fn returns_result(sig: &syn::Signature) -> bool {
    match &sig.output {
        syn::ReturnType::Type(_, ty) => match &**ty {
            syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        syn::ReturnType::Default => false,
    }
}

fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

fn collect_use(tree: &syn::UseTree, out: &mut HashSet<String>) {
    match tree {
        syn::UseTree::Path(p) => collect_use(&p.tree, out),
        syn::UseTree::Name(n) => {
            out.insert(n.ident.to_string());
        }
        syn::UseTree::Rename(r) => {
            out.insert(r.ident.to_string());
            out.insert(r.rename.to_string());
        }
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| collect_use(t, out)),
        syn::UseTree::Glob(_) => panic!("a glob re-export: name what the crate exports"),
    }
}

struct Module<'a> {
    file: &'a Path,
    /// Where its child modules' files are.
    dir: PathBuf,
    path: Vec<String>,
    public: bool,
}

fn walk(m: &Module, items: &[syn::Item], krate: &mut Crate) {
    let push =
        |krate: &mut Crate, ident: String, kind, span: proc_macro2::Span, attrs: &[syn::Attribute], vis, result| {
            let mut name = m.path.join("::");
            if !name.is_empty() {
                name.push_str("::");
            }
            name.push_str(&ident);
            krate.items.push(Candidate {
                name,
                ident,
                kind,
                file: m.file.to_path_buf(),
                line: span.start().line,
                docs: docs_of(attrs),
                is_pub: is_pub(vis),
                chain_public: m.public,
                returns_result: result,
                owner: None,
            });
        };
    for item in items {
        match item {
            syn::Item::Fn(f) if !test_only(&f.attrs) => {
                push(krate, f.sig.ident.to_string(), "fn", f.sig.ident.span(), &f.attrs, &f.vis, returns_result(&f.sig))
            }
            syn::Item::Struct(s) if !test_only(&s.attrs) => {
                push(krate, s.ident.to_string(), "struct", s.ident.span(), &s.attrs, &s.vis, false)
            }
            syn::Item::Enum(e) if !test_only(&e.attrs) => {
                push(krate, e.ident.to_string(), "enum", e.ident.span(), &e.attrs, &e.vis, false)
            }
            syn::Item::Trait(t) if !test_only(&t.attrs) => {
                push(krate, t.ident.to_string(), "trait", t.ident.span(), &t.attrs, &t.vis, false)
            }
            syn::Item::Const(c) if !test_only(&c.attrs) => {
                push(krate, c.ident.to_string(), "const", c.ident.span(), &c.attrs, &c.vis, false)
            }
            syn::Item::Static(s) if !test_only(&s.attrs) => {
                push(krate, s.ident.to_string(), "static", s.ident.span(), &s.attrs, &s.vis, false)
            }
            syn::Item::Type(t) if !test_only(&t.attrs) => {
                push(krate, t.ident.to_string(), "type", t.ident.span(), &t.attrs, &t.vis, false)
            }
            syn::Item::Use(u) if is_pub(&u.vis) && !test_only(&u.attrs) => collect_use(&u.tree, &mut krate.reexported),
            syn::Item::Impl(i) if i.trait_.is_none() && !test_only(&i.attrs) => {
                let Some(owner) = type_name(&i.self_ty) else { continue };
                for it in &i.items {
                    let (ident, kind, attrs, vis, result) = match it {
                        syn::ImplItem::Fn(f) => (&f.sig.ident, "method", &f.attrs, &f.vis, returns_result(&f.sig)),
                        syn::ImplItem::Const(c) => (&c.ident, "associated const", &c.attrs, &c.vis, false),
                        _ => continue,
                    };
                    if test_only(attrs) {
                        continue;
                    }
                    krate.items.push(Candidate {
                        name: format!("{owner}::{ident}"),
                        ident: ident.to_string(),
                        kind,
                        file: m.file.to_path_buf(),
                        line: ident.span().start().line,
                        docs: docs_of(attrs),
                        is_pub: is_pub(vis),
                        chain_public: false,
                        returns_result: result,
                        owner: Some(owner.clone()),
                    });
                }
            }
            syn::Item::Mod(md) if !test_only(&md.attrs) => {
                let ident = md.ident.to_string();
                let public = m.public && is_pub(&md.vis);
                let mut path = m.path.clone();
                path.push(ident.clone());
                let (file, dir, inner, attrs) = match &md.content {
                    Some((_, inner)) => (m.file.to_path_buf(), m.dir.join(&ident), inner.clone(), md.attrs.clone()),
                    None => {
                        let flat = m.dir.join(format!("{ident}.rs"));
                        let (file, dir) = if flat.exists() {
                            (flat, m.dir.join(&ident))
                        } else {
                            (m.dir.join(&ident).join("mod.rs"), m.dir.join(&ident))
                        };
                        let parsed = parse(&file);
                        let mut attrs = md.attrs.clone();
                        attrs.extend(parsed.attrs);
                        (file, dir, parsed.items, attrs)
                    }
                };
                // A module's docs: its `///` on the declaration and its own `//!`.
                krate.items.push(Candidate {
                    name: path.join("::"),
                    ident,
                    kind: "module",
                    file: file.clone(),
                    line: 1,
                    docs: docs_of(&attrs),
                    is_pub: is_pub(&md.vis),
                    chain_public: m.public,
                    returns_result: false,
                    owner: None,
                });
                walk(&Module { file: &file, dir, path, public }, &inner, krate);
            }
            _ => {}
        }
    }
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn has_heading(docs: &str, heading: &str) -> bool {
    docs.lines().any(|l| l.trim() == heading || l.trim().starts_with(&format!("{heading} ")))
}

#[test]
fn every_public_item_has_an_example_errors_and_kernel() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join("src/lib.rs");
    let parsed = parse(&lib);
    let mut krate = Crate::default();
    walk(&Module { file: &lib, dir: root.join("src"), path: Vec::new(), public: true }, &parsed.items, &mut krate);

    let exported_types: HashSet<String> = krate
        .items
        .iter()
        .filter(|c| c.owner.is_none() && c.is_pub && (c.chain_public || krate.reexported.contains(&c.ident)))
        .map(|c| c.ident.clone())
        .collect();
    let public: Vec<&Candidate> = krate
        .items
        .iter()
        .filter(|c| {
            c.is_pub
                && match &c.owner {
                    Some(owner) => exported_types.contains(owner),
                    None => c.chain_public || krate.reexported.contains(&c.ident),
                }
        })
        .collect();

    // The walk itself must work: items every version of the crate has are found as public.
    for known in ["overlay::Overlay", "Overlay::mount", "MountSpec::mount", "layer"] {
        assert!(public.iter().any(|c| c.name == known), "{known} not found: the source walk is broken");
    }

    let mut report = String::new();
    let (mut no_example, mut no_errors, mut no_kernel) = (0, 0, 0);
    for c in &public {
        let mut missing = Vec::new();
        if !c.docs.contains("```") {
            missing.push("an example");
            no_example += 1;
        }
        if c.returns_result && !has_heading(&c.docs, "# Errors") {
            missing.push("# Errors");
            no_errors += 1;
        }
        if c.returns_result && !has_heading(&c.docs, "# Kernel") {
            missing.push("# Kernel");
            no_kernel += 1;
        }
        if !missing.is_empty() {
            let file = c.file.strip_prefix(root).unwrap_or(&c.file);
            writeln!(report, "{}:{}: {} {}: missing {}", file.display(), c.line, c.kind, c.name, missing.join(", "))
                .unwrap();
        }
    }
    let results = public.iter().filter(|c| c.returns_result).count();
    let summary = format!(
        "{} public items ({} functions returning Result): {} without an example, {} without # Errors, {} without \
         # Kernel",
        public.len(),
        results,
        no_example,
        no_errors,
        no_kernel
    );
    println!("{summary}");
    assert!(report.is_empty(), "{summary}:\n{report}");
}
