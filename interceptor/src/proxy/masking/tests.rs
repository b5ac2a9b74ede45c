//! Masking through the proxy's request path with a real embedded vault: a Produce request is
//! checked, masked, its tokens stored, and the masked frame is what goes on; a Fetch answer is
//! revealed or masked per consumer; the vault's absence refuses produce retriably.

use std::{net::SocketAddr, sync::Arc};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        fetch_response::{FetchableTopicResponse, PartitionData},
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiKey, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader as CrateHeader,
        TopicName,
    },
    protocol::{Decodable, Encodable, StrBytes},
    records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    },
};
use serde_json::{json, Value};

use super::Masking;
use crate::{
    audit::{AuditLog, MemorySink},
    config::MaskingConfig,
    kafka::{
        authz::{response::decode_response, AuthzSettings, Outcome, TopicIds},
        records::RecordLimits,
        RequestHeader,
    },
    policy::{watch::PolicyHandle, PolicySet},
    proxy::{access::SessionCheck, auth::Identity, authorize::RequestAuthz},
    vault::{Backend, Keyring, Vault, VaultConfig},
};

const POLICY: &str = r#"
rules:
  - name: everyone
    effect: allow
    subjects: {principals: ["*"]}
    resources: {topics: ["*"], cluster: true}
    operations: ["*"]
masking:
  - name: pii
    topics: [payments]
    fields:
      - path: $.card
        action: tokenize
        format_preserving: true
      - path: $.email
        action: tokenize
      - path: $.ssn
        action: partial
        keep_last: 4
    reveal:
      principals: [fraud]
  - name: hide-names
    on: fetch
    topics: [payments]
    subjects: {principals: [analyst]}
    fields:
      - path: $.name
        action: redact
"#;

const CARD: &str = "4111111111111111";

fn payment(i: usize) -> Value {
    json!({"id": i, "card": CARD, "email": format!("u{i}@example.com"), "ssn": "123-45-6789",
           "name": "Alice"})
}

fn batch(values: &[Value], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: 4242,
            producer_epoch: 3,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: 100 + i as i32,
            timestamp: 1_700_000_000_000,
            delete_horizon: false,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    out.freeze()
}

fn values_of(records: &Bytes) -> Vec<Value> {
    let mut buf = records.clone();
    let batches = RecordBatchDecoder::decode_all(&mut buf).unwrap();
    batches
        .iter()
        .flat_map(|b| b.records.iter())
        .map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap())
        .collect()
}

fn produce_frame(version: i16, acks: i16, parts: &[(i32, Bytes)]) -> Bytes {
    let body = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("payments")))
            .with_partition_data(
                parts
                    .iter()
                    .map(|(p, r)| {
                        PartitionProduceData::default()
                            .with_index(*p)
                            .with_records(Some(r.clone()))
                    })
                    .collect(),
            )]);
    let header = CrateHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(9)
        .with_client_id(Some(StrBytes::from_static_str("producer")));
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, ApiKey::Produce.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

fn fetch_frame(version: i16, records: Bytes) -> Bytes {
    let body = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("payments")))
        .with_partitions(vec![PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(10)
            .with_records(Some(records))])]);
    crate::kafka::authz::response::encode_response(1, version, 5, &body, "Fetch").unwrap()
}

struct Stack {
    _dir: tempfile::TempDir,
    vault: Option<Vault>,
    policy: PolicyHandle,
    audit: AuditLog,
    sink: MemorySink,
}

async fn stack(with_vault: bool) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let vault = if with_vault {
        let keys = dir.path().join("vault.keys");
        Keyring::write_new(&keys).unwrap();
        Some(
            Vault::open(&VaultConfig {
                backend: Backend::Embedded {
                    path: dir.path().join("vault.redb"),
                },
                key_file: keys,
                cache_entries: 100,
                timeout: std::time::Duration::from_secs(5),
            })
            .await
            .unwrap(),
        )
    } else {
        None
    };
    let set = PolicySet::from_files(&[("p.yaml".into(), POLICY.into())]).unwrap();
    let sink = MemorySink::default();
    let (audit, _writer) = AuditLog::start(sink.clone(), 1024);
    Stack {
        _dir: dir,
        vault,
        policy: PolicyHandle::fixed(set),
        audit,
        sink,
    }
}

