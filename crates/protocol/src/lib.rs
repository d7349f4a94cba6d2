//! The wire: JSON-RPC 2.0 framing and the MCP protocol versions, error codes and limits that every
//! transport shares.
//!
//! This crate owns parsing a request body into borrowed messages (params stay raw `&RawValue`, so
//! the hot path never builds a typed tree it does not need) and writing responses. It does no I/O,
//! has no async and knows nothing of sessions, tools or HTTP.

mod depth;
mod error;
mod jsonrpc;
mod version;

pub use depth::{DepthError, check_depth};
pub use error::{RpcError, code};
pub use jsonrpc::{
    Body, Message, Notification, ParseError, Request, RequestId, Response, parse_body, write_error, write_notification,
    write_request, write_result,
};
pub use version::{MODERN_VERSIONS, ProtocolVersion};
