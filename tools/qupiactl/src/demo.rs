//! `qupiactl demo`: the story the suite exists for, told against a running `dev up`,
//! one step at a time — a person registers with a scanned document, signs in, reads
//! their profile; marketing reaches them only while they consent; statistics see only
//! aggregates; the person exports everything held about them and deletes their
//! account, after which every token of theirs answers NOT_FOUND.
//!
//! Each step says which service is called, as whom, and what came back. The people are
//! made up; each run uses fresh e-mail addresses, so the demo can be run again and again
//! against the same suite. Any step that does not turn out as the story says stops the
//! demo with exit code 2.

use std::path::Path;

use anyhow::{Context, bail, ensure};
use qupia_api::accounts::v1 as accounts;
use qupia_api::accounts::v1::accounts_service_client::AccountsServiceClient;
use qupia_api::audit::v1::VerifyAuditRequest;
use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::gateway::v1 as gateway;
use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use qupia_api::gateway::v1::document_service_client::DocumentServiceClient;
use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::marketing::v1 as marketing;
use qupia_api::marketing::v1::marketing_service_client::MarketingServiceClient;
use qupia_api::types::v1::{AggregateDimension, Field, Purpose};
use tonic::Code;
use tonic::transport::Channel;

use crate::client::Connection;
use crate::person_cmd::purpose_name;

/// The person the story follows, and the classmates who make up the audience.
/// (surname, given name, patronymic, e-mail local part, e-mail domain, phone)
const PEOPLE: [(&str, &str, &str, &str, &str, &str); 9] = [
    ("Нұрланова", "Әйгерім", "Серікқызы", "aigerim.nurlanova", "mail.kz", "+7 701 123 45 67"),
    ("Жұмабаев", "Ерлан", "Қайратұлы", "erlan.zhumabayev", "mail.kz", "8 (705) 234-56-78"),
    ("Ахметова", "Дана", "Болатқызы", "dana.akhmetova", "mail.kz", "+77473456789"),
    ("Сейітов", "Нұрлан", "", "nurlan.seitov", "mail.kz", "87074567890"),
    ("Иванова", "Мария", "Петровна", "m.ivanova", "mail.kz", "+7 777 567 89 01"),
    ("Ким", "Виктор", "Сергеевич", "viktor.kim", "mail.kz", "+7 700 678 90 12"),
    ("O'Brien", "Aoife", "", "aoife.obrien", "example.com", "+7 702 789 01 23"),
    ("Schmidt", "Jonas", "", "jonas.schmidt", "example.com", "+7 708 890 12 34"),
    ("Rossi", "Giulia", "", "giulia.rossi", "example.com", "+7 771 901 23 45"),
];

/// Runs the story against the suite `connection` points at.
pub async fn run(connection: &Connection, dev_dir: &Path) -> anyhow::Result<()> {
    let demo = Demo::connect(connection, dev_dir).await?;
    demo.tell().await
}

/// Clients for every role the story plays.
struct Demo {
    /// The web front end, calling the accounts service.
    web: AccountsServiceClient<Channel>,
    /// The marketing team, calling the marketing service.
    marketing: MarketingServiceClient<Channel>,
    /// The accounts service's own identity at the gateway (to show what it can still see).
    accounts_at_gateway: Channel,
    /// The marketing service's identity at the gateway (to show what it may not see).
    marketing_at_gateway: Channel,
    /// The security team at the gateway (the access log).
    security_at_gateway: Channel,
    /// A suffix that makes this run's e-mail addresses new.
    run: String,
    step: std::cell::Cell<u32>,
}

fn as_identity(connection: &Connection, identity: &str) -> Connection {
    Connection { identity: identity.to_owned(), tls_ca: None, tls_cert: None, tls_key: None, ..connection.clone() }
}

