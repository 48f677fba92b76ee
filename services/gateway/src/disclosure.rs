//! The disclosure register (policy clause 3.4): requests of state bodies, their scope,
//! and the second officer's approval.
//!
//! A request names the authority, the legal basis, the authority's reference number,
//! the people (person tokens) and fields it covers, whether identity documents are in
//! scope, and an expiry. It counts only once an officer other than the one who filed it
//! has approved it, and only until it expires. The register is append-only in the
//! database itself, and the database refuses an approval by the filing officer even if
//! a bug let one through here.
//!
//! One SQL text serves SQLite and PostgreSQL through sqlx's `Any` driver, in the
//! gateway's own database beside the consent ledger.

use std::collections::BTreeSet;

use qupia_domain::{Field, Purpose};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::Error;
use crate::consent::{ConsentError, now_ms};

/// The most people one request may cover: a request is about named people, never a
/// population.
pub const MAX_PEOPLE: usize = 100;

/// The longest a request may stay open.
pub const MAX_LIFETIME_MS: i64 = 90 * 24 * 60 * 60 * 1000;

/// The columns of `disclosures` (aliased `d`) and its approval (aliased `a`), in the
/// order [`disclosure_of`] reads them.
const COLUMNS: &str = "d.seq, d.id, d.authority, d.legal_basis, d.reference_number, d.fields, d.documents, \
     d.expires_at_ms, d.requested_by, d.requested_at_ms, a.approved_by, a.approved_at_ms";

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Approved,
    Expired,
}

/// One request of the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosure {
    pub seq: i64,
    pub id: String,
    pub authority: String,
    pub legal_basis: String,
    pub reference_number: String,
    pub person_tokens: Vec<String>,
    pub fields: Vec<Field>,
    pub documents: bool,
    pub expires_at_ms: i64,
    pub requested_by: String,
    pub requested_at_ms: i64,
    /// The approving officer and when; `None` while pending.
    pub approval: Option<(String, i64)>,
}

impl Disclosure {
    pub fn state(&self, now_ms: i64) -> State {
        if now_ms >= self.expires_at_ms {
            State::Expired
        } else if self.approval.is_some() {
            State::Approved
        } else {
            State::Pending
        }
    }

    /// Whether the request lets `caller`'s reveal go ahead at `now_ms`: approved and
    /// unexpired. `Err` is the reason for the access log (it names the request, never
    /// a person).
    pub fn usable(&self, now_ms: i64) -> Result<(), String> {
        match self.state(now_ms) {
            State::Approved => Ok(()),
            State::Pending => Err(format!("disclosure request {} has not been approved by a second officer", self.id)),
            State::Expired => Err(format!("disclosure request {} has expired", self.id)),
        }
    }

    pub fn covers_person(&self, person_token: &str) -> bool {
        self.person_tokens.iter().any(|t| t == person_token)
    }
}

/// What an officer files.
#[derive(Debug, Clone)]
pub struct NewDisclosure {
    pub authority: String,
    pub legal_basis: String,
    pub reference_number: String,
    pub person_tokens: Vec<String>,
    pub fields: Vec<Field>,
    pub documents: bool,
    pub expires_at_ms: i64,
}

/// The register in the gateway's database. Cheap to clone: a pool handle. No cache: an
/// approval or an expiry holds on every replica at once.
#[derive(Debug, Clone)]
pub struct DisclosureStore {
    pool: AnyPool,
}

fn storage(error: sqlx::Error) -> Error {
    Error::Consent(ConsentError::Storage(error))
}

/// A request id: `dr-` and a UUID. Anything else cannot name a request (and is never
/// repeated back).
pub fn validate_id(field: &str, id: &str) -> Result<(), Error> {
    let valid = id.strip_prefix("dr-").is_some_and(|rest| uuid::Uuid::try_parse(rest).is_ok()) && id.len() == 39;
    if valid { Ok(()) } else { Err(Error::invalid(field, "is not a disclosure request id (dr- and a UUID)")) }
}

