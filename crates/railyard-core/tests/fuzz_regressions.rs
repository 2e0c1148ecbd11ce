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

/// Found by the catalog fuzz target: `nan` and `inf` are valid TOML, but a NaN threshold makes
/// every comparison false and neither can be written as the JSON the catalog hash covers.
#[test]
fn non_finite_thresholds_and_rates_out_of_range_are_refused() {
    for (field, value, path) in [
        ("fail_rate", "nan", "catalog.services.api.deploy.fail_rate"),
        ("fail_rate", "2.5", "catalog.services.api.deploy.fail_rate"),
        (
            "threshold",
            "nan",
            "catalog.services.api.gates[0].threshold",
        ),
        (
            "threshold",
            "inf",
            "catalog.services.api.gates[0].threshold",
        ),
    ] {
        let (rate, threshold) = match field {
            "fail_rate" => (value, "0.5"),
            _ => ("0.1", value),
        };
        let text = format!(
            "[[environments]]\nname = \"prod\"\n[services.api]\ndeploy = {{ kind = \"simulated\", fail_rate = {rate} }}\ngates = [{{ kind = \"prometheus\", url = \"http://p\", query = \"up\", op = \"<\", threshold = {threshold} }}]\n"
        );
        let error = railyard_core::Catalog::from_toml(&text)
            .expect_err("refused")
            .to_string();
        assert!(error.contains(path), "{field} = {value}: {error}");
    }
}
