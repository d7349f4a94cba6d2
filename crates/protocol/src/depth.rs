//! A pre-parse scan that refuses JSON nested deeper than a limit, so a hostile body can never
//! drive a recursive parser into a stack overflow. It never allocates.

/// The body nests deeper than the configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthError {
    /// The configured limit that was exceeded.
    pub limit: usize,
}

/// Scans `bytes` and fails if arrays/objects nest deeper than `limit`. Brackets inside strings
/// (including escaped quotes) are ignored. The scan is linear and allocation-free; it does not
/// validate the JSON, the parser does that afterwards.
pub fn check_depth(bytes: &[u8], limit: usize) -> Result<(), DepthError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(DepthError { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nesting_and_ignores_brackets_in_strings() {
        assert!(check_depth(br#"{"a":[1,{"b":2}]}"#, 3).is_ok());
        assert_eq!(check_depth(br#"{"a":[1,{"b":2}]}"#, 2), Err(DepthError { limit: 2 }));
        assert!(check_depth(br#"{"a":"[[[[[[\"[[[["}"#, 1).is_ok());
    }

    #[test]
    fn a_million_open_brackets_is_refused_without_recursion() {
        let body = vec![b'['; 1_000_000];
        assert!(check_depth(&body, 64).is_err());
    }
}
