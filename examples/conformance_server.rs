//! The fixture server for the official MCP conformance suite: exactly the tools, resources and
//! prompts its server scenarios call (research spec.md §2.3), on Streamable HTTP with auth off.
//!
//! `cargo run --release --example conformance_server -- --listen 127.0.0.1:3555`

use std::sync::Arc;
use std::time::Duration;

use portcullis::Config;
use portcullis::config::RawConfig;
use portcullis_engine::{
    Content, LogLevel, Prompt, PromptMessage, PromptOutput, Registry, RegistryError, Resource, ResourceContents,
    ResourceTemplate, Tool, ToolOutput,
};
use serde_json::json;

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:3555".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().ok_or_else(|| anyhow::anyhow!("--listen needs an address"))?,
            other => anyhow::bail!("unknown argument {other:?}; usage: conformance_server [--listen ADDR]"),
        }
    }
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").init();
    let config = Config::resolve(RawConfig::unauthenticated().listening_on(listen.parse()?))?;
    let registry = Arc::new(Registry::new());
    register(&registry)?;
    let engine = portcullis::engine(registry.clone(), &config, "portcullis-conformance-fixtures");
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        eprintln!("conformance fixtures on http://{}/mcp", listener.local_addr()?);
        // The watched resource changes every 3 s, like the reference server's.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3));
            loop {
                tick.tick().await;
                registry.resource_updated("test://watched-resource");
            }
        });
        portcullis::serve_http(listener, engine, &config).await?;
        Ok(())
    })
}

