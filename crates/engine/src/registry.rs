//! The registry: the one place tools, resources, resource templates and prompts are declared,
//! whoever provides them (demo tools, connectors, later the gateway's upstreams).
//!
//! Declarations are validated when built: tool names follow 2025-11-25 server/tools §Tool Names,
//! input schemas are compiled once (JSON Schema 2020-12 unless `$schema` says otherwise) and kept
//! verbatim for `tools/list`. The catalog is copy-on-write: readers take an `Arc` snapshot and
//! never block writers. Changes notify initialized sessions (`list_changed`).

// `Tool::new(..)` starts a builder: the declaration reads as one expression ending in its handler.
#![allow(clippy::new_ret_no_self)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use portcullis_protocol::{RpcError, write_notification};
use serde_json::{Map, Value, json};

use crate::content::{PromptOutput, ResourceContents, ToolOutput};
use crate::context::RequestContext;
use crate::session::Session;
use crate::template::UriTemplate;

/// A boxed, sendable future: what every handler returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A tool failure the model should see: becomes a result with `isError: true`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolError(pub String);

/// A declaration that cannot be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// The tool name breaks 2025-11-25 server/tools §Tool Names.
    #[error("invalid tool name {0:?}: use 1-128 characters from A-Z a-z 0-9 _ - .")]
    ToolName(String),
    /// The schema is not valid JSON Schema, or not an object schema.
    #[error("invalid {which} of tool {tool:?}: {reason}")]
    Schema {
        /// The tool.
        tool: String,
        /// `inputSchema` or `outputSchema`.
        which: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The URI template is not supported.
    #[error("invalid URI template: {0}")]
    Template(String),
}

/// The arguments of a `tools/call`, validated against the tool's input schema.
#[derive(Debug)]
pub struct ToolCall {
    /// The arguments object (`{}` when the client sent none).
    pub args: Value,
    /// The request's context.
    pub ctx: RequestContext,
}

/// A `resources/read` of a static resource or a template match.
#[derive(Debug)]
pub struct ReadCall {
    /// The requested URI.
    pub uri: String,
    /// Template variables (empty for static resources).
    pub vars: HashMap<String, String>,
    /// The request's context.
    pub ctx: RequestContext,
}

/// A `prompts/get` with its string arguments.
#[derive(Debug)]
pub struct PromptCall {
    /// Arguments by name; every required one is present.
    pub args: HashMap<String, String>,
    /// The request's context.
    pub ctx: RequestContext,
}

type ToolFn = dyn Fn(ToolCall) -> BoxFuture<'static, Result<ToolOutput, ToolError>> + Send + Sync;
type ReadFn = dyn Fn(ReadCall) -> BoxFuture<'static, Result<Vec<ResourceContents>, RpcError>> + Send + Sync;
type PromptFn = dyn Fn(PromptCall) -> BoxFuture<'static, Result<PromptOutput, RpcError>> + Send + Sync;
/// Completion candidates for an argument, given the partial value.
pub(crate) type CompleteFn = dyn Fn(&str) -> Vec<String> + Send + Sync;

/// A registered tool.
pub struct Tool {
    pub(crate) name: String,
    /// The `tools/list` entry, serialized once.
    pub(crate) definition: Box<serde_json::value::RawValue>,
    pub(crate) validator: jsonschema::Validator,
    pub(crate) handler: Arc<ToolFn>,
}

/// Builds a [`Tool`].
pub struct ToolBuilder {
    name: String,
    def: Map<String, Value>,
}

/// A registered static resource.
pub struct Resource {
    pub(crate) uri: String,
    pub(crate) definition: Value,
    pub(crate) reader: Arc<ReadFn>,
}

/// Builds a [`Resource`].
pub struct ResourceBuilder {
    uri: String,
    def: Map<String, Value>,
}

/// A registered resource template.
pub struct ResourceTemplate {
    pub(crate) template: UriTemplate,
    pub(crate) definition: Value,
    pub(crate) reader: Arc<ReadFn>,
    pub(crate) completions: HashMap<String, Arc<CompleteFn>>,
}

/// Builds a [`ResourceTemplate`].
pub struct ResourceTemplateBuilder {
    template: String,
    def: Map<String, Value>,
    completions: HashMap<String, Arc<CompleteFn>>,
}