impl Demo {
    async fn connect(connection: &Connection, dev_dir: &Path) -> anyhow::Result<Demo> {
        let hint = "is `qupiactl dev up` running in another terminal?";
        let web = as_identity(connection, "web").accounts_channel(dev_dir).await.context(hint)?;
        let marketing = as_identity(connection, "qupiactl").marketing_channel(dev_dir).await.context(hint)?;
        let accounts_at_gateway = as_identity(connection, "accounts").channel(dev_dir).await.context(hint)?;
        let marketing_at_gateway = as_identity(connection, "marketing").channel(dev_dir).await.context(hint)?;
        let security_at_gateway = as_identity(connection, "qupiactl").channel(dev_dir).await.context(hint)?;
        let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        Ok(Demo {
            web: AccountsServiceClient::new(web),
            marketing: MarketingServiceClient::new(marketing),
            accounts_at_gateway,
            marketing_at_gateway,
            security_at_gateway,
            run,
            step: std::cell::Cell::new(0),
        })
    }

    fn step(&self, title: &str) {
        let n = self.step.get() + 1;
        self.step.set(n);
        println!();
        println!("{n:>2}. {title}");
    }

    fn email(&self, i: usize) -> String {
        let (_, _, _, local, domain, _) = PEOPLE[i];
        format!("{local}.{}@{domain}", self.run)
    }

