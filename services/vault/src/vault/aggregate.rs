//! Statistics computed inside the vault: each person's group key from the one field the
//! dimension needs, counted, small groups suppressed. Only keys and counts leave, and
//! only after every person counted is in the access log.

use std::collections::{HashMap, HashSet};

use qupia_audit::{NewEntry, Operation};
use qupia_crypto::{Token, TokenKind, slot_aad};
use qupia_domain::Purpose;

use super::{AccessRecord, Vault};
use crate::Error;
use crate::dimension::{self, Dimension};

/// One person to count and the consent that allows it.
#[derive(Debug, Clone)]
pub struct AggregateSubject {
    pub person: Token,
    pub consent_id: String,
}

/// The answer: groups at or above the minimum size, largest first, and how many
/// groups were suppressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub groups: Vec<(String, u64)>,
    pub suppressed_groups: u32,
}

impl Vault {
    /// Counts `subjects` by `dimension`. People who do not exist (unknown or erased
    /// tokens) are not counted and get no access-log entry; every person counted gets
    /// one (operation `aggregate`, with their consent id), all in one append, before
    /// the answer leaves.
    pub async fn aggregate(
        &self,
        access: &AccessRecord,
        subjects: &[AggregateSubject],
        dimension: Dimension,
        min_group_size: u32,
    ) -> Result<Aggregate, Error> {
        if access.purpose != Purpose::Statistics.as_str() {
            return Err(Error::PermissionDenied(format!(
                "aggregates are computed only for statistics, not {}",
                access.purpose
            )));
        }
        if min_group_size < 2 {
            return Err(Error::invalid("min_group_size", "must be at least 2"));
        }
        // One consent per person: the first one named for them.
        let mut consents: HashMap<[u8; 16], &str> = HashMap::with_capacity(subjects.len());
        let mut ids = Vec::with_capacity(subjects.len());
        for subject in subjects {
            if consents.insert(*subject.person.id(), subject.consent_id.as_str()).is_none() {
                ids.push(*subject.person.id());
            }
        }
        let field = dimension.field();
        let rows = self.store.aggregate_rows(&ids, field).await?;

        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut counted: HashSet<[u8; 16]> = HashSet::with_capacity(rows.len());
        let mut entries: Vec<NewEntry> = Vec::with_capacity(rows.len());
        let fields: Vec<_> = field.into_iter().collect();
        let reason = format!("counted by {}; only the group key left the vault", dimension.as_str());
        for row in rows {
            if !counted.insert(row.person_id) {
                continue;
            }
            let key = match (field, &row.ciphertext) {
                (None, _) => dimension::registration_month(row.created_at),
                (Some(field), Some(ciphertext)) => {
                    let dek = self.unwrap_key_uncached(&row.person_id, &row.key)?;
                    let plaintext =
                        dek.open(ciphertext, &slot_aad(&row.person_id, field.as_str(), row.key.dek_version))?;
                    let value = std::str::from_utf8(&plaintext).map_err(|_| Error::Integrity)?;
                    dimension.key_of_value(value)
                }
                // A person without the field (none today: e-mail and phone are required).
                (Some(_), None) => dimension::OTHER.to_owned(),
            };
            *counts.entry(key).or_default() += 1;
            let mut record = access.clone();
            record.consent_id = consents.get(&row.person_id).map(|c| (*c).to_owned()).unwrap_or_default();
            entries.push(record.entry(
                Operation::Aggregate,
                &self.encode(TokenKind::Person, row.person_id),
                &fields,
                &reason,
            ));
        }
        if !entries.is_empty() {
            self.append_audit(&entries).await?;
        }
        Ok(suppress(counts, u64::from(min_group_size)))
    }
}

/// Keeps the groups of at least `min` people, largest first (ties by key, so the same
/// counts always give the same answer), and counts the others.
fn suppress(counts: HashMap<String, u64>, min: u64) -> Aggregate {
    let total = counts.len();
    let mut groups: Vec<(String, u64)> = counts.into_iter().filter(|(_, count)| *count >= min).collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let suppressed = total - groups.len();
    Aggregate { groups, suppressed_groups: u32::try_from(suppressed).unwrap_or(u32::MAX) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_groups_are_suppressed_and_the_rest_sorted() {
        let counts: HashMap<String, u64> =
            [("mail.kz", 8), ("gmail.com", 3), ("yandex.kz", 5), ("bk.ru", 5), ("one.kz", 1)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        let aggregate = suppress(counts, 5);
        assert_eq!(
            aggregate.groups,
            vec![("mail.kz".to_owned(), 8), ("bk.ru".to_owned(), 5), ("yandex.kz".to_owned(), 5)]
        );
        assert_eq!(aggregate.suppressed_groups, 2);
    }
}