impl Stack {
    fn authz(&self, principal: &str) -> (RequestAuthz, Identity) {
        let client: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let masking = Arc::new(Masking::new(
            self.vault.clone(),
            MaskingConfig::default(),
            RecordLimits {
                max_decompressed_bytes: 1 << 20,
                max_records_per_batch: 1000,
            },
        ));
        let check = Arc::new(SessionCheck::new(
            1,
            client,
            self.policy.current(),
            RecordLimits {
                max_decompressed_bytes: 1 << 20,
                max_records_per_batch: 1000,
            },
            masking,
        ));
        let authz = RequestAuthz::new(
            (1, client),
            check,
            Arc::new(TopicIds::new(16)),
            self.policy.clone(),
            AuthzSettings::default(),
            self.audit.clone(),
        );
        let identity = Identity {
            principal: principal.into(),
            groups: Vec::new(),
            issuer: None,
            mechanism: "OAUTHBEARER",
        };
        (authz, identity)
    }

    /// The events of `kind` once the audit writer has caught up (it runs on its own thread).
    async fn events(&self, kind: &str) -> Vec<Value> {
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now = self.sink.json().len();
            if now == last {
                break;
            }
            last = now;
        }
        self.sink
            .json()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

/// Produces `values` as `principal` and returns the records field the broker would get.
async fn produce(s: &Stack, compression: Compression, values: &[Value]) -> Bytes {
    let frame = produce_frame(9, -1, &[(0, batch(values, compression))]);
    let (mut authz, identity) = s.authz("writer");
    let header = RequestHeader::parse(&frame).unwrap();
    let (outcome, then) = authz.authorize(&identity, &header, &frame).await.unwrap();
    assert!(then.is_none(), "produce answers are not masked");
    let Outcome::Rewrite { frame: out, .. } = outcome else {
        panic!("expected a rewritten produce, got {outcome:?}");
    };
    let header = RequestHeader::parse(&out).unwrap();
    let mut body = out.slice(header.body_offset..);
    let request = ProduceRequest::decode(&mut body, 9).unwrap();
    request.topic_data[0].partition_data[0]
        .records
        .clone()
        .unwrap()
}

#[tokio::test]
async fn produced_records_are_masked_with_their_tokens_in_the_vault_and_headers_kept() {
    let s = stack(true).await;
    let values: Vec<Value> = (0..5).map(payment).collect();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let records = produce(&s, compression, &values).await;
        let mut buf = records.clone();
        let batch = &RecordBatchDecoder::decode_all(&mut buf).unwrap()[0];
        assert_eq!(batch.compression, compression, "same codec on the way out");
        let first = &batch.records[0];
        assert_eq!((first.producer_id, first.producer_epoch), (4242, 3));
        assert_eq!(
            first.sequence, 100,
            "idempotent producers keep their sequence"
        );
        let masked = values_of(&records);
        for (m, v) in masked.iter().zip(&values) {
            let card = m["card"].as_str().unwrap();
            assert_ne!(card, CARD);
            assert_eq!(card.len(), CARD.len());
            assert!(m["email"].as_str().unwrap().starts_with("tok_"));
            assert_eq!(m["ssn"], "***-**-6789");
            assert_eq!(m["name"], v["name"]);
        }
        let vault = s.vault.as_ref().unwrap();
        let token = masked[2]["email"].as_str().unwrap().to_owned();
        let found = vault.lookup(std::slice::from_ref(&token)).await.unwrap();
        assert_eq!(found[&token].value, b"u2@example.com");
        assert_eq!(found[&token].scope, "pii/$.email");
    }
    let transforms = s.events("transform").await;
    assert_eq!(transforms.len(), 5, "{transforms:?}");
    assert_eq!(transforms[0]["outcome"], "masked");
    assert_eq!(transforms[0]["records"], 5);
    let text = serde_json::to_string(&s.sink.json()).unwrap();
    assert!(!text.contains(CARD) && !text.contains("u2@example.com"));
}

