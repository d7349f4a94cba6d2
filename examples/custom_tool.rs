//! How to add your own tool, resource and prompt to Portcullis with the registry API, then serve
//! them on Streamable HTTP (and HTTP+SSE) exactly as `portcullis serve` does.
//!
//! `cargo run --example custom_tool -- 127.0.0.1:8090`, then point any MCP client at
//! `http://127.0.0.1:8090/mcp`.

use std::sync::Arc;
use std::time::Duration;

use portcullis::Config;
use portcullis::config::RawConfig;
use portcullis_engine::{
    Content, LogLevel, Prompt, PromptMessage, PromptOutput, Registry, Resource, ResourceContents, Tool, ToolError,
    ToolOutput,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("info").init();
    let registry = Arc::new(Registry::new());

    // A tool: a name, a description, a JSON Schema for its arguments (checked before the handler
    // runs; a bad call becomes an `isError` result naming the field) and an async handler.
    registry.add_tool(
        Tool::new("word_count", "Count the words in a text, reporting progress on long inputs")
            .input_schema(json!({
                "type": "object",
                "properties": { "text": { "type": "string", "maxLength": 100000 } },
                "required": ["text"],
                "additionalProperties": false
            }))
            .output_schema(json!({
                "type": "object",
                "properties": { "words": { "type": "integer" } },
                "required": ["words"]
            }))
            .annotations(json!({ "readOnlyHint": true, "openWorldHint": false }))
            .handler(|call| async move {
                let text = call.args["text"].as_str().ok_or(ToolError("text must be a string".into()))?;
                call.ctx.log(LogLevel::Debug, Some("word_count"), json!({ "chars": text.len() })).await;
                // Progress reaches the client only if it sent a progressToken.
                call.ctx.progress(0.0, Some(1.0), Some("counting")).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                let words = text.split_whitespace().count();
                call.ctx.progress(1.0, Some(1.0), Some("done")).await;
                Ok(ToolOutput::structured(json!({ "words": words })))
            })?,
    );

    // A resource the client can read.
    registry.add_resource(
        Resource::new("example://motd", "motd").description("Message of the day").mime_type("text/plain").reader(
            |c| async move { Ok(vec![ResourceContents::text(c.uri, "text/plain", "Ship small, ship often.")]) },
        ),
    );

    // A prompt with one required argument.
    registry.add_prompt(
        Prompt::new("review", "Ask for a code review of a snippet")
            .argument("code", "The code to review", true)
            .handler(|c| async move {
                Ok(PromptOutput {
                    description: None,
                    messages: vec![PromptMessage::user(Content::text(format!(
                        "Review this code:\n\n{}",
                        c.args["code"]
                    )))],
                })
            }),
    );

    let config = Config::resolve(RawConfig::unauthenticated().listening_on(listen.parse()?))?;
    let engine = portcullis::engine(registry, &config, "custom-tool-example");
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        eprintln!("serving on http://{}/mcp", listener.local_addr()?);
        portcullis::serve_http(listener, engine, &config).await?;
        Ok(())
    })
}
