//! Demand forecasting's staging tables in the SQLite file (see [`crate::demand`]): the same
//! tables as PostgreSQL's, with the event table unpartitioned and business days as integers.

use std::collections::HashMap;

use tally_sqlite::Table;
use tally_sqlite::rusqlite::types::Value as SqlValue;
use tally_sqlite::rusqlite::{self, params};

use super::ledger::{PROCESSED_TABLE, SqliteDocuments, processed_rows};
use super::{OFFSETS_TABLE, int, offset_rows, text};
use crate::StoreError;
use crate::demand::{
    DailyRow, DemandEffects, DemandStore, History, LocationRow, ParkedRow, SalesDay, SkuRow, StagedRow, Unparked,
};
use crate::ledger::{Flush, Journal};

const PARKED_TABLE: Table = Table {
    insert: "INSERT INTO demand_parked (event_source, event_id, event_type, sku, location, missing, headers, payload,
        event_time_ms, topic, partition, offset, parked_at_ms) VALUES ",
    columns: 13,
    conflict: " ON CONFLICT (event_source, event_id) DO NOTHING",
};

const DAILY_TABLE: Table = Table {
    insert: "INSERT INTO demand_daily (sku, location, business_day, sold, returned, received, revenue, promo_sold,
        events, updated_at_ms) VALUES ",
    columns: 10,
    conflict: " ON CONFLICT (sku, location, business_day) DO UPDATE SET
        sold = demand_daily.sold + excluded.sold,
        returned = demand_daily.returned + excluded.returned,
        received = demand_daily.received + excluded.received,
        revenue = demand_daily.revenue + excluded.revenue,
        promo_sold = demand_daily.promo_sold + excluded.promo_sold,
        events = demand_daily.events + excluded.events,
        updated_at_ms = excluded.updated_at_ms",
};

const SKUS_TABLE: Table = Table {
    insert: "INSERT INTO demand_skus (sku, category, brand, price, pack_size, moq, updated_at_ms) VALUES ",
    columns: 7,
    conflict: " ON CONFLICT (sku) DO UPDATE SET category = excluded.category, brand = excluded.brand,
        price = excluded.price, pack_size = excluded.pack_size, moq = excluded.moq, updated_at_ms = excluded.updated_at_ms",
};

const LOCATIONS_TABLE: Table = Table {
    insert: "INSERT INTO demand_locations (location, region, time_zone, updated_at_ms) VALUES ",
    columns: 4,
    conflict: " ON CONFLICT (location) DO UPDATE SET region = excluded.region, time_zone = excluded.time_zone,
        updated_at_ms = excluded.updated_at_ms",
};

/// Rollup increments keyed by (sku, location, day).
type Increments = HashMap<(String, String, i32), DailyRow>;

fn add(increments: &mut Increments, row: &StagedRow) {
    let entry = increments.entry((row.sku.clone(), row.location.clone(), row.day)).or_default();
    entry.day = row.day;
    match row.kind.as_str() {
        "sale" => {
            entry.sold += row.units;
            entry.revenue += row.revenue;
            if row.promo {
                entry.promo_sold += row.units;
            }
        }
        "return" => entry.returned += row.units,
        _ => entry.received += row.units,
    }
    entry.events += 1;
}

/// Inserts staged events (a row already there is left alone) and the rollup increments of
/// those that were inserted; returns the statements run and the rows that landed.
fn stage(tx: &rusqlite::Transaction<'_>, rows: &[&StagedRow], now: i64) -> rusqlite::Result<(u64, Vec<usize>)> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO demand_events (event_source, event_id, kind, sku, location, business_day, units, revenue, promo,
             lead_time_days, event_time_ms, topic, partition, offset, recorded_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (event_source, event_id) DO NOTHING",
    )?;
    let mut increments = Increments::new();
    let mut landed = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let inserted = insert.execute(params![
            r.source,
            r.id,
            r.kind,
            r.sku,
            r.location,
            r.day,
            r.units,
            r.revenue,
            r.promo,
            r.lead_time_days,
            r.event_time_ms,
            r.topic,
            r.partition,
            i64::try_from(r.offset).unwrap_or(i64::MAX),
            now
        ])?;
        if inserted == 1 {
            add(&mut increments, r);
            landed.push(i);
        }
    }
    let daily: Vec<Vec<SqlValue>> = increments
        .into_iter()
        .map(|((sku, location, day), d)| {
            vec![
                SqlValue::Text(sku),
                SqlValue::Text(location),
                int(day),
                int(d.sold),
                int(d.returned),
                int(d.received),
                SqlValue::Real(d.revenue),
                int(d.promo_sold),
                int(d.events),
                int(now),
            ]
        })
        .collect();
    let mut n = rows.len() as u64 + DAILY_TABLE.write(tx, &daily)?;
    // Every row's day: one already staged was counted when it landed.
    if let Some(last) = rows.iter().map(|r| r.day).max() {
        tx.prepare_cached(
            "UPDATE demand_watermark SET business_day = ?1 WHERE business_day IS NULL OR business_day < ?1",
        )?
        .execute(params![last])?;
        n += 1;
    }
    Ok((n, landed))
}

