//! Inputs the fuzz targets in `fuzz/` found breaking a property of a parser, kept as tests so
//! they stay fixed. Each test names its target and feeds the exact input.

use railyard_core::{Inventory, ReleaseFile};

/// `release` and `inventory`: an empty JSON file (and a line break where a value should be)
/// gave the position `line 1, column 0`; positions are 1-based.
#[test]
fn json_errors_before_the_first_character_of_a_line_are_at_column_one() {
    let error = Inventory::from_json("").unwrap_err();
    assert_eq!(error.position, Some((1, 1)));
    assert!(
        error
            .to_string()
            .starts_with("line 1, column 1: inventory: "),
        "{error}"
    );
    let error = ReleaseFile::from_json("").unwrap_err();
    assert_eq!(error.position, Some((1, 1)));
    let error = ReleaseFile::from_json("{\"id\":\n").unwrap_err();
    assert_eq!(error.position.map(|(_, column)| column), Some(1), "{error}");
}
