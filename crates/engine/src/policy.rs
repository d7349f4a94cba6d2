//! Authorization policy: which principal may see and use which tool, resource or prompt.
//!
//! A [`Policy`] is compiled once from configuration; [`Policy::decide`] is a pure function of
//! (principal, kind, target) to a [`Decision`]: no I/O, no clock, no locks. Lists and calls ask
//! the same question, so a principal never sees a tool it cannot call, and never calls one it
//! cannot see.
//!
//! The order of the checks, and the rule each refusal names:
//! 1. **Tenants.** A target claimed by a tenant (`[[policy.tenants]]` patterns) exists only for
//!    principals of that tenant (`tenant:<name>`). Unclaimed targets are shared.
//! 2. **Roles.** Some role of the principal — or the role `*`, which every principal has — must
//!    allow the target (`role:<name>`); otherwise it is hidden (`default-deny`).
//! 3. **Scopes.** The token must hold every scope the target requires (`[policy.tool_scopes]` and
//!    friends, the union of all matching patterns); otherwise the target stays visible but using
//!    it asks for a step-up (`scope:<pattern>`): HTTP 403 `insufficient_scope`.

use std::sync::Arc;

use crate::Principal;

/// What kind of thing is being reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tool, by name.
    Tool,
    /// A resource, by URI (templates by their URI template).
    Resource,
    /// A prompt, by name.
    Prompt,
}

/// The answer for one (principal, target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Visible and usable; `rule` is the grant that allowed it.
    Allow {
        /// The deciding rule.
        rule: Arc<str>,
    },
    /// Invisible: left out of lists, and using it answers as if it did not exist.
    Hide {
        /// The deciding rule.
        rule: Arc<str>,
        /// Why, for audit and `policy explain` (never sent to the client).
        reason: &'static str,
    },
    /// Visible, but using it needs a token with more scopes.
    StepUp {
        /// The deciding rule.
        rule: Arc<str>,
        /// Every scope the target requires (the token lacks at least one).
        scopes: Vec<String>,
    },
}

impl Decision {
    /// The stricter of two decisions: hidden beats step-up beats allowed.
    pub fn strictest(self, other: Decision) -> Decision {
        let rank = |d: &Decision| match d {
            Decision::Hide { .. } => 2,
            Decision::StepUp { .. } => 1,
            Decision::Allow { .. } => 0,
        };
        if rank(&other) > rank(&self) { other } else { self }
    }

    /// Shown in lists.
    pub fn visible(&self) -> bool {
        !matches!(self, Self::Hide { .. })
    }

    /// The rule that decided.
    pub fn rule(&self) -> &str {
        match self {
            Self::Allow { rule } | Self::Hide { rule, .. } | Self::StepUp { rule, .. } => rule,
        }
    }
}

/// Target patterns of each kind (`*` any run of characters, `?` one): what a role grants, a
/// tenant claims or a rate limit covers.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Tool name patterns.
    pub tools: Vec<String>,
    /// Resource URI (and URI template) patterns.
    pub resources: Vec<String>,
    /// Prompt name patterns.
    pub prompts: Vec<String>,
}

impl Targets {
    /// True when some pattern for `kind` matches `target`.
    pub fn covers(&self, kind: Kind, target: &str) -> bool {
        let patterns = match kind {
            Kind::Tool => &self.tools,
            Kind::Resource => &self.resources,
            Kind::Prompt => &self.prompts,
        };
        patterns.iter().any(|p| glob(p, target))
    }
}

/// A role: what its members may reach.
#[derive(Debug, Clone, Default)]
pub struct Role {
    /// The role name as it appears in tokens; `*` applies to every principal.
    pub name: String,
    /// What the role allows.
    pub targets: Targets,
}

/// A tenant: the targets only its principals see.
#[derive(Debug, Clone, Default)]
pub struct Tenant {
    /// The tenant id as it appears in tokens.
    pub name: String,
    /// What only this tenant's principals see.
    pub targets: Targets,
}

