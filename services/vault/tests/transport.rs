//! Who may talk to the vault: mTLS with our CA, and only the gateway's identity.

use qupia_api::types::v1::Purpose;
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::*;
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{Backend, TestPki, VaultHarness, connect};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn person() -> PersonInput {
    let (surname, given_name, patronymic, email, phone) = PEOPLE[0];
    PersonInput {
        surname: surname.into(),
        given_name: given_name.into(),
        patronymic: patronymic.into(),
        email: email.into(),
        phone: phone.into(),
    }
}

fn access() -> Option<AccessContext> {
    Some(AccessContext {
        purpose: Purpose::Identification as i32,
        decision_id: "t".into(),
        caller: "spiffe://qupia/ns/default/sa/accounts".into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn only_the_gateway_identity_may_call() {
    let vault = VaultHarness::start(Backend::Sqlite).await;
    let tokens = vault
        .gateway()
        .await
        .tokenize(TokenizeRequest { person: Some(person()), idempotency_key: String::new(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();

    // Same CA, another identity: a connection, but no answers.
    let mut marketing = vault.client_as("marketing").await;
    let reveal = marketing
        .reveal(RevealRequest { token: tokens.person_token.clone(), fields: vec![], access: access() })
        .await
        .unwrap_err();
    assert_eq!(reveal.code(), Code::PermissionDenied);
    let lookup = marketing
        .lookup(LookupRequest { key: Some(lookup_request::Key::Email(PEOPLE[0].3.into())), access: access() })
        .await
        .unwrap_err();
    assert_eq!(lookup.code(), Code::PermissionDenied);
    let tokenize = marketing
        .tokenize(TokenizeRequest { person: Some(person()), idempotency_key: String::new(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(tokenize.code(), Code::PermissionDenied);
    let erase = marketing
        .erase(EraseRequest { person_token: tokens.person_token.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(erase.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn identity_cannot_be_claimed_in_metadata() {
    let vault = VaultHarness::start(Backend::Sqlite).await;
    let mut marketing = vault.client_as("marketing").await;
    let mut request = tonic::Request::new(LookupRequest {
        key: Some(lookup_request::Key::Email(PEOPLE[0].3.into())),
        access: access(),
    });
    for header in ["x-spiffe-id", "x-caller", "x-forwarded-client-cert", "authorization"] {
        request.metadata_mut().insert(header, "spiffe://qupia/ns/default/sa/gateway".parse().unwrap());
    }
    assert_eq!(marketing.lookup(request).await.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_client_without_our_certificate_cannot_connect() {
    let vault = VaultHarness::start(Backend::Sqlite).await;
    let request = || LookupRequest { key: Some(lookup_request::Key::Email(PEOPLE[0].3.into())), access: access() };

    // No client certificate at all.
    let no_cert =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(vault.pki.ca.ca_pem())).domain_name("vault");
    let outcome = async {
        let channel = Endpoint::from_shared(format!("https://{}", vault.addr))?.tls_config(no_cert)?.connect().await?;
        Ok::<_, Box<dyn std::error::Error>>(VaultServiceClient::new(channel).lookup(request()).await?)
    }
    .await;
    assert!(outcome.is_err(), "a client without a certificate got an answer");

    // A certificate with the gateway's identity, from another CA.
    let foreign = TestPki::named("Foreign CA");
    let files = foreign.service("gateway");
    // It trusts our CA for the server, so only its own certificate is foreign.
    std::fs::write(&files.ca, vault.pki.ca.ca_pem()).unwrap();
    let outcome = async {
        let channel = connect(vault.addr, &files, "vault").await?;
        Ok::<_, Box<dyn std::error::Error>>(VaultServiceClient::new(channel).lookup(request()).await?)
    }
    .await;
    assert!(outcome.is_err(), "a client with a foreign certificate got an answer");

    // Plaintext HTTP/2.
    let outcome = async {
        let channel = Endpoint::from_shared(format!("http://{}", vault.addr))?.connect().await?;
        Ok::<_, Box<dyn std::error::Error>>(VaultServiceClient::new(channel).lookup(request()).await?)
    }
    .await;
    assert!(outcome.is_err(), "a plaintext client got an answer");
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let vault = VaultHarness::start(Backend::Sqlite).await;
    let channel = connect(vault.addr, &vault.pki.service("kubelet-probe"), "vault").await.unwrap();

    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: "qupia.vault.v1.VaultService".into() })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().expect("a reflection response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"qupia.vault.v1.VaultService".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
}
