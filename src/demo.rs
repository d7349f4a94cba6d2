//! The demo tools, resources and prompts the embedded default serves: what a team tries first,
//! and the paging pattern (`read_log`) every large-data tool should copy.

use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_engine::{
    Content, Prompt, PromptMessage, PromptOutput, Registry, RegistryError, Resource, ResourceContents,
    ResourceTemplate, Tool, ToolError, ToolOutput,
};
use portcullis_protocol::RpcError;
use serde_json::{Value, json};

/// The bundled sample log `read_log` pages through.
pub const SAMPLE_LOG: &str = include_str!("../assets/sample.log");

const README: &str = "# Portcullis demo\n\nTools: echo, get_time, random_number, read_log (paged).\n\
Resources: this file, the sample log, and one log line per URI via a template.\n";

/// Registers every demo item.
pub fn register(registry: &Registry) -> Result<(), RegistryError> {
    registry.add_tool(echo()?);
    registry.add_tool(get_time()?);
    registry.add_tool(random_number()?);
    registry.add_tool(read_log()?);
    registry.add_resource(
        Resource::new("portcullis://demo/readme", "readme")
            .title("About the demo")
            .description("What the demo server offers")
            .mime_type("text/markdown")
            .reader(|c| async move { Ok(vec![ResourceContents::text(c.uri, "text/markdown", README)]) }),
    );
    registry.add_resource(
        Resource::new("portcullis://demo/sample.log", "sample.log")
            .title("Sample application log")
            .description("500 lines of a made-up service log; read_log pages through it")
            .mime_type("text/plain")
            .reader(|c| async move { Ok(vec![ResourceContents::text(c.uri, "text/plain", SAMPLE_LOG)]) }),
    );
    registry.add_template(
        ResourceTemplate::new("portcullis://demo/sample.log/lines/{line}", "sample-log-line")
            .title("One line of the sample log")
            .description("Line N (1-based) of the sample log")
            .mime_type("text/plain")
            .complete("line", complete_line)
            .reader(|c| async move {
                let line = c.vars.get("line").and_then(|l| l.parse::<usize>().ok());
                match line.and_then(|n| n.checked_sub(1)).and_then(|i| SAMPLE_LOG.lines().nth(i)) {
                    Some(text) => Ok(vec![ResourceContents::text(c.uri, "text/plain", text)]),
                    None => Err(RpcError::new(
                        portcullis_protocol::code::RESOURCE_NOT_FOUND,
                        "no such line in the sample log",
                    )
                    .with_data(json!({ "uri": c.uri }))),
                }
            })?,
    );
    registry.add_prompt(
        Prompt::new("summarize_logs", "Summarize the sample log: errors, warnings and what they suggest")
            .title("Summarize logs")
            .handler(|_| async {
                Ok(PromptOutput {
                    description: Some("Summarize the sample log".into()),
                    messages: vec![
                        PromptMessage::user(Content::resource(ResourceContents::text(
                            "portcullis://demo/sample.log",
                            "text/plain",
                            SAMPLE_LOG,
                        ))),
                        PromptMessage::user(Content::text(
                            "Summarize this log: list the errors and warnings by service and suggest what to check first.",
                        )),
                    ],
                })
            }),
    );
    registry.add_prompt(
        Prompt::new("explain_log_line", "Explain one line of the sample log")
            .title("Explain a log line")
            .argument("line", "Line number, 1-based", true)
            .complete("line", complete_line)
            .handler(|c| async move {
                let n: usize = c.args["line"]
                    .trim()
                    .parse()
                    .map_err(|_| RpcError::invalid_params("line must be a positive integer"))?;
                let text = n
                    .checked_sub(1)
                    .and_then(|i| SAMPLE_LOG.lines().nth(i))
                    .ok_or_else(|| RpcError::invalid_params(format!("the sample log has no line {n}")))?;
                Ok(PromptOutput {
                    description: None,
                    messages: vec![PromptMessage::user(Content::text(format!(
                        "Explain what this log line means and whether it needs attention:\n\n{text}"
                    )))],
                })
            }),
    );
    Ok(())
}

fn complete_line(prefix: &str) -> Vec<String> {
    let total = SAMPLE_LOG.lines().count();
    (1..=total).map(|n| n.to_string()).filter(|n| n.starts_with(prefix)).collect()
}