    async fn tell(mut self) -> anyhow::Result<()> {
        println!("Qupia demo: one person's data, from registration to erasure.");
        println!("Every value below leaves the vault only for a named purpose, and every access is logged.");

        let version = self.policy_version().await?;

        // 1. Registration with a scan.
        self.step(
            "Әйгерім registers through the web front end, with a scan of her identity card (accounts.Register as web)",
        );
        let scan = sample_scan();
        let her = self.register(0, &scan, version, &[Purpose::Statistics]).await?;
        println!("    account          {}", her.account_id);
        println!("    person token     {}", her.person_token);
        println!(
            "    document token   {}  (a {}-byte PDF, encrypted in the vault)",
            her.identity_document_token,
            scan.len()
        );
        println!("    consents         statistics (she left advertising unticked)");
        println!(
            "    The accounts database keeps these tokens only: her name, e-mail, phone and scan are in the vault."
        );

        // 2. Sign-in.
        self.step("She signs in with her e-mail, typed carelessly (accounts.SignIn)");
        let typed = format!("  {}  ", self.email(0).to_uppercase());
        let found = self
            .web
            .sign_in(accounts::SignInRequest { key: Some(accounts::sign_in_request::Key::Email(typed.clone())) })
            .await
            .map_err(call("sign in"))?
            .into_inner()
            .accounts;
        ensure!(found.iter().any(|a| a.account_id == her.account_id), "sign-in did not find her account");
        println!("    {typed:?} → account {}", her.account_id);
        println!("    Found through a keyed blind index of the normalised address; nothing was decrypted.");

        // 3. Profile.
        self.step("The front end shows her profile (accounts.GetProfile; purpose service_delivery at the gateway)");
        let profile = self
            .web
            .get_profile(accounts::GetProfileRequest { account_id: her.account_id.clone() })
            .await
            .map_err(call("read the profile"))?
            .into_inner();
        let data = profile.data.context("the profile has no data")?;
        println!("    name     {} {} {}", data.surname, data.given_name, data.patronymic);
        println!("    e-mail   {}", data.email);
        println!("    phone    {}  (normalised to E.164)", data.phone);

        // The others register too, with the consents they chose.
        let mut audience = vec![her.person_token.clone()];
        for i in 1..PEOPLE.len() {
            let registered = self.register(i, &sample_scan(), version, &[Purpose::Statistics]).await?;
            audience.push(registered.person_token);
        }

        // 4. A campaign that skips her.
        self.step(
            "Marketing sends a campaign to an audience of her and 8 classmates (marketing.SendCampaign as qupiactl)",
        );
        let audience_id = self
            .marketing
            .create_audience(marketing::CreateAudienceRequest {
                name: format!("Spring intake {}", self.run),
                person_tokens: audience.clone(),
            })
            .await
            .map_err(call("create the audience"))?
            .into_inner()
            .audience
            .context("no audience")?
            .id;
        let campaign = self.campaign(&audience_id, "Spring courses").await?;
        let counters = self.send(&campaign).await?;
        print_counters(&counters);
        ensure!(counters.sent == 0, "the campaign reached someone who never consented to advertising");
        println!(
            "    Nobody consented to advertising, so the gateway revealed no address: the campaign reached nobody."
        );

        // 5. She consents; the campaign reaches her.
        self.step("She ticks \"send me news\" (accounts.ChangeConsent: advertising granted); marketing sends again\n    (a campaign is resent to those it has not reached)");
        self.consent(&her.account_id, accounts::ConsentAction::Grant, version).await?;
        let counters = self.send(&campaign).await?;
        print_counters(&counters);
        ensure!(counters.sent == 1, "the campaign did not reach her (and only her) after she consented");
        println!("    Her e-mail address was revealed to marketing for advertising, used for the message and");
        println!("    dropped; the development suite's sender writes the message to the log without the address.");

        // 6. She withdraws; skipped again.
        self.step("She withdraws the consent (accounts.ChangeConsent); marketing sends its next campaign");
        self.consent(&her.account_id, accounts::ConsentAction::Withdraw, version).await?;
        let next = self.campaign(&audience_id, "Summer school").await?;
        let counters = self.send(&next).await?;
        print_counters(&counters);
        ensure!(counters.sent == 0, "the campaign reached her after she withdrew");
        println!("    The withdrawal took effect on the very next call: she was skipped.");

        // 7. What marketing may never see.
        self.step("Marketing asks the gateway for her surname (gateway.Reveal as marketing, purpose advertising)");
        let refused = GatewayServiceClient::new(self.marketing_at_gateway.clone())
            .reveal(gateway::RevealRequest {
                token: her.person_token.clone(),
                purpose: Purpose::Advertising as i32,
                fields: vec![Field::Surname as i32],
                ..Default::default()
            })
            .await
            .expect_err("marketing must never see a name");
        ensure!(refused.code() == Code::PermissionDenied, "expected PERMISSION_DENIED, got {:?}", refused.code());
        println!("    PERMISSION_DENIED: {}", refused.message());

        // 8. Statistics.
        self.step("Marketing counts the audience by e-mail domain (marketing.GetStatistics; purpose statistics)");
        let statistics = self
            .marketing
            .get_statistics(marketing::GetStatisticsRequest {
                audience_id: audience_id.clone(),
                dimension: AggregateDimension::EmailDomain as i32,
            })
            .await
            .map_err(call("get statistics"))?
            .into_inner();
        for group in &statistics.groups {
            println!("    {:<14} {}", group.key, group.count);
        }
        println!(
            "    {} group(s) suppressed (fewer than {} people); computed inside the vault over people who consented",
            statistics.suppressed_groups, statistics.min_group_size
        );
        ensure!(statistics.suppressed_groups >= 1, "the group of 3 was not suppressed");

        // 9. Export.
        self.step("She asks for everything held about her (accounts.ExportAccount)");
        let export = self
            .web
            .export_account(accounts::ExportAccountRequest { account_id: her.account_id.clone() })
            .await
            .map_err(call("export"))?
            .into_inner();
        let exported = export.data.context("the export has no data")?;
        println!(
            "    her data         {} {}, {}, {}",
            exported.surname, exported.given_name, exported.email, exported.phone
        );
        println!("    documents        {}", export.documents.len());
        println!("    consent history");
        for event in &export.consent_history {
            println!(
                "      {}  {:<12} {}",
                time(event.recorded_at_ms),
                purpose_name(event.purpose),
                if event.granted { "granted" } else { "withdrawn" }
            );
        }
        println!("    who accessed her data ({} entries; the last few):", export.access_history.len());
        for entry in export.access_history.iter().rev().take(6).rev() {
            let fields: Vec<&str> = entry.fields.iter().map(String::as_str).collect();
            println!(
                "      {}  {:<10} {:<17} {:<16} {:<8} {}",
                time(entry.at_ms),
                entry.caller.rsplit('/').next().unwrap_or_default(),
                if entry.purpose.is_empty() { "-" } else { &entry.purpose },
                entry.operation,
                if entry.allowed { "allowed" } else { "denied" },
                fields.join(",")
            );
        }
        ensure!(!export.access_history.is_empty(), "the export has no access history");
        ensure!(export.consent_history.len() >= 3, "the export lacks the consent history");

        // 10. Deletion.
        self.step("She deletes her account (accounts.DeleteAccount: crypto-shredding in the vault)");
        self.web
            .delete_account(accounts::DeleteAccountRequest { account_id: her.account_id.clone() })
            .await
            .map_err(call("delete the account"))?;
        let profile = self.web.get_profile(accounts::GetProfileRequest { account_id: her.account_id.clone() }).await;
        println!("    her profile          {}", outcome(&profile));
        let reveal = GatewayServiceClient::new(self.accounts_at_gateway.clone())
            .reveal(gateway::RevealRequest {
                token: her.person_token.clone(),
                purpose: Purpose::ServiceDelivery as i32,
                ..Default::default()
            })
            .await;
        println!("    her person token     {}", outcome(&reveal));
        let document = download(self.accounts_at_gateway.clone(), &her.identity_document_token).await;
        println!("    her scanned document {}", outcome(&document));
        ensure!(
            matches!(profile, Err(ref s) if s.code() == Code::NotFound)
                && matches!(reveal, Err(ref s) if s.code() == Code::NotFound)
                && matches!(document, Err(ref s) if s.code() == Code::NotFound),
            "something of hers is still readable after deletion"
        );
        println!("    Her data key is destroyed: no copy of her ciphertext can be read again.");

        // 11. The trace.
        self.step("The security team verifies the access log (AuditService.VerifyAudit as qupiactl)");
        let verified = AuditServiceClient::new(self.security_at_gateway.clone())
            .verify_audit(VerifyAuditRequest { external: None })
            .await
            .map_err(call("verify the access log"))?
            .into_inner();
        ensure!(verified.intact, "the access log is broken: {}", verified.problem);
        println!("    intact: {} entries, hash-chained, head at {}", verified.entries, verified.head_seq);

        println!();
        println!("Done. Try `qupiactl audit query --person {}` to see every decision about her.", her.person_token);
        Ok(())
    }