fn parked_rows(rows: &[&ParkedRow], now: i64) -> Vec<Vec<SqlValue>> {
    rows.iter()
        .map(|p| {
            vec![
                text(&p.source),
                text(&p.id),
                text(&p.ty),
                text(&p.sku),
                text(&p.location),
                text(&p.missing),
                text(&p.headers),
                text(&p.payload),
                int(p.event_time_ms),
                text(&p.topic),
                int(p.partition),
                int(p.offset),
                int(now),
            ]
        })
        .collect()
}

impl Journal<DemandEffects> for SqliteDocuments {
    async fn flush(&self, batch: &[Flush<DemandEffects>]) -> Result<(), StoreError> {
        if batch.iter().all(Flush::is_empty) {
            return Ok(());
        }
        let now = tally_core::now_ms();
        let processed = processed_rows(self.subsystem(), batch, now);
        let staged: Vec<StagedRow> = batch.iter().flat_map(|f| f.effects.staged.iter().cloned()).collect();
        let parked: Vec<&ParkedRow> = batch.iter().flat_map(|f| &f.effects.parked).collect();
        let parked = parked_rows(&parked, now);
        let offsets = offset_rows(batch);
        self.store
            .write("flushing staged demand and offsets", move |conn, counter| {
                let tx = conn.transaction()?;
                let mut n = 2 + PROCESSED_TABLE.write(&tx, &processed)?;
                n += stage(&tx, &staged.iter().collect::<Vec<_>>(), now)?.0;
                n += PARKED_TABLE.write(&tx, &parked)?;
                n += OFFSETS_TABLE.write(&tx, &offsets)?;
                tx.commit()?;
                counter.add(n);
                Ok((processed, staged, parked, offsets))
            })
            .await
            .map(drop)
    }
}

