//! RFC 6570 URI templates, the subset resource templates use for matching: literals, simple
//! `{var}` (level 1) and reserved `{+var}` (level 2) expressions, with comma lists of names
//! refused at compile time. Matching a URI yields the variables, percent-decoded.

use std::collections::HashMap;

/// A compiled URI template.
#[derive(Debug, Clone)]
pub struct UriTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// A variable; `reserved` (`{+x}`) values may contain `/`, `?` and `#`.
    Var {
        name: String,
        reserved: bool,
    },
}

/// A template that is not a supported RFC 6570 form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl UriTemplate ===

impl UriTemplate {
    /// Compiles `source`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close =
                rest[open..].find('}').ok_or_else(|| TemplateError(format!("unclosed '{{' in template {source:?}")))?;
            let expr = &rest[open + 1..open + close];
            let (reserved, name) = match expr.strip_prefix('+') {
                Some(n) => (true, n),
                None => (false, expr),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TemplateError(format!(
                    "unsupported expression {{{expr}}} in template {source:?}: only {{name}} and {{+name}} are supported"
                )));
            }
            if matches!(parts.last(), Some(Part::Var { .. })) {
                return Err(TemplateError(format!("adjacent variables in template {source:?} are ambiguous")));
            }
            parts.push(Part::Var { name: name.to_owned(), reserved });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { source: source.to_owned(), parts })
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The variable names, in order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var { name, .. } => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Matches `uri` against the template, returning the decoded variables.
    pub fn matches(&self, uri: &str) -> Option<HashMap<String, String>> {
        let mut vars = HashMap::new();
        let mut rest = uri;
        let mut i = 0;
        while i < self.parts.len() {
            match &self.parts[i] {
                Part::Literal(lit) => rest = rest.strip_prefix(lit.as_str())?,
                Part::Var { name, reserved } => {
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(next)) => rest.find(next.as_str())?,
                        _ => rest.len(),
                    };
                    let raw = &rest[..end];
                    let value = percent_decode(raw)?;
                    // Checked after decoding too: `%2F` must not smuggle a `/` into a simple variable.
                    if raw.is_empty() || (!reserved && value.contains(['/', '?', '#'])) {
                        return None;
                    }
                    vars.insert(name.clone(), value);
                    rest = &rest[end..];
                }
            }
            i += 1;
        }
        rest.is_empty().then_some(vars)
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_simple_and_reserved_variables() {
        let t = UriTemplate::parse("test://template/{id}/data").unwrap();
        assert_eq!(t.matches("test://template/123/data").unwrap()["id"], "123");
        assert!(t.matches("test://template/1/2/data").is_none());
        assert!(t.matches("test://template//data").is_none());
        assert!(t.matches("test://template/123/data/x").is_none());
        assert_eq!(t.matches("test://template/a%20b/data").unwrap()["id"], "a b");

        let t = UriTemplate::parse("file:///{+path}").unwrap();
        assert_eq!(t.matches("file:///etc/hosts").unwrap()["path"], "etc/hosts");
        assert_eq!(t.variables().collect::<Vec<_>>(), ["path"]);
    }

    #[test]
    fn refuses_unsupported_forms() {
        for bad in ["x://{a,b}", "x://{?q}", "x://{a", "x://{a}{b}", "x://{}"] {
            assert!(UriTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