/// A registered prompt.
pub struct Prompt {
    pub(crate) name: String,
    pub(crate) definition: Value,
    pub(crate) required: Vec<String>,
    pub(crate) handler: Arc<PromptFn>,
    pub(crate) completions: HashMap<String, Arc<CompleteFn>>,
}

/// Builds a [`Prompt`].
pub struct PromptBuilder {
    name: String,
    def: Map<String, Value>,
    arguments: Vec<Value>,
    required: Vec<String>,
    completions: HashMap<String, Arc<CompleteFn>>,
}

/// A snapshot of everything registered.
#[derive(Default)]
pub struct Catalog {
    pub(crate) tools: Vec<Arc<Tool>>,
    pub(crate) resources: Vec<Arc<Resource>>,
    pub(crate) templates: Vec<Arc<ResourceTemplate>>,
    pub(crate) prompts: Vec<Arc<Prompt>>,
    tool_index: HashMap<String, usize>,
    resource_index: HashMap<String, usize>,
    prompt_index: HashMap<String, usize>,
}

/// Tools, resources and prompts, plus the sessions to tell when they change.
#[derive(Default)]
pub struct Registry {
    catalog: RwLock<Arc<Catalog>>,
    /// Initialized sessions, for list-changed and resource-updated notifications. Written by the
    /// engine on initialize and close; read here when something changes.
    sessions: Mutex<HashMap<Arc<str>, Weak<Session>>>,
}

// === impl Tool / ToolBuilder ===

impl Tool {
    /// Starts a tool declaration. Every tool needs a description (clients show it to the model;
    /// conformance `tools-list` requires it).
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> ToolBuilder {
        let name = name.into();
        let mut def = Map::new();
        def.insert("name".into(), Value::String(name.clone()));
        def.insert("description".into(), Value::String(description.into()));
        ToolBuilder { name, def }
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl ToolBuilder {
    /// A human-friendly title.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.def.insert("title".into(), Value::String(title.into()));
        self
    }

    /// The input JSON Schema, kept verbatim (`$schema`, `$defs`, `$ref`, `additionalProperties`).
    /// Defaults to an object schema with no properties.
    #[must_use]
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.def.insert("inputSchema".into(), schema);
        self
    }

    /// The output JSON Schema; results then carry conforming `structuredContent`.
    #[must_use]
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.def.insert("outputSchema".into(), schema);
        self
    }

    /// Tool annotations (`readOnlyHint`, `destructiveHint`, ...), verbatim.
    #[must_use]
    pub fn annotations(mut self, annotations: Value) -> Self {
        self.def.insert("annotations".into(), annotations);
        self
    }

    /// Finishes the declaration with its handler.
    pub fn handler<F, Fut>(mut self, f: F) -> Result<Tool, RegistryError>
    where
        F: Fn(ToolCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ToolOutput, ToolError>> + Send + 'static,
    {
        if !valid_tool_name(&self.name) {
            return Err(RegistryError::ToolName(self.name));
        }
        let input =
            self.def.entry("inputSchema").or_insert_with(|| json!({ "type": "object", "properties": {} })).clone();
        if input.get("type").and_then(Value::as_str) != Some("object") {
            return Err(RegistryError::Schema {
                tool: self.name,
                which: "inputSchema",
                reason: "must be a JSON Schema with \"type\": \"object\"".into(),
            });
        }
        let validator = compile(&input).map_err(|reason| RegistryError::Schema {
            tool: self.name.clone(),
            which: "inputSchema",
            reason,
        })?;
        if let Some(output) = self.def.get("outputSchema") {
            compile(output).map_err(|reason| RegistryError::Schema {
                tool: self.name.clone(),
                which: "outputSchema",
                reason,
            })?;
        }
        let definition = serde_json::value::to_raw_value(&self.def).map_err(|e| RegistryError::Schema {
            tool: self.name.clone(),
            which: "inputSchema",
            reason: e.to_string(),
        })?;
        Ok(Tool { name: self.name, definition, validator, handler: Arc::new(move |call| Box::pin(f(call))) })
    }
}

