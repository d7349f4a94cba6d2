//! The hash chain. Record `n` stores `hash_n = SHA-256("n\nhash_{n-1}\nevent_json")` (hex), with
//! `hash_0` = 64 zeros; sequence numbers start at 1 and have no gaps. Editing a record changes its
//! hash; deleting one leaves a gap; reordering breaks the `prev_hash` links. Verification walks
//! the records in sequence order and names the first that does not fit.
//!
//! Not detectable by the chain alone: cutting records off the *end* (the last hash would have to be
//! anchored elsewhere, e.g. shipped to a SIEM — the JSON lines sink does exactly that).

use aws_lc_rs::digest::{Context, SHA256};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The previous record's hash (or [`GENESIS`]).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
    /// The event, exactly as hashed.
    pub event: String,
}

/// The hash of record `seq` holding `event` after `prev_hash`.
pub fn link_hash(seq: u64, prev_hash: &str, event: &str) -> String {
    // The same bytes as hashing `format!("{seq}\n{prev_hash}\n{event}")`, without copying the event.
    let mut ctx = Context::new(&SHA256);
    ctx.update(seq.to_string().as_bytes());
    ctx.update(b"\n");
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"\n");
    ctx.update(event.as_bytes());
    hex(ctx.finish().as_ref())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Seals `event` as the record after (`seq`, `hash`) of the current tail.
pub fn seal(tail: &(u64, String), event: String) -> Record {
    let seq = tail.0 + 1;
    let hash = link_hash(seq, &tail.1, &event);
    Record { seq, prev_hash: tail.1.clone(), hash, event }
}

/// Walks records in order and checks each link.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: u64,
    prev_hash: String,
    /// Records checked so far.
    pub checked: u64,
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The first sequence number that is wrong or missing.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl Default for Verifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS.to_owned(), checked: 0 }
    }
}

impl Verifier {
    /// Checks the next record; the first error names the first bad sequence number.
    pub fn check(&mut self, r: &Record) -> Result<(), Break> {
        let bad = |seq: u64, reason: String| Err(Break { seq, reason });
        if r.seq != self.expected_seq {
            return if r.seq > self.expected_seq {
                bad(self.expected_seq, format!("missing (the next record present is {})", r.seq))
            } else {
                bad(r.seq, format!("out of order or duplicated (expected {})", self.expected_seq))
            };
        }
        if r.prev_hash != self.prev_hash {
            return bad(r.seq, "its prev_hash does not match the previous record (reordered or replaced)".into());
        }
        if link_hash(r.seq, &r.prev_hash, &r.event) != r.hash {
            return bad(r.seq, "its content does not match its hash (edited)".into());
        }
        self.expected_seq += 1;
        self.prev_hash.clone_from(&r.hash);
        self.checked += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Record> {
        let mut tail = (0, GENESIS.to_owned());
        (0..n)
            .map(|i| {
                let r = seal(&tail, format!("{{\"n\":{i}}}"));
                tail = (r.seq, r.hash.clone());
                r
            })
            .collect()
    }

    fn first_break(records: &[Record]) -> Option<u64> {
        let mut v = Verifier::default();
        records.iter().find_map(|r| v.check(r).err()).map(|b| b.seq)
    }

    #[test]
    fn the_link_hash_is_sha256_of_seq_prev_and_event() {
        // Fixed by an independent SHA-256 (Python's hashlib): logs written before stay verifiable.
        assert_eq!(
            link_hash(1, GENESIS, "{\"n\":0}"),
            "8b1e098d7e6021d7f66a31c8c6eafa0f089cfbda19f9f394b1b88f904c0f8a62"
        );
        assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn edits_deletions_and_swaps_name_the_first_bad_record() {
        let good = chain(10);
        assert_eq!(first_break(&good), None);
        let mut edited = good.clone();
        edited[4].event = "{\"n\":99}".into();
        assert_eq!(first_break(&edited), Some(5));
        let mut deleted = good.clone();
        deleted.remove(6);
        assert_eq!(first_break(&deleted), Some(7));
        let mut swapped = good.clone();
        swapped.swap(2, 3);
        assert_eq!(first_break(&swapped), Some(3));
        // Swapping contents but keeping sequence numbers in place.
        let mut contents = good.clone();
        let (a, b) = (contents[2].event.clone(), contents[3].event.clone());
        (contents[2].event, contents[3].event) = (b, a);
        assert_eq!(first_break(&contents), Some(3));
    }
}
