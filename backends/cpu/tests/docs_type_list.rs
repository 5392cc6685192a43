//! The docs list the cpu backend's weight types as its type table does:
//! adding an entry to the table without updating the docs fails here.

use rbees_backend_cpu::supported_matmul_dtypes;

fn list() -> String {
    let names: Vec<String> = supported_matmul_dtypes()
        .iter()
        .map(ToString::to_string)
        .collect();
    names.join(", ")
}

/// `text` with every run of whitespace (and markdown line breaks) as one space.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn readme_backend_table_lists_the_table() {
    let readme = read("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `cpu` |"))
        .expect("README has a `cpu` row in its backend table");
    assert!(
        row.contains(&list()),
        "README's cpu row should list {}",
        list()
    );
}

#[test]
fn architecture_lists_the_table() {
    let doc = flat(&read("docs/architecture.md"));
    assert!(
        doc.contains(&list()),
        "docs/architecture.md should list {}",
        list()
    );
}
