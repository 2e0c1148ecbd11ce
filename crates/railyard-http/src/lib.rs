//! What every Railyard HTTP surface shares: bearer-token authentication and roles
//! (INTERFACES §7), the error body `{error, detail, path}` with its status codes (§6), and
//! the ops routes `/healthz`, `/readyz`, `/metrics` with one Prometheus registry per process,
//! and serving with the socket's peer address, from which a request's [`Origin`] is taken.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod follow;
pub mod ops;
pub mod origin;

pub use auth::{Authenticated, Identity, Role, TokenEntry, Tokens, TokensError, generate_token};
pub use error::ApiError;
pub use follow::follow_release_metrics;
pub use ops::{Metrics, ReaderMetrics, ops_router};
pub use origin::{Origin, TRUSTED_PROXIES_ENV, TrustedProxies, TrustedProxiesError, serve};
