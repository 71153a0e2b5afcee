//! The workspace's layering, as the README's architecture section states it: function crates
//! hold routes and views and reach the domain through `domain/`, never through one another,
//! and the domain crate names no HTTP framework.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest(dir: &Path) -> toml::Table {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    text.parse().unwrap()
}

/// Every function crate's folder and package name.
fn function_crates() -> Vec<(PathBuf, String)> {
    let mut crates: Vec<(PathBuf, String)> = std::fs::read_dir(root().join("functions"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("Cargo.toml").exists())
        .map(|dir| {
            let name = manifest(&dir)["package"]["name"]
                .as_str()
                .unwrap()
                .to_owned();
            (dir, name)
        })
        .collect();
    crates.sort();
    crates
}

/// Each dependency of a manifest (normal, dev and build) as (the package it names, its path).
fn dependencies(manifest: &toml::Table) -> Vec<(String, Option<String>)> {
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|table| manifest.get(*table).and_then(toml::Value::as_table))
        .flat_map(|table| table.iter())
        .map(|(key, value)| {
            let package = value
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key);
            let path = value
                .get("path")
                .and_then(toml::Value::as_str)
                .map(str::to_owned);
            (package.to_owned(), path)
        })
        .collect()
}

#[test]
fn no_function_crate_depends_on_another() {
    let crates = function_crates();
    assert!(crates.len() >= 8, "found only {crates:?}");
    let names: BTreeSet<&str> = crates.iter().map(|(_, name)| name.as_str()).collect();
    let mut offending = Vec::new();
    for (dir, name) in &crates {
        for (package, path) in dependencies(&manifest(dir)) {
            let into_functions = path.as_deref().is_some_and(|p| {
                let target = dir.join(p);
                target.canonicalize().unwrap_or(target).parent()
                    == root().join("functions").canonicalize().ok().as_deref()
            });
            if names.contains(package.as_str()) || into_functions {
                offending.push(format!("{name} -> {package}"));
            }
        }
    }
    assert!(
        offending.is_empty(),
        "function crates depend on function crates (move the shared code into domain/): {offending:?}"
    );
}

#[test]
fn the_domain_crate_names_no_http_framework() {
    let domain = manifest(&root().join("domain"));
    let named: Vec<String> = dependencies(&domain)
        .into_iter()
        .map(|(package, _)| package)
        .filter(|package| {
            ["axum", "lambda_http", "tower", "tower-http"].contains(&package.as_str())
        })
        .collect();
    assert!(named.is_empty(), "domain/Cargo.toml names {named:?}");
}