fn echo() -> Result<Tool, RegistryError> {
    Tool::new("echo", "Echo a message back unchanged")
        .title("Echo")
        .input_schema(json!({
            "type": "object",
            "properties": { "message": { "type": "string", "description": "Text to echo" } },
            "required": ["message"],
            "additionalProperties": false
        }))
        .annotations(json!({ "readOnlyHint": true, "openWorldHint": false }))
        .handler(|call| async move {
            let message = call.args["message"].as_str().unwrap_or_default();
            Ok(ToolOutput::text(message))
        })
}

fn get_time() -> Result<Tool, RegistryError> {
    Tool::new("get_time", "The server's current time in UTC (RFC 3339)")
        .title("Current time")
        .input_schema(json!({ "type": "object", "additionalProperties": false }))
        .annotations(json!({ "readOnlyHint": true, "openWorldHint": false }))
        .handler(|_| async {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| ToolError("the clock is before 1970".into()))?;
            Ok(ToolOutput::text(rfc3339(now.as_secs(), now.subsec_millis())))
        })
}

fn random_number() -> Result<Tool, RegistryError> {
    Tool::new("random_number", "A uniformly random integer between min and max, inclusive")
        .title("Random number")
        .input_schema(json!({
            "type": "object",
            "properties": {
                "min": { "type": "integer", "description": "Lower bound (inclusive)" },
                "max": { "type": "integer", "description": "Upper bound (inclusive)" }
            },
            "required": ["min", "max"],
            "additionalProperties": false
        }))
        .annotations(json!({ "readOnlyHint": true, "idempotentHint": false, "openWorldHint": false }))
        .handler(|call| async move {
            let min = call.args["min"].as_i64().ok_or("min must be an integer between -2^63 and 2^63-1")?;
            let max = call.args["max"].as_i64().ok_or("max must be an integer between -2^63 and 2^63-1")?;
            if min > max {
                return Err(ToolError(format!("min ({min}) must be less than or equal to max ({max})")));
            }
            let n = uniform(min, max).map_err(|e| ToolError(format!("no randomness available: {e}")))?;
            Ok(ToolOutput::text(n.to_string()))
        })
}

fn read_log() -> Result<Tool, RegistryError> {
    Tool::new(
        "read_log",
        "Read the bundled sample log a page at a time. Pass nextOffset back as offset until hasMore is false.",
    )
    .title("Read log (paged)")
    .input_schema(json!({
        "type": "object",
        "properties": {
            "offset": { "type": "integer", "minimum": 0, "default": 0, "description": "First line to return (0-based)" },
            "limit": { "type": "integer", "minimum": 1, "maximum": 100, "default": 20, "description": "Lines per page" }
        },
        "additionalProperties": false
    }))
    .output_schema(json!({
        "type": "object",
        "properties": {
            "data": { "type": "array", "items": { "type": "string" } },
            "nextOffset": { "anyOf": [{ "type": "integer" }, { "type": "null" }] },
            "hasMore": { "type": "boolean" }
        },
        "required": ["data", "nextOffset", "hasMore"]
    }))
    .annotations(json!({ "readOnlyHint": true, "openWorldHint": false }))
    .handler(|call| async move {
        let offset = call.args.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
        let limit = call.args.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize;
        Ok(ToolOutput::structured(page(offset, limit)))
    })
}

/// One page of the sample log.
pub fn page(offset: usize, limit: usize) -> Value {
    let total = SAMPLE_LOG.lines().count();
    let data: Vec<&str> = SAMPLE_LOG.lines().skip(offset).take(limit).collect();
    let end = offset.saturating_add(data.len());
    let has_more = end < total;
    json!({ "data": data, "nextOffset": if has_more { json!(end) } else { Value::Null }, "hasMore": has_more })
}

/// A uniform integer in `[min, max]` from the OS CSPRNG, by rejection sampling (no modulo bias).
fn uniform(min: i64, max: i64) -> Result<i64, getrandom::Error> {
    let span = (max as i128 - min as i128) as u128 + 1;
    if span > u64::MAX as u128 {
        return random_u64().map(|r| r as i64);
    }
    let span = span as u64;
    let zone = u64::MAX - (u64::MAX % span);
    loop {
        let r = random_u64()?;
        if r < zone {
            return Ok((min as i128 + (r % span) as i128) as i64);
        }
    }
}

