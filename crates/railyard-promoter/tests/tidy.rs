//! House rules of the promoter that the compiler does not check (issue 15, item 5): the modules
//! a step is made of are handed the parts of the worker they use, never the whole `Ctx`
//! (ARCHITECTURE.md's invariant), and no function answers `Result<Result<..>>`.

use std::path::PathBuf;

fn source(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn a_steps_modules_do_not_take_the_workers_ctx() {
    let modules = [
        "lease.rs",
        "cache.rs",
        "recorder.rs",
        "revalidate.rs",
        "strategy.rs",
        "verify.rs",
        "deployed.rs",
    ];
    let reaching: Vec<&str> = modules
        .into_iter()
        .filter(|file| {
            let text = source(file);
            text.contains("crate::ctx") || text.contains("Ctx")
        })
        .collect();
    assert!(
        reaching.is_empty(),
        "these modules take Ctx; hand them the parts they use instead: {reaching:?}"
    );
}

#[test]
fn no_function_answers_a_result_of_a_result() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut nested = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read src") {
        let path = entry.expect("read src").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read a source file");
            if text.contains("Result<Result<") || text.contains("Ok(Ok(") {
                nested.push(path.display().to_string());
            }
        }
    }
    assert!(
        nested.is_empty(),
        "a Result of a Result hides which failure is which; name the cases with an enum: {nested:?}"
    );
}
