//! The register of data-subject requests and complaints (policy clause 5.2: answered
//! within 30 working days), through the gateway's gRPC API over mTLS. Each storage test
//! runs on SQLite and PostgreSQL.
//!
//! Expected due dates are worked out by hand below, from the shipped holiday file.

mod common;

use qupia_api::gateway::v1::subject_request_service_client::SubjectRequestServiceClient;
use qupia_api::gateway::v1::{
    GetSubjectRequestRequest, GetSubjectRequestResponse, ListSubjectRequestsRequest, RecordSubjectRequestRequest,
    RejectionReason, SubjectRequest, SubjectRequestKind, SubjectRequestStatus, UpdateSubjectRequestRequest,
};
use qupia_test_support::{Backend, Suite, storage_test};
use sqlx::Connection;
use tonic::Code;
use tonic::transport::Channel;

const QUPIACTL: &str = "spiffe://qupia/ns/default/sa/qupiactl";

/// A well-formed person token (canonical: ends in `A`); the register checks its shape only.
fn person(i: usize) -> String {
    format!("qpp_{i:0>34}A")
}

async fn register(suite: &Suite, caller: &str) -> SubjectRequestServiceClient<Channel> {
    SubjectRequestServiceClient::new(suite.channel_as(caller).await)
}

fn new_request(kind: SubjectRequestKind, received_on: &str) -> RecordSubjectRequestRequest {
    RecordSubjectRequestRequest {
        person_token: person(1),
        kind: kind as i32,
        channel: "paper".into(),
        evidence: "incoming 2026/118".into(),
        received_on: received_on.into(),
    }
}

async fn record(suite: &Suite, request: RecordSubjectRequestRequest) -> Result<SubjectRequest, tonic::Status> {
    let response = register(suite, "qupiactl").await.record_subject_request(request).await?;
    Ok(response.into_inner().request.expect("the recorded request"))
}

async fn received(suite: &Suite, kind: SubjectRequestKind, received_on: &str) -> SubjectRequest {
    record(suite, new_request(kind, received_on)).await.expect("record a subject request")
}

async fn set_status(
    suite: &Suite,
    id: &str,
    status: SubjectRequestStatus,
    reason: RejectionReason,
) -> Result<SubjectRequest, tonic::Status> {
    let response = register(suite, "qupiactl")
        .await
        .update_subject_request(UpdateSubjectRequestRequest {
            id: id.into(),
            status: status as i32,
            rejection_reason: reason as i32,
            evidence: "outgoing 2026/77".into(),
        })
        .await?;
    Ok(response.into_inner().request.expect("the updated request"))
}

async fn get(suite: &Suite, id: &str) -> Result<GetSubjectRequestResponse, tonic::Status> {
    register(suite, "qupiactl")
        .await
        .get_subject_request(GetSubjectRequestRequest { id: id.into() })
        .await
        .map(tonic::Response::into_inner)
}