/// Free text describing the authority's request: printable, bounded, and nothing that
/// looks like a contact (an e-mail address): people belong in the scope, as tokens.
fn validate_text(field: &'static str, value: &str, max_chars: usize) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.chars().count() > max_chars {
        return Err(Error::invalid(field, format!("is longer than {max_chars} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    if value.contains('@') {
        return Err(Error::invalid(
            field,
            "must not contain an e-mail address; people are named by token in the scope",
        ));
    }
    Ok(value.to_owned())
}

impl NewDisclosure {
    /// Checks every field; the people are deduplicated, in order.
    fn validated(mut self, now_ms: i64) -> Result<NewDisclosure, Error> {
        self.authority = validate_text("authority", &self.authority, 200)?;
        self.legal_basis = validate_text("legal_basis", &self.legal_basis, 500)?;
        self.reference_number = validate_text("reference_number", &self.reference_number, 100)?;
        if self.person_tokens.is_empty() {
            return Err(Error::invalid("person_tokens", "must name at least one person"));
        }
        let mut seen = BTreeSet::new();
        let mut people = Vec::with_capacity(self.person_tokens.len());
        for (i, token) in self.person_tokens.iter().enumerate() {
            if !crate::enforce::is_person_token(token) {
                return Err(Error::invalid(format!("person_tokens[{i}]"), "is not a person token"));
            }
            if seen.insert(token.clone()) {
                people.push(token.clone());
            }
        }
        if people.len() > MAX_PEOPLE {
            return Err(Error::invalid("person_tokens", format!("names more than {MAX_PEOPLE} people")));
        }
        self.person_tokens = people;
        if self.fields.is_empty() && !self.documents {
            return Err(Error::invalid("fields", "must name at least one field, or documents must be set"));
        }
        if self.expires_at_ms <= now_ms {
            return Err(Error::invalid("expires_at_ms", "must be in the future"));
        }
        if self.expires_at_ms - now_ms > MAX_LIFETIME_MS {
            return Err(Error::invalid("expires_at_ms", "must be at most 90 days ahead"));
        }
        Ok(self)
    }
}

impl DisclosureStore {
    /// The register in the pool of the consent ledger (whose migrations created it).
    pub fn new(pool: AnyPool) -> DisclosureStore {
        DisclosureStore { pool }
    }

    /// Files a request by `requested_by`; it is pending until approved.
    pub async fn create(&self, new: NewDisclosure, requested_by: &str) -> Result<Disclosure, Error> {
        let requested_at_ms = now_ms();
        let new = new.validated(requested_at_ms)?;
        let id = format!("dr-{}", uuid::Uuid::new_v4());
        let fields = new.fields.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(",");
        let mut tx = self.pool.begin().await.map_err(storage)?;
        let seq: i64 = sqlx::query(
            "INSERT INTO disclosures (id, authority, legal_basis, reference_number, fields, documents, \
             expires_at_ms, requested_by, requested_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING seq",
        )
        .bind(&id)
        .bind(&new.authority)
        .bind(&new.legal_basis)
        .bind(&new.reference_number)
        .bind(&fields)
        .bind(i64::from(new.documents))
        .bind(new.expires_at_ms)
        .bind(requested_by)
        .bind(requested_at_ms)
        .fetch_one(&mut *tx)
        .await
        .map_err(storage)?
        .try_get("seq")
        .map_err(storage)?;
        for token in &new.person_tokens {
            sqlx::query("INSERT INTO disclosure_people (disclosure_id, person_token) VALUES ($1, $2)")
                .bind(&id)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(Disclosure {
            seq,
            id,
            authority: new.authority,
            legal_basis: new.legal_basis,
            reference_number: new.reference_number,
            person_tokens: new.person_tokens,
            fields: new.fields,
            documents: new.documents,
            expires_at_ms: new.expires_at_ms,
            requested_by: requested_by.to_owned(),
            requested_at_ms,
            approval: None,
        })
    }

    /// Approves a pending request as `approved_by`, who must not be the officer who
    /// filed it.
    pub async fn approve(&self, id: &str, approved_by: &str) -> Result<Disclosure, Error> {
        let disclosure = self.get(id).await?.ok_or_else(|| Error::NotFound(format!("disclosure request {id}")))?;
        if disclosure.requested_by == approved_by {
            return Err(Error::PermissionDenied(format!(
                "disclosure request {id} must be approved by an officer other than the one who filed it"
            )));
        }
        let now = now_ms();
        match disclosure.state(now) {
            State::Pending => {}
            State::Approved => {
                return Err(Error::FailedPrecondition(format!("disclosure request {id} is already approved")));
            }
            State::Expired => return Err(Error::FailedPrecondition(format!("disclosure request {id} has expired"))),
        }
        // The primary key keeps a second approval out even when two race.
        let inserted = sqlx::query(
            "INSERT INTO disclosure_approvals (disclosure_id, approved_by, approved_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (disclosure_id) DO NOTHING",
        )
        .bind(id)
        .bind(approved_by)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(storage)?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::FailedPrecondition(format!("disclosure request {id} is already approved")));
        }
        self.get(id).await?.ok_or_else(|| Error::NotFound(format!("disclosure request {id}")))
    }

    /// One request with its scope, or `None`.
    pub async fn get(&self, id: &str) -> Result<Option<Disclosure>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM disclosures d LEFT JOIN disclosure_approvals a ON a.disclosure_id = d.id \
             WHERE d.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut disclosure = disclosure_of(&row)?;
        disclosure.person_tokens = self.people(id).await?;
        Ok(Some(disclosure))
    }

    async fn people(&self, id: &str) -> Result<Vec<String>, Error> {
        let rows =
            sqlx::query("SELECT person_token FROM disclosure_people WHERE disclosure_id = $1 ORDER BY person_token")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(storage)?;
        rows.iter().map(|row| row.try_get("person_token").map_err(storage)).collect()
    }

    /// The register, newest first: requests with `seq` below `before_seq` (0 = from the
    /// newest), at most `limit`, in `state` if given (judged at `now_ms`).
    pub async fn list(
        &self,
        state: Option<State>,
        before_seq: i64,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Disclosure>, Error> {
        let condition = match state {
            None => "",
            Some(State::Pending) => "AND a.disclosure_id IS NULL AND d.expires_at_ms > $2",
            Some(State::Approved) => "AND a.disclosure_id IS NOT NULL AND d.expires_at_ms > $2",
            Some(State::Expired) => "AND d.expires_at_ms <= $2",
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM disclosures d LEFT JOIN disclosure_approvals a ON a.disclosure_id = d.id \
             WHERE ($1 = 0 OR d.seq < $1) {condition} ORDER BY d.seq DESC LIMIT {}",
            limit.max(1)
        );
        let mut query = sqlx::query(&sql).bind(before_seq);
        if state.is_some() {
            query = query.bind(now_ms);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(storage)?;
        let mut disclosures = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut disclosure = disclosure_of(row)?;
            disclosure.person_tokens = self.people(&disclosure.id).await?;
            disclosures.push(disclosure);
        }
        Ok(disclosures)
    }

    /// The request a reveal under legal_disclosure names, if it is usable by now:
    /// approved, unexpired. `Err` is the reason for the access log.
    pub async fn usable(&self, id: &str) -> Result<Result<Disclosure, String>, Error> {
        if id.is_empty() {
            return Ok(Err("legal disclosure requires the id of an approved disclosure request".to_owned()));
        }
        let Some(disclosure) = self.get(id).await? else {
            return Ok(Err(format!("disclosure request {id} does not exist")));
        };
        Ok(disclosure.usable(now_ms()).map(|()| disclosure))
    }
}

fn disclosure_of(row: &AnyRow) -> Result<Disclosure, Error> {
    let fields: String = row.try_get("fields").map_err(storage)?;
    let fields = fields
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.parse::<Field>().map_err(|_| Error::FailedPrecondition("the register names an unknown field".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let approved_by: Option<String> = row.try_get("approved_by").map_err(storage)?;
    let approved_at_ms: Option<i64> = row.try_get("approved_at_ms").map_err(storage)?;
    let documents: i64 = row.try_get("documents").map_err(storage)?;
    Ok(Disclosure {
        seq: row.try_get("seq").map_err(storage)?,
        id: row.try_get("id").map_err(storage)?,
        authority: row.try_get("authority").map_err(storage)?,
        legal_basis: row.try_get("legal_basis").map_err(storage)?,
        reference_number: row.try_get("reference_number").map_err(storage)?,
        person_tokens: Vec::new(),
        fields,
        documents: documents != 0,
        expires_at_ms: row.try_get("expires_at_ms").map_err(storage)?,
        requested_by: row.try_get("requested_by").map_err(storage)?,
        requested_at_ms: row.try_get("requested_at_ms").map_err(storage)?,
        approval: approved_by.zip(approved_at_ms),
    })
}

/// A disclosure-request id on a reveal: empty for every purpose but legal_disclosure,
/// and well formed for it.
pub fn check_request_field(field: &str, value: &str, purpose: Purpose) -> Result<(), Error> {
    if value.is_empty() {
        return Ok(());
    }
    if purpose != Purpose::LegalDisclosure {
        return Err(Error::invalid(field, "is only for legal_disclosure"));
    }
    validate_id(field, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(expires_in_ms: i64) -> NewDisclosure {
        NewDisclosure {
            authority: "Prosecutor's Office of Almaty".into(),
            legal_basis: "Criminal Procedure Code, art. 122".into(),
            reference_number: "2026-4417".into(),
            person_tokens: vec![format!("qpp_{}", "A".repeat(35))],
            fields: vec![Field::Surname],
            documents: false,
            expires_at_ms: 1_000 + expires_in_ms,
        }
    }

    #[test]
    fn a_request_is_bounded_in_time_and_scope() {
        assert!(new(1).validated(1_000).is_ok());
        assert!(new(0).validated(1_000).is_err());
        assert!(new(MAX_LIFETIME_MS + 1).validated(1_000).is_err());
        let mut many = new(1);
        many.person_tokens = (0..=MAX_PEOPLE).map(|i| format!("qpp_{:0>35}", i)).collect();
        assert!(many.validated(1_000).is_err());
        let mut none = new(1);
        none.fields.clear();
        assert!(none.clone().validated(1_000).is_err());
        none.documents = true;
        assert!(none.validated(1_000).is_ok());
    }

    #[test]
    fn text_that_names_a_contact_is_refused_without_repeating_it() {
        let mut bad = new(1);
        bad.authority = "ask aigerim.sadykova@mail.kz".into();
        let error = bad.validated(1_000).unwrap_err().to_string();
        assert!(error.starts_with("authority:"));
        assert!(!error.contains("aigerim"));
    }

    #[test]
    fn ids_are_dr_and_a_uuid() {
        assert!(validate_id("id", &format!("dr-{}", uuid::Uuid::new_v4())).is_ok());
        assert!(validate_id("id", "dr-2026-17").is_err());
        assert!(validate_id("id", "").is_err());
        assert!(check_request_field("x", "", Purpose::Identification).is_ok());
        assert!(check_request_field("x", &format!("dr-{}", uuid::Uuid::new_v4()), Purpose::Identification).is_err());
    }
}
