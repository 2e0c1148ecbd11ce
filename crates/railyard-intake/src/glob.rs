//! The globs of `policy.allowed_sources`: `*` matches any run of characters (slashes
//! included), `?` one character, everything else itself.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_sources_and_repositories() {
        assert!(matches(
            "https://github.com/acme/*",
            "https://github.com/acme/orders-api"
        ));
        assert!(matches("/clusters/*", "/clusters/eu/prod"));
        assert!(matches("*", ""));
        assert!(matches("a?c", "abc"));
        assert!(!matches(
            "https://github.com/acme/*",
            "https://github.com/evil/acme"
        ));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*orders*", "https://x/orders-api"));
        assert!(!matches("exact", "exact-not"));
    }
}
