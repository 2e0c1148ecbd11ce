//! The audit service's settings as the binary reads them: the page cache size
//! (`RAILYARD_AUDIT_CACHE_MB`) is a whole number of MiB, and a bad value says what to give.

use railyard_audit::{AuditConfig, DEFAULT_CACHE_MB, MAX_CACHE_MB, parse_cache_mb};
use railyard_http::Tokens;

#[test]
fn the_cache_size_is_a_whole_number_of_mib() {
    assert_eq!(parse_cache_mb("512").unwrap(), 512);
    assert_eq!(parse_cache_mb(" 64 ").unwrap(), 64);
    assert_eq!(parse_cache_mb("1").unwrap(), 1);
    assert_eq!(
        parse_cache_mb(&MAX_CACHE_MB.to_string()).unwrap(),
        MAX_CACHE_MB
    );
    let config = AuditConfig::new("audit", Tokens::from_entries(Vec::new()).unwrap());
    assert_eq!(config.cache_mb, DEFAULT_CACHE_MB);
}

#[test]
fn a_bad_cache_size_says_what_to_give() {
    for bad in [
        "",
        "0",
        "-1",
        "1.5",
        "512MiB",
        "1g",
        "65537",
        "99999999999999999999",
    ] {
        let error = parse_cache_mb(bad).expect_err(bad).to_string();
        assert_eq!(
            error,
            format!(
                "RAILYARD_AUDIT_CACHE_MB={bad:?}: not a page cache size: give the audit store's page cache in MiB, a whole number from 1 to 65536 (default {DEFAULT_CACHE_MB})"
            ),
            "{bad}"
        );
    }
}
