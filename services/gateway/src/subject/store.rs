//! Every SQL statement of the subject-request register.
//!
//! One SQL text serves SQLite and PostgreSQL through sqlx's `Any` driver, in the
//! gateway's database (the consent store opens it and runs the migrations). Dates are
//! stored as `YYYY-MM-DD` text, which sorts as the dates do. A request's events are
//! numbered 1, 2, 3... by `revision`, unique per request: two changes racing for the
//! same revision cannot both be recorded, so every change is judged against the status
//! it actually follows.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use time::Date;

use super::SubjectError;
use super::calendar::{HolidayCalendar, parse_date};
use super::model::{
    self, NewSubjectRequest, RejectionReason, SubjectRequest, SubjectRequestEvent, SubjectRequestFilter,
    SubjectRequestKind, SubjectRequestStatus, SubjectRequestUpdate, WORKING_DAYS_TO_ANSWER,
};
use crate::consent::now_ms;

/// The default and the largest page of a listing.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

/// A request (`r`) with its latest event (`e`), in the order [`request_of`] reads them.
const REQUEST_COLUMNS: &str = "r.id, r.person_token, r.kind, r.channel, r.evidence, r.received_on, \
     r.due_on, r.recorded_at_ms, r.recorded_by, e.revision, e.status, e.rejection_reason, \
     e.evidence AS event_evidence, e.recorded_at_ms AS event_recorded_at_ms, \
     e.recorded_by AS event_recorded_by";

/// Joins each request to its latest event.
const LATEST_EVENT: &str = "subject_requests r JOIN subject_request_events e ON e.request_id = r.id \
     AND e.revision = (SELECT MAX(l.revision) FROM subject_request_events l WHERE l.request_id = r.id)";

const INSERT_EVENT: &str = "INSERT INTO subject_request_events (request_id, revision, status, \
     rejection_reason, evidence, recorded_at_ms, recorded_by) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRequestPage {
    pub requests: Vec<SubjectRequest>,
    /// Pass back for the next page; empty when there is none.
    pub next_page_token: String,
}

/// The register in the gateway's database. Cheap to clone: a pool handle and the
/// calendar.
#[derive(Debug, Clone)]
pub struct SubjectRequestStore {
    pool: AnyPool,
    calendar: Arc<HolidayCalendar>,
}

impl SubjectRequestStore {
    /// The register in the database behind `pool`, whose migrations have run
    /// ([`crate::consent::ConsentStore::connect`] runs them).
    pub fn new(pool: AnyPool, calendar: Arc<HolidayCalendar>) -> SubjectRequestStore {
        SubjectRequestStore { pool, calendar }
    }

    pub fn calendar(&self) -> &HolidayCalendar {
        &self.calendar
    }

    /// Validates the request, computes its due date and enters it as `received`. Bad
    /// input, or a due date the calendar does not cover, changes nothing.
    pub async fn record(&self, request: NewSubjectRequest) -> Result<SubjectRequest, SubjectError> {
        request.validate()?;
        let due_on = self.calendar.add_working_days(request.received_on, WORKING_DAYS_TO_ANSWER)?;
        let id = uuid::Uuid::new_v4().to_string();
        let recorded_at_ms = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO subject_requests (id, person_token, kind, channel, evidence, received_on, due_on, \
             recorded_at_ms, recorded_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.as_str())
        .bind(request.person_token.as_str())
        .bind(request.kind.as_str())
        .bind(request.channel.as_str())
        .bind(request.evidence.as_str())
        .bind(format_date(request.received_on))
        .bind(format_date(due_on))
        .bind(recorded_at_ms)
        .bind(request.recorded_by.as_str())
        .execute(&mut *tx)
        .await?;
        // The first event repeats the request's reference: it is what was received.
        sqlx::query(INSERT_EVENT)
            .bind(id.as_str())
            .bind(1_i64)
            .bind(SubjectRequestStatus::Received.as_str())
            .bind("")
            .bind(request.evidence.as_str())
            .bind(recorded_at_ms)
            .bind(request.recorded_by.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(SubjectRequest {
            latest: SubjectRequestEvent {
                revision: 1,
                status: SubjectRequestStatus::Received,
                rejection_reason: None,
                evidence: request.evidence.clone(),
                recorded_at_ms,
                recorded_by: request.recorded_by.clone(),
            },
            id,
            person_token: request.person_token,
            kind: request.kind,
            channel: request.channel,
            evidence: request.evidence,
            received_on: request.received_on,
            due_on,
            recorded_at_ms,
            recorded_by: request.recorded_by,
        })
    }

    /// Appends a status change if the current status allows it; returns the request as
    /// it now stands. A refused change changes nothing.
    pub async fn update(&self, update: SubjectRequestUpdate) -> Result<SubjectRequest, SubjectError> {
        update.validate()?;
        let mut request = self.current(&update.id).await?;
        let from = request.latest.status;
        if !from.may_become(update.status) {
            return Err(SubjectError::FailedPrecondition(if from.is_open() {
                format!("a request that is {from} cannot become {}", update.status)
            } else {
                format!("the request is already {from}; a final status never changes")
            }));
        }
        let event = SubjectRequestEvent {
            revision: request.latest.revision + 1,
            status: update.status,
            rejection_reason: update.rejection_reason,
            evidence: update.evidence,
            recorded_at_ms: now_ms(),
            recorded_by: update.updated_by,
        };
        let inserted = sqlx::query(INSERT_EVENT)
            .bind(update.id.as_str())
            .bind(event.revision)
            .bind(event.status.as_str())
            .bind(event.rejection_reason.map_or("", RejectionReason::as_str))
            .bind(event.evidence.as_str())
            .bind(event.recorded_at_ms)
            .bind(event.recorded_by.as_str())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => return Err(SubjectError::Conflict),
            Err(err) => return Err(err.into()),
        }
        request.latest = event;
        Ok(request)
    }

