//! JSON Schemas (draft 2020-12) of the `data` of every event type, written once here: checked
//! in as `docs/schemas/*.json` for integrators, embedded in the OpenAPI document, and tested
//! against the parser ([`crate::InventoryEvent`]) so that the two accept exactly the same
//! payloads (see the tests below for the two corners JSON Schema cannot express).

use serde_json::{Value, json};
use tally_core::ids::{ID_PATTERN, MAX_ID_LEN};

use crate::event::{
    MAX_QUANTITY, MAX_RESERVATION_ID_LEN, MAX_SHIPPED_ORDERS, MAX_SOURCE_VERSION, MAX_TEXT_LEN, MAX_TTL_SECONDS,
};
use crate::types;

/// An identifier (SKU, location, channel).
pub fn id(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN, "pattern": ID_PATTERN, "description": description})
}

/// `schema` that may also be `null` (an optional field: absent and `null` mean the same).
pub fn optional(mut schema: Value) -> Value {
    let ty = schema["type"].clone();
    schema["type"] = json!([ty, "null"]);
    schema
}

/// Free text: 1 to [`MAX_TEXT_LEN`] characters, no control characters.
pub fn text(description: &str) -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": MAX_TEXT_LEN,
        "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$",
        "description": description,
    })
}

fn quantity(min: i64, description: &str) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": MAX_QUANTITY, "description": description})
}

fn version(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": MAX_SOURCE_VERSION, "description": description})
}

/// A reservation id.
pub fn reservation_id() -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": MAX_RESERVATION_ID_LEN, "pattern": ID_PATTERN,
        "description": "Unique per reservation; single use.",
    })
}

