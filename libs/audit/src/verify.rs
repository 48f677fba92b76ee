//! Walking the chain and naming the first thing wrong with it.
//!
//! What each kind of tampering looks like to the walk, in seq order:
//! - one column of entry `n` edited: its hash no longer matches its contents, `Altered{n}`;
//! - entry `n` deleted: the walk finds `n + 1` where it expected `n`, `Missing{n, n+1}`
//!   (reported before `n + 1`'s link, which would also be broken);
//! - entries `n` and `n + 1` swapped (all columns but seq, or the seqs themselves): the
//!   row at `n` holds the other entry's contents and seq `n` is hashed in, `Altered{n}`;
//! - entry `n` edited and its hash recomputed: `n + 1` no longer links to it,
//!   `BrokenLink{n+1}`;
//! - history rewritten from `n` on with every hash recomputed (the hash is unkeyed, so an
//!   attacker with the database can do this) and the head row rewritten to match: only a
//!   checkpoint taken at or after `n` tells, `CheckpointMismatch` at that checkpoint;
//! - the tail cut off and the head row rewritten to match: only a checkpoint beyond the
//!   new end tells, `Truncated`. That is why checkpoints are also kept outside the
//!   database, where the attacker cannot delete them.

use std::fmt;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::chain::{self, GENESIS, LinkInput};
use crate::entry::{Checkpoint, hash32_from_hex};
use crate::error::Error;
use crate::ledger::{AuditLedger, COLUMNS};

/// Entries read per round trip: verification never holds the whole ledger in memory, nor
/// the database's only SQLite connection for long.
const PAGE: i64 = 256;

/// The outcome of [`AuditLedger::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Entries found intact, from seq 1 up to the first problem (or the head).
    pub entries: i64,
    /// The head's seq when verification started; entries appended later are left for the
    /// next run.
    pub head_seq: i64,
    /// The first problem found, in seq order; `None` means intact.
    pub problem: Option<Problem>,
}

/// Something wrong with the ledger. Any of these means it was tampered with (or the
/// database is corrupt); none can come from normal operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// Entry `seq`'s stored hash doesn't match its contents (edited).
    Altered { seq: i64 },
    /// A seq is missing: expected `expected`, found `found` (deleted entry).
    Missing { expected: i64, found: i64 },
    /// Entry `seq`'s prev_hash doesn't match the previous entry's hash (reordered, spliced
    /// or rewritten before it).
    BrokenLink { seq: i64 },
    /// The chain ends at `head_seq` but a checkpoint (stored or external) commits to
    /// `checkpoint_seq` > head (tail cut off).
    Truncated { head_seq: i64, checkpoint_seq: i64 },
    /// A checkpoint's hash doesn't match the entry at its seq (history rewritten).
    CheckpointMismatch { seq: i64 },
    /// The head row disagrees with the last entry.
    HeadMismatch { head_seq: i64, last_seq: i64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Altered { seq } => {
                write!(f, "audit entry {seq} was altered: its stored hash does not match its contents")
            }
            Problem::Missing { expected, found } => write!(
                f,
                "audit entry {expected} is missing: the next stored entry is {found}, so \
                 entries were deleted"
            ),
            Problem::BrokenLink { seq } => write!(
                f,
                "audit entry {seq} does not follow the entry before it: the chain was \
                 reordered, spliced or rewritten before entry {seq}"
            ),
            Problem::Truncated { head_seq, checkpoint_seq } => write!(
                f,
                "the audit chain ends at entry {head_seq} but a checkpoint commits to entry \
                 {checkpoint_seq}: entries after {head_seq} were cut off"
            ),
            Problem::CheckpointMismatch { seq } => write!(
                f,
                "audit entry {seq} does not match the checkpoint taken at it: history up to \
                 entry {seq} was rewritten"
            ),
            Problem::HeadMismatch { head_seq, last_seq } if head_seq == last_seq => {
                write!(f, "the audit head records a different hash for entry {head_seq} than the entry has")
            }
            Problem::HeadMismatch { head_seq, last_seq } => write!(
                f,
                "the audit head records entry {head_seq} as the last one but the chain ends \
                 at entry {last_seq}"
            ),
        }
    }
}

/// A checkpoint reduced to what verification compares.
#[derive(Debug, Clone, Copy)]
struct Commitment {
    seq: i64,
    /// `None` when a stored hash is not 32 bytes: it matches no entry.
    hash: Option<[u8; 32]>,
}

/// Where the walk stands: the next seq it expects and the hash that seq must link to.
#[derive(Debug)]
struct Walk {
    expected: i64,
    prev: [u8; 32],
}

