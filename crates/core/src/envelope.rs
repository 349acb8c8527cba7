//! The CloudEvents 1.0 envelope, in Kafka binary mode (attributes in `ce_*` headers, JSON
//! payload) and structured JSON mode (HTTP).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Header names of the binary content mode and the trace context.
pub mod headers {
    /// CloudEvents `id`.
    pub const ID: &str = "ce_id";
    /// CloudEvents `source`.
    pub const SOURCE: &str = "ce_source";
    /// CloudEvents `type`.
    pub const TYPE: &str = "ce_type";
    /// CloudEvents `time` (RFC 3339).
    pub const TIME: &str = "ce_time";
    /// CloudEvents `subject`.
    pub const SUBJECT: &str = "ce_subject";
    /// CloudEvents `specversion`.
    pub const SPECVERSION: &str = "ce_specversion";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Machine-readable reason a record was dead-lettered.
    pub const DLQ_REASON: &str = "tally_dlq_reason";
    /// Human-readable detail of the dead-letter reason.
    pub const DLQ_DETAIL: &str = "tally_dlq_detail";
    /// Where a dead-lettered record was consumed: `topic/partition/offset`.
    pub const DLQ_ORIGIN: &str = "tally_dlq_origin";
    /// Where a record produced to the wrong partition was first consumed
    /// (`topic/partition/offset`), set on the copy forwarded to the key's own partition.
    pub const FORWARDED_FROM: &str = "tally_forwarded_from";
    /// Content type of the payload.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// Longest CloudEvents `id` accepted, in characters (an `Idempotency-Key` is at most 200; ids
/// the engine derives, such as `expire:<sku>:<reservation>:<ms>`, stay within 256).
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Longest CloudEvents `source` accepted, in characters.
pub const MAX_SOURCE_LEN: usize = 256;
/// Longest CloudEvents `type` and `subject` accepted, in characters.
pub const MAX_TYPE_LEN: usize = 128;
/// Longest W3C `traceparent` accepted, in characters (version 00 uses 55).
pub const MAX_TRACEPARENT_LEN: usize = 128;

/// Why bytes or headers do not form a valid event envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required attribute is absent.
    #[error("missing CloudEvents attribute `{0}`")]
    MissingAttribute(&'static str),
    /// An attribute is present but empty or malformed.
    #[error("CloudEvents attribute `{attribute}` is invalid: {reason}")]
    InvalidAttribute {
        /// The attribute name.
        attribute: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload is not JSON.
    #[error("payload is not valid JSON: {0}")]
    Payload(String),
}

/// The idempotency key of an event: its `source` and `id` together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventKey {
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `id`.
    pub id: String,
}

/// A CloudEvents 1.0 event with a JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Always `1.0` (required, as CloudEvents says).
    pub specversion: String,
    /// Unique per source; with `source` it is the idempotency key.
    pub id: String,
    /// Who produced the event, e.g. `/wms/eu-1` or `/storefront`.
    pub source: String,
    /// Event type, e.g. `stock.snapshot`.
    #[serde(rename = "type")]
    pub ty: String,
    /// When the event happened at its source (optional in CloudEvents; when absent, the time
    /// tally received it).
    #[serde(default = "OffsetDateTime::now_utc", with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    /// The entity the event is about (the SKU for inventory events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always `application/json` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// W3C trace context carried with the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event payload.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

fn spec_version() -> String {
    "1.0".to_owned()
}

impl Envelope {
    /// A new event with a fresh UUID id, stamped now.
    pub fn new(source: impl Into<String>, ty: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            specversion: spec_version(),
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            ty: ty.into(),
            time: OffsetDateTime::now_utc(),
            subject: None,
            datacontenttype: None,
            traceparent: None,
            data,
        }
    }

    /// The idempotency key.
    pub fn key(&self) -> EventKey {
        EventKey { source: self.source.clone(), id: self.id.clone() }
    }

