//! The OpenAPI document: what utoipa derives from the handlers, completed with what it cannot
//! derive — the JSON Schemas of the events (`tally_inventory::schema`, the ones the parser is
//! tested against), the constraints the server enforces on paths, headers and bodies, and
//! every error status each operation can answer. Served at `/openapi.json` and checked in as
//! `docs/openapi.json`; schemathesis checks the running server against it
//! (`scripts/schemathesis.sh`).

use serde_json::{Map, Value, json};
use tally_core::envelope::{MAX_EVENT_ID_LEN, MAX_SOURCE_LEN, MAX_TRACEPARENT_LEN};
use tally_inventory::schema::{event_data_schemas, id, optional, reservation_id, text};
use utoipa::OpenApi;

use super::ApiDoc;
use super::ingest::MAX_INGEST_BATCH;
use super::stock::MAX_BATCH_READ;

/// The complete document.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    add_schemas(&mut doc);
    constrain_parameters(&mut doc);
    add_error_responses(&mut doc);
    doc
}

const NO_CONTROL: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A copy of `schema` without the given properties (and their `required` entries).
fn without(schema: &Value, fields: &[&str]) -> Value {
    let mut s = schema.clone();
    if let Some(props) = s["properties"].as_object_mut() {
        props.retain(|k, _| !fields.contains(&k.as_str()));
    }
    if let Some(required) = s["required"].as_array_mut() {
        required.retain(|r| !fields.iter().any(|f| r == f));
    }
    s
}

fn add_schemas(doc: &mut Value) {
    let data = event_data_schemas();
    let schemas = &mut doc["components"]["schemas"];
    let mut variants = Vec::new();
    let mut by_name = Map::new();
    for (ty, name, mut schema) in data {
        if let Some(o) = schema.as_object_mut() {
            o.remove("$schema");
        }
        variants.push(json!({"properties": {"type": {"const": ty}, "data": reference(name)}}));
        by_name.insert(name.to_owned(), schema.clone());
        schemas[name] = schema;
    }
    let types: Vec<Value> = variants.iter().map(|v| v["properties"]["type"]["const"].clone()).collect();
    schemas["CloudEvent"] = json!({
        "description": "A CloudEvents 1.0 event in structured JSON mode. `source` + `id` is its idempotency key; over HTTP the source must be the caller's own (`/api/<key id>`, below it, or a source configured for the key). `subject`, when given, must equal `data.sku`.",
        "type": "object",
        "additionalProperties": false,
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_ID_LEN, "pattern": NO_CONTROL,
                   "description": "Unique per source (with an Idempotency-Key header on a single event, the key replaces it)."},
            "source": {"type": "string", "minLength": 1, "maxLength": MAX_SOURCE_LEN, "pattern": NO_CONTROL},
            "type": {"type": "string", "enum": types},
            "time": {"type": "string", "format": "date-time", "description": "When the event happened; default: when tally received it."},
            "subject": id("The SKU (must equal data.sku)."),
            "datacontenttype": {"type": "string", "pattern": "^application/json"},
            "traceparent": {"type": "string", "minLength": 1, "maxLength": MAX_TRACEPARENT_LEN, "pattern": NO_CONTROL},
            "data": {"description": "The payload; its schema depends on `type`."},
        },
        "oneOf": variants,
    });
    if let Some(o) = schemas.as_object_mut() {
        o.remove("Envelope");
    }
    schemas["AdjustRequest"] = without(&by_name["StockAdjusted"], &["sku", "location"]);
    schemas["AdjustRequest"]["description"] =
        json!("A signed change of on_hand at one location, optionally compare-and-set.");
    let mut reserve = without(&by_name["ReservationRequested"], &["expires_at"]);
    if let Some(o) = reserve.as_object_mut() {
        o.remove("not");
    }
    reserve["description"] = json!("Holds stock for an order; never oversells.");
    schemas["ReserveRequest"] = reserve;
    schemas["ReleaseRequest"] = json!({
        "type": "object", "additionalProperties": false, "required": ["sku"],
        "properties": {"sku": id("SKU of the reservation."), "reason": optional(text("Why, e.g. cancelled (default released)."))},
    });
    schemas["CommitRequest"] = json!({
        "type": "object", "additionalProperties": false, "required": ["sku"],
        "properties": {"sku": id("SKU of the reservation."), "order_id": optional(text("The order the warehouse's shipment will reference."))},
    });
    schemas["BatchReadRequest"] = json!({
        "type": "object", "additionalProperties": false, "required": ["skus"],
        "properties": {"skus": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_READ, "items": id("SKU.")}},
    });
    schemas["Problem"]["properties"]["type"]["description"] = json!(
        "https://tally.dev/problems/<code>, the code one of: invalid-json, invalid-identifier, invalid-query, \
         invalid-batch-size, invalid-idempotency-key, missing-idempotency-key, invalid-request (400); unauthorized (401); \
         forbidden, source-not-allowed (403); sku-not-found, channel-not-found, no-such-route (404); method-not-allowed (405); \
         quantity-mismatch, reservation-rejected (409); payload-too-large (413); unsupported-media-type (415); \
         invalid-event, idempotency-key-reused (422); internal (500); backend-unavailable (503); outcome-pending (504)."
    );
    schemas["ItemError"]["properties"]["code"]["description"] = json!(
        "invalid_envelope, unknown_type, invalid_payload, invalid_field, subject_mismatch, idempotency_key_reused; \
         for a synchronous write the engine dead-lettered: its dead-letter reason (e.g. quantity_out_of_range)."
    );
    let body = json!({"oneOf": [reference("CloudEvent"), {
        "type": "array", "minItems": 1, "maxItems": MAX_INGEST_BATCH, "items": reference("CloudEvent"),
    }]});
    doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"] = body;
}

