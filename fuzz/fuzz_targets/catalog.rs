//! The catalog parser (`railyard.toml`): `Catalog::from_toml` on any text. A catalog that
//! parses checks again, places every environment on the promotion path, and reads back
//! unchanged from the JSON it is hashed as and from the TOML it serializes to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_core::Catalog;
use railyard_core::catalog::{Deploy, Gate};
use railyard_fuzz::check_parse_error;

/// Whether a gate threshold or a simulated failure rate is NaN or infinite. Known, not fixed
/// yet: the catalog accepts `threshold = nan` (TOML has `nan` and `inf`), and JSON, which the
/// catalog's hash is computed over, writes it as `null` and cannot read it back. The round trip
/// through JSON is not checked for those until the catalog refuses them.
fn has_non_finite(catalog: &Catalog) -> bool {
    let deploy = |deploy: &Deploy| matches!(deploy, Deploy::Simulated { fail_rate: Some(rate), .. } if !rate.is_finite());
    let gates = |gates: &[Gate]| {
        gates.iter().any(
            |gate| matches!(gate, Gate::Prometheus { threshold, .. } if !threshold.is_finite()),
        )
    };
    catalog.services.values().any(|service| {
        deploy(&service.deploy)
            || gates(&service.gates)
            || service.environments.values().any(|o| {
                o.deploy.as_ref().is_some_and(deploy) || o.gates.as_deref().is_some_and(gates)
            })
    }) || catalog.databases.values().any(|db| deploy(&db.migrate))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let catalog = match Catalog::from_toml(text) {
        Ok(catalog) => catalog,
        Err(error) => return check_parse_error(&error, "catalog", text),
    };
    catalog.check().expect("a parsed catalog checks again");
    assert_eq!(
        catalog.promotion_path().len(),
        catalog.environments.len(),
        "the promotion path places every environment"
    );
    for (path, argv) in catalog.commands() {
        assert!(path.starts_with("catalog."), "{path}");
        let _ = argv;
    }
    if has_non_finite(&catalog) {
        return;
    }
    let json = serde_json::to_string(&catalog).expect("a catalog serializes");
    let back: Catalog = serde_json::from_str(&json).expect("a catalog reads back from json");
    assert_eq!(back, catalog, "the catalog changes through json");
    assert_eq!(back.hash(), catalog.hash());
    if let Ok(toml) = toml::to_string(&catalog) {
        let again = Catalog::from_toml(&toml)
            .unwrap_or_else(|error| panic!("a serialized catalog does not parse: {error}\n{toml}"));
        assert_eq!(again, catalog, "the catalog changes through toml");
    }
});
