//! The protocol versions this server speaks and how one is chosen (2025-11-25 basic/lifecycle
//! §Version Negotiation).

/// A legacy-era (handshake) protocol version this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// HTTP+SSE era.
    V2024_11_05,
    /// Streamable HTTP, batching.
    V2025_03_26,
    /// No batching, `MCP-Protocol-Version` header, structured output, elicitation.
    V2025_06_18,
    /// Newest legacy version.
    V2025_11_25,
}

/// Versions of the 2026-07-28 ("modern", sessionless) era. Not served yet: a request naming one
/// is answered as a legacy server answers (modern-protocol.md §2.1), so that auto-negotiating
/// clients fall back to `initialize`.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

// === impl ProtocolVersion ===

impl ProtocolVersion {
    /// Every supported version, oldest first.
    pub const ALL: [ProtocolVersion; 4] = [Self::V2024_11_05, Self::V2025_03_26, Self::V2025_06_18, Self::V2025_11_25];

    /// The newest supported version.
    pub const LATEST: ProtocolVersion = Self::V2025_11_25;

    /// The version assumed when an HTTP request carries no `MCP-Protocol-Version` header and
    /// nothing else tells (2025-11-25 basic/transports §Protocol Version Header).
    pub const HTTP_DEFAULT: ProtocolVersion = Self::V2025_03_26;

    /// Parses the exact wire string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "2024-11-05" => Self::V2024_11_05,
            "2025-03-26" => Self::V2025_03_26,
            "2025-06-18" => Self::V2025_06_18,
            "2025-11-25" => Self::V2025_11_25,
            _ => return None,
        })
    }

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2024_11_05 => "2024-11-05",
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
        }
    }

    /// The client's version if we support it, else our latest (the client then decides).
    pub fn negotiate(requested: &str) -> Self {
        Self::parse(requested).unwrap_or(Self::LATEST)
    }

    /// JSON-RPC batches exist only in 2025-03-26 (removed in 2025-06-18).
    pub fn allows_batch(self) -> bool {
        self == Self::V2025_03_26
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_keeps_a_supported_version_and_otherwise_offers_the_latest() {
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::negotiate(v.as_str()), v);
        }
        assert_eq!(ProtocolVersion::negotiate("2026-07-28"), ProtocolVersion::LATEST);
        assert_eq!(ProtocolVersion::negotiate("1999-01-01"), ProtocolVersion::LATEST);
        assert!(ProtocolVersion::V2025_03_26.allows_batch());
        assert!(!ProtocolVersion::V2025_11_25.allows_batch());
    }
}
