//! The inventory parser (`inventory.json` of `railyard plan`): `Inventory::from_json` on any
//! text. An inventory that parses has valid running versions and artifacts and reads back
//! unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_core::{Inventory, check_artifact, check_version};
use railyard_fuzz::check_parse_error;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let inventory = match Inventory::from_json(text) {
        Ok(inventory) => inventory,
        Err(error) => return check_parse_error(&error, "inventory", text),
    };
    for env in inventory.0.values() {
        for running in env.services.values() {
            check_version(&running.version).expect("a running version is valid");
            if let Some(artifact) = &running.artifact {
                check_artifact(artifact).expect("a running artifact is valid");
            }
        }
    }
    let json = serde_json::to_string(&inventory).expect("an inventory serializes");
    let back = Inventory::from_json(&json)
        .unwrap_or_else(|error| panic!("an inventory's json does not parse: {error}\n{json}"));
    assert_eq!(back, inventory, "the inventory changes through json");
});
