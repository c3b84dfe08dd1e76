//! The layering rule of docs/ARCHITECTURE.md, checked: every library crate
//! depends on `autoresearch-core` only among the workspace's crates, and core
//! on none. Only the CLI (and xtask, and this tests crate) wire several.

use std::path::Path;

fn workspace_deps(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut names = Vec::new();
    for section in ["dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get(section).and_then(|d| d.as_table()) {
            names.extend(
                deps.keys()
                    .filter(|k| k.starts_with("autoresearch-"))
                    .cloned(),
            );
        }
    }
    names.sort();
    names
}

#[test]
fn library_crates_depend_on_core_only() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let deps = workspace_deps(&dir.join("Cargo.toml"));
        match name.as_str() {
            "autoresearch-cli" => continue,
            "autoresearch-core" => assert!(deps.is_empty(), "core depends on {deps:?}"),
            _ => assert_eq!(
                deps,
                vec!["autoresearch-core"],
                "{name} breaks the layering rule"
            ),
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} library crates found");
}