fn object(title: &str, description: &str, required: &[&str], properties: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The schema of each event type's `data`, by CloudEvents `type`, with the name its
/// component has in the OpenAPI document.
pub fn event_data_schemas() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            types::SNAPSHOT,
            "StockSnapshot",
            object(
                "stock.snapshot data",
                "A source states on_hand at a location as of its source version; applied only if newer than the stored snapshot.",
                &["sku", "location", "on_hand", "source_version"],
                json!({
                    "sku": id("SKU (the record key)."),
                    "location": id("Location."),
                    "on_hand": quantity(0, "Units physically on hand at the source version."),
                    "source_version": version("The source's sequence number."),
                    "safety_stock": optional(quantity(0, "Units never offered to any channel.")),
                    "shipped_orders": {
                        "type": "array", "maxItems": MAX_SHIPPED_ORDERS, "items": text("An order id."),
                        "description": "Orders whose shipment this on_hand already reflects (confirms committed reservations).",
                    },
                }),
            ),
        ),
        (types::ADJUSTED, "StockAdjusted", {
            let mut s = object(
                "stock.adjusted data",
                "A signed change of on_hand with a reason. receipt and return are positive, shipment and damage negative, count and correction either.",
                &["sku", "location", "delta", "reason"],
                json!({
                    "sku": id("SKU (the record key)."),
                    "location": id("Location."),
                    "delta": {
                        "type": "integer", "minimum": -MAX_QUANTITY, "maximum": MAX_QUANTITY, "not": {"const": 0},
                        "description": "Signed change of on_hand; never 0.",
                    },
                    "reason": {"type": "string", "enum": ["receipt", "shipment", "return", "damage", "count", "correction"]},
                    "source_version": optional(version("The source version this adjustment belongs to; covered by any snapshot at or after it.")),
                    "reference": optional(text("Reference document (for shipments: the order id, which confirms a committed reservation).")),
                    "change_from_quantity": optional(quantity(0, "Compare-and-set: apply only if on_hand currently equals this.")),
                }),
            );
            s["allOf"] = json!([
                {"if": {"properties": {"reason": {"enum": ["receipt", "return"]}}, "required": ["reason"]},
                 "then": {"properties": {"delta": {"minimum": 1}}}},
                {"if": {"properties": {"reason": {"enum": ["shipment", "damage"]}}, "required": ["reason"]},
                 "then": {"properties": {"delta": {"maximum": -1}}}},
            ]);
            s
        }),
        (types::RESERVATION_REQUESTED, "ReservationRequested", {
            let mut s = object(
                "reservation.requested data",
                "A channel holds stock for an order; rejected (reservation.rejected) if it would make available negative.",
                &["reservation_id", "sku", "channel", "quantity"],
                json!({
                    "reservation_id": reservation_id(),
                    "sku": id("SKU (the record key)."),
                    "channel": id("The channel holding the stock."),
                    "location": optional(id("Where to hold it; absent: the channel's location with most available (ties: the smallest id).")),
                    "quantity": quantity(1, "Units to hold."),
                    "order_id": optional(text("The order the stock is held for.")),
                    "expires_at": {
                        "type": ["string", "null"], "format": "date-time", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-",
                        "description": "When an uncommitted hold lapses (RFC 3339, years 1970 to 9999).",
                    },
                    "ttl_seconds": {
                        "type": ["integer", "null"], "minimum": 1, "maximum": MAX_TTL_SECONDS,
                        "description": "When an uncommitted hold lapses, in seconds after the event's time (instead of expires_at).",
                    },
                }),
            );
            s["not"] = json!({
                "properties": {"expires_at": {"type": "string"}, "ttl_seconds": {"type": "integer"}},
                "required": ["expires_at", "ttl_seconds"],
            });
            s
        }),
        (
            types::RESERVATION_RELEASED,
            "ReservationReleased",
            object(
                "reservation.released data",
                "Held stock goes back. With channel, applied only if that channel holds the reservation; without, only the warehouse channel may send it.",
                &["reservation_id", "sku"],
                json!({
                    "reservation_id": reservation_id(),
                    "sku": id("SKU (the record key)."),
                    "reason": optional(text("Why, e.g. cancelled or expired.")),
                    "channel": optional(id("The channel releasing it.")),
                }),
            ),
        ),
        (
            types::RESERVATION_COMMITTED,
            "ReservationCommitted",
            object(
                "reservation.committed data",
                "The channel shipped the held stock; provisional until the warehouse confirms (a shipment adjustment or snapshot naming the order).",
                &["reservation_id", "sku"],
                json!({
                    "reservation_id": reservation_id(),
                    "sku": id("SKU (the record key)."),
                    "order_id": optional(text("The order; the warehouse's shipment references it.")),
                    "channel": optional(id("The channel committing it.")),
                }),
            ),
        ),
        (
            types::CHANNEL_REPORTED,
            "ChannelReported",
            object(
                "channel.reported data",
                "What a channel currently displays; the engine measures shown minus truth and re-publishes the truth if they differ.",
                &["sku", "channel", "shown"],
                json!({
                    "sku": id("SKU (the record key)."),
                    "channel": id("Reporting channel."),
                    "shown": quantity(0, "Units the channel shows as available."),
                }),
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::InventoryEvent;

    fn validators() -> Vec<(&'static str, jsonschema::Validator)> {
        event_data_schemas()
            .into_iter()
            .map(|(ty, _, schema)| (ty, jsonschema::validator_for(&schema).expect("a valid schema")))
            .collect()
    }

    /// Values at and around every bound the parser and the schemas check.
    fn field_value() -> impl Strategy<Value = Value> {
        let ints = prop_oneof![
            Just(i64::MIN),
            Just(-MAX_QUANTITY - 1),
            Just(-MAX_QUANTITY),
            Just(-1i64),
            Just(0i64),
            Just(1i64),
            Just(MAX_QUANTITY),
            Just(MAX_QUANTITY + 1),
            Just(i64::from(MAX_TTL_SECONDS)),
            Just(i64::from(MAX_TTL_SECONDS) + 1),
            Just(i64::MAX),
            -5..5i64,
        ];
        let strings = prop_oneof![
            Just(String::new()),
            Just("SKU-1".to_owned()),
            Just("wh-1".to_owned()),
            Just("partner:ozon".to_owned()),
            Just("a b".to_owned()),
            Just("sk\u{fc}".to_owned()),
            Just("line\nbreak".to_owned()),
            Just("x".repeat(MAX_RESERVATION_ID_LEN)),
            Just("x".repeat(MAX_RESERVATION_ID_LEN + 1)),
            Just("x".repeat(MAX_ID_LEN + 1)),
            Just("\u{e9}".repeat(MAX_TEXT_LEN)),
            Just("\u{e9}".repeat(MAX_TEXT_LEN + 1)),
            Just("receipt".to_owned()),
            Just("shipment".to_owned()),
            Just("count".to_owned()),
            Just("theft".to_owned()),
            Just("2026-01-01T00:00:00Z".to_owned()),
            Just("1969-12-31T23:59:59Z".to_owned()),
            Just("yesterday".to_owned()),
        ];
        prop_oneof![
            4 => ints.prop_map(Value::from),
            4 => strings.prop_map(Value::from),
            1 => Just(Value::Null),
            1 => Just(json!(true)),
            1 => Just(json!(u64::MAX)),
            1 => Just(json!(5.0)),
            1 => Just(json!(2.5)),
            1 => Just(json!(-0.0)),
            1 => Just(json!(1e12)),
            1 => Just(json!(1.0e13)),
            1 => Just(json!(["o-1"])),
            1 => Just(json!([])),
            1 => Just(json!([1])),
        ]
    }

    const FIELDS: &[&str] = &[
        "sku",
        "location",
        "on_hand",
        "source_version",
        "safety_stock",
        "shipped_orders",
        "delta",
        "reason",
        "reference",
        "change_from_quantity",
        "reservation_id",
        "channel",
        "quantity",
        "order_id",
        "expires_at",
        "ttl_seconds",
        "shown",
        "bogus",
    ];

    /// Mostly well-formed payloads of one type with a few fields replaced by edge values, so
    /// that both sides of every bound are reached.
    fn payload() -> impl Strategy<Value = (usize, Value)> {
        let valid = [
            json!({"sku": "SKU-1", "location": "wh-1", "on_hand": 5, "source_version": 1}),
            json!({"sku": "SKU-1", "location": "wh-1", "delta": -2, "reason": "shipment", "reference": "o-1"}),
            json!({"reservation_id": "r-1", "sku": "SKU-1", "channel": "storefront", "quantity": 2, "ttl_seconds": 60}),
            json!({"reservation_id": "r-1", "sku": "SKU-1", "reason": "cancelled"}),
            json!({"reservation_id": "r-1", "sku": "SKU-1", "order_id": "o-1", "channel": "storefront"}),
            json!({"sku": "SKU-1", "channel": "storefront", "shown": 3}),
        ];
        (
            0..valid.len(),
            proptest::collection::vec(
                (0..FIELDS.len(), prop_oneof![3 => field_value().prop_map(Some), 1 => Just(None)]),
                0..3,
            ),
        )
            .prop_map(move |(ty, changes)| {
                let mut v = valid[ty].clone();
                for (field, value) in changes {
                    match value {
                        Some(value) => v[FIELDS[field]] = value,
                        None => {
                            v.as_object_mut().map(|o| o.remove(FIELDS[field]));
                        }
                    }
                }
                (ty, v)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        /// The parser and the published schema accept exactly the same payloads.
        #[test]
        fn the_parser_and_the_schemas_accept_the_same_payloads((ty, data) in payload()) {
            let validators = validators();
            let (name, validator) = &validators[ty];
            let parsed = InventoryEvent::from_payload(name, None, data.to_string().as_bytes());
            prop_assert_eq!(
                parsed.is_ok(),
                validator.is_valid(&data),
                "{} {}: parser says {:?}, schema errors {:?}",
                name,
                data,
                parsed.err(),
                validator.iter_errors(&data).map(|e| e.to_string()).collect::<Vec<_>>()
            );
        }
    }

    /// The corner JSON Schema cannot express, stated so that nobody relies on it: a
    /// source_version of exactly 2^63 passes a schema validator that compares in floating
    /// point, and the parser refuses it. (An integer written as `5.0` is an integer to both.)
    #[test]
    fn what_the_schemas_cannot_express_is_refused_by_the_parser() {
        let five = json!({"sku": "SKU-1", "channel": "storefront", "shown": 5.0});
        assert!(InventoryEvent::from_payload(types::CHANNEL_REPORTED, None, five.to_string().as_bytes()).is_ok());
        let big = r#"{"sku": "SKU-1", "location": "wh-1", "on_hand": 1, "source_version": 9223372036854775808}"#;
        assert!(InventoryEvent::from_payload(types::SNAPSHOT, None, big.as_bytes()).is_err());
    }

    /// The checked-in copies under docs/schemas are these schemas.
    #[test]
    fn checked_in_schemas_match_the_code() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schemas");
        for (ty, _, schema) in event_data_schemas() {
            let path = format!("{dir}/{ty}.json");
            let text = format!("{}\n", serde_json::to_string_pretty(&schema).expect("serialises"));
            if std::env::var_os("UPDATE_OPENAPI").is_some() {
                std::fs::create_dir_all(dir).expect("mkdir");
                std::fs::write(&path, &text).expect("write");
            }
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(checked_in == text, "{path} is out of date; run `make openapi`");
        }
    }
}
