//! Ad-hoc: what one event's digest and validation cost (not a test; run with --release).
use std::time::Instant;

use tally_core::Envelope;
use tally_inventory::InventoryEvent;

fn main() {
    let env = Envelope::new(
        "/wms",
        "stock.adjusted",
        serde_json::json!({"sku": "SKU-12345", "location": "wh-1", "delta": -3, "reason": "shipment", "reference": "order-98765"}),
    );
    let (headers, payload) = env.to_binary();
    let n = 1_000_000;
    let t = Instant::now();
    let mut x = 0i64;
    for _ in 0..n {
        let ev = InventoryEvent::from_payload("stock.adjusted", None, &payload).expect("valid");
        x ^= ev.sku().as_str().len() as i64;
    }
    println!("parse+validate: {:.0} ns/event", t.elapsed().as_nanos() as f64 / n as f64);
    let ev = InventoryEvent::from_payload("stock.adjusted", None, &payload).expect("valid");
    let t = Instant::now();
    for _ in 0..n {
        x ^= ev.digest();
    }
    println!("digest: {:.0} ns/event", t.elapsed().as_nanos() as f64 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let a = tally_core::Attributes::from_headers(&headers, time::OffsetDateTime::UNIX_EPOCH).expect("valid");
        x ^= a.id.len() as i64;
    }
    println!("attributes: {:.0} ns/event", t.elapsed().as_nanos() as f64 / n as f64);
    println!("{x}");
}