fn random_u64() -> Result<u64, getrandom::Error> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Formats a Unix time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, Howard Hinnant).
pub fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Registers the seed S001 team's tools (`[demo] team = true`, see `examples/team.toml`): canned
/// Jira, CI/CD and database answers, so roles, scopes, rate limits and audit can be tried with
/// nothing else running.
pub fn register_team(registry: &Registry) -> Result<(), RegistryError> {
    let obj = |props: Value, required: &[&str]| json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false });
    registry.add_tool(
        Tool::new("get_jira_issue", "Read a Jira issue by key (canned demo data)")
            .input_schema(obj(
                json!({ "key": { "type": "string", "pattern": "^[A-Z][A-Z0-9]+-[0-9]+$", "description": "e.g. OPS-42" } }),
                &["key"],
            ))
            .annotations(json!({ "readOnlyHint": true }))
            .handler(|call| async move {
                let key = call.args["key"].as_str().unwrap_or_default().to_owned();
                let issue = json!({ "key": key, "summary": "Checkout latency above SLO", "status": "In Progress",
                    "assignee": "dana", "priority": "High" });
                Ok(ToolOutput::structured(issue))
            })?,
    );
    registry.add_tool(
        Tool::new("create_jira_issue", "Create a Jira issue (canned demo data: nothing is created)")
            .input_schema(obj(
                json!({ "project": { "type": "string", "pattern": "^[A-Z][A-Z0-9]+$" },
                        "summary": { "type": "string", "minLength": 1, "maxLength": 255 },
                        "description": { "type": "string", "maxLength": 10000 } }),
                &["project", "summary"],
            ))
            .handler(|call| async move {
                let project = call.args["project"].as_str().unwrap_or_default();
                Ok(ToolOutput::structured(json!({ "key": format!("{project}-1001"), "created": true })))
            })?,
    );
    registry.add_tool(
        Tool::new("trigger_pipeline", "Trigger a CI/CD pipeline run (canned demo data: nothing runs)")
            .input_schema(obj(
                json!({ "pipeline": { "type": "string", "pattern": "^[a-z0-9-]{1,64}$" },
                        "ref": { "type": "string", "maxLength": 200 } }),
                &["pipeline"],
            ))
            .annotations(json!({ "destructiveHint": false, "idempotentHint": false }))
            .handler(|call| async move {
                let pipeline = call.args["pipeline"].as_str().unwrap_or_default();
                let git_ref = call.args["ref"].as_str().unwrap_or("main");
                Ok(ToolOutput::structured(
                    json!({ "pipeline": pipeline, "ref": git_ref, "run": 4711, "status": "queued" }),
                ))
            })?,
    );
    registry.add_tool(
        Tool::new("query_database", "Run a read-only SQL query (canned demo data)")
            .input_schema(obj(json!({ "sql": { "type": "string", "minLength": 1, "maxLength": 2000 } }), &["sql"]))
            .annotations(json!({ "readOnlyHint": true }))
            .handler(|call| async move {
                let sql = call.args["sql"].as_str().unwrap_or_default().trim_start().to_ascii_lowercase();
                if !sql.starts_with("select") {
                    return Ok(ToolOutput::error("only SELECT statements are allowed"));
                }
                Ok(ToolOutput::structured(json!({ "columns": ["service", "p99_ms"],
                    "rows": [["checkout", 870], ["search", 120], ["auth", 45]] })))
            })?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_walks_the_whole_log() {
        let mut offset = 0;
        let mut lines = 0;
        loop {
            let p = page(offset, 100);
            lines += p["data"].as_array().unwrap().len();
            if !p["hasMore"].as_bool().unwrap() {
                assert!(p["nextOffset"].is_null());
                break;
            }
            offset = p["nextOffset"].as_u64().unwrap() as usize;
        }
        assert_eq!(lines, SAMPLE_LOG.lines().count());
        assert_eq!(page(10_000, 5)["data"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_000_000, 999), "2026-11-18T11:06:40.999Z");
    }

    #[test]
    fn uniform_stays_in_range() {
        for _ in 0..1000 {
            let n = uniform(-3, 3).unwrap();
            assert!((-3..=3).contains(&n));
        }
        assert_eq!(uniform(7, 7).unwrap(), 7);
        uniform(i64::MIN, i64::MAX).unwrap();
    }
}