/// Scopes a set of targets requires.
#[derive(Debug, Clone)]
pub struct ScopeRule {
    /// What the rule covers.
    pub kind: Kind,
    /// The target pattern.
    pub pattern: String,
    /// Scopes required (all of them).
    pub scopes: Vec<String>,
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    roles: Vec<(Arc<str>, Role)>,
    tenants: Vec<(Arc<str>, Tenant)>,
    scopes: Vec<(Arc<str>, ScopeRule)>,
    /// Allow everything (authentication off, or no policy configured for a tool-only library).
    open: bool,
}

// === impl Policy ===

impl Policy {
    /// Allows every target to every principal (local use without authentication).
    pub fn allow_all() -> Self {
        Self { roles: Vec::new(), tenants: Vec::new(), scopes: Vec::new(), open: true }
    }

    /// Compiles roles, tenants and scope requirements. Deny by default.
    pub fn new(roles: Vec<Role>, tenants: Vec<Tenant>, scopes: Vec<ScopeRule>) -> Self {
        Self {
            roles: roles.into_iter().map(|r| (Arc::from(format!("role:{}", r.name)), r)).collect(),
            tenants: tenants.into_iter().map(|t| (Arc::from(format!("tenant:{}", t.name)), t)).collect(),
            scopes: scopes.into_iter().map(|s| (Arc::from(format!("scope:{}", s.pattern)), s)).collect(),
            open: false,
        }
    }

    /// True when this policy allows everything.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Decides whether `principal` may see and use the `kind` target named `target`.
    pub fn decide(&self, principal: &Principal, kind: Kind, target: &str) -> Decision {
        if self.open {
            return Decision::Allow { rule: Arc::from("open") };
        }
        for (rule, t) in &self.tenants {
            if t.targets.covers(kind, target) && principal.tenant.as_deref() != Some(&t.name) {
                return Decision::Hide { rule: rule.clone(), reason: "belongs to another tenant" };
            }
        }
        let grant = self
            .roles
            .iter()
            .find(|(_, r)| (r.name == "*" || principal.roles.contains(&r.name)) && r.targets.covers(kind, target));
        let Some((grant, _)) = grant else {
            return Decision::Hide { rule: Arc::from("default-deny"), reason: "no role of the caller allows it" };
        };
        let mut required: Vec<String> = Vec::new();
        let mut missing_rule: Option<&Arc<str>> = None;
        for (rule, s) in &self.scopes {
            if s.kind != kind || !glob(&s.pattern, target) {
                continue;
            }
            for scope in &s.scopes {
                if !required.contains(scope) {
                    required.push(scope.clone());
                }
                if missing_rule.is_none() && !principal.scopes.contains(scope) {
                    missing_rule = Some(rule);
                }
            }
        }
        match missing_rule {
            Some(rule) => Decision::StepUp { rule: rule.clone(), scopes: required },
            None => Decision::Allow { rule: grant.clone() },
        }
    }

    /// [`Policy::decide`] for a resource URI: the strictest decision for the URI as written, as
    /// percent-decoded (a pattern on `file:///a/*` must also cover `file:///a%2Fb`), and the URI
    /// template serving it, if any. Reads, subscriptions and lists all ask this.
    pub fn decide_resource(&self, principal: &Principal, uri: &str, template: Option<&str>) -> Decision {
        let mut d = self.decide(principal, Kind::Resource, uri);
        if let Some(decoded) = crate::template::percent_decode(uri).filter(|d| d != uri) {
            d = d.strictest(self.decide(principal, Kind::Resource, &decoded));
        }
        if let Some(t) = template {
            d = d.strictest(self.decide(principal, Kind::Resource, t));
        }
        d
    }
}

