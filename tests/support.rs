//! The whole suite for cross-service tests: the vault, the gateway, the accounts service
//! and the marketing service in one process, over real mTLS on one test PKI, each on its
//! own database (SQLite or PostgreSQL), with marketing delivering e-mail to a real SMTP
//! server. Tests call it as the web front end (accounts) and the operator CLI
//! (marketing) do, and as an attacker might.

use std::time::Duration;

use qupia_api::accounts::v1 as accounts;
use qupia_api::accounts::v1::accounts_service_client::AccountsServiceClient;
use qupia_api::marketing::v1::marketing_service_client::MarketingServiceClient;
use qupia_marketing::{EmailSender, SmtpConfig, SmtpTls};
use qupia_test_support::{AccountsSuite, Backend, MarketingInstance, SmtpServer, TestDb, connect};
use qupia_transport::TlsMode;
use tonic::transport::Channel;

/// The people of these tests: (surname, given name, patronymic, e-mail, phone). The
/// first five share an e-mail domain (a group at k = 5), the next three another (a
/// group of 3, which statistics must suppress); the last never consents to statistics.
pub const PEOPLE: [(&str, &str, &str, &str, &str); 9] = [
    ("Нұрланова", "Әйгерім", "Серікқызы", "aigerim.nurlanova@mail.kz", "+77011234567"),
    ("Жұмабаев", "Ерлан", "Қайратұлы", "erlan.zhumabayev@mail.kz", "+77052345678"),
    ("Ахметова", "Дана", "Болатқызы", "dana.akhmetova@mail.kz", "+77473456789"),
    ("Сейітов", "Нұрлан", "", "nurlan.seitov@mail.kz", "+77074567890"),
    ("Иванова", "Мария", "Петровна", "m.ivanova@mail.kz", "+77775678901"),
    ("O'Brien", "Aoife", "", "aoife.obrien@example.com", "+77027890123"),
    ("Schmidt", "Jonas", "", "jonas.schmidt@example.com", "+77088901234"),
    ("Rossi", "Giulia", "", "giulia.rossi@example.com", "+77719012345"),
    ("Ким", "Виктор", "Сергеевич", "viktor.kim@inbox.kz", "+77006789012"),
];

/// Marks the content of every test scan, so that byte scans can look for it.
pub const SCAN_MARKER: &str = "QUPIA-E2E-IDENTITY-SCAN-c41d9e";

/// Every personal value of [`PEOPLE`], the national digits of each phone, and the scan
/// marker: what must never be found outside the vault.
pub fn needles() -> Vec<&'static str> {
    let mut needles: Vec<&'static str> = PEOPLE
        .iter()
        .flat_map(|(a, b, c, d, e)| [*a, *b, *c, *d, *e, &e[2..]])
        .filter(|value| !value.is_empty())
        .collect();
    needles.push(SCAN_MARKER);
    needles
}

/// A well-formed PDF of exactly `size` bytes (or just its header and trailer, if
/// `size` is smaller) whose content carries [`SCAN_MARKER`].
pub fn scan(size: usize) -> Vec<u8> {
    let mut pdf = format!(
        "%PDF-1.7\n% {SCAN_MARKER}\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
         2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
         3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >> endobj\n"
    )
    .into_bytes();
    let line = format!("% {SCAN_MARKER} scanned page data\n");
    let trailer: &[u8] = b"trailer << /Root 1 0 R >>\n%%EOF\n";
    let mut n = 0u64;
    while pdf.len() + line.len() + 17 + trailer.len() <= size {
        // Varied bytes, as a scan is: a changed chunk cannot be an identical one.
        pdf.extend_from_slice(line.as_bytes());
        pdf.extend_from_slice(format!("{n:016x}\n").as_bytes());
        n += 1;
    }
    // A comment line pads the file to exactly `size` bytes.
    let pad = size.saturating_sub(pdf.len() + trailer.len());
    match pad {
        0 => {}
        1 => pdf.push(b'\n'),
        _ => {
            pdf.push(b'%');
            pdf.resize(pdf.len() + pad - 2, b' ');
            pdf.push(b'\n');
        }
    }
    pdf.extend_from_slice(trailer);
    pdf
}

/// Every service of the suite, running.
#[derive(Debug)]
pub struct Everything {
    /// The vault, the gateway and the accounts service.
    pub accounts: AccountsSuite,
    pub marketing_db: TestDb,
    pub smtp: SmtpServer,
    marketing: MarketingInstance,
}

