//! The reads behind statistics: many people at once, with only the one field a
//! dimension needs.

use qupia_domain::Field;
use sqlx::Row;

use super::{PersonKey, Store, id16, u32_of};

/// People per query: 500 ids plus the field name, far below either database's limit.
const PEOPLE_PER_QUERY: usize = 500;

/// One person as an aggregate reads them.
#[derive(Debug)]
pub struct AggregateRow {
    pub person_id: [u8; 16],
    pub key: PersonKey,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The ciphertext of the field asked for, when it was asked for and is stored.
    pub ciphertext: Option<Vec<u8>>,
}

impl Store {
    /// The people of `person_ids` who exist, each with the ciphertext of `field` (when
    /// given): one query per 500 people, never one per person. Unknown and erased ids
    /// are simply absent from the answer.
    pub async fn aggregate_rows(
        &self,
        person_ids: &[[u8; 16]],
        field: Option<Field>,
    ) -> Result<Vec<AggregateRow>, sqlx::Error> {
        let mut out = Vec::with_capacity(person_ids.len());
        for batch in person_ids.chunks(PEOPLE_PER_QUERY) {
            let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
            // The field is a bound parameter even when no field is wanted (then it
            // matches nothing), so both cases are one statement.
            let sql = format!(
                "SELECT p.person_id, p.dek_wrapped, p.kek_version, p.dek_version, p.created_at, f.ciphertext \
                 FROM persons p LEFT JOIN field_values f ON f.person_id = p.person_id AND f.field = $1 \
                 WHERE p.person_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(field.map_or("", Field::as_str));
            for id in batch {
                query = query.bind(id.to_vec());
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(AggregateRow {
                    person_id: id16(row.try_get("person_id")?)?,
                    key: PersonKey {
                        dek_wrapped: row.try_get("dek_wrapped")?,
                        kek_version: u32_of(row.try_get("kek_version")?)?,
                        dek_version: u32_of(row.try_get("dek_version")?)?,
                    },
                    created_at: row.try_get("created_at")?,
                    ciphertext: row.try_get("ciphertext")?,
                });
            }
        }
        Ok(out)
    }
}
