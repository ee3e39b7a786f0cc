//! The documentation stands alone and stays true: nothing points outside
//! the repository, every link between its pages resolves, the README's
//! first screen is short, and `docs/architecture.md` names only files that
//! exist and every module of the crate.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

/// The README and every page under `docs/`.
fn documents() -> Vec<String> {
    let mut docs = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            docs.push(format!("docs/{name}"));
        }
    }
    docs.sort();
    docs
}

/// The targets of the Markdown links `[text](target)` in `text` that point
/// inside the repository (no scheme), without their `#anchor`.
fn local_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.contains("://") && !target.starts_with('#'))
        .map(|target| target.split('#').next().unwrap_or(target).to_string())
        .collect()
}

/// Every `src/...` path written in backquotes in `text`, with `a`, `b`
/// shorthands after a path (`src/route/mod.rs`, `pool.rs`) resolved in its
/// folder.
fn named_files(text: &str) -> Vec<String> {
    let mut files = Vec::new();
    for cell in text.split(['|', '\n', '(', ')']) {
        let mut folder: Option<String> = None;
        for quoted in cell.split('`').skip(1).step_by(2) {
            if let Some(path) = quoted.strip_prefix("src/") {
                let path = format!("src/{path}");
                folder = Path::new(&path).parent().map(|p| p.display().to_string());
                files.push(path);
            } else if let Some(folder) = folder
                .as_ref()
                .filter(|_| quoted.ends_with(".rs") && !quoted.contains('/'))
            {
                files.push(format!("{folder}/{quoted}"));
            }
        }
    }
    files
}

#[test]
fn no_document_points_outside_the_repository() {
    for doc in documents().iter().map(String::as_str).chain(["src/lib.rs"]) {
        let text = read(doc);
        assert!(!text.contains("../shared"), "{doc} points to ../shared");
        assert!(
            !text.contains("DESIGN"),
            "{doc} points to a design file outside the repository"
        );
    }
}

#[test]
fn the_architecture_page_names_only_files_that_exist() {
    let page = read("docs/architecture.md");
    let files = named_files(&page);
    assert!(
        files.len() > 20,
        "the page names the files of the path: {files:?}"
    );
    for file in files {
        assert!(
            Path::new(ROOT).join(&file).exists(),
            "{file} is named but does not exist"
        );
    }
}

#[test]
fn the_architecture_page_names_every_module() {
    let page = read("docs/architecture.md");
    let lib = read("src/lib.rs");
    for module in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let module = module.trim_end_matches(';');
        assert!(
            page.contains(&format!("| `{module}` |")),
            "docs/architecture.md has no row for the module {module}"
        );
    }
}

#[test]
fn the_readme_links_the_architecture_page() {
    assert!(read("README.md").contains("(docs/architecture.md)"));
}

#[test]
fn every_link_between_the_documents_resolves() {
    for doc in documents() {
        let folder = Path::new(ROOT).join(&doc);
        let folder = folder.parent().unwrap();
        for target in local_links(&read(&doc)) {
            assert!(
                folder.join(&target).exists(),
                "{doc} links to {target}, which does not exist"
            );
        }
    }
}

#[test]
fn the_readme_starts_with_install_run_point_and_see_in_thirty_lines() {
    let readme = read("README.md");
    let first_screen: String = readme.lines().take(30).collect::<Vec<_>>().join("\n");
    for step in [
        "pip install",
        "tracegate demo",
        "-- serve",
        "base_url=",
        "/ui",
    ] {
        assert!(
            first_screen.contains(step),
            "the README's first 30 lines lack {step:?}"
        );
    }
}

#[test]
fn the_readme_links_every_docs_page() {
    let readme = read("README.md");
    for doc in documents().iter().filter(|d| d.starts_with("docs/")) {
        assert!(
            readme.contains(&format!("({doc})")),
            "README does not link {doc}"
        );
    }
}