impl Everything {
    pub async fn start(backend: Backend) -> Everything {
        let accounts = AccountsSuite::start(backend).await;
        let smtp = SmtpServer::start();
        let marketing_db = TestDb::create(backend, "marketing").await;
        let mut config = qupia_marketing::Config::new(
            marketing_db.url.clone(),
            TlsMode::Mtls(accounts.suite.pki.service("marketing")),
            accounts.suite.gateway_addr.to_string(),
        );
        config.max_connections = 4;
        config.ops = qupia_ops::OpsOptions::ephemeral();
        config.delivery.poll_interval = Duration::from_millis(20);
        config.delivery.retry_backoff = Duration::from_millis(20);
        config.delivery.max_backoff = Duration::from_millis(100);
        config.delivery.send_wait = Duration::from_secs(60);
        config.email_sender = EmailSender::Smtp(SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp.port,
            tls: SmtpTls::None,
            credentials: None,
            from: "EDU Stream Plus <news@edustream.kz>".into(),
            ca: None,
            timeout: Duration::from_secs(10),
        });
        let marketing = MarketingInstance::start(config).await;
        Everything { accounts, marketing_db, smtp, marketing }
    }

    /// The accounts service, as the web front end calls it.
    pub async fn web(&self) -> AccountsServiceClient<Channel> {
        self.accounts.accounts_as("web").await
    }

    /// The marketing service, as the operator CLI calls it.
    pub async fn marketing(&self) -> MarketingServiceClient<Channel> {
        let channel = connect(self.marketing.addr, &self.accounts.suite.pki.service("qupiactl"), "marketing")
            .await
            .expect("connect to the marketing service");
        MarketingServiceClient::new(channel)
    }

    /// Registers person `i` with a scan of `scan_bytes` bytes and the consents given.
    pub async fn register(
        &self,
        i: usize,
        scan_bytes: usize,
        consents: &[qupia_api::types::v1::Purpose],
    ) -> Result<accounts::RegisterResponse, tonic::Status> {
        let content = scan(scan_bytes);
        self.register_with(i, &content, consents).await
    }

    /// Registers person `i` with `document` as their identity scan.
    pub async fn register_with(
        &self,
        i: usize,
        document: &[u8],
        consents: &[qupia_api::types::v1::Purpose],
    ) -> Result<accounts::RegisterResponse, tonic::Status> {
        let (surname, given_name, patronymic, email, phone) = PEOPLE[i];
        let header = accounts::RegistrationHeader {
            surname: surname.into(),
            given_name: given_name.into(),
            patronymic: patronymic.into(),
            email: email.into(),
            phone: phone.into(),
            consents: consents
                .iter()
                .map(|purpose| accounts::ConsentChoice { purpose: *purpose as i32, recipient: String::new() })
                .collect(),
            policy_version: self.accounts.policy_version,
            attestation: accounts::Attestation::OwnData as i32,
            idempotency_key: String::new(),
        };
        use accounts::register_request::Part;
        let mut messages = vec![accounts::RegisterRequest { part: Some(Part::Header(header)) }];
        messages.extend(
            document
                .chunks(256 * 1024)
                .map(|piece| accounts::RegisterRequest { part: Some(Part::IdentityDocumentChunk(piece.to_vec())) }),
        );
        self.web().await.register(tokio_stream::iter(messages)).await.map(tonic::Response::into_inner)
    }

    /// Grants or withdraws advertising for an account, as the person does in the front end.
    pub async fn advertising(&self, account_id: &str, grant: bool) {
        let action = if grant { accounts::ConsentAction::Grant } else { accounts::ConsentAction::Withdraw };
        self.web()
            .await
            .change_consent(accounts::ChangeConsentRequest {
                account_id: account_id.to_owned(),
                action: action as i32,
                purpose: qupia_api::types::v1::Purpose::Advertising as i32,
                recipient: String::new(),
                policy_version: if grant { self.accounts.policy_version } else { 0 },
            })
            .await
            .expect("change the advertising consent");
    }

    /// A count from one of the suite's databases, read as the operator would.
    pub async fn count(db: &TestDb, sql: &str) -> i64 {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&db.admin_url).await.expect("connect");
        sqlx::query(sql).fetch_one(&mut conn).await.expect(sql).try_get::<i64, _>(0).expect("a count")
    }

    /// Stops every service, draining each.
    pub async fn stop(&mut self) {
        self.marketing.stop().await;
        self.accounts.stop().await;
    }
}
