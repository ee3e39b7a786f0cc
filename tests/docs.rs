//! The documentation stands alone and stays true: nothing points outside
//! the repository, and `docs/architecture.md` names only files that exist
//! and every module of the crate.

// A test fails by panicking: unwrap and expect are how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
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
    for doc in ["README.md", "docs/architecture.md", "src/lib.rs"] {
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
