//! The production NATS configurations of `deploy/nats/` on loopback: [`local_cluster`] copies
//! `cluster-<n>.conf` and `accounts.conf` into a directory with every address, port and store
//! rewritten to free loopback ports and temporary directories, and the TLS files pointed at
//! certificates made for the test ([`TestTls`]); nothing else changed, so a test runs exactly
//! the users, permissions, TLS and JetStream settings that production runs.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cluster::reserve_ports;
use crate::server::workspace_root;
use crate::tls::TestTls;

/// `deploy/nats/` in this workspace.
pub fn deploy_nats_dir() -> PathBuf {
    workspace_root().join("deploy").join("nats")
}

/// Where the `deploy/nats` configurations read their TLS files (`tls.crt`, `tls.key`, `ca.crt`).
pub const DEPLOY_TLS_DIR: &str = "/etc/nats/tls";

/// Every user of `deploy/nats/accounts.conf` with the environment variable holding its password.
pub const DEPLOY_USERS: [&str; 9] = [
    "intake", "planner", "promoter", "audit", "notify", "github", "cdevents", "admin", "sys",
];

/// The environment a `deploy/nats` configuration needs: `RAILYARD_NATS_<USER>_PASSWORD` for
/// every user, each set to [`deploy_password`].
pub fn deploy_env() -> Vec<(String, String)> {
    DEPLOY_USERS
        .iter()
        .map(|user| {
            (
                format!("RAILYARD_NATS_{}_PASSWORD", user.to_uppercase()),
                deploy_password(user),
            )
        })
        .collect()
}

/// The password [`deploy_env`] gives `user`.
pub fn deploy_password(user: &str) -> String {
    format!("test-password-of-{user}")
}

/// Writes `cluster-1.conf` … `cluster-<size>.conf` from `source` (usually
/// [`deploy_nats_dir`]) into `into`, with `accounts.conf` beside them, rewritten for loopback:
/// the client `listen` to `127.0.0.1:<free port>`, the cluster `listen` and `routes` to free
/// loopback route ports, `store_dir` to `into/node-<n>`, every `cert_file`, `key_file` and
/// `ca_file` to `tls`'s files, and the `http` monitoring port removed. Fails when a file lacks
/// one of those settings (client TLS, and route TLS in a cluster), so a changed layout is
/// noticed.
pub fn local_cluster(
    source: &Path,
    into: &Path,
    size: usize,
    tls: &TestTls,
) -> anyhow::Result<Vec<PathBuf>> {
    // One reservation for both kinds, so no port is handed out twice.
    let ports = reserve_ports(2 * size)?;
    let (client_ports, route_ports) = ports.split_at(size);
    let routes = route_ports
        .iter()
        .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
        .collect::<Vec<_>>()
        .join(", ");
    copy_accounts(source, into)?;
    (0..size)
        .map(|index| {
            let name = format!("cluster-{}.conf", index + 1);
            let text = std::fs::read_to_string(source.join(&name))
                .with_context(|| format!("cannot read {}", source.join(&name).display()))?;
            let store = into.join(format!("node-{}", index + 1));
            let rewritten = rewrite(
                &text,
                client_ports[index],
                Some((route_ports[index], &routes)),
                &store,
                tls,
            )
            .with_context(|| name.clone())?;
            let file = into.join(&name);
            std::fs::write(&file, rewritten)
                .with_context(|| format!("cannot write {}", file.display()))?;
            Ok(file)
        })
        .collect()
}

/// Writes `single.conf` from `source` into `into` the same way as [`local_cluster`].
pub fn local_single(source: &Path, into: &Path, tls: &TestTls) -> anyhow::Result<PathBuf> {
    let port = reserve_ports(1)?[0];
    copy_accounts(source, into)?;
    let text = std::fs::read_to_string(source.join("single.conf"))
        .with_context(|| format!("cannot read {}", source.join("single.conf").display()))?;
    let rewritten = rewrite(&text, port, None, &into.join("node-1"), tls).context("single.conf")?;
    let file = into.join("single.conf");
    std::fs::write(&file, rewritten).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

fn copy_accounts(source: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into).with_context(|| format!("cannot create {}", into.display()))?;
    std::fs::copy(source.join("accounts.conf"), into.join("accounts.conf"))
        .with_context(|| format!("cannot copy {}", source.join("accounts.conf").display()))?;
    Ok(())
}