impl Walk {
    /// Checks one row, in seq order; on success the row becomes the new end of the walk.
    fn step(&mut self, row: &AnyRow) -> Result<Option<Problem>, Error> {
        let seq: i64 = row.try_get("seq")?;
        if seq != self.expected {
            return Ok(Some(Problem::Missing { expected: self.expected, found: seq }));
        }
        // A row whose columns no longer decode (text turned into a blob, a hash of the
        // wrong length) was altered as surely as one whose hash mismatches.
        let Some((prev_hash, hash, computed)) = recompute(row) else {
            return Ok(Some(Problem::Altered { seq }));
        };
        if computed != hash {
            return Ok(Some(Problem::Altered { seq }));
        }
        if prev_hash != self.prev {
            return Ok(Some(Problem::BrokenLink { seq }));
        }
        self.prev = hash;
        self.expected += 1;
        Ok(None)
    }

    /// The last seq walked intact.
    fn last_seq(&self) -> i64 {
        self.expected - 1
    }
}

/// The row's stored prev_hash and hash and the hash its contents call for.
fn recompute(row: &AnyRow) -> Option<([u8; 32], [u8; 32], [u8; 32])> {
    let text = |column: &str| row.try_get::<String, _>(column).ok();
    let prev_hash = <[u8; 32]>::try_from(row.try_get::<Vec<u8>, _>("prev_hash").ok()?).ok()?;
    let hash = <[u8; 32]>::try_from(row.try_get::<Vec<u8>, _>("hash").ok()?).ok()?;
    let (caller, operation, purpose, person, fields, decision) =
        (text("caller")?, text("operation")?, text("purpose")?, text("person")?, text("fields")?, text("decision")?);
    let (reason, consent_id, request_id, decision_id, trace_id) =
        (text("reason")?, text("consent_id")?, text("request_id")?, text("decision_id")?, text("trace_id")?);
    let computed = chain::link_hash(
        &prev_hash,
        &LinkInput {
            seq: row.try_get("seq").ok()?,
            at_ms: row.try_get("at_ms").ok()?,
            caller: &caller,
            operation: &operation,
            purpose: &purpose,
            person: &person,
            fields: &fields,
            decision: &decision,
            reason: &reason,
            consent_id: &consent_id,
            request_id: &request_id,
            decision_id: &decision_id,
            trace_id: &trace_id,
        },
    );
    Some((prev_hash, hash, computed))
}