fn register(r: &Registry) -> Result<(), RegistryError> {
    let empty = || json!({ "type": "object", "properties": {} });
    r.add_tool(
        Tool::new("test_simple_text", "Tests simple text content response")
            .input_schema(empty())
            .handler(|_| async { Ok(ToolOutput::text("This is a simple text response for testing.")) })?,
    );
    r.add_tool(
        Tool::new("test_image_content", "Tests image content response")
            .handler(|_| async { Ok(ToolOutput::with_content(vec![Content::image(PNG, "image/png")])) })?,
    );
    r.add_tool(
        Tool::new("test_audio_content", "Tests audio content response")
            .handler(|_| async { Ok(ToolOutput::with_content(vec![Content::audio(WAV, "audio/wav")])) })?,
    );
    r.add_tool(Tool::new("test_embedded_resource", "Tests embedded resource content response").handler(|_| async {
        Ok(ToolOutput::with_content(vec![Content::resource(ResourceContents::text(
            "test://embedded-resource",
            "text/plain",
            "This is an embedded resource content.",
        ))]))
    })?);
    r.add_tool(
        Tool::new("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)")
            .handler(|_| async {
                Ok(ToolOutput::with_content(vec![
                    Content::text("Multiple content types test:"),
                    Content::image(PNG, "image/png"),
                    Content::resource(ResourceContents::text(
                        "test://mixed-content-resource",
                        "application/json",
                        json!({ "test": "data", "value": 123 }).to_string(),
                    )),
                ]))
            })?,
    );
    r.add_tool(Tool::new("test_tool_with_logging", "Tests tool that emits log messages during execution").handler(
        |call| async move {
            for (i, msg) in
                ["Tool execution started", "Tool processing data", "Tool execution completed"].iter().enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                call.ctx.log(LogLevel::Info, Some("conformance"), json!(msg)).await;
            }
            Ok(ToolOutput::text("Tool with logging executed successfully"))
        },
    )?);
    r.add_tool(Tool::new("test_tool_with_progress", "Tests tool that reports progress notifications").handler(
        |call| async move {
            for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                call.ctx.progress(p, Some(100.0), Some(&format!("Completed step {p} of 100"))).await;
            }
            let token = call.ctx.progress_token().map(ToString::to_string).unwrap_or_default();
            Ok(ToolOutput::text(token))
        },
    )?);
    r.add_tool(
        Tool::new("test_error_handling", "Tests error response handling")
            .handler(|_| async { Err("This tool intentionally returns an error for testing".into()) })?,
    );
    r.add_tool(
        Tool::new(
            "test_reconnection",
            "Tests SSE stream disconnection and client reconnection (SEP-1699): the server closes the stream mid-call",
        )
        .handler(|call| async move {
            call.ctx.close_stream().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(ToolOutput::text(
                "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
            ))
        })?,
    );
    r.add_tool(
        Tool::new("test_sampling", "Tests server-initiated sampling (LLM completion request)")
            .input_schema(json!({
                "type": "object",
                "properties": { "prompt": { "type": "string", "description": "The prompt to send to the LLM" } },
                "required": ["prompt"]
            }))
            .handler(|call| async move {
                let params = json!({
                    "messages": [{ "role": "user", "content": { "type": "text", "text": call.args["prompt"] } }],
                    "maxTokens": 100
                });
                let text = match call.ctx.request("sampling/createMessage", &params).await {
                    Ok(res) => format!("LLM response: {}", res["content"]["text"].as_str().unwrap_or("No response")),
                    Err(e) => format!("Sampling not supported or error: {}", e.message),
                };
                Ok(ToolOutput::text(text))
            })?,
    );
    r.add_tool(
        Tool::new("test_elicitation", "Tests server-initiated elicitation (user input request)")
            .input_schema(json!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "The message to show the user" } },
                "required": ["message"]
            }))
            .handler(|call| async move {
                let params = json!({
                    "message": call.args["message"],
                    "requestedSchema": {
                        "type": "object",
                        "properties": {
                            "username": { "type": "string", "description": "User's response" },
                            "email": { "type": "string", "description": "User's email address" }
                        },
                        "required": ["username", "email"]
                    }
                });
                Ok(ToolOutput::text(elicit_text(call.ctx.request("elicitation/create", &params).await)))
            })?,
    );
    r.add_tool(Tool::new("test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034").handler(
        |call| async move {
            let params = json!({
                "message": "Please review and update the form fields with defaults",
                "requestedSchema": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string", "description": "User name", "default": "John Doe" },
                        "age": { "type": "integer", "description": "User age", "default": 30 },
                        "score": { "type": "number", "description": "User score", "default": 95.5 },
                        "status": { "type": "string", "description": "User status", "enum": ["active", "inactive", "pending"], "default": "active" },
                        "verified": { "type": "boolean", "description": "Verification status", "default": true }
                    },
                    "required": []
                }
            });
            Ok(ToolOutput::text(elicit_text(call.ctx.request("elicitation/create", &params).await)))
        },
    )?);
    r.add_tool(Tool::new("test_elicitation_sep1330_enums", "Tests elicitation with enum schema improvements per SEP-1330").handler(
        |call| async move {
            let params = json!({
                "message": "Please select options from the enum fields",
                "requestedSchema": {
                    "type": "object",
                    "properties": {
                        "untitledSingle": { "type": "string", "description": "Select one option", "enum": ["option1", "option2", "option3"] },
                        "titledSingle": { "type": "string", "description": "Select one option with titles", "oneOf": [
                            { "const": "value1", "title": "First Option" },
                            { "const": "value2", "title": "Second Option" },
                            { "const": "value3", "title": "Third Option" }
                        ] },
                        "legacyEnum": { "type": "string", "description": "Select one option (legacy)", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"] },
                        "untitledMulti": { "type": "array", "description": "Select multiple options", "minItems": 1, "maxItems": 3, "items": { "type": "string", "enum": ["option1", "option2", "option3"] } },
                        "titledMulti": { "type": "array", "description": "Select multiple options with titles", "minItems": 1, "maxItems": 3, "items": { "anyOf": [
                            { "const": "value1", "title": "First Choice" },
                            { "const": "value2", "title": "Second Choice" },
                            { "const": "value3", "title": "Third Choice" }
                        ] } }
                    },
                    "required": []
                }
            });
            Ok(ToolOutput::text(elicit_text(call.ctx.request("elicitation/create", &params).await)))
        },
    )?);
    r.add_tool(
        Tool::new("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)")
            .input_schema(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": { "address": { "type": "object", "properties": { "street": { "type": "string" }, "city": { "type": "string" } } } },
                "properties": { "name": { "type": "string" }, "address": { "$ref": "#/$defs/address" } },
                "additionalProperties": false
            }))
            .handler(|call| async move { Ok(ToolOutput::text(format!("JSON Schema 2020-12 tool called with: {}", call.args))) })?,
    );

    r.add_resource(
        Resource::new("test://static-text", "static-text")
            .title("Static Text Resource")
            .description("A static text resource for testing")
            .mime_type("text/plain")
            .reader(|c| async move {
                Ok(vec![ResourceContents::text(
                    c.uri,
                    "text/plain",
                    "This is the content of the static text resource.",
                )])
            }),
    );
    r.add_resource(
        Resource::new("test://static-binary", "static-binary")
            .title("Static Binary Resource")
            .description("A static binary resource (image) for testing")
            .mime_type("image/png")
            .reader(|c| async move { Ok(vec![ResourceContents::blob(c.uri, "image/png", PNG)]) }),
    );
    r.add_resource(
        Resource::new("test://watched-resource", "watched-resource")
            .title("Watched Resource")
            .description("A resource that auto-updates every 3 seconds")
            .mime_type("text/plain")
            .reader(
                |c| async move { Ok(vec![ResourceContents::text(c.uri, "text/plain", "Watched resource content")]) },
            ),
    );
    r.add_template(
        ResourceTemplate::new("test://template/{id}/data", "template")
            .title("Resource Template")
            .description("A resource template with parameter substitution")
            .mime_type("application/json")
            .reader(|c| async move {
                let id = c.vars.get("id").cloned().unwrap_or_default();
                let text = json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") }).to_string();
                Ok(vec![ResourceContents::text(c.uri, "application/json", text)])
            })?,
    );

    r.add_prompt(
        Prompt::new("test_simple_prompt", "A simple prompt without arguments").title("Simple Test Prompt").handler(
            |_| async {
                Ok(PromptOutput {
                    description: None,
                    messages: vec![PromptMessage::user(Content::text("This is a simple prompt for testing."))],
                })
            },
        ),
    );
    r.add_prompt(
        Prompt::new("test_prompt_with_arguments", "A prompt with required arguments")
            .title("Prompt With Arguments")
            .argument("arg1", "First test argument", true)
            .argument("arg2", "Second test argument", true)
            .complete("arg1", |v| {
                ["test", "testing", "tested"].iter().filter(|s| s.starts_with(v)).map(|s| s.to_string()).collect()
            })
            .handler(|c| async move {
                let text = format!("Prompt with arguments: arg1='{}', arg2='{}'", c.args["arg1"], c.args["arg2"]);
                Ok(PromptOutput { description: None, messages: vec![PromptMessage::user(Content::text(text))] })
            }),
    );
    r.add_prompt(
        Prompt::new("test_prompt_with_embedded_resource", "A prompt that includes an embedded resource")
            .title("Prompt With Embedded Resource")
            .argument("resourceUri", "URI of the resource to embed", true)
            .handler(|c| async move {
                let uri = c.args["resourceUri"].clone();
                Ok(PromptOutput {
                    description: None,
                    messages: vec![
                        PromptMessage::user(Content::resource(ResourceContents::text(
                            uri,
                            "text/plain",
                            "Embedded resource content for testing.",
                        ))),
                        PromptMessage::user(Content::text("Please process the embedded resource above.")),
                    ],
                })
            }),
    );
    r.add_prompt(
        Prompt::new("test_prompt_with_image", "A prompt that includes image content")
            .title("Prompt With Image")
            .handler(|_| async {
                Ok(PromptOutput {
                    description: None,
                    messages: vec![
                        PromptMessage::user(Content::image(PNG, "image/png")),
                        PromptMessage::user(Content::text("Please analyze the image above.")),
                    ],
                })
            }),
    );
    Ok(())
}

fn elicit_text(result: Result<serde_json::Value, portcullis_protocol::RpcError>) -> String {
    match result {
        Ok(r) => {
            format!("User response: action={}, content={}", r["action"].as_str().unwrap_or("unknown"), r["content"])
        }
        Err(e) => format!("Elicitation not supported or error: {}", e.message),
    }
}
