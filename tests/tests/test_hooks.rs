//! The crash-injection test hook (`AUTORESEARCH_TEST_CRASH_AT`) is compiled
//! only into test builds: no crate enables the controller's
//! `crash-injection` feature by default or through a normal dependency.

use std::path::Path;

fn manifest(rel: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn enables_hook(deps: Option<&toml::Value>) -> bool {
    deps.and_then(|d| d.get("autoresearch-controller"))
        .and_then(|c| c.get("features"))
        .and_then(|f| f.as_array())
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("crash-injection")))
}

#[test]
fn the_crash_hook_is_reachable_only_from_dev_dependencies() {
    let controller = manifest("crates/autoresearch-controller/Cargo.toml");
    let features = controller["features"]
        .as_table()
        .expect("controller [features]");
    assert!(features.contains_key("crash-injection"));
    let default = features.get("default").and_then(|d| d.as_array());
    assert!(
        !default.is_some_and(|d| d.iter().any(|x| x.as_str() == Some("crash-injection"))),
        "crash-injection must not be a default feature"
    );
    for krate in [
        "autoresearch-cli",
        "autoresearch-compare",
        "autoresearch-plot",
    ] {
        let m = manifest(&format!("crates/{krate}/Cargo.toml"));
        assert!(
            !enables_hook(m.get("dependencies")),
            "{krate} enables crash-injection in [dependencies]"
        );
    }
    let xtask = manifest("xtask/Cargo.toml");
    assert!(!enables_hook(xtask.get("dependencies")));
    let cli = manifest("crates/autoresearch-cli/Cargo.toml");
    assert!(
        enables_hook(cli.get("dev-dependencies")),
        "the CLI's crash-safety tests need the hook in their build"
    );
}
