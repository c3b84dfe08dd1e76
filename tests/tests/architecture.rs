//! The layering rule of docs/ARCHITECTURE.md, checked: every library crate
//! depends on `autoresearch-core` only among the workspace's crates, and core
//! on none. Only the CLI, `autoresearch-devtools` (the demo and benchmarks)
//! and this tests crate wire several; xtask depends on no workspace crate,
//! so that `cargo xtask` compiles in seconds.
//! `autoresearch-test-support` holds the tests' fixtures and is a
//! dev-dependency only: it may depend on what it needs, but no manifest
//! names it among what it ships with.

use std::path::Path;

const TEST_SUPPORT: &str = "autoresearch-test-support";

/// The crates allowed to wire concrete implementations together.
const WIRING: &[&str] = &["autoresearch-cli", "autoresearch-devtools"];

fn manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap();
    text.parse().unwrap()
}

/// The workspace crates `manifest` names in `[dependencies]` and
/// `[build-dependencies]`, sorted.
fn workspace_deps(manifest_path: &Path) -> Vec<String> {
    let doc = manifest(manifest_path);
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
            _ if WIRING.contains(&name.as_str()) || name == TEST_SUPPORT => continue,
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

#[test]
fn xtask_is_thin() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/Cargo.toml");
    let doc = manifest(&path);
    let deps: Vec<&String> = doc
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    // xtask is compiled before anything else by `cargo xtask`: what needs the
    // workspace goes into autoresearch-devtools, built with the CLI.
    assert_eq!(deps, vec!["anyhow"], "xtask's dependencies");
    for wiring in WIRING {
        let own = manifest(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../crates")
                .join(wiring)
                .join("Cargo.toml"),
        );
        assert_eq!(
            own["package"].get("publish").and_then(|p| p.as_bool()),
            (*wiring == "autoresearch-devtools").then_some(false),
            "{wiring}: only the CLI is published"
        );
    }
}

/// Every workspace member's manifest: the crates, xtask and this tests crate.
fn member_manifests() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut manifests = vec![root.join("xtask/Cargo.toml"), root.join("tests/Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        manifests.push(entry.unwrap().path().join("Cargo.toml"));
    }
    manifests
}

#[test]
fn test_support_is_a_dev_dependency_only() {
    let manifests = member_manifests();
    for path in &manifests {
        let deps = workspace_deps(path);
        assert!(
            !deps.iter().any(|d| d == TEST_SUPPORT),
            "{} names {TEST_SUPPORT} outside [dev-dependencies]",
            path.display()
        );
    }
    let own = manifest(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/autoresearch-test-support/Cargo.toml"),
    );
    assert_eq!(
        own["package"]["publish"].as_bool(),
        Some(false),
        "{TEST_SUPPORT} is never published"
    );
    let dev_users = manifests
        .iter()
        .filter(|path| {
            manifest(path)
                .get("dev-dependencies")
                .and_then(|d| d.as_table())
                .is_some_and(|d| d.contains_key(TEST_SUPPORT))
        })
        .count();
    assert!(dev_users >= 4, "only {dev_users} crates use {TEST_SUPPORT}");
}