/// Every request matching `filter`, following the pages.
async fn list_all(suite: &Suite, filter: ListSubjectRequestsRequest) -> Vec<SubjectRequest> {
    let mut client = register(suite, "qupiactl").await;
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_subject_requests(ListSubjectRequestsRequest { page_token: page_token.clone(), ..filter.clone() })
            .await
            .expect("list subject requests")
            .into_inner();
        all.extend(page.requests);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

storage_test!(due_dates_count_working_days_by_the_kazakh_calendar, due_dates);
async fn due_dates(backend: Backend) {
    let suite = Suite::start(backend).await;
    let cases = [
        // Tuesday 2026-12-15, the day before Independence Day. Not counted: Dec 16
        // (Independence Day), Jan 1 (New Year), Jan 4 (carried over from New Year on
        // Saturday Jan 2), Jan 7 (Orthodox Christmas), and the weekends. Counting:
        // Dec 17-18 (2), Dec 21-25 (7), Dec 28-31 (11), Jan 5-6 (13), Jan 8 (14),
        // Jan 11-15 (19), Jan 18-22 (24), Jan 25-29 (29), Mon Feb 1 (30).
        ("2026-12-15", "2027-02-01"),
        // Friday 2026-03-20, the day before Nauryz. Not counted: Sat-Sun Mar 21-22,
        // Mar 23 (Nauryz), Mar 24-25 (carried over from Nauryz on the weekend), May 1
        // (Unity Day), May 7 (Defender's Day). Counting: Mar 26-27 (2), Mar 30-Apr 3
        // (7), Apr 6-10 (12), Apr 13-17 (17), Apr 20-24 (22), Apr 27-30 (26), May 4-6
        // (29), Fri May 8 (30).
        ("2026-03-20", "2026-05-08"),
        // A Friday: the weekend after it does not count. Jun 8-12 (5), Jun 15-19 (10),
        // Jun 22-26 (15), Jun 29-Jul 3 (20), Jul 6 is Capital Day, Jul 7-10 (24),
        // Jul 13-17 (29), Mon Jul 20 (30).
        ("2026-06-05", "2026-07-20"),
        // Received on a holiday (Capital Day, a Monday): counting starts the day after.
        // Jul 7-10 (4), then five full weeks to Aug 14 (29), Mon Aug 17 (30).
        ("2026-07-06", "2026-08-17"),
        // Received on Victory Day, a Saturday: Sunday and Monday May 11 (carried over)
        // do not count. May 12-15 (4), May 18-22 (9), May 25-26 (11), May 27 is Kurban
        // Ait, May 28-29 (13), Jun 1-5 (18), Jun 8-12 (23), Jun 15-19 (28), Jun 22 (29),
        // Tue Jun 23 (30).
        ("2026-05-09", "2026-06-23"),
    ];
    for (received_on, due_on) in cases {
        let request = received(&suite, SubjectRequestKind::Access, received_on).await;
        assert_eq!((request.received_on.as_str(), request.due_on.as_str()), (received_on, due_on));
        assert_eq!(request.status, SubjectRequestStatus::Received as i32);
        assert_eq!((request.recorded_by.as_str(), request.updated_by.as_str()), (QUPIACTL, QUPIACTL));
        assert!(request.recorded_at_ms > 0 && request.updated_at_ms == request.recorded_at_ms);
        let stored = get(&suite, &request.id).await.expect("read it back").request.expect("request");
        assert_eq!(stored, request, "what is stored is what was answered");
    }
}

storage_test!(a_due_date_beyond_the_calendar_is_refused, beyond_the_calendar);
async fn beyond_the_calendar(backend: Backend) {
    let suite = Suite::start(backend).await;
    // 30 working days after 1 December 2027 run into 2028, which the shipped file does
    // not list; and 2025 is before its first year.
    for (received_on, year) in [("2027-12-01", "2028"), ("2025-06-02", "2025")] {
        let err = record(&suite, new_request(SubjectRequestKind::Erasure, received_on)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert_eq!(err.message(), format!("the holiday calendar does not cover {year}"));
    }
    assert!(list_all(&suite, ListSubjectRequestsRequest::default()).await.is_empty(), "nothing was recorded");
}

storage_test!(status_changes_are_appended_and_final_ones_never_change, status_changes);
async fn status_changes(backend: Backend) {
    let suite = Suite::start(backend).await;
    let request = received(&suite, SubjectRequestKind::Rectification, "2026-06-05").await;
    use RejectionReason::Unspecified as NoReason;

    let working = set_status(&suite, &request.id, SubjectRequestStatus::InProgress, NoReason).await.expect("start");
    assert_eq!(working.status, SubjectRequestStatus::InProgress as i32);
    assert!(working.updated_at_ms >= request.recorded_at_ms);
    let done = set_status(&suite, &request.id, SubjectRequestStatus::Completed, NoReason).await.expect("complete");
    assert_eq!((done.status, done.due_on.as_str()), (SubjectRequestStatus::Completed as i32, "2026-07-20"));

    // A completed request is final: reopening it, or rejecting it, is refused.
    for (status, reason) in [
        (SubjectRequestStatus::InProgress, NoReason),
        (SubjectRequestStatus::Rejected, RejectionReason::Duplicate),
        (SubjectRequestStatus::Completed, NoReason),
    ] {
        let err = set_status(&suite, &request.id, status, reason).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{status:?}: {}", err.message());
    }
    // ...and changes nothing: the history is received, in progress, completed.
    let found = get(&suite, &request.id).await.expect("get");
    assert_eq!(found.request.as_ref().map(|r| r.status), Some(SubjectRequestStatus::Completed as i32));
    let history: Vec<_> = found.history.iter().map(|e| (e.revision, e.status, e.recorded_by.as_str())).collect();
    assert_eq!(
        history,
        [
            (1, SubjectRequestStatus::Received as i32, QUPIACTL),
            (2, SubjectRequestStatus::InProgress as i32, QUPIACTL),
            (3, SubjectRequestStatus::Completed as i32, QUPIACTL),
        ]
    );
    assert_eq!(found.history[0].evidence, "incoming 2026/118");
    assert_eq!(found.history[2].evidence, "outgoing 2026/77");

    // A rejection needs a reason, and only a rejection takes one; it may come straight
    // from received.
    let other = received(&suite, SubjectRequestKind::Erasure, "2026-06-05").await;
    let err = set_status(&suite, &other.id, SubjectRequestStatus::Rejected, NoReason).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "rejection_reason: is required to reject a request")
    );
    let err =
        set_status(&suite, &other.id, SubjectRequestStatus::InProgress, RejectionReason::Duplicate).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = set_status(&suite, &other.id, SubjectRequestStatus::Received, NoReason).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().starts_with("status: "), "{err:?}");
    let rejected =
        set_status(&suite, &other.id, SubjectRequestStatus::Rejected, RejectionReason::RetentionRequiredByLaw)
            .await
            .expect("reject");
    assert_eq!(rejected.rejection_reason, RejectionReason::RetentionRequiredByLaw as i32);
    assert_eq!(get(&suite, &other.id).await.expect("get").history.len(), 2);

    // An unknown id is NOT_FOUND; something that is no id at all is INVALID_ARGUMENT.
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(get(&suite, &unknown).await.unwrap_err().code(), Code::NotFound);
    let err = set_status(&suite, &unknown, SubjectRequestStatus::Completed, NoReason).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = get(&suite, "request-7").await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && !err.message().contains("request-7"), "{err:?}");
}