#[tokio::test]
async fn fetched_records_are_revealed_masked_or_left_per_consumer() {
    let s = stack(true).await;
    let values: Vec<Value> = (0..3).map(payment).collect();
    let stored = produce(&s, Compression::Lz4, &values).await;
    for version in [4, 11, 12] {
        let answer = fetch_frame(version, stored.clone());
        let view = |principal: &str| {
            let (mut authz, identity) = s.authz(principal);
            let request = {
                // The request only needs a header: the filter works on the answer.
                let mut out = BytesMut::new();
                out.put_i32(0);
                CrateHeader::default()
                    .with_request_api_key(1)
                    .with_request_api_version(version)
                    .with_correlation_id(5)
                    .encode(&mut out, ApiKey::Fetch.request_header_version(version))
                    .unwrap();
                let len = (out.len() - 4) as i32;
                out[..4].copy_from_slice(&len.to_be_bytes());
                out.freeze()
            };
            let header = RequestHeader::parse(&request).unwrap();
            let answer = answer.clone();
            async move {
                let consumer = authz.consumer_filter(&identity, &header);
                match consumer {
                    Some(filter) => filter(answer).await.unwrap(),
                    None => answer,
                }
            }
        };
        let decode = |frame: Bytes| -> Vec<Value> {
            let (_, body): (i32, FetchResponse) =
                decode_response(1, version, &frame, "Fetch").unwrap();
            values_of(body.responses[0].partitions[0].records.as_ref().unwrap())
        };
        let fraud = decode(view("fraud").await);
        for (got, original) in fraud.iter().zip(&values) {
            assert_eq!(got["card"], original["card"], "v{version}");
            assert_eq!(got["email"], original["email"]);
            assert_eq!(got["ssn"], "***-**-6789");
        }
        let analyst = decode(view("analyst").await);
        for (got, kept) in analyst.iter().zip(values_of(&stored)) {
            assert_eq!(got["name"], "[REDACTED]");
            assert_eq!(got["card"], kept["card"]);
        }
        let ops = view("ops").await;
        assert_eq!(
            ops, answer,
            "no rule for ops: the broker's answer as it came"
        );
    }
}

#[tokio::test]
async fn without_the_vault_produce_is_refused_retriably_and_nothing_is_forwarded() {
    let s = stack(false).await;
    let values: Vec<Value> = (0..2).map(payment).collect();
    for acks in [-1, 0] {
        let frame = produce_frame(9, acks, &[(0, batch(&values, Compression::None))]);
        let (mut authz, identity) = s.authz("writer");
        let header = RequestHeader::parse(&frame).unwrap();
        let (outcome, _) = authz.authorize(&identity, &header, &frame).await.unwrap();
        match (acks, outcome) {
            (0, Outcome::Drop) => {}
            (-1, Outcome::Respond(answer)) => {
                let (_, body): (i32, ProduceResponse) =
                    decode_response(0, 9, &answer, "Produce").unwrap();
                assert_eq!(body.responses[0].partition_responses[0].error_code, 56);
            }
            (_, other) => panic!("acks={acks}: {other:?}"),
        }
    }
    let refused = s.events("transform").await;
    assert!(
        refused.iter().all(|e| e["outcome"] == "refused"),
        "{refused:?}"
    );
    assert_eq!(refused.len(), 2);
}