/// Shell-style wildcard match: `*` is any run of characters (including `/`), `?` one character.
/// Linear time: on a mismatch, only the last `*` is widened.
pub fn glob(pattern: &str, text: &str) -> bool {
    // Byte offsets on character boundaries: no allocation (this runs per key, per pattern, per
    // call).
    let at = |s: &str, i: usize| s[i..].chars().next();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = at(text, ti) {
        let pc = at(pattern, pi);
        // `*` in the pattern first: a `*` in the text is an ordinary character.
        if pc == Some('*') {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some(pc) = pc.filter(|&c| c == '?' || c == tc) {
            pi += pc.len_utf8();
            ti += tc.len_utf8();
        } else if let Some((sp, st)) = star {
            let next = st + at(text, st).map_or(1, char::len_utf8);
            pi = sp + 1;
            ti = next;
            star = Some((sp, next));
        } else {
            return false;
        }
    }
    pattern[pi..].chars().all(|c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(roles: &[&str], scopes: &[&str], tenant: Option<&str>) -> Principal {
        Principal {
            subject: "u".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            tenant: tenant.map(str::to_owned),
            ..Principal::anonymous()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The seed S001 team: viewer, developer and cicd roles with the seed's scope map.
    fn team() -> Policy {
        let role = |name: &str, tools: &[&str]| Role {
            name: name.into(),
            targets: Targets { tools: strings(tools), ..Targets::default() },
        };
        let scope = |tool: &str, s: &str| ScopeRule { kind: Kind::Tool, pattern: tool.into(), scopes: strings(&[s]) };
        Policy::new(
            vec![
                role("viewer", &["get_jira_issue", "query_database"]),
                role("developer", &["get_jira_issue", "create_jira_issue", "query_database"]),
                role("cicd", &["trigger_pipeline", "get_jira_issue"]),
                Role { name: "*".into(), targets: Targets { resources: strings(&["docs://*"]), ..Targets::default() } },
            ],
            vec![Tenant {
                name: "acme".into(),
                targets: Targets {
                    tools: strings(&["acme_*"]),
                    resources: strings(&["acme://*"]),
                    ..Targets::default()
                },
            }],
            vec![
                scope("get_jira_issue", "jira.read"),
                scope("create_jira_issue", "jira.write"),
                scope("trigger_pipeline", "cicd.trigger"),
                scope("query_database", "db.read"),
            ],
        )
    }

    #[test]
    fn the_seed_team_table() {
        let p = team();
        let viewer = who(&["viewer"], &["jira.read", "db.read"], None);
        let cicd_no_scope = who(&["cicd"], &["jira.read"], None);
        let cicd = who(&["cicd"], &["cicd.trigger"], None);
        let acme = who(&["*"], &[], Some("acme"));
        let other = who(&["viewer"], &[], Some("globex"));
        // (principal, kind, target, expected outcome, deciding rule)
        let table: &[(&Principal, Kind, &str, &str, &str)] = &[
            (&viewer, Kind::Tool, "get_jira_issue", "allow", "role:viewer"),
            (&viewer, Kind::Tool, "trigger_pipeline", "hide", "default-deny"),
            (&viewer, Kind::Tool, "create_jira_issue", "hide", "default-deny"),
            (&cicd_no_scope, Kind::Tool, "trigger_pipeline", "step-up", "scope:trigger_pipeline"),
            (&cicd_no_scope, Kind::Tool, "get_jira_issue", "allow", "role:cicd"),
            (&cicd, Kind::Tool, "trigger_pipeline", "allow", "role:cicd"),
            (&cicd, Kind::Tool, "get_jira_issue", "step-up", "scope:get_jira_issue"),
            (&viewer, Kind::Resource, "docs://handbook", "allow", "role:*"),
            (&viewer, Kind::Resource, "acme://secrets", "hide", "tenant:acme"),
            (&other, Kind::Tool, "acme_report", "hide", "tenant:acme"),
            (&acme, Kind::Tool, "acme_report", "hide", "default-deny"),
            (&viewer, Kind::Prompt, "anything", "hide", "default-deny"),
        ];
        for (who, kind, target, outcome, rule) in table {
            let d = p.decide(who, *kind, target);
            let got = match &d {
                Decision::Allow { .. } => "allow",
                Decision::Hide { .. } => "hide",
                Decision::StepUp { .. } => "step-up",
            };
            assert_eq!((got, d.rule()), (*outcome, *rule), "{:?} {kind:?} {target}", who.roles);
        }
        let Decision::StepUp { scopes, .. } = p.decide(&cicd_no_scope, Kind::Tool, "trigger_pipeline") else {
            unreachable!()
        };
        assert_eq!(scopes, ["cicd.trigger"]);
    }

    #[test]
    fn allow_all_and_union_of_scopes() {
        assert!(Policy::allow_all().decide(&Principal::anonymous(), Kind::Tool, "x").visible());
        let p = Policy::new(
            vec![Role { name: "*".into(), targets: Targets { tools: strings(&["*"]), ..Targets::default() } }],
            vec![],
            vec![
                ScopeRule { kind: Kind::Tool, pattern: "*".into(), scopes: strings(&["mcp:tools"]) },
                ScopeRule { kind: Kind::Tool, pattern: "admin_*".into(), scopes: strings(&["admin"]) },
            ],
        );
        let d = p.decide(&who(&[], &["mcp:tools"], None), Kind::Tool, "admin_reset");
        assert_eq!(d, Decision::StepUp { rule: Arc::from("scope:admin_*"), scopes: strings(&["mcp:tools", "admin"]) });
        assert!(matches!(
            p.decide(&who(&[], &["mcp:tools", "admin"], None), Kind::Tool, "admin_reset"),
            Decision::Allow { .. }
        ));
        assert!(matches!(p.decide(&who(&[], &["mcp:tools"], None), Kind::Tool, "echo"), Decision::Allow { .. }));
    }

    #[test]
    fn globs() {
        for (p, t) in [
            ("*", ""),
            ("*", "anything"),
            ("get_*", "get_jira_issue"),
            ("demo://*", "demo://a/b"),
            ("a?c", "abc"),
            ("*_issue", "create_jira_issue"),
            ("a*b*c", "aXbYc"),
        ] {
            assert!(glob(p, t), "{p} ~ {t}");
        }
        // A `*` or `?` in the text is just a character.
        assert!(glob("*b", "*ab") && glob("files://*/acme/*", "files://*/x/acme/y") && glob("a?", "a*"));
        for (p, t) in [("get_*", "set_x"), ("a?c", "ac"), ("abc", "abcd"), ("a*b*c", "aXbY"), ("", "x"), ("a*", "b*")] {
            assert!(!glob(p, t), "{p} !~ {t}");
        }
    }

    /// Against the definition, written the slow way, on every pattern and text of up to four
    /// characters over an alphabet with a two-byte character in it.
    #[test]
    fn globs_agree_with_the_definition() {
        fn reference(p: &[char], t: &[char]) -> bool {
            match (p.first(), t.first()) {
                (None, _) => t.is_empty(),
                (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
                (Some(&c), Some(&d)) if c == '?' || c == d => reference(&p[1..], &t[1..]),
                _ => false,
            }
        }
        fn all(alphabet: &[char], len: usize) -> Vec<Vec<char>> {
            let mut out = vec![Vec::new()];
            let mut last = vec![Vec::new()];
            for _ in 0..len {
                last = last
                    .iter()
                    .flat_map(|w: &Vec<char>| alphabet.iter().map(move |&c| [w.clone(), vec![c]].concat()))
                    .collect();
                out.extend(last.clone());
            }
            out
        }
        let patterns = all(&['a', 'é', '*', '?'], 4);
        let texts = all(&['a', 'é', '*'], 4);
        for p in &patterns {
            for t in &texts {
                let (ps, ts): (String, String) = (p.iter().collect(), t.iter().collect());
                assert_eq!(glob(&ps, &ts), reference(p, t), "{ps:?} ~ {ts:?}");
            }
        }
    }
}