    /// The request as it stands, and its history oldest first.
    pub async fn get(&self, id: &str) -> Result<(SubjectRequest, Vec<SubjectRequestEvent>), SubjectError> {
        let request = self.current(id).await?;
        let rows = sqlx::query(
            "SELECT revision, status, rejection_reason, evidence AS event_evidence, \
             recorded_at_ms AS event_recorded_at_ms, recorded_by AS event_recorded_by \
             FROM subject_request_events WHERE request_id = $1 ORDER BY revision",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let history = rows.iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
        Ok((request, history))
    }

    /// The requests matching `filter`, by due date (then id), a page at a time.
    /// `today` is the day overdue is judged on (see [`super::today_in_almaty`]).
    pub async fn list(
        &self,
        filter: &SubjectRequestFilter,
        today: Date,
        page_size: u32,
        page_token: &str,
    ) -> Result<SubjectRequestPage, SubjectError> {
        if !filter.person_token.is_empty() {
            model::validate_person_token(&filter.person_token)?;
        }
        let after = parse_page_token(page_token)?;
        let limit = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };

        let mut conditions: Vec<String> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let mut bind = |value: String| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if let Some(status) = filter.status {
            conditions.push(format!("e.status = {}", bind(status.as_str().to_owned())));
        }
        if let Some(kind) = filter.kind {
            conditions.push(format!("r.kind = {}", bind(kind.as_str().to_owned())));
        }
        if !filter.person_token.is_empty() {
            conditions.push(format!("r.person_token = {}", bind(filter.person_token.clone())));
        }
        if filter.overdue_only {
            conditions
                .push(format!("r.due_on < {} AND e.status IN ('received', 'in_progress')", bind(format_date(today))));
        }
        if let Some((due_on, id)) = after {
            let due = bind(format_date(due_on));
            let id = bind(id);
            conditions.push(format!("(r.due_on > {due} OR (r.due_on = {due} AND r.id > {id}))"));
        }
        let mut sql = format!("SELECT {REQUEST_COLUMNS} FROM {LATEST_EVENT}");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        // One more than the page, to know whether another page follows.
        sql.push_str(&format!(" ORDER BY r.due_on, r.id LIMIT {}", u64::from(limit) + 1));

        let mut query = sqlx::query(&sql);
        for value in &binds {
            query = query.bind(value.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut requests = rows.iter().map(request_of).collect::<Result<Vec<_>, _>>()?;
        let next_page_token = if requests.len() > limit as usize {
            requests.truncate(limit as usize);
            requests.last().map(|last| format!("{}/{}", format_date(last.due_on), last.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(SubjectRequestPage { requests, next_page_token })
    }

    /// The request with its latest event.
    async fn current(&self, id: &str) -> Result<SubjectRequest, SubjectError> {
        model::validate_id(id)?;
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM {LATEST_EVENT} WHERE r.id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => Ok(request_of(&row)?),
            None => Err(SubjectError::NotFound),
        }
    }
}

/// `YYYY-MM-DD`, as stored and as the API speaks.
pub(crate) fn format_date(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// `<due date>/<id>` of the last request of the previous page; empty for the first.
fn parse_page_token(token: &str) -> Result<Option<(Date, String)>, SubjectError> {
    if token.is_empty() {
        return Ok(None);
    }
    let parsed = token
        .split_once('/')
        .and_then(|(due, id)| Some((parse_date(due)?, id)))
        .filter(|(_, id)| model::validate_id(id).is_ok());
    match parsed {
        Some((due, id)) => Ok(Some((due, id.to_owned()))),
        None => Err(SubjectError::invalid("page_token", "is not a page token this register issued")),
    }
}

fn request_of(row: &AnyRow) -> Result<SubjectRequest, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let received_on: String = row.try_get("received_on")?;
    let due_on: String = row.try_get("due_on")?;
    Ok(SubjectRequest {
        id: row.try_get("id")?,
        person_token: row.try_get("person_token")?,
        kind: SubjectRequestKind::from_stored(&kind)
            .ok_or_else(|| sqlx::Error::Decode("a stored subject request kind is unknown".into()))?,
        channel: row.try_get("channel")?,
        evidence: row.try_get("evidence")?,
        received_on: stored_date(&received_on)?,
        due_on: stored_date(&due_on)?,
        recorded_at_ms: row.try_get("recorded_at_ms")?,
        recorded_by: row.try_get("recorded_by")?,
        latest: event_of(row)?,
    })
}

fn event_of(row: &AnyRow) -> Result<SubjectRequestEvent, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let reason: String = row.try_get("rejection_reason")?;
    let rejection_reason = match reason.as_str() {
        "" => None,
        stored => Some(
            RejectionReason::from_stored(stored)
                .ok_or_else(|| sqlx::Error::Decode("a stored rejection reason is unknown".into()))?,
        ),
    };
    Ok(SubjectRequestEvent {
        revision: row.try_get("revision")?,
        status: SubjectRequestStatus::from_stored(&status)
            .ok_or_else(|| sqlx::Error::Decode("a stored subject request status is unknown".into()))?,
        rejection_reason,
        evidence: row.try_get("event_evidence")?,
        recorded_at_ms: row.try_get("event_recorded_at_ms")?,
        recorded_by: row.try_get("event_recorded_by")?,
    })
}

fn stored_date(text: &str) -> Result<Date, sqlx::Error> {
    parse_date(text).ok_or_else(|| sqlx::Error::Decode("a stored date is malformed".into()))
}