    /// Event time in Unix milliseconds.
    pub fn time_ms(&self) -> i64 {
        (self.time.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Checks the attributes a structured-mode event must carry.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_spec_version(&self.specversion)?;
        check_text("id", &self.id, MAX_EVENT_ID_LEN)?;
        check_text("source", &self.source, MAX_SOURCE_LEN)?;
        check_text("type", &self.ty, MAX_TYPE_LEN)?;
        if let Some(subject) = &self.subject {
            check_text("subject", subject, MAX_TYPE_LEN)?;
        }
        if let Some(tp) = &self.traceparent {
            check_text("traceparent", tp, MAX_TRACEPARENT_LEN)?;
        }
        if let Some(ct) = &self.datacontenttype
            && !ct.starts_with("application/json")
        {
            return Err(EnvelopeError::InvalidAttribute {
                attribute: "datacontenttype",
                reason: format!("only application/json is supported, got {ct:?}"),
            });
        }
        Ok(())
    }

    /// Binary content mode: attributes as headers, `data` as the JSON payload.
    pub fn to_binary(&self) -> (Vec<(String, String)>, Vec<u8>) {
        let mut h = vec![
            (headers::SPECVERSION.to_owned(), self.specversion.clone()),
            (headers::ID.to_owned(), self.id.clone()),
            (headers::SOURCE.to_owned(), self.source.clone()),
            (headers::TYPE.to_owned(), self.ty.clone()),
            (headers::TIME.to_owned(), format_time(self.time)),
            (headers::CONTENT_TYPE.to_owned(), "application/json".to_owned()),
        ];
        if let Some(subject) = &self.subject {
            h.push((headers::SUBJECT.to_owned(), subject.clone()));
        }
        if let Some(tp) = &self.traceparent {
            h.push((headers::TRACEPARENT.to_owned(), tp.clone()));
        }
        // Serialising a `serde_json::Value` cannot fail.
        let payload = serde_json::to_vec(&self.data).unwrap_or_default();
        (h, payload)
    }

    /// Parses a binary-mode record back into an event; `received` stands in for an absent
    /// `ce_time`.
    pub fn from_binary(
        h: &[(String, String)],
        payload: &[u8],
        received: OffsetDateTime,
    ) -> Result<Self, EnvelopeError> {
        let a = Attributes::from_headers(h, received)?;
        let data = serde_json::from_slice(payload).map_err(|e| EnvelopeError::Payload(e.to_string()))?;
        Ok(Self {
            specversion: "1.0".to_owned(),
            id: a.id,
            source: a.source,
            ty: a.ty,
            time: a.time,
            subject: a.subject,
            datacontenttype: None,
            traceparent: a.traceparent,
            data,
        })
    }
}

/// The attributes of a binary-mode event without its payload, so a consumer can parse the
/// payload straight into its own typed structs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `type`.
    pub ty: String,
    /// CloudEvents `time`.
    pub time: OffsetDateTime,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// W3C trace context.
    pub traceparent: Option<String>,
}

impl Attributes {
    /// Reads and checks the `ce_*` headers as CloudEvents' Kafka binding defines them:
    /// `ce_specversion`, `ce_id`, `ce_source` and `ce_type` are required, `ce_time` and
    /// `ce_subject` optional (`received`, the time the bus took the record, stands in for an
    /// absent `ce_time`).
    pub fn from_headers(h: &[(String, String)], received: OffsetDateTime) -> Result<Self, EnvelopeError> {
        let get = |name: &str| h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let required = |name: &'static str, attr: &'static str, max: usize| {
            let v = get(name).ok_or(EnvelopeError::MissingAttribute(attr))?;
            check_text(attr, v, max)?;
            Ok::<_, EnvelopeError>(v.to_owned())
        };
        check_spec_version(get(headers::SPECVERSION).ok_or(EnvelopeError::MissingAttribute("specversion"))?)?;
        let id = required(headers::ID, "id", MAX_EVENT_ID_LEN)?;
        let source = required(headers::SOURCE, "source", MAX_SOURCE_LEN)?;
        let ty = required(headers::TYPE, "type", MAX_TYPE_LEN)?;
        let time = match get(headers::TIME) {
            None => received,
            Some(raw) => OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).map_err(|e| {
                EnvelopeError::InvalidAttribute { attribute: "time", reason: format!("{raw:?} is not RFC 3339: {e}") }
            })?,
        };
        let subject = get(headers::SUBJECT).map(str::to_owned);
        if let Some(subject) = &subject {
            check_text("subject", subject, MAX_TYPE_LEN)?;
        }
        let traceparent = get(headers::TRACEPARENT).map(str::to_owned);
        if let Some(tp) = &traceparent {
            check_text("traceparent", tp, MAX_TRACEPARENT_LEN)?;
        }
        Ok(Self { id, source, ty, time, subject, traceparent })
    }

    /// The idempotency key.
    pub fn key(&self) -> EventKey {
        EventKey { source: self.source.clone(), id: self.id.clone() }
    }

    /// Event time in Unix milliseconds.
    pub fn time_ms(&self) -> i64 {
        (self.time.unix_timestamp_nanos() / 1_000_000) as i64
    }
}

fn check_spec_version(v: &str) -> Result<(), EnvelopeError> {
    if v == "1.0" {
        return Ok(());
    }
    Err(EnvelopeError::InvalidAttribute { attribute: "specversion", reason: format!("expected \"1.0\", got {v:?}") })
}

