//! Contract version ranges (`N`, `N..=M`, `>=N`): parsing from text and from JSON, printing,
//! and the set operations the planner relies on. Input: one or two ranges, a line each.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_core::Range;

fn parse(text: &str) -> Option<Range> {
    let parsed = text.parse::<Range>();
    // The JSON string form (release files, customData) reads the same.
    let json = serde_json::to_string(text).expect("a string serializes");
    assert_eq!(
        serde_json::from_str::<Range>(&json).ok(),
        parsed.as_ref().ok().copied(),
        "{text:?} parses differently from json"
    );
    let range = match parsed {
        Ok(range) => range,
        Err(error) => {
            assert!(error.to_string().contains("is not a version range"));
            return None;
        }
    };
    let printed = range.to_string();
    assert_eq!(
        printed.parse::<Range>(),
        Ok(range),
        "{printed:?} does not read back"
    );
    assert_eq!(
        serde_json::to_string(&range).unwrap(),
        format!("{printed:?}")
    );
    assert!(
        range.hi.is_none_or(|hi| range.lo <= hi),
        "{range:?} is empty"
    );
    assert!(range.contains(range.lo));
    if let Some(hi) = range.hi {
        assert!(range.contains(hi));
        assert!(hi == u32::MAX || !range.contains(hi + 1));
    }
    assert!(range.lo == 0 || !range.contains(range.lo - 1));
    assert!(range.intersects(&range) && range.covers(&range));
    Some(range)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(2, '\n');
    let a = lines.next().and_then(parse);
    let b = lines.next().and_then(parse);
    if let (Some(a), Some(b)) = (a, b) {
        assert_eq!(
            a.intersects(&b),
            b.intersects(&a),
            "intersection is symmetric"
        );
        if a.covers(&b) {
            assert!(a.intersects(&b), "{a:?} covers {b:?} without meeting it");
            assert!(a.contains(b.lo));
            if b.covers(&a) {
                assert_eq!(a, b, "ranges that cover each other are equal");
            }
        }
        // A shared version exists exactly when they intersect.
        let lo = a.lo.max(b.lo);
        assert_eq!(a.intersects(&b), a.contains(lo) && b.contains(lo));
    }
});