#[tokio::test]
async fn a_record_that_is_not_json_refuses_its_partition_only() {
    let s = stack(true).await;
    let good = batch(&[payment(1)], Compression::None);
    // Not JSON at all (`batch` would write JSON text).
    let bad = {
        let records = [Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            delete_horizon: false,
            key: None,
            value: Some(Bytes::from_static(b"card 4111111111111111 {")),
            headers: Default::default(),
        }];
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        out.freeze()
    };
    let frame = produce_frame(9, -1, &[(0, good), (1, bad)]);
    let (mut authz, identity) = s.authz("writer");
    let header = RequestHeader::parse(&frame).unwrap();
    let (outcome, _) = authz.authorize(&identity, &header, &frame).await.unwrap();
    let Outcome::Rewrite {
        frame: out,
        response: Some(merge),
    } = outcome
    else {
        panic!("expected partition 1 cut out and its error merged");
    };
    let header = RequestHeader::parse(&out).unwrap();
    let mut body = out.slice(header.body_offset..);
    let request = ProduceRequest::decode(&mut body, 9).unwrap();
    let parts = &request.topic_data[0].partition_data;
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].index, 0);
    assert!(!values_of(parts[0].records.as_ref().unwrap())[0]["card"]
        .as_str()
        .unwrap()
        .eq(CARD));
    let broker = ProduceResponse::default().with_responses(vec![
        kafka_protocol::messages::produce_response::TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("payments")))
            .with_partition_responses(vec![
                kafka_protocol::messages::produce_response::PartitionProduceResponse::default()
                    .with_index(0),
            ]),
    ]);
    let answer =
        crate::kafka::authz::response::encode_response(0, 9, 9, &broker, "Produce").unwrap();
    let merged = merge(answer).unwrap();
    let (_, body): (i32, ProduceResponse) = decode_response(0, 9, &merged, "Produce").unwrap();
    let codes: Vec<(i32, i16)> = body.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code))
        .collect();
    assert_eq!(codes, vec![(0, 0), (1, 44)]);
    let violation = s
        .events("decision")
        .await
        .into_iter()
        .find(|e| e["decision"] == "violation")
        .expect("a violation decision");
    assert_eq!(violation["rule"], "pii");
    assert!(!violation.to_string().contains("4111111111111111"));
}

#[tokio::test]
async fn a_partition_named_twice_gets_each_of_its_own_records_back() {
    let s = stack(true).await;
    let first = batch(&[payment(1)], Compression::None);
    let second = batch(&[payment(2)], Compression::Gzip);
    let frame = produce_frame(9, -1, &[(0, first), (0, second)]);
    let (mut authz, identity) = s.authz("writer");
    let header = RequestHeader::parse(&frame).unwrap();
    let (outcome, _) = authz.authorize(&identity, &header, &frame).await.unwrap();
    let Outcome::Rewrite { frame: out, .. } = outcome else {
        panic!("expected a rewritten produce, got {outcome:?}");
    };
    let header = RequestHeader::parse(&out).unwrap();
    let mut body = out.slice(header.body_offset..);
    let request = ProduceRequest::decode(&mut body, 9).unwrap();
    let parts = &request.topic_data[0].partition_data;
    let ids: Vec<Value> = parts
        .iter()
        .map(|p| values_of(p.records.as_ref().unwrap())[0]["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(1), json!(2)]);
}

#[tokio::test]
async fn a_token_the_vault_holds_for_another_value_is_derived_again() {
    let s = stack(true).await;
    let vault = s.vault.as_ref().unwrap();
    let scope = "pii/$.email";
    let value = b"u1@example.com";
    // Someone else's value already holds this value's first token.
    let taken = crate::mask::derive_token(vault.mac_key(), scope, value, 0, false);
    let conflicts = vault
        .store(&[crate::mask::NewToken {
            token: taken.clone(),
            scope: scope.into(),
            value: b"someone-else@example.com".to_vec(),
        }])
        .await
        .unwrap();
    assert!(conflicts.is_empty());
    let records = produce(&s, Compression::None, &[payment(1)]).await;
    let token = values_of(&records)[0]["email"].as_str().unwrap().to_owned();
    assert_ne!(token, taken, "the taken token is not reused");
    assert_eq!(
        token,
        crate::mask::derive_token(vault.mac_key(), scope, value, 1, false)
    );
    let found = vault.lookup(&[token.clone(), taken.clone()]).await.unwrap();
    assert_eq!(found[&token].value, value);
    assert_eq!(found[&taken].value, b"someone-else@example.com");
}