/// A text attribute: not empty, at most `max` characters (as JSON Schema counts them), no
/// control characters.
fn check_text(attribute: &'static str, v: &str, max: usize) -> Result<(), EnvelopeError> {
    let invalid = |reason: String| Err(EnvelopeError::InvalidAttribute { attribute, reason });
    if v.is_empty() {
        return invalid("must not be empty".into());
    }
    let chars = v.chars().count();
    if chars > max {
        return invalid(format!("is {chars} characters long; the limit is {max}"));
    }
    if v.chars().any(char::is_control) {
        return invalid("must not contain control characters".into());
    }
    Ok(())
}

/// RFC 3339 text of a timestamp.
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    }

    #[test]
    fn binary_mode_round_trips_every_attribute() {
        let mut ev = Envelope::new("/wms", "stock.snapshot", serde_json::json!({"sku": "A"}));
        ev.subject = Some("A".into());
        ev.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let (h, p) = ev.to_binary();
        let back = Envelope::from_binary(&h, &p, OffsetDateTime::UNIX_EPOCH).expect("round trip");
        assert_eq!(back.id, ev.id);
        assert_eq!(back.time_ms(), ev.time_ms());
        assert_eq!(back.subject, ev.subject);
        assert_eq!(back.traceparent, ev.traceparent);
        assert_eq!(back.data, ev.data);
    }

    #[test]
    fn binary_mode_names_the_missing_attribute() {
        let err = Envelope::from_binary(
            &hdrs(&[("ce_specversion", "1.0"), ("ce_id", "1")]),
            b"{}",
            OffsetDateTime::UNIX_EPOCH,
        )
        .expect_err("no source");
        assert_eq!(err, EnvelopeError::MissingAttribute("source"));
        let h = hdrs(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "1"),
            ("ce_source", "s"),
            ("ce_type", "t"),
            ("ce_time", "yesterday"),
        ]);
        let err = Envelope::from_binary(&h, b"{}", OffsetDateTime::UNIX_EPOCH).expect_err("bad time");
        assert!(err.to_string().contains("not RFC 3339"));
    }

    #[test]
    fn binary_mode_requires_specversion_and_lets_time_default_to_the_record_time() {
        let without_version = hdrs(&[("ce_id", "1"), ("ce_source", "s"), ("ce_type", "t")]);
        let err =
            Attributes::from_headers(&without_version, OffsetDateTime::UNIX_EPOCH).expect_err("specversion required");
        assert_eq!(err, EnvelopeError::MissingAttribute("specversion"));
        let received = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid");
        let without_time = hdrs(&[("ce_specversion", "1.0"), ("ce_id", "1"), ("ce_source", "s"), ("ce_type", "t")]);
        let a = Attributes::from_headers(&without_time, received).expect("ce_time is optional");
        assert_eq!(a.time, received);
    }

    #[test]
    fn overlong_or_control_character_attributes_are_rejected() {
        let long_id = "x".repeat(MAX_EVENT_ID_LEN + 1);
        let h = hdrs(&[("ce_specversion", "1.0"), ("ce_id", &long_id), ("ce_source", "s"), ("ce_type", "t")]);
        let err = Attributes::from_headers(&h, OffsetDateTime::UNIX_EPOCH).expect_err("id too long");
        assert!(err.to_string().contains("the limit is 256"), "{err}");
        let mut ev = Envelope::new("/wms\n", "stock.snapshot", serde_json::json!({}));
        assert!(ev.validate().expect_err("control character").to_string().contains("control"));
        ev.source = "s".repeat(MAX_SOURCE_LEN + 1);
        assert!(ev.validate().is_err());
    }

    #[test]
    fn structured_mode_rejects_unknown_attributes_and_wrong_or_missing_spec_versions() {
        let raw = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"2026-01-01T00:00:00Z","data":{},"bogus":1}"#;
        assert!(serde_json::from_str::<Envelope>(raw).is_err());
        let raw = r#"{"specversion":"0.3","id":"1","source":"s","type":"t","time":"2026-01-01T00:00:00Z","data":{}}"#;
        let ev: Envelope = serde_json::from_str(raw).expect("parses");
        assert!(ev.validate().is_err());
        let raw = r#"{"id":"1","source":"s","type":"t","data":{}}"#;
        assert!(serde_json::from_str::<Envelope>(raw).is_err(), "specversion is required");
        let raw = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{}}"#;
        assert!(serde_json::from_str::<Envelope>(raw).is_ok(), "time is optional");
    }
}