/// Compiles a schema: the dialect its `$schema` names, else JSON Schema 2020-12
/// (2025-11-25 basic §JSON Schema Usage). Remote `$ref`s are never fetched (no resolver features).
fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    let mut opts = jsonschema::options();
    if schema.get("$schema").is_none() {
        opts = opts.with_draft(jsonschema::Draft::Draft202012);
    }
    opts.build(schema).map_err(|e| e.to_string())
}

fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

// === impl Resource / ResourceBuilder ===

impl Resource {
    /// Starts a static resource declaration.
    pub fn new(uri: impl Into<String>, name: impl Into<String>) -> ResourceBuilder {
        let uri = uri.into();
        let mut def = Map::new();
        def.insert("uri".into(), Value::String(uri.clone()));
        def.insert("name".into(), Value::String(name.into()));
        ResourceBuilder { uri, def }
    }
}

impl ResourceBuilder {
    /// A human-friendly title.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.def.insert("title".into(), Value::String(title.into()));
        self
    }

    /// A description.
    #[must_use]
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.def.insert("description".into(), Value::String(d.into()));
        self
    }

    /// The MIME type.
    #[must_use]
    pub fn mime_type(mut self, m: impl Into<String>) -> Self {
        self.def.insert("mimeType".into(), Value::String(m.into()));
        self
    }

    /// Finishes with the reader.
    pub fn reader<F, Fut>(self, f: F) -> Resource
    where
        F: Fn(ReadCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<ResourceContents>, RpcError>> + Send + 'static,
    {
        Resource { uri: self.uri, definition: Value::Object(self.def), reader: Arc::new(move |c| Box::pin(f(c))) }
    }
}

// === impl ResourceTemplate / ResourceTemplateBuilder ===

impl ResourceTemplate {
    /// Starts a template declaration (`uriTemplate` per RFC 6570).
    pub fn new(uri_template: impl Into<String>, name: impl Into<String>) -> ResourceTemplateBuilder {
        let template = uri_template.into();
        let mut def = Map::new();
        def.insert("uriTemplate".into(), Value::String(template.clone()));
        def.insert("name".into(), Value::String(name.into()));
        ResourceTemplateBuilder { template, def, completions: HashMap::new() }
    }
}

impl ResourceTemplateBuilder {
    /// A human-friendly title.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.def.insert("title".into(), Value::String(title.into()));
        self
    }

    /// A description.
    #[must_use]
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.def.insert("description".into(), Value::String(d.into()));
        self
    }

    /// The MIME type of matching resources.
    #[must_use]
    pub fn mime_type(mut self, m: impl Into<String>) -> Self {
        self.def.insert("mimeType".into(), Value::String(m.into()));
        self
    }

    /// Completion for a template variable (`completion/complete` with `ref/resource`).
    #[must_use]
    pub fn complete(mut self, var: impl Into<String>, f: impl Fn(&str) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.completions.insert(var.into(), Arc::new(f));
        self
    }

    /// Finishes with the reader, which receives the matched variables.
    pub fn reader<F, Fut>(self, f: F) -> Result<ResourceTemplate, RegistryError>
    where
        F: Fn(ReadCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<ResourceContents>, RpcError>> + Send + 'static,
    {
        let template = UriTemplate::parse(&self.template).map_err(|e| RegistryError::Template(e.0))?;
        Ok(ResourceTemplate {
            template,
            definition: Value::Object(self.def),
            reader: Arc::new(move |c| Box::pin(f(c))),
            completions: self.completions,
        })
    }
}

// === impl Prompt / PromptBuilder ===

impl Prompt {
    /// Starts a prompt declaration; the description is required (conformance `prompts-list`).
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> PromptBuilder {
        let name = name.into();
        let mut def = Map::new();
        def.insert("name".into(), Value::String(name.clone()));
        def.insert("description".into(), Value::String(description.into()));
        PromptBuilder { name, def, arguments: Vec::new(), required: Vec::new(), completions: HashMap::new() }
    }
}

