//! Transports: bytes on a socket or a pipe in, MCP messages to the engine, responses out.
//!
//! - [`http`]: Streamable HTTP (2025-11-25 basic/transports) on one endpoint — POST, GET,
//!   DELETE, JSON or SSE responses, sessions, resumable streams — plus the 2024-11-05 HTTP+SSE
//!   transport (`GET /sse`, `POST /message`), DNS-rebinding protection and graceful shutdown.
//! - [`stdio`]: newline-delimited JSON-RPC on stdin/stdout.
//!
//! The library takes a bound listener and a shutdown signal; it never binds ports or reads the
//! environment (the binary does). HTTP statuses for failures are chosen in one place, `wire.rs`.

mod conn;
pub mod http;
pub mod stdio;

mod guard;
mod legacy;
mod sse;
mod store;
mod wire;

pub use conn::ConnOptions;
pub use guard::OriginPolicy;
pub use http::{ExtraRoutes, HttpAuth, HttpOptions, router, serve};
pub use stdio::StdioOptions;
pub use store::{HttpSession, MemoryStore, SessionStore, StoreFull};
