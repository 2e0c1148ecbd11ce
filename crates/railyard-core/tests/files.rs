//! Catalog, release and inventory files as data: each file in `catalog/`, `release/` and
//! `inventory/` is parsed; the snapshot holds the parsed model or the error with its key path.

use railyard_core::{Catalog, Inventory, ReleaseFile};

fn outcome<T: serde::Serialize>(result: Result<T, railyard_core::ParseError>) -> String {
    match result {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap(),
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn catalog_files() {
    insta::glob!("catalog/*.toml", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        insta::assert_snapshot!(outcome(Catalog::from_toml(&text)));
    });
}

#[test]
fn release_files() {
    insta::glob!("release/*.toml", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        insta::assert_snapshot!(outcome(ReleaseFile::from_toml(&text)));
    });
}

#[test]
fn inventory_files() {
    insta::glob!("inventory/*.json", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        insta::assert_snapshot!(outcome(Inventory::from_json(&text)));
    });
}
