//! The one Railyard binary: `railyard <service>` runs a service, `railyard dev` runs every
//! service in one process with an embedded NATS, and the rest is the operator CLI. Thin by
//! design: everything is in the library (`lib.rs`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    railyard::main()
}
