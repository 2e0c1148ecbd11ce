//! Step ids round-trip: whatever a plan builds, the one parser reads back as the same step
//! (property test over names, versions and release ids in their allowed patterns).

use proptest::prelude::*;
use railyard_core::step::{StepId, Target};
use railyard_core::{Action, DatabaseName, EnvName, ReleaseId, ServiceName};

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,62}"
}

fn step() -> impl Strategy<Value = StepId> {
    let env = name().prop_map(|n| EnvName::new(n).unwrap());
    let target = prop_oneof![
        (
            Just(Action::Deploy),
            name().prop_map(|n| Target::Service(ServiceName::new(n).unwrap()))
        ),
        (
            Just(Action::Verify),
            name().prop_map(|n| Target::Service(ServiceName::new(n).unwrap()))
        ),
        (
            Just(Action::Migrate),
            (name(), any::<u32>()).prop_map(|(d, to)| Target::Migration {
                database: DatabaseName::new(d).unwrap(),
                to,
            })
        ),
        (
            Just(Action::Approve),
            "[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
                .prop_map(|r| Target::Release(ReleaseId::new(r).unwrap()))
        ),
        (
            Just(Action::Approve),
            (name(), any::<u32>()).prop_map(|(d, to)| Target::Migration {
                database: DatabaseName::new(d).unwrap(),
                to,
            })
        ),
    ];
    (env, target).prop_map(|(env, (action, target))| StepId::new(env, action, target).unwrap())
}

proptest! {
    #[test]
    fn parse_reads_back_what_display_writes(id in step()) {
        let text = id.to_string();
        let parsed = StepId::parse(&text).unwrap();
        prop_assert_eq!(parsed.as_str(), text.as_str());
        prop_assert_eq!(parsed.env(), id.env());
        prop_assert_eq!(parsed.action(), id.action());
        prop_assert_eq!(parsed.target(), id.target());
        let json = serde_json::to_value(&id).unwrap();
        prop_assert_eq!(json, serde_json::Value::String(text));
    }

    #[test]
    fn parse_never_panics_and_accepts_only_canonical_text(
        text in prop_oneof![
            "[a-z0-9:@_-]{0,40}",
            "[a-zA-Z0-9-]{0,6}:(deploy|verify|migrate|approve|x):[a-zA-Z0-9_@+:-]{0,12}",
        ]
    ) {
        if let Ok(id) = StepId::parse(&text) {
            prop_assert_eq!(id.to_string(), text);
        }
    }
}