impl AuditLedger {
    /// Walks the whole chain in pages and reports the FIRST problem, in seq order.
    ///
    /// Every stored checkpoint is checked against the entry at its seq, and so is
    /// `external`, a checkpoint kept outside the database: the chain must contain
    /// `external.seq` with exactly that hash, or the tail was cut off (`Truncated`) or
    /// history rewritten (`CheckpointMismatch`). Without an external checkpoint, an
    /// attacker who can write the database can cut the tail, delete the stored
    /// checkpoints and rewrite the head unseen.
    ///
    /// Runs beside appenders: the chain is checked up to the head as read at the start.
    /// An external checkpoint whose hash is not 64 hex digits is `Error::Invalid`.
    pub async fn verify(&self, external: Option<&Checkpoint>) -> Result<VerifyReport, Error> {
        let external = external.map(commitment_of).transpose()?;
        let (head_seq, head_hash) = self.head().await?;
        let report =
            |walk: &Walk, problem: Option<Problem>| VerifyReport { entries: walk.last_seq(), head_seq, problem };

        let mut walk = Walk { expected: 1, prev: GENESIS };
        // Checkpoints of the empty chain (seq 0, or a nonsense seq below it).
        if let Some(problem) = self.check_checkpoints(i64::MIN, 0, &walk, external).await? {
            return Ok(report(&walk, Some(problem)));
        }

        loop {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
            ))
            .bind(walk.last_seq())
            .bind(head_seq)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            let page_start = walk.last_seq();
            let checkpoints = self.stored_checkpoints(page_start, page_start.saturating_add(PAGE)).await?;
            for row in &rows {
                if let Some(problem) = walk.step(row)? {
                    return Ok(report(&walk, Some(problem)));
                }
                let seq = walk.last_seq();
                let at_seq = checkpoints.iter().chain(external.iter()).filter(|c| c.seq == seq);
                for commitment in at_seq {
                    if commitment.hash != Some(walk.prev) {
                        // The entry itself verified, so the entry is not what was there
                        // when the checkpoint was taken.
                        return Ok(report(&walk, Some(Problem::CheckpointMismatch { seq })));
                    }
                }
            }
            if i64::try_from(rows.len()).unwrap_or(PAGE) < PAGE {
                break;
            }
        }

        let last_seq = walk.last_seq();
        if let Some(problem) = self.check_checkpoints(last_seq, i64::MAX, &walk, external).await? {
            return Ok(report(&walk, Some(problem)));
        }
        if last_seq != head_seq || walk.prev != head_hash {
            return Ok(report(&walk, Some(Problem::HeadMismatch { head_seq, last_seq })));
        }
        // Entries beyond the head are appended later only with the head moving in the
        // same transaction: reading the newest entry first and the head second, the head
        // can never be behind it.
        let newest: Option<i64> =
            sqlx::query("SELECT MAX(seq) AS seq FROM audit_log").fetch_one(&self.pool).await?.try_get("seq")?;
        let (head_now, _) = self.head().await?;
        if let Some(newest) = newest.filter(|&newest| newest > head_now) {
            return Ok(report(&walk, Some(Problem::HeadMismatch { head_seq: head_now, last_seq: newest })));
        }
        Ok(report(&walk, None))
    }

    /// Stored checkpoints with `after < seq <= through`.
    async fn stored_checkpoints(&self, after: i64, through: i64) -> Result<Vec<Commitment>, Error> {
        let rows = sqlx::query("SELECT seq, hash FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq")
            .bind(after)
            .bind(through)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(commitment_of_row).collect()
    }

    /// Checks the checkpoints (stored and external) with `after < seq <= through` that
    /// lie outside the walked chain: at or below seq 0, where only the empty chain's
    /// zeros are right, or beyond the walk's end, where the entry must exist (else the
    /// tail was cut) and carry the committed hash. The first problem by seq is returned.
    async fn check_checkpoints(
        &self,
        after: i64,
        through: i64,
        walk: &Walk,
        external: Option<Commitment>,
    ) -> Result<Option<Problem>, Error> {
        // Only a wrong stored checkpoint is returned, so one query finds the first of
        // possibly many without reading them all.
        let first_wrong = sqlx::query(
            "SELECT c.seq AS seq, c.hash AS hash FROM audit_checkpoints c \
             LEFT JOIN audit_log a ON a.seq = c.seq \
             WHERE c.seq > $1 AND c.seq <= $2 \
             AND (c.seq < 0 OR (c.seq = 0 AND c.hash <> $3) \
                  OR (c.seq > 0 AND (a.seq IS NULL OR a.hash <> c.hash))) \
             ORDER BY c.seq LIMIT 1",
        )
        .bind(after)
        .bind(through)
        .bind(GENESIS.to_vec())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(commitment_of_row)
        .transpose()?;
        let mut candidates: Vec<Commitment> =
            external.filter(|c| c.seq > after && c.seq <= through).into_iter().chain(first_wrong).collect();
        candidates.sort_by_key(|c| c.seq);
        for commitment in candidates {
            if let Some(problem) = self.judge(commitment, walk).await? {
                return Ok(Some(problem));
            }
        }
        Ok(None)
    }

    /// What is wrong with `commitment`, a checkpoint outside the walked chain, if anything.
    async fn judge(&self, commitment: Commitment, walk: &Walk) -> Result<Option<Problem>, Error> {
        let seq = commitment.seq;
        if seq <= 0 {
            let empty_chain = seq == 0 && commitment.hash == Some(GENESIS);
            return Ok((!empty_chain).then_some(Problem::CheckpointMismatch { seq }));
        }
        let stored: Option<Vec<u8>> = sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get("hash"))
            .transpose()?;
        Ok(match stored {
            None => Some(Problem::Truncated { head_seq: walk.last_seq(), checkpoint_seq: seq }),
            Some(hash) if commitment.hash.as_ref().map(|h| h.as_slice()) != Some(hash.as_slice()) => {
                Some(Problem::CheckpointMismatch { seq })
            }
            Some(_) => None,
        })
    }
}

fn commitment_of_row(row: &AnyRow) -> Result<Commitment, Error> {
    let hash: Vec<u8> = row.try_get("hash")?;
    Ok(Commitment { seq: row.try_get("seq")?, hash: <[u8; 32]>::try_from(hash).ok() })
}

fn commitment_of(checkpoint: &Checkpoint) -> Result<Commitment, Error> {
    let hash = hash32_from_hex(&checkpoint.hash).ok_or(Error::Invalid("the checkpoint's hash is not 64 hex digits"))?;
    Ok(Commitment { seq: checkpoint.seq, hash: Some(hash) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_reads_as_a_sentence_naming_its_entry() {
        let problems = [
            (Problem::Altered { seq: 5 }, "5"),
            (Problem::Missing { expected: 5, found: 6 }, "5"),
            (Problem::BrokenLink { seq: 6 }, "6"),
            (Problem::Truncated { head_seq: 7, checkpoint_seq: 10 }, "10"),
            (Problem::CheckpointMismatch { seq: 8 }, "8"),
            (Problem::HeadMismatch { head_seq: 10, last_seq: 7 }, "7"),
            (Problem::HeadMismatch { head_seq: 7, last_seq: 7 }, "7"),
        ];
        for (problem, seq) in problems {
            let text = problem.to_string();
            assert!(text.contains(&format!("entry {seq}")), "{text}");
            assert!(text.starts_with(char::is_lowercase) && !text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn a_problem_serializes_with_its_kind() {
        let json = serde_json::to_string(&Problem::Missing { expected: 5, found: 6 }).expect("serialize");
        assert_eq!(json, r#"{"kind":"missing","expected":5,"found":6}"#);
    }
}
