//! Railyard's services as processes of the real `railyard` binary on a NATS cluster made from
//! `deploy/nats/` ([`Deployment`]): each connects as its own NATS user, writes its output to a
//! log file, and can be killed (SIGKILL) and started again with the same arguments, store and
//! listener ([`ServiceProcess`]); [`vm_rss_kib`] reads a process's resident memory. The chaos
//! soak (`crates/railyard/examples/soak.rs`) runs on it.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use railyard_nats_server::process_alive;

use crate::deploy::{deploy_env, deploy_nats_dir, deploy_password, local_cluster, on_fresh_ports};
use crate::{NatsCluster, TestTls};

/// The NATS user that creates the topology (`railyard admin init`) and may read everything.
pub const ADMIN_USER: &str = "admin";

/// A deployment on loopback: a JetStream cluster from `deploy/nats/` with TLS, the streams
/// created by `railyard admin init --replicas <size>`, and a directory holding what the
/// services read (`railyard.toml`, `tokens.toml`, the authority keys and `trust`), their
/// stores and their logs.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The `railyard` binary the services run.
    pub bin: PathBuf,
    /// The deployment's directory.
    pub dir: PathBuf,
    /// The cluster's client URLs joined with commas (`tls://127.0.0.1:<port>,...`).
    pub url: String,
    /// The CA certificate the nodes are signed by.
    pub ca: PathBuf,
}

impl Deployment {
    /// Starts a `size`-node cluster from `deploy/nats/` under `dir` (certificates in
    /// `dir/tls`, nodes in `dir/nats-<attempt>`) and creates the topology with `bin admin init
    /// --replicas <size>` as [`ADMIN_USER`].
    pub async fn start(
        bin: &Path,
        dir: &Path,
        size: usize,
    ) -> anyhow::Result<(Deployment, NatsCluster)> {
        ensure!(
            bin.is_file(),
            "{} is not built: run `cargo build -p railyard` first",
            bin.display()
        );
        let tls = TestTls::generate(&dir.join("tls"))?;
        let cluster = on_fresh_ports(|attempt| {
            let tls = &tls;
            async move {
                let nats = dir.join(format!("nats-{attempt}"));
                let configs = local_cluster(&deploy_nats_dir(), &nats, size, tls)?;
                NatsCluster::start_from_configs(
                    configs,
                    deploy_env(),
                    Some(Deployment::admin()),
                    Some(tls.ca.clone()),
                )
                .await
            }
        })
        .await?;
        let deployment = Deployment {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            url: cluster.url(),
            ca: tls.ca.clone(),
        };
        let (user, password) = Deployment::admin();
        let init = Command::new(bin)
            .args(["admin", "init", "--replicas", &size.to_string()])
            .args(["--nats-url", &deployment.url])
            .env("RAILYARD_NATS_USER", user)
            .env("RAILYARD_NATS_PASSWORD", password)
            .env("RAILYARD_NATS_CA", &deployment.ca)
            .output()
            .context("cannot run railyard admin init")?;
        ensure!(
            init.status.success(),
            "railyard admin init: {}{}",
            String::from_utf8_lossy(&init.stdout),
            String::from_utf8_lossy(&init.stderr)
        );
        Ok((deployment, cluster))
    }

    /// The admin user and its password.
    pub fn admin() -> (String, String) {
        (ADMIN_USER.to_owned(), deploy_password(ADMIN_USER))
    }

    /// Makes a signing key per writer (`railyard authority key --writer <w>`) into
    /// `dir/<writer>.key` and lists their public halves in `dir/trust`, which every service
    /// started by [`Deployment::spawn`] trusts.
    pub fn authority_keys(&self, writers: &[&str]) -> anyhow::Result<()> {
        let mut trust = Vec::new();
        for writer in writers {
            let made = Command::new(&self.bin)
                .args(["authority", "key", "--writer", writer, "--out"])
                .arg(self.dir.join(format!("{writer}.key")))
                .output()
                .context("cannot run railyard authority key")?;
            ensure!(made.status.success(), "railyard authority key: {made:?}");
            trust.push(String::from_utf8(made.stdout)?.trim().to_owned());
        }
        std::fs::write(self.dir.join("trust"), trust.join(","))?;
        Ok(())
    }