fn json_list(values: &[String]) -> String {
    // A list of strings always serialises.
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

impl DemandStore for SqliteDocuments {
    async fn put_skus(&self, rows: Vec<SkuRow>) -> Result<(), StoreError> {
        let now = tally_core::now_ms();
        let rows: Vec<Vec<SqlValue>> = rows
            .iter()
            .map(|r| {
                vec![
                    text(&r.sku),
                    text(&r.category),
                    text(&r.brand),
                    SqlValue::Real(r.price),
                    int(r.pack_size),
                    int(r.moq),
                    int(now),
                ]
            })
            .collect();
        self.store.write_tables("storing the catalogue", [(&SKUS_TABLE, rows)]).await
    }

    async fn put_locations(&self, rows: Vec<LocationRow>) -> Result<(), StoreError> {
        let now = tally_core::now_ms();
        let rows: Vec<Vec<SqlValue>> =
            rows.iter().map(|r| vec![text(&r.location), text(&r.region), text(&r.time_zone), int(now)]).collect();
        self.store.write_tables("storing locations", [(&LOCATIONS_TABLE, rows)]).await
    }

    async fn skus(&self, skus: Vec<String>) -> Result<Vec<SkuRow>, StoreError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let list = json_list(&skus);
        self.store
            .read("reading the catalogue", move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT sku, category, brand, price, pack_size, moq FROM demand_skus
                     WHERE sku IN (SELECT value FROM json_each(?1))",
                )?;
                let rows = stmt.query_map([list], |r| {
                    Ok(SkuRow {
                        sku: r.get(0)?,
                        category: r.get(1)?,
                        brand: r.get(2)?,
                        price: r.get(3)?,
                        pack_size: r.get(4)?,
                        moq: r.get(5)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn locations(&self, locations: Vec<String>) -> Result<Vec<LocationRow>, StoreError> {
        if locations.is_empty() {
            return Ok(Vec::new());
        }
        let list = json_list(&locations);
        self.store
            .read("reading locations", move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT location, region, time_zone FROM demand_locations
                     WHERE location IN (SELECT value FROM json_each(?1))",
                )?;
                let rows = stmt.query_map([list], |r| {
                    Ok(LocationRow { location: r.get(0)?, region: r.get(1)?, time_zone: r.get(2)? })
                })?;
                rows.collect()
            })
            .await
    }

    async fn parked_ready(&self, limit: usize) -> Result<Vec<ParkedRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.store
            .read("reading parked demand events", move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT event_source, event_id, event_type, sku, location, missing, headers, payload, event_time_ms,
                            topic, partition, offset
                     FROM demand_parked p
                     WHERE EXISTS (SELECT 1 FROM demand_skus s WHERE s.sku = p.sku)
                       AND EXISTS (SELECT 1 FROM demand_locations l WHERE l.location = p.location)
                     ORDER BY parked_at_ms, event_source, event_id
                     LIMIT ?1",
                )?;
                let rows = stmt.query_map([limit], |r| {
                    Ok(ParkedRow {
                        source: r.get(0)?,
                        id: r.get(1)?,
                        ty: r.get(2)?,
                        sku: r.get(3)?,
                        location: r.get(4)?,
                        missing: r.get(5)?,
                        headers: r.get(6)?,
                        payload: r.get(7)?,
                        event_time_ms: r.get(8)?,
                        topic: r.get(9)?,
                        partition: r.get(10)?,
                        offset: r.get::<_, i64>(11)?.try_into().unwrap_or_default(),
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn parked_count(&self) -> Result<u64, StoreError> {
        self.store
            .read("counting parked demand events", |c| {
                c.query_row("SELECT count(*) FROM demand_parked", [], |r| r.get::<_, i64>(0))
            })
            .await
            .map(|n| n.try_into().unwrap_or_default())
    }

    async fn unpark(&self, events: Vec<Unparked>) -> Result<Vec<StagedRow>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = tally_core::now_ms();
        self.store
            .write("staging parked demand events", move |conn, counter| {
                let tx = conn.transaction()?;
                let mut released = Vec::new();
                {
                    let mut delete =
                        tx.prepare_cached("DELETE FROM demand_parked WHERE event_source = ?1 AND event_id = ?2")?;
                    for e in &events {
                        if delete.execute(params![e.source, e.id])? == 1
                            && let Some(row) = &e.staged
                        {
                            released.push(row);
                        }
                    }
                }
                let (n, landed) = stage(&tx, &released, now)?;
                let landed: Vec<StagedRow> = landed.into_iter().map(|i| released[i].clone()).collect();
                tx.commit()?;
                counter.add(2 + events.len() as u64 + n);
                Ok(landed)
            })
            .await
    }

    async fn daily(&self, sku: String, location: String) -> Result<Vec<DailyRow>, StoreError> {
        self.store.read("reading a demand series", move |c| read_daily(c, &sku, &location)).await
    }

    async fn histories(&self, series: Vec<(String, String)>) -> Result<Vec<History>, StoreError> {
        // One trip to a reader thread for the whole batch: in process a query per series
        // costs no round trip, but a hop to the blocking pool per query did (half of the
        // read's time, measured at 3,000 series).
        self.store
            .read("reading demand series", move |c| {
                series
                    .iter()
                    .map(|(sku, location)| {
                        let daily = read_daily(c, sku, location)?.iter().map(SalesDay::from).collect();
                        Ok(History { daily, supplies: read_supplies(c, sku, location)? })
                    })
                    .collect()
            })
            .await
    }

    async fn supplies(&self, sku: String, location: String) -> Result<Vec<(i32, i32)>, StoreError> {
        self.store.read("reading a series' supplies", move |c| read_supplies(c, &sku, &location)).await
    }

    async fn last_day(&self) -> Result<Option<i32>, StoreError> {
        self.store
            .read("reading the last business day", |c| {
                c.query_row("SELECT business_day FROM demand_watermark", [], |r| r.get(0))
            })
            .await
    }

    async fn series(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.store
            .read("listing demand series", |c| {
                let mut stmt =
                    c.prepare_cached("SELECT DISTINCT sku, location FROM demand_daily ORDER BY sku, location")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await
    }

    async fn ensure_partitions(&self, _from_day: i32, _to_day: i32) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn event_partitions(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

/// A series' daily rollup in day order.
fn read_daily(c: &rusqlite::Connection, sku: &str, location: &str) -> rusqlite::Result<Vec<DailyRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT business_day, sold, returned, received, revenue, promo_sold, events FROM demand_daily
         WHERE sku = ?1 AND location = ?2 ORDER BY business_day",
    )?;
    let rows = stmt.query_map(params![sku, location], |r| {
        Ok(DailyRow {
            day: r.get(0)?,
            sold: r.get(1)?,
            returned: r.get(2)?,
            received: r.get(3)?,
            revenue: r.get(4)?,
            promo_sold: r.get(5)?,
            events: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// A series' supplies that carry a lead time: (business day, lead time in days), in day order.
fn read_supplies(c: &rusqlite::Connection, sku: &str, location: &str) -> rusqlite::Result<Vec<(i32, i32)>> {
    let mut stmt = c.prepare_cached(
        "SELECT business_day, lead_time_days FROM demand_events
         WHERE sku = ?1 AND location = ?2 AND kind = 'supply' AND lead_time_days IS NOT NULL
         ORDER BY business_day",
    )?;
    let rows = stmt.query_map(params![sku, location], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}