storage_test!(overdue_means_open_and_past_its_due_date, overdue);
async fn overdue(backend: Backend) {
    let suite = Suite::start(backend).await;
    use RejectionReason::Unspecified as NoReason;
    // All due in February 2026, long before any day these tests run on.
    let open = received(&suite, SubjectRequestKind::Access, "2026-01-05").await; // due 2026-02-17
    let working = received(&suite, SubjectRequestKind::Erasure, "2026-01-06").await; // due 2026-02-18
    let completed = received(&suite, SubjectRequestKind::Access, "2026-01-08").await; // due 2026-02-19
    let rejected = received(&suite, SubjectRequestKind::Complaint, "2026-01-09").await; // due 2026-02-20
    set_status(&suite, &working.id, SubjectRequestStatus::InProgress, NoReason).await.expect("start");
    set_status(&suite, &completed.id, SubjectRequestStatus::Completed, NoReason).await.expect("complete");
    set_status(&suite, &rejected.id, SubjectRequestStatus::Rejected, RejectionReason::ManifestlyUnfounded)
        .await
        .expect("reject");

    let overdue = list_all(&suite, ListSubjectRequestsRequest { overdue_only: true, ..Default::default() }).await;
    let ids: Vec<_> = overdue.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [open.id.as_str(), working.id.as_str()], "open ones only, by due date");
    assert!(overdue.iter().all(|r| r.overdue));
    assert_eq!(overdue[0].due_on, "2026-02-17");

    // Everything, a page at a time, by due date; closed requests are never overdue.
    let everything = list_all(&suite, ListSubjectRequestsRequest { page_size: 1, ..Default::default() }).await;
    let flags: Vec<_> = everything.iter().map(|r| (r.id.as_str(), r.overdue)).collect();
    assert_eq!(
        flags,
        [
            (open.id.as_str(), true),
            (working.id.as_str(), true),
            (completed.id.as_str(), false),
            (rejected.id.as_str(), false)
        ]
    );

    // The other filters.
    let by_kind =
        list_all(&suite, ListSubjectRequestsRequest { kind: SubjectRequestKind::Access as i32, ..Default::default() })
            .await;
    assert_eq!(by_kind.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [open.id.as_str(), completed.id.as_str()]);
    let by_status = list_all(
        &suite,
        ListSubjectRequestsRequest { status: SubjectRequestStatus::Completed as i32, ..Default::default() },
    )
    .await;
    assert_eq!(by_status.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [completed.id.as_str()]);
    let someone_else =
        list_all(&suite, ListSubjectRequestsRequest { person_token: person(2), ..Default::default() }).await;
    assert!(someone_else.is_empty());

    let err = register(&suite, "qupiactl")
        .await
        .list_subject_requests(ListSubjectRequestsRequest { page_token: "page-2".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().starts_with("page_token: "), "{err:?}");
}

