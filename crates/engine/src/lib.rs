//! The MCP engine: the registry of tools, resources and prompts, protocol sessions, and the
//! dispatch of JSON-RPC messages to handlers.
//!
//! Transports hand the engine parsed messages and a place to send what handlers emit; the engine
//! hands back serialized responses. It never touches sockets, HTTP status codes or the
//! environment.

pub mod audit;
mod content;
mod context;
mod dispatch;
pub mod guard;
pub mod policy;
mod principal;
pub mod ratelimit;
mod registry;
mod session;
mod template;

pub use audit::{AuditEvent, AuditUnavailable, Auditor, MAX_TEXT, capped};
pub use content::{Content, PromptMessage, PromptOutput, ResourceContents, ToolOutput};
pub use context::{Outbound, RequestContext, Sink};
pub use dispatch::{Admission, Dispatch, Engine, EngineOptions, ServerInfo};
pub use guard::{Guards, InjectionMode};
pub use policy::{Decision, Kind, Policy};
pub use principal::{AuthFailure, AuthMethod, Principal, TokenVerifier};
pub use ratelimit::{Limited, RateLimiter};
pub use registry::{
    BoxFuture, Catalog, Prompt, PromptBuilder, PromptCall, ReadCall, Registry, RegistryError, Resource,
    ResourceBuilder, ResourceTemplate, ResourceTemplateBuilder, Tool, ToolBuilder, ToolCall, ToolError,
};
pub use session::{LogLevel, Negotiated, NullOutlet, Outlet, Session, new_session_id};
pub use template::{TemplateError, UriTemplate};

impl From<String> for ToolError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ToolError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}