/// Path parameters and headers get the spelling the server checks.
fn constrain_parameters(doc: &mut Value) {
    let idempotency_key = json!({
        "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$",
        "description": "1 to 200 visible ASCII characters.",
    });
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for ops in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in ops.values_mut() {
            // `get_mut`, not indexing: indexing a missing key would insert a `null`.
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else { continue };
            for p in params {
                let schema = match p["name"].as_str() {
                    Some("sku" | "location" | "channel") if p["in"] == "path" => id("An identifier."),
                    Some("reservation_id") => reservation_id(),
                    Some("Idempotency-Key") => idempotency_key.clone(),
                    _ => continue,
                };
                p["schema"] = schema;
            }
        }
    }
}

/// An error status and what it means.
type Status = (u16, &'static str);

/// Every status an operation can answer besides its successes, each a problem document.
fn add_error_responses(doc: &mut Value) {
    const EVERY_V1: &[Status] = &[
        (
            400,
            "Malformed request: invalid-json, invalid-identifier, invalid-query, invalid-idempotency-key, missing-idempotency-key, invalid-batch-size, invalid-request.",
        ),
        (401, "No or unknown API key (unauthorized)."),
        (403, "The key lacks the scope (forbidden), or an event's source is not the caller's (source-not-allowed)."),
        (500, "A bug; the cause is logged (internal)."),
        (503, "A backend does not answer; retry later (backend-unavailable)."),
    ];
    const WITH_BODY: &[Status] = &[
        (413, "The body is larger than 4 MiB (payload-too-large)."),
        (415, "The body is not sent as application/json (unsupported-media-type)."),
    ];
    const INVALID: Status = (
        422,
        "Not a valid event (invalid-event, each item's reason in errors), or the idempotency key was used for a different request (idempotency-key-reused).",
    );
    const PENDING: Status =
        (504, "Accepted, outcome not known yet; retry with the same Idempotency-Key (outcome-pending).");
    let extra: &[(&str, &str, &[Status])] = &[
        ("post", "/v1/events", &[INVALID]),
        (
            "post",
            "/v1/stock/{sku}/locations/{location}/adjustments",
            &[(409, "change_from_quantity did not match (quantity-mismatch)."), INVALID, PENDING],
        ),
        (
            "post",
            "/v1/reservations",
            &[(409, "Rejected, e.g. insufficient stock; nothing is held (reservation-rejected)."), INVALID, PENDING],
        ),
        ("post", "/v1/reservations/{reservation_id}/release", &[INVALID, PENDING]),
        ("post", "/v1/reservations/{reservation_id}/commit", &[INVALID, PENDING]),
        ("get", "/v1/stock/{sku}", &[(404, "No stock is known for the SKU (sku-not-found).")]),
        (
            "get",
            "/v1/channels/{channel}/stock/{sku}",
            &[(404, "Unknown SKU or channel (sku-not-found, channel-not-found).")],
        ),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, ops) in paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let Some(ops) = ops.as_object_mut() else { continue };
        for (method, op) in ops.iter_mut() {
            let mut statuses: Vec<Status> = EVERY_V1.to_vec();
            if op.get("requestBody").is_some() {
                statuses.extend_from_slice(WITH_BODY);
            }
            for (m, p, more) in extra {
                if m == method && p == path {
                    statuses.extend_from_slice(more);
                }
            }
            let responses = &mut op["responses"];
            for (status, description) in statuses {
                responses[status.to_string()] = json!({
                    "description": description,
                    "content": {"application/problem+json": {"schema": reference("Problem")}},
                });
            }
            if let Some(r) = responses.as_object_mut() {
                r.sort_keys();
            }
        }
    }
}
