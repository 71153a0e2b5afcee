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

/// The packages a crate builds with (normal dependencies, its own features only), as
/// `cargo tree` resolves them from Cargo.lock.
fn resolved_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The domain builds without any HTTP framework, even through `shared` (whose `axum` feature
/// only the edge turns on) and without the edge itself.
#[test]
fn the_domain_crate_builds_without_an_http_framework() {
    let packages = resolved_dependencies("carevault-domain");
    assert!(packages.contains("carevault-shared"), "{packages:?}");
    let http: Vec<&String> = packages
        .iter()
        .filter(|p| {
            [
                "axum",
                "axum-core",
                "lambda_http",
                "tower-http",
                "carevault-edge",
            ]
            .contains(&p.as_str())
        })
        .collect();
    assert!(http.is_empty(), "the domain builds with {http:?}");
}

/// `shared` on its own builds without axum (its `axum` feature is the edge's to turn on).
#[test]
fn the_shared_crate_builds_without_an_http_framework() {
    let packages = resolved_dependencies("carevault-shared");
    assert!(
        !packages.contains("lambda_http") && !packages.contains("axum"),
        "shared builds with the HTTP framework: {packages:?}"
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