impl PromptBuilder {
    /// A human-friendly title.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.def.insert("title".into(), Value::String(title.into()));
        self
    }

    /// Declares an argument.
    #[must_use]
    pub fn argument(mut self, name: impl Into<String>, description: impl Into<String>, required: bool) -> Self {
        let name = name.into();
        if required {
            self.required.push(name.clone());
        }
        self.arguments.push(json!({ "name": name, "description": description.into(), "required": required }));
        self
    }

    /// Completion for an argument (`completion/complete` with `ref/prompt`).
    #[must_use]
    pub fn complete(mut self, arg: impl Into<String>, f: impl Fn(&str) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.completions.insert(arg.into(), Arc::new(f));
        self
    }

    /// Finishes with the handler.
    pub fn handler<F, Fut>(mut self, f: F) -> Prompt
    where
        F: Fn(PromptCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<PromptOutput, RpcError>> + Send + 'static,
    {
        if !self.arguments.is_empty() {
            self.def.insert("arguments".into(), Value::Array(self.arguments));
        }
        Prompt {
            name: self.name,
            definition: Value::Object(self.def),
            required: self.required,
            handler: Arc::new(move |c| Box::pin(f(c))),
            completions: self.completions,
        }
    }
}

// === impl Registry ===

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current catalog.
    pub fn snapshot(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Catalog)) {
        let mut guard = self.catalog.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = Catalog {
            tools: guard.tools.clone(),
            resources: guard.resources.clone(),
            templates: guard.templates.clone(),
            prompts: guard.prompts.clone(),
            ..Catalog::default()
        };
        f(&mut next);
        next.reindex();
        *guard = Arc::new(next);
    }

    /// Adds a tool, replacing one of the same name, and tells sessions the list changed.
    pub fn add_tool(&self, tool: Tool) {
        self.update(|c| {
            c.tools.retain(|t| t.name != tool.name);
            c.tools.push(Arc::new(tool));
        });
        self.broadcast("notifications/tools/list_changed");
    }

    /// Removes a tool by name.
    pub fn remove_tool(&self, name: &str) -> bool {
        let mut removed = false;
        self.update(|c| {
            let before = c.tools.len();
            c.tools.retain(|t| t.name != name);
            removed = c.tools.len() != before;
        });
        if removed {
            self.broadcast("notifications/tools/list_changed");
        }
        removed
    }

    /// Adds a static resource, replacing one with the same URI.
    pub fn add_resource(&self, resource: Resource) {
        self.update(|c| {
            c.resources.retain(|r| r.uri != resource.uri);
            c.resources.push(Arc::new(resource));
        });
        self.broadcast("notifications/resources/list_changed");
    }

    /// Adds a resource template.
    pub fn add_template(&self, template: ResourceTemplate) {
        self.update(|c| {
            c.templates.retain(|t| t.template.as_str() != template.template.as_str());
            c.templates.push(Arc::new(template));
        });
        self.broadcast("notifications/resources/list_changed");
    }

    /// Adds a prompt, replacing one of the same name.
    pub fn add_prompt(&self, prompt: Prompt) {
        self.update(|c| {
            c.prompts.retain(|p| p.name != prompt.name);
            c.prompts.push(Arc::new(prompt));
        });
        self.broadcast("notifications/prompts/list_changed");
    }

    /// Tells every session subscribed to `uri` that it changed (`notifications/resources/updated`).
    pub fn resource_updated(&self, uri: &str) {
        let params = json!({ "uri": uri }).to_string();
        let msg = Bytes::from(write_notification("notifications/resources/updated", &params));
        for s in self.live_sessions() {
            if s.is_subscribed(uri) {
                s.push(msg.clone());
            }
        }
    }

    pub(crate) fn join(&self, session: &Arc<Session>) {
        let mut map = self.lock_sessions();
        // Sessions that went away without leaving (a transport dropped them) are pruned once the
        // map doubles, so it stays within twice the live sessions however many come and go
        // between two notifications.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        map.insert(session.id_arc(), Arc::downgrade(session));
    }

    pub(crate) fn leave(&self, session: &Session) {
        self.lock_sessions().remove(session.id());
    }

    /// Initialized sessions that are still open (for metrics).
    pub fn open_sessions(&self) -> usize {
        let mut map = self.lock_sessions();
        map.retain(|_, w| w.strong_count() > 0);
        map.len()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Weak<Session>>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live_sessions(&self) -> Vec<Arc<Session>> {
        let mut map = self.lock_sessions();
        map.retain(|_, w| w.strong_count() > 0);
        map.values().filter_map(Weak::upgrade).collect()
    }

    fn broadcast(&self, method: &str) {
        let msg = Bytes::from(write_notification(method, "{}"));
        for s in self.live_sessions() {
            if s.is_initialized() {
                s.push(msg.clone());
            }
        }
    }
}