storage_test!(bad_input_is_refused_naming_the_field_never_the_value, bad_input);
async fn bad_input(backend: Backend) {
    let suite = Suite::start(backend).await;
    let good = || new_request(SubjectRequestKind::Access, "2026-06-05");
    let cases: Vec<(RecordSubjectRequestRequest, &str, String)> = vec![
        (
            RecordSubjectRequestRequest { received_on: "2026-02-30".into(), ..good() },
            "received_on",
            "2026-02-30".into(),
        ),
        (
            RecordSubjectRequestRequest { received_on: "15.12.2026".into(), ..good() },
            "received_on",
            "15.12.2026".into(),
        ),
        (RecordSubjectRequestRequest { kind: 0, ..good() }, "kind", String::new()),
        (RecordSubjectRequestRequest { kind: 99, ..good() }, "kind", "99".into()),
        (
            RecordSubjectRequestRequest { evidence: "aigerim.nurlanova@mail.kz".into(), ..good() },
            "evidence",
            "aigerim.nurlanova@mail.kz".into(),
        ),
        (RecordSubjectRequestRequest { evidence: "+77011234567".into(), ..good() }, "evidence", "+77011234567".into()),
        (RecordSubjectRequestRequest { evidence: "Нұрланова".into(), ..good() }, "evidence", "Нұрланова".into()),
        (RecordSubjectRequestRequest { evidence: String::new(), ..good() }, "evidence", String::new()),
        (RecordSubjectRequestRequest { channel: "Front Desk".into(), ..good() }, "channel", "Front Desk".into()),
        (RecordSubjectRequestRequest { person_token: "qpp_nope".into(), ..good() }, "person_token", "qpp_nope".into()),
        (RecordSubjectRequestRequest { person_token: String::new(), ..good() }, "person_token", String::new()),
    ];
    for (request, field, value) in cases {
        let err = record(&suite, request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {}", err.message());
        assert!(err.message().starts_with(&format!("{field}: ")), "{}", err.message());
        assert!(value.is_empty() || !err.message().contains(&value), "the value is echoed: {}", err.message());
    }
    assert!(list_all(&suite, ListSubjectRequestsRequest::default()).await.is_empty(), "nothing was recorded");

    // A complaint alone may come from someone without an account.
    let complaint = record(
        &suite,
        RecordSubjectRequestRequest {
            person_token: String::new(),
            ..new_request(SubjectRequestKind::Complaint, "2026-06-05")
        },
    )
    .await
    .expect("an anonymous complaint");
    assert_eq!((complaint.person_token.as_str(), complaint.due_on.as_str()), ("", "2026-07-20"));
}

storage_test!(only_writers_and_the_security_team_keep_the_register, roles);
async fn roles(backend: Backend) {
    let suite = Suite::start(backend).await;
    // The accounts service records requests made online; it does not work the register.
    let mut accounts = register(&suite, "accounts").await;
    let recorded = accounts
        .record_subject_request(new_request(SubjectRequestKind::ConsentWithdrawal, "2026-06-05"))
        .await
        .expect("accounts records a request")
        .into_inner()
        .request
        .expect("request");
    assert_eq!(recorded.recorded_by, common::ACCOUNTS);
    let err = accounts.list_subject_requests(ListSubjectRequestsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    for caller in ["marketing", "reporting"] {
        let mut client = register(&suite, caller).await;
        let codes = [
            client.record_subject_request(new_request(SubjectRequestKind::Access, "2026-06-05")).await.map(drop),
            client
                .update_subject_request(UpdateSubjectRequestRequest {
                    id: recorded.id.clone(),
                    status: SubjectRequestStatus::Completed as i32,
                    ..Default::default()
                })
                .await
                .map(drop),
            client.get_subject_request(GetSubjectRequestRequest { id: recorded.id.clone() }).await.map(drop),
            client.list_subject_requests(ListSubjectRequestsRequest::default()).await.map(drop),
        ]
        .map(|result| result.unwrap_err().code());
        assert_eq!(codes, [Code::PermissionDenied; 4], "{caller}");
    }
    let found = get(&suite, &recorded.id).await.expect("get");
    assert_eq!(found.history.len(), 1, "nothing changed");
}

storage_test!(the_register_is_append_only_in_the_database, append_only);
async fn append_only(backend: Backend) {
    let suite = Suite::start(backend).await;
    let request = received(&suite, SubjectRequestKind::Access, "2026-06-05").await;
    let mut conn = sqlx::AnyConnection::connect(&suite.gateway_db.admin_url).await.expect("connect as the operator");
    for statement in [
        "UPDATE subject_request_events SET status = 'completed'",
        "DELETE FROM subject_request_events",
        "UPDATE subject_requests SET due_on = '2099-01-01'",
        "DELETE FROM subject_requests",
    ] {
        let err = sqlx::query(statement).execute(&mut conn).await.expect_err(statement);
        assert!(err.to_string().contains("append-only"), "{statement}: {err}");
    }
    let found = get(&suite, &request.id).await.expect("get");
    assert_eq!(found.request.map(|r| r.due_on), Some("2026-07-20".to_owned()));
}

/// A replacement holiday file: a transfer decree that gives Monday 2026-06-08 off and
/// makes Saturday 2026-06-13 a working day moves nothing in total, but a day off
/// added on 2026-06-10 moves the due date by one working day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_holiday_file_replaces_the_shipped_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("holidays.txt");
    let text = qupia_gateway::subject::DEFAULT_HOLIDAYS.to_owned()
        + "2026-06-08  # transfer decree (test)\n2026-06-13 workday  # transfer decree (test)\n\
           2026-06-10  # a day off added by decree (test)\n";
    std::fs::write(&path, text).expect("write the file");
    let suite = Suite::start_with(Backend::Sqlite, |config| config.holidays_path = Some(path.clone())).await;
    let request = received(&suite, SubjectRequestKind::Access, "2026-06-05").await;
    assert_eq!(request.due_on, "2026-07-21", "one more day off than the shipped calendar's 2026-07-20");
}

#[tokio::test]
async fn a_malformed_holiday_file_refuses_to_start_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("holidays.txt");
    std::fs::write(&path, "# header\n2026-01-01  # New Year\n2026-01-32  # no such day\n").expect("write the file");
    let mut config = qupia_gateway::Config::new(
        format!("sqlite://{}?mode=rwc", dir.path().join("gateway.db").display()),
        qupia_transport::TlsMode::InsecureDev {
            assumed_caller: qupia_transport::ServiceIdentity::for_service("default", "qupiactl"),
        },
        "127.0.0.1:9".into(),
    );
    config.holidays_path = Some(path.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = qupia_gateway::serve(config, listener, std::future::pending()).await.expect_err("refuses to start");
    let message = err.to_string();
    assert!(message.contains(&format!("{}: line 3: ", path.display())), "{message}");
}