    async fn policy_version(&self) -> anyhow::Result<i64> {
        let versions = ConsentServiceClient::new(self.security_at_gateway.clone())
            .list_policy_versions(gateway::ListPolicyVersionsRequest {})
            .await
            .map_err(call("read the privacy policy versions"))?
            .into_inner()
            .versions;
        match versions.iter().map(|v| v.version).max() {
            Some(version) => Ok(version),
            None => bail!("no privacy policy version is published; `qupiactl dev up` publishes version 1"),
        }
    }

    async fn register(
        &mut self,
        i: usize,
        scan: &[u8],
        policy_version: i64,
        consents: &[Purpose],
    ) -> anyhow::Result<accounts::RegisterResponse> {
        let (surname, given_name, patronymic, _, _, phone) = PEOPLE[i];
        let header = accounts::RegistrationHeader {
            surname: surname.into(),
            given_name: given_name.into(),
            patronymic: patronymic.into(),
            email: self.email(i),
            phone: phone.into(),
            consents: consents
                .iter()
                .map(|p| accounts::ConsentChoice { purpose: *p as i32, recipient: String::new() })
                .collect(),
            policy_version,
            attestation: accounts::Attestation::OwnData as i32,
            idempotency_key: format!("demo-{}-{i}", self.run),
        };
        let mut messages =
            vec![accounts::RegisterRequest { part: Some(accounts::register_request::Part::Header(header)) }];
        messages.extend(scan.chunks(64 * 1024).map(|piece| accounts::RegisterRequest {
            part: Some(accounts::register_request::Part::IdentityDocumentChunk(piece.to_vec())),
        }));
        Ok(self.web.register(tokio_stream::iter(messages)).await.map_err(call("register"))?.into_inner())
    }

