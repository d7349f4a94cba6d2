//! What handlers return: tool results, content blocks, resource contents and prompt messages, in
//! the shapes of 2025-11-25 schema.ts. Only serialization lives here.

use serde::Serialize;
use serde_json::Value;

/// One content block of a tool result or prompt message.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A base64 image.
    Image {
        /// Base64 bytes.
        data: String,
        /// e.g. `image/png`.
        #[serde(rename = "mimeType")]
        mime_type: String,
    },
    /// A base64 audio clip.
    Audio {
        /// Base64 bytes.
        data: String,
        /// e.g. `audio/wav`.
        #[serde(rename = "mimeType")]
        mime_type: String,
    },
    /// An embedded resource.
    Resource {
        /// The resource's contents.
        resource: ResourceContents,
    },
    /// A link the client may read with `resources/read`.
    ResourceLink {
        /// The resource URI.
        uri: String,
        /// Display name.
        name: String,
        /// Optional MIME type.
        #[serde(rename = "mimeType", skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
    },
}

/// The contents of a resource: text or a base64 blob.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceContents {
    /// The URI these contents belong to.
    pub uri: String,
    /// MIME type, if known.
    #[serde(rename = "mimeType", skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Text contents (exclusive with `blob`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Base64 contents (exclusive with `text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

/// The result of `tools/call`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolOutput {
    /// Unstructured content for the model.
    pub content: Vec<Content>,
    /// Structured result, conforming to the tool's `outputSchema` when it has one.
    #[serde(rename = "structuredContent", skip_serializing_if = "Option::is_none")]
    pub structured: Option<Value>,
    /// A tool-level failure the model should see (not a protocol error).
    #[serde(rename = "isError", skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// One message of a prompt.
#[derive(Debug, Clone, Serialize)]
pub struct PromptMessage {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// The message content.
    pub content: Content,
}

/// The result of `prompts/get`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PromptOutput {
    /// Optional description of this rendering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The messages.
    pub messages: Vec<PromptMessage>,
}

// === impl Content ===

impl Content {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// An image block from base64 data.
    pub fn image(data: impl Into<String>, mime_type: impl Into<String>) -> Self {
        Self::Image { data: data.into(), mime_type: mime_type.into() }
    }

    /// An audio block from base64 data.
    pub fn audio(data: impl Into<String>, mime_type: impl Into<String>) -> Self {
        Self::Audio { data: data.into(), mime_type: mime_type.into() }
    }

    /// An embedded resource block.
    pub fn resource(resource: ResourceContents) -> Self {
        Self::Resource { resource }
    }
}

// === impl ResourceContents ===

impl ResourceContents {
    /// Text contents.
    pub fn text(uri: impl Into<String>, mime_type: impl Into<String>, text: impl Into<String>) -> Self {
        Self { uri: uri.into(), mime_type: Some(mime_type.into()), text: Some(text.into()), blob: None }
    }

    /// Binary contents, already base64.
    pub fn blob(uri: impl Into<String>, mime_type: impl Into<String>, base64: impl Into<String>) -> Self {
        Self { uri: uri.into(), mime_type: Some(mime_type.into()), text: None, blob: Some(base64.into()) }
    }
}

// === impl ToolOutput ===

impl ToolOutput {
    /// A result with one text block.
    pub fn text(text: impl Into<String>) -> Self {
        Self { content: vec![Content::text(text)], ..Self::default() }
    }

    /// A tool error the model can read and act on (2025-11-25 server/tools §Error Handling).
    pub fn error(message: impl Into<String>) -> Self {
        Self { content: vec![Content::text(message)], structured: None, is_error: true }
    }

    /// A structured result; the JSON text is also given as a text block for older clients
    /// (2025-06-18 server/tools §Structured Content).
    pub fn structured(value: Value) -> Self {
        let text = value.to_string();
        Self { content: vec![Content::text(text)], structured: Some(value), is_error: false }
    }

    /// Builder: content blocks.
    pub fn with_content(content: Vec<Content>) -> Self {
        Self { content, ..Self::default() }
    }
}

// === impl PromptMessage ===

impl PromptMessage {
    /// A user message.
    pub fn user(content: Content) -> Self {
        Self { role: "user", content }
    }

    /// An assistant message.
    pub fn assistant(content: Content) -> Self {
        Self { role: "assistant", content }
    }
}