// === impl Catalog ===

impl Catalog {
    fn reindex(&mut self) {
        self.tool_index = self.tools.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        self.resource_index = self.resources.iter().enumerate().map(|(i, r)| (r.uri.clone(), i)).collect();
        self.prompt_index = self.prompts.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
    }

    /// A tool by name.
    pub fn tool(&self, name: &str) -> Option<&Arc<Tool>> {
        self.tool_index.get(name).map(|&i| &self.tools[i])
    }

    /// A static resource by URI.
    pub fn resource(&self, uri: &str) -> Option<&Arc<Resource>> {
        self.resource_index.get(uri).map(|&i| &self.resources[i])
    }

    /// A prompt by name.
    pub fn prompt(&self, name: &str) -> Option<&Arc<Prompt>> {
        self.prompt_index.get(name).map(|&i| &self.prompts[i])
    }

    /// The first template matching `uri`, with its variables.
    pub fn match_template(&self, uri: &str) -> Option<(&Arc<ResourceTemplate>, HashMap<String, String>)> {
        self.templates.iter().find_map(|t| t.template.matches(uri).map(|v| (t, v)))
    }

    /// True when nothing of a kind is registered.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.resources.is_empty() && self.templates.is_empty() && self.prompts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> impl Fn(ToolCall) -> std::future::Ready<Result<ToolOutput, ToolError>> {
        |_| std::future::ready(Ok(ToolOutput::text("ok")))
    }

    #[test]
    fn sessions_that_go_away_without_leaving_are_pruned() {
        let r = Registry::new();
        let kept: Vec<Arc<Session>> = (0..10)
            .map(|_| Arc::new(Session::new(crate::new_session_id(), Arc::new(crate::session::NullOutlet))))
            .collect();
        for s in &kept {
            r.join(s);
        }
        for _ in 0..100_000 {
            // Joined, then dropped by its transport without `leave` (a refused or abandoned one).
            r.join(&Arc::new(Session::new(crate::new_session_id(), Arc::new(crate::session::NullOutlet))));
        }
        let held = r.lock_sessions().len();
        assert!(held <= 2048, "{held} entries held for 10 live sessions");
        assert_eq!(r.open_sessions(), 10);
    }

    #[test]
    fn tool_names_follow_the_spec() {
        assert!(Tool::new("get_time.v2-beta", "d").handler(noop()).is_ok());
        for bad in ["", "has space", "comma,", &"x".repeat(129)] {
            assert_eq!(Tool::new(bad, "d").handler(noop()).err(), Some(RegistryError::ToolName(bad.to_owned())));
        }
    }

    #[test]
    fn schemas_are_checked_and_kept_verbatim() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": { "a": { "type": "string" } },
            "properties": { "x": { "$ref": "#/$defs/a" } },
            "additionalProperties": false
        });
        let tool = Tool::new("t", "d").input_schema(schema.clone()).handler(noop()).unwrap();
        let def: Value = serde_json::from_str(tool.definition.get()).unwrap();
        assert_eq!(def["inputSchema"], schema);
        assert!(tool.validator.is_valid(&json!({ "x": "s" })));
        assert!(!tool.validator.is_valid(&json!({ "x": 1 })));
        assert!(!tool.validator.is_valid(&json!({ "y": "s" })));

        let err = Tool::new("t", "d").input_schema(json!({ "type": "string" })).handler(noop());
        assert!(matches!(err, Err(RegistryError::Schema { .. })));
        let err = Tool::new("t", "d").input_schema(json!({ "type": "object", "minProperties": "x" })).handler(noop());
        assert!(matches!(err, Err(RegistryError::Schema { .. })));
    }

    #[test]
    fn replacing_a_tool_keeps_one_entry() {
        let r = Registry::new();
        r.add_tool(Tool::new("a", "one").handler(noop()).unwrap());
        r.add_tool(Tool::new("a", "two").handler(noop()).unwrap());
        let c = r.snapshot();
        assert_eq!(c.tools.len(), 1);
        assert!(c.tool("a").unwrap().definition.get().contains("two"));
        assert!(r.remove_tool("a"));
        assert!(r.snapshot().tool("a").is_none());
    }
}
