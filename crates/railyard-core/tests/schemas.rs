//! The checked-in JSON Schemas in `schemas/` match the Rust types. Run `just schemas`
//! (`UPDATE_SCHEMAS=1 cargo test -p railyard-core --test schemas`) after changing a type.

use std::path::PathBuf;

#[test]
fn checked_in_schemas_match_the_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (path, contents) in railyard_core::schema::files() {
        let file = root.join(&path);
        if update {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &contents).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(contents.as_str()) {
            drifted.push(path);
        }
    }
    assert!(
        drifted.is_empty(),
        "schemas/ drifted from the Rust types: {drifted:?}; run `just schemas` and commit the result"
    );
}