/// Rewrites one node's configuration line by line; `cluster` is its route port and every
/// node's routes.
fn rewrite(
    text: &str,
    client_port: u16,
    cluster: Option<(u16, &str)>,
    store: &Path,
    tls: &TestTls,
) -> anyhow::Result<String> {
    let mut out = Vec::new();
    // Block nesting, to tell the client `tls {}` and `listen` from the cluster's.
    let mut blocks: Vec<&str> = Vec::new();
    let (mut client, mut store_dir, mut route_listen, mut routes) = (false, false, false, false);
    let (mut client_tls, mut route_tls) = (false, false);
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(name) = trimmed.strip_suffix('{') {
            blocks.push(name.trim());
        } else if trimmed.starts_with('}') {
            blocks.pop();
        }
        let in_cluster = blocks.contains(&"cluster");
        let tls_file = [
            ("cert_file:", &tls.cert),
            ("key_file:", &tls.key),
            ("ca_file:", &tls.ca),
        ]
        .into_iter()
        .find(|(key, _)| trimmed.starts_with(key));
        if let Some((key, path)) = tls_file {
            out.push(format!("{indent}{key} \"{}\"", path.display()));
            if in_cluster {
                route_tls = true;
            } else {
                client_tls = true;
            }
        } else if trimmed.starts_with("http:") {
            continue;
        } else if trimmed.starts_with("listen:") && !in_cluster {
            out.push(format!("{indent}listen: 127.0.0.1:{client_port}"));
            client = true;
        } else if trimmed.starts_with("listen:") && in_cluster {
            let (port, _) = cluster.context("a cluster block in a single-node file")?;
            out.push(format!("{indent}listen: 127.0.0.1:{port}"));
            route_listen = true;
        } else if trimmed.starts_with("routes:") {
            let (_, all) = cluster.context("routes in a single-node file")?;
            out.push(format!("{indent}routes: [ {all} ]"));
            routes = true;
        } else if trimmed.starts_with("store_dir:") {
            out.push(format!("{indent}store_dir: \"{}\"", store.display()));
            store_dir = true;
        } else {
            out.push(line.to_owned());
        }
    }
    anyhow::ensure!(client, "no client `listen:` line to rewrite");
    anyhow::ensure!(store_dir, "no `store_dir:` line to rewrite");
    anyhow::ensure!(
        client_tls,
        "no client `tls {{ cert_file: ... }}` to rewrite"
    );
    if cluster.is_some() {
        anyhow::ensure!(route_listen, "no cluster `listen:` line to rewrite");
        anyhow::ensure!(routes, "no cluster `routes:` line to rewrite");
        anyhow::ensure!(
            route_tls,
            "no cluster `tls {{ cert_file: ... }}` to rewrite"
        );
    }
    Ok(out.join("\n") + "\n")
}

/// How often [`on_fresh_ports`] starts over.
const PORT_ATTEMPTS: usize = 3;

/// Runs `start(attempt)` (attempt 0, 1, …) again, at most three times in all, while it fails
/// because a node could not bind a port it was given. [`local_cluster`] and [`local_single`]
/// reserve ports by binding and releasing them, and another process (or an outgoing
/// connection's local port) can take one before nats-server binds it; nats-server then exits
/// with "address already in use". `start` should write its files into a directory of its
/// own per attempt. Any other error is returned at once.
pub async fn on_fresh_ports<T, F, Fut>(mut start: F) -> anyhow::Result<T>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 0;
    loop {
        match start(attempt).await {
            Err(error)
                if attempt + 1 < PORT_ATTEMPTS
                    && format!("{error:#}").contains("address already in use") =>
            {
                eprintln!("a port was taken before nats-server bound it; new ports: {error:#}");
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_files_are_rewritten_for_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TestTls::generate(&dir.path().join("tls")).unwrap();
        let files = local_cluster(&deploy_nats_dir(), dir.path(), 3, &tls).unwrap();
        assert_eq!(files.len(), 3);
        assert!(dir.path().join("accounts.conf").is_file());
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(text.contains("listen: 127.0.0.1:"), "{text}");
            assert!(!text.contains("0.0.0.0"), "{text}");
            assert!(!text.contains("nats-1:"), "{text}");
            assert!(!text.contains("http:"), "{text}");
            assert!(!text.contains("/var/lib"), "{text}");
            assert!(text.contains("include ./accounts.conf"), "{text}");
            assert!(!text.contains(DEPLOY_TLS_DIR), "{text}");
            assert_eq!(
                text.matches(&*tls.cert.display().to_string()).count(),
                2,
                "{text}"
            );
        }
    }

    #[test]
    fn a_file_without_a_store_is_refused() {
        let tls = TestTls {
            ca: "ca.crt".into(),
            cert: "tls.crt".into(),
            key: "tls.key".into(),
        };
        let error = rewrite("listen: 0.0.0.0:4222\n", 1, None, Path::new("/tmp/x"), &tls)
            .unwrap_err()
            .to_string();
        assert!(error.contains("store_dir"), "{error}");
    }

    #[test]
    fn a_file_without_tls_is_refused() {
        let tls = TestTls {
            ca: "ca.crt".into(),
            cert: "tls.crt".into(),
            key: "tls.key".into(),
        };
        let plain = "listen: 0.0.0.0:4222\njetstream {\n  store_dir: /x\n}\n";
        let error = rewrite(plain, 1, None, Path::new("/tmp/x"), &tls)
            .unwrap_err()
            .to_string();
        assert!(error.contains("tls"), "{error}");
    }
}