    /// `dir/<name>`, e.g. a service's store.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts `railyard <args> --listen 127.0.0.1:<free port>` as NATS user `user`, with the
    /// deployment's catalog, tokens, trust and (when `dir/<user>.key` exists) signing key,
    /// plus `env`; its output goes to `dir/<name>.log`.
    pub fn spawn(
        &self,
        name: &str,
        user: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<ServiceProcess> {
        let trust = std::fs::read_to_string(self.dir.join("trust")).unwrap_or_default();
        let key = self.dir.join(format!("{user}.key"));
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let http = format!("127.0.0.1:{port}");
        let mut all_env = vec![
            ("RAILYARD_NATS_URL".to_owned(), self.url.clone()),
            ("RAILYARD_NATS_USER".to_owned(), user.to_owned()),
            ("RAILYARD_NATS_PASSWORD".to_owned(), deploy_password(user)),
            ("RAILYARD_NATS_CA".to_owned(), self.ca.display().to_string()),
            (
                "RAILYARD_CATALOG".to_owned(),
                self.dir.join("railyard.toml").display().to_string(),
            ),
            (
                "RAILYARD_TOKENS_FILE".to_owned(),
                self.dir.join("tokens.toml").display().to_string(),
            ),
            (
                "RAILYARD_AUTHORITY_TRUST".to_owned(),
                trust.trim().to_owned(),
            ),
            (
                "RAILYARD_AUTHORITY_KEY_FILE".to_owned(),
                if key.exists() {
                    key.display().to_string()
                } else {
                    String::new()
                },
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        all_env.extend(env.iter().cloned());
        let mut args = args.to_vec();
        args.extend(["--listen".to_owned(), http.clone()]);
        let log = self.dir.join(format!("{name}.log"));
        let child = start(&self.bin, &args, &all_env, &log)?;
        Ok(ServiceProcess {
            name: name.to_owned(),
            bin: self.bin.clone(),
            args,
            env: all_env,
            child,
            log,
            http,
            started: Instant::now(),
            starts: 1,
        })
    }
}

fn start(
    bin: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Child> {
    let mut out: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    writeln!(out, "--- railyard {}", args.join(" "))?;
    Command::new(bin)
        .args(args)
        .env_remove("RAILYARD_NATS_PASSWORD_FILE")
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {} {args:?}", bin.display()))
}

/// One service process; killed (SIGKILL) and reaped on drop. Every start appends to the same
/// log file, after a line naming the command.
#[derive(Debug)]
pub struct ServiceProcess {
    /// Its name (the log file's name).
    pub name: String,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Child,
    log: PathBuf,
    http: String,
    started: Instant,
    starts: usize,
}

impl ServiceProcess {
    /// The address of its HTTP listener (`/healthz`, `/readyz`, `/metrics`, its routes).
    pub fn http(&self) -> &str {
        &self.http
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process runs (it has not exited, nor been killed).
    pub fn is_running(&self) -> bool {
        process_alive(self.pid())
    }

    /// When the running process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// How many times it was started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    /// Kills it with SIGKILL and reaps it; returns the killed process's id.
    pub fn kill(&mut self) -> u32 {
        let pid = self.pid();
        let _ = self.child.kill();
        let _ = self.child.wait();
        pid
    }

    /// Starts it again with the same arguments, environment, store and listener (killing the
    /// running process first, if any).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            self.kill();
        }
        self.child = start(&self.bin, &self.args, &self.env, &self.log)?;
        self.started = Instant::now();
        self.starts += 1;
        Ok(())
    }

    /// Its resident memory now (`VmRSS`, KiB); `None` when it does not run.
    pub fn rss_kib(&self) -> Option<u64> {
        vm_rss_kib(self.pid())
    }

    /// The anonymous part of its resident memory, KiB ([`rss_anon_kib`]).
    pub fn rss_anon_kib(&self) -> Option<u64> {
        rss_anon_kib(self.pid())
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident memory of process `pid` (`VmRSS` in `/proc/<pid>/status`, KiB); `None` when it
/// does not run.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// The anonymous part of a process's resident memory (`RssAnon` in `/proc/<pid>/status`), KiB:
/// its heap and stacks, without the pages of its binary and files it maps (`RssFile`).
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = vm_rss_kib(std::process::id()).expect("VmRSS of this process");
        assert!(rss > 0);
        assert_eq!(vm_rss_kib(u32::MAX), None);
        let anon = rss_anon_kib(std::process::id()).expect("RssAnon of this process");
        assert!(anon > 0 && anon <= rss, "RssAnon {anon} of VmRSS {rss}");
    }
}