    async fn consent(&mut self, account: &str, action: accounts::ConsentAction, version: i64) -> anyhow::Result<()> {
        self.web
            .change_consent(accounts::ChangeConsentRequest {
                account_id: account.to_owned(),
                action: action as i32,
                purpose: Purpose::Advertising as i32,
                recipient: String::new(),
                // A grant names the version she read; a withdrawal is never refused for
                // naming an old one, and is recorded under the version in force.
                policy_version: if action == accounts::ConsentAction::Grant { version } else { 0 },
            })
            .await
            .map_err(call("change the consent"))?;
        Ok(())
    }

    /// An e-mail campaign to the audience.
    async fn campaign(&mut self, audience_id: &str, name: &str) -> anyhow::Result<String> {
        let campaign = self
            .marketing
            .create_campaign(marketing::CreateCampaignRequest {
                name: format!("{name} {}", self.run),
                audience_id: audience_id.to_owned(),
                channel: marketing::Channel::Email as i32,
                subject: format!("{name}: enrolment is open"),
                body: "Enrolment is open. (Sent to {{email}}, as you asked for news.)".into(),
            })
            .await
            .map_err(call("create a campaign"))?
            .into_inner()
            .campaign
            .context("no campaign")?;
        Ok(campaign.id)
    }

    /// Sends the campaign (to everyone it has not reached yet) and waits for delivery.
    async fn send(&mut self, campaign: &str) -> anyhow::Result<marketing::CampaignCounters> {
        let sent = self
            .marketing
            .send_campaign(marketing::SendCampaignRequest { campaign_id: campaign.to_owned(), wait: true })
            .await
            .map_err(call("send the campaign"))?
            .into_inner();
        sent.campaign.and_then(|c| c.counters).context("the campaign has no counters")
    }
}

fn print_counters(counters: &marketing::CampaignCounters) {
    println!(
        "    sent {}   skipped without consent {}   pending {}   failed {}   (each person's latest delivery)",
        counters.sent, counters.skipped_no_consent, counters.pending, counters.failed
    );
}

/// A failed call as an error that names the step.
fn call(what: &'static str) -> impl Fn(tonic::Status) -> anyhow::Error {
    move |status| anyhow::anyhow!("{what}: {:?}: {}", status.code(), status.message())
}

fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "still readable".to_owned(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

async fn download(channel: Channel, document_token: &str) -> Result<(), tonic::Status> {
    let mut stream = DocumentServiceClient::new(channel)
        .download_document(gateway::DownloadDocumentRequest {
            document_token: document_token.to_owned(),
            purpose: Purpose::Identification as i32,
            disclosure_request_id: String::new(),
        })
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// A unix-milliseconds time as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn time(at_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ),
        Err(_) => at_ms.to_string(),
    }
}

/// A small, valid one-page PDF standing in for a scanned identity card.
fn sample_scan() -> Vec<u8> {
    let mut pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    pdf.extend_from_slice(
        b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
          2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
          3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 242 153] >> endobj\n",
    );
    // Stand-in for the scanned image: noise, as a real scan is incompressible.
    let mut noise = vec![0u8; 4096];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut noise);
    pdf.extend_from_slice(b"4 0 obj << /Length 4096 >> stream\n");
    pdf.extend_from_slice(&noise);
    pdf.extend_from_slice(b"\nendstream endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n");
    pdf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rendered_in_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_796_342_400_000), "2026-12-04 00:00:00");
        assert_eq!(time(951_782_400_000 + 3_723_000), "2000-02-29 01:02:03");
    }

    #[test]
    fn the_sample_scan_is_a_pdf() {
        let scan = sample_scan();
        assert!(scan.starts_with(b"%PDF-"));
        assert!(scan.ends_with(b"%%EOF\n"));
    }

    #[test]
    fn the_audience_has_a_group_below_k_and_one_above() {
        let mail_kz = PEOPLE.iter().filter(|p| p.4 == "mail.kz").count();
        let example = PEOPLE.iter().filter(|p| p.4 == "example.com").count();
        assert!(mail_kz >= 5 && example == 3);
    }
}
