//! Demand forecasting's staging tables in PostgreSQL (see [`crate::demand`]): the event table
//! partitioned by month of the business day, the rollup incremented in the same statement
//! that inserts the events — only for the rows that statement inserted.

use std::collections::HashSet;

use sqlx::{Postgres, Row, Transaction};

use super::ledger::{PostgresDocuments, store_processed};
use super::{backend, i64_of, store_offsets};
use crate::StoreError;
use crate::demand::{
    DailyRow, DemandEffects, DemandStore, History, LocationRow, ParkedRow, SalesDay, SkuRow, StagedRow, Unparked,
};
use crate::ledger::{Flush, Journal};

/// Inserts staged events (one already there is left alone) and, in the same statement, the
/// rollup increments of the rows it inserted, in key order (concurrent flushes lock rollup
/// rows in one order); returns the keys of the rows inserted.
async fn stage(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[&StagedRow],
    now: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&StagedRow) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let day: Vec<i32> = rows.iter().map(|r| r.day).collect();
    let units: Vec<i64> = rows.iter().map(|r| r.units).collect();
    let revenue: Vec<f64> = rows.iter().map(|r| r.revenue).collect();
    let promo: Vec<bool> = rows.iter().map(|r| r.promo).collect();
    let lead: Vec<Option<i32>> = rows.iter().map(|r| r.lead_time_days).collect();
    let time: Vec<i64> = rows.iter().map(|r| r.event_time_ms).collect();
    let partition: Vec<i32> = rows.iter().map(|r| i32::try_from(r.partition).unwrap_or(i32::MAX)).collect();
    let offset: Vec<i64> = rows.iter().map(|r| i64_of(r.offset)).collect();
    let landed = sqlx::query(
        "WITH x AS (
             SELECT DISTINCT ON (s, i) *
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[],
                 $8::float8[], $9::bool[], $10::int[], $11::bigint[], $12::text[], $13::int[], $14::bigint[])
                 AS x(s, i, k, sk, l, d, u, r, p, lt, t, tp, pa, o)
         ), keys AS (
             INSERT INTO demand_event_keys (event_source, event_id) SELECT s, i FROM x
             ON CONFLICT DO NOTHING
             RETURNING event_source, event_id
         ), ins AS (
             INSERT INTO demand_events (event_source, event_id, kind, sku, location, business_day, units, revenue, promo,
                 lead_time_days, event_time_ms, topic, partition, \"offset\", recorded_at_ms)
             SELECT s, i, k, sk, l, date '1970-01-01' + d, u, r, p, lt, t, tp, pa, o, $15
             FROM x JOIN keys ON keys.event_source = x.s AND keys.event_id = x.i
             ON CONFLICT DO NOTHING
             RETURNING event_source, event_id, kind, sku, location, business_day, units, revenue, promo
         ), up AS (
             INSERT INTO demand_daily (sku, location, business_day, sold, returned, received, revenue, promo_sold,
                 events, updated_at_ms)
             SELECT sku, location, business_day,
                 coalesce(sum(units) FILTER (WHERE kind = 'sale'), 0),
                 coalesce(sum(units) FILTER (WHERE kind = 'return'), 0),
                 coalesce(sum(units) FILTER (WHERE kind = 'supply'), 0),
                 coalesce(sum(revenue) FILTER (WHERE kind = 'sale'), 0),
                 coalesce(sum(units) FILTER (WHERE kind = 'sale' AND promo), 0),
                 count(*), $15
             FROM ins GROUP BY sku, location, business_day ORDER BY sku, location, business_day
             ON CONFLICT (sku, location, business_day) DO UPDATE SET
                 sold = demand_daily.sold + excluded.sold,
                 returned = demand_daily.returned + excluded.returned,
                 received = demand_daily.received + excluded.received,
                 revenue = demand_daily.revenue + excluded.revenue,
                 promo_sold = demand_daily.promo_sold + excluded.promo_sold,
                 events = demand_daily.events + excluded.events,
                 updated_at_ms = excluded.updated_at_ms
         )
         SELECT event_source, event_id FROM ins",
    )
    .bind(col(|r| &r.source))
    .bind(col(|r| &r.id))
    .bind(col(|r| &r.kind))
    .bind(col(|r| &r.sku))
    .bind(col(|r| &r.location))
    .bind(&day)
    .bind(&units)
    .bind(&revenue)
    .bind(&promo)
    .bind(&lead)
    .bind(&time)
    .bind(col(|r| &r.topic))
    .bind(&partition)
    .bind(&offset)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    // Every row's day: one already staged was counted when it landed. The row is locked only
    // when the day moves on.
    if let Some(last) = day.iter().max() {
        sqlx::query(
            "UPDATE demand_watermark SET business_day = date '1970-01-01' + $1
             WHERE business_day IS NULL OR business_day < date '1970-01-01' + $1",
        )
        .bind(last)
        .execute(&mut **tx)
        .await?;
    }
    landed.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

async fn park(tx: &mut Transaction<'_, Postgres>, rows: &[&ParkedRow], now: i64) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&ParkedRow) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let time: Vec<i64> = rows.iter().map(|r| r.event_time_ms).collect();
    let partition: Vec<i32> = rows.iter().map(|r| i32::try_from(r.partition).unwrap_or(i32::MAX)).collect();
    let offset: Vec<i64> = rows.iter().map(|r| i64_of(r.offset)).collect();
    sqlx::query(
        "INSERT INTO demand_parked (event_source, event_id, event_type, sku, location, missing, headers, payload,
             event_time_ms, topic, partition, \"offset\", parked_at_ms)
         SELECT s, i, ty, sk, l, m, h, p, t, tp, pa, o, $13
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
             $9::bigint[], $10::text[], $11::int[], $12::bigint[]) AS x(s, i, ty, sk, l, m, h, p, t, tp, pa, o)
         ON CONFLICT DO NOTHING",
    )
    .bind(col(|r| &r.source))
    .bind(col(|r| &r.id))
    .bind(col(|r| &r.ty))
    .bind(col(|r| &r.sku))
    .bind(col(|r| &r.location))
    .bind(col(|r| &r.missing))
    .bind(col(|r| &r.headers))
    .bind(col(|r| &r.payload))
    .bind(&time)
    .bind(col(|r| &r.topic))
    .bind(&partition)
    .bind(&offset)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(1)
}

impl PostgresDocuments {
    /// Makes the partitions the days of `rows` need, for days not seen before.
    async fn partitions_for(&self, rows: &[&StagedRow]) -> Result<(), StoreError> {
        let unseen: Vec<i32> = {
            let known = self.store.demand_days.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let days: HashSet<i32> = rows.iter().map(|r| r.day).filter(|d| !known.contains(d)).collect();
            days.into_iter().collect()
        };
        // Each day's own month (not the range between the earliest and the latest: an old
        // and a far-future row in one batch must not make every month in between).
        for &day in &unseen {
            self.ensure_partitions(day, day).await?;
        }
        self.store.demand_days.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(unseen);
        Ok(())
    }

    async fn flush_demand(&self, batch: &[Flush<DemandEffects>]) -> Result<u64, sqlx::Error> {
        let now = tally_core::now_ms();
        let staged: Vec<&StagedRow> = batch.iter().flat_map(|f| &f.effects.staged).collect();
        let parked: Vec<&ParkedRow> = batch.iter().flat_map(|f| &f.effects.parked).collect();
        let mut tx = self.store.pool.begin().await?;
        let mut n = 2 + store_processed(&mut tx, self.subsystem(), batch, now).await?;
        if !staged.is_empty() {
            stage(&mut tx, &staged, now).await?;
            n += 1;
        }
        n += park(&mut tx, &parked, now).await?;
        n += store_offsets(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(n)
    }
}

impl Journal<DemandEffects> for PostgresDocuments {
    async fn flush(&self, batch: &[Flush<DemandEffects>]) -> Result<(), StoreError> {
        if batch.iter().all(Flush::is_empty) {
            return Ok(());
        }
        let staged: Vec<&StagedRow> = batch.iter().flat_map(|f| &f.effects.staged).collect();
        self.partitions_for(&staged).await?;
        let n = self.flush_demand(batch).await.map_err(backend("flushing staged demand and offsets"))?;
        self.store.count(n);
        Ok(())
    }
}

impl DemandStore for PostgresDocuments {
    async fn put_skus(&self, rows: Vec<SkuRow>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&SkuRow) -> &str| rows.iter().map(&f).collect::<Vec<&str>>();
        let price: Vec<f64> = rows.iter().map(|r| r.price).collect();
        let pack: Vec<i64> = rows.iter().map(|r| r.pack_size).collect();
        let moq: Vec<i64> = rows.iter().map(|r| r.moq).collect();
        self.store.count(1);
        sqlx::query(
            "INSERT INTO demand_skus (sku, category, brand, price, pack_size, moq, updated_at_ms)
             SELECT DISTINCT ON (s) s, c, b, p, k, m, $7
             FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bigint[], $6::bigint[])
                 WITH ORDINALITY AS x(s, c, b, p, k, m, n)
             ORDER BY s, n DESC
             ON CONFLICT (sku) DO UPDATE SET category = excluded.category, brand = excluded.brand,
                 price = excluded.price, pack_size = excluded.pack_size, moq = excluded.moq,
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(col(|r| &r.sku))
        .bind(col(|r| &r.category))
        .bind(col(|r| &r.brand))
        .bind(&price)
        .bind(&pack)
        .bind(&moq)
        .bind(tally_core::now_ms())
        .execute(&self.store.pool)
        .await
        .map(drop)
        .map_err(backend("storing the catalogue"))
    }

    async fn put_locations(&self, rows: Vec<LocationRow>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&LocationRow) -> &str| rows.iter().map(&f).collect::<Vec<&str>>();
        self.store.count(1);
        sqlx::query(
            "INSERT INTO demand_locations (location, region, time_zone, updated_at_ms)
             SELECT DISTINCT ON (l) l, r, z, $4
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(l, r, z, n)
             ORDER BY l, n DESC
             ON CONFLICT (location) DO UPDATE SET region = excluded.region, time_zone = excluded.time_zone,
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(col(|r| &r.location))
        .bind(col(|r| &r.region))
        .bind(col(|r| &r.time_zone))
        .bind(tally_core::now_ms())
        .execute(&self.store.pool)
        .await
        .map(drop)
        .map_err(backend("storing locations"))
    }

    async fn skus(&self, skus: Vec<String>) -> Result<Vec<SkuRow>, StoreError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        self.store.count(1);
        let rows =
            sqlx::query("SELECT sku, category, brand, price, pack_size, moq FROM demand_skus WHERE sku = ANY($1)")
                .bind(&skus)
                .fetch_all(&self.store.pool)
                .await
                .map_err(backend("reading the catalogue"))?;
        rows.iter()
            .map(|r| {
                Ok(SkuRow {
                    sku: r.try_get(0)?,
                    category: r.try_get(1)?,
                    brand: r.try_get(2)?,
                    price: r.try_get(3)?,
                    pack_size: r.try_get(4)?,
                    moq: r.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend("reading the catalogue"))
    }

    async fn locations(&self, locations: Vec<String>) -> Result<Vec<LocationRow>, StoreError> {
        if locations.is_empty() {
            return Ok(Vec::new());
        }
        self.store.count(1);
        sqlx::query_as("SELECT location, region, time_zone FROM demand_locations WHERE location = ANY($1)")
            .bind(&locations)
            .fetch_all(&self.store.pool)
            .await
            .map(|rows: Vec<(String, String, String)>| {
                rows.into_iter()
                    .map(|(location, region, time_zone)| LocationRow { location, region, time_zone })
                    .collect()
            })
            .map_err(backend("reading locations"))
    }

    async fn parked_ready(&self, limit: usize) -> Result<Vec<ParkedRow>, StoreError> {
        self.store.count(1);
        let rows = sqlx::query(
            "SELECT event_source, event_id, event_type, sku, location, missing, headers, payload, event_time_ms,
                    topic, partition, \"offset\"
             FROM demand_parked p
             WHERE EXISTS (SELECT 1 FROM demand_skus s WHERE s.sku = p.sku)
               AND EXISTS (SELECT 1 FROM demand_locations l WHERE l.location = p.location)
             ORDER BY parked_at_ms, event_source, event_id
             LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.store.pool)
        .await
        .map_err(backend("reading parked demand events"))?;
        rows.iter()
            .map(|r| {
                Ok(ParkedRow {
                    source: r.try_get(0)?,
                    id: r.try_get(1)?,
                    ty: r.try_get(2)?,
                    sku: r.try_get(3)?,
                    location: r.try_get(4)?,
                    missing: r.try_get(5)?,
                    headers: r.try_get(6)?,
                    payload: r.try_get(7)?,
                    event_time_ms: r.try_get(8)?,
                    topic: r.try_get(9)?,
                    partition: u32::try_from(r.try_get::<i32, _>(10)?).unwrap_or_default(),
                    offset: u64::try_from(r.try_get::<i64, _>(11)?).unwrap_or_default(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend("reading parked demand events"))
    }

    async fn parked_count(&self) -> Result<u64, StoreError> {
        self.store.count(1);
        sqlx::query_scalar("SELECT count(*) FROM demand_parked")
            .fetch_one(&self.store.pool)
            .await
            .map(|n: i64| u64::try_from(n).unwrap_or_default())
            .map_err(backend("counting parked demand events"))
    }

    async fn unpark(&self, events: Vec<Unparked>) -> Result<Vec<StagedRow>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let staged: Vec<&StagedRow> = events.iter().filter_map(|e| e.staged.as_ref()).collect();
        self.partitions_for(&staged).await?;
        let during = "staging parked demand events";
        let source: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
        let id: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let mut tx = self.store.pool.begin().await.map_err(backend(during))?;
        let removed: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM demand_parked p USING unnest($1::text[], $2::text[]) AS x(s, i)
             WHERE p.event_source = x.s AND p.event_id = x.i
             RETURNING p.event_source, p.event_id",
        )
        .bind(&source)
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend(during))?;
        let removed: HashSet<(String, String)> = removed.into_iter().collect();
        let released: Vec<&StagedRow> =
            staged.into_iter().filter(|r| removed.contains(&(r.source.clone(), r.id.clone()))).collect();
        let landed: HashSet<(String, String)> =
            stage(&mut tx, &released, tally_core::now_ms()).await.map_err(backend(during))?.into_iter().collect();
        tx.commit().await.map_err(backend(during))?;
        self.store.count(4);
        Ok(released.into_iter().filter(|r| landed.contains(&(r.source.clone(), r.id.clone()))).cloned().collect())
    }

    async fn daily(&self, sku: String, location: String) -> Result<Vec<DailyRow>, StoreError> {
        self.store.count(1);
        let rows = sqlx::query(
            "SELECT business_day - date '1970-01-01', sold, returned, received, revenue, promo_sold, events
             FROM demand_daily WHERE sku = $1 AND location = $2 ORDER BY business_day",
        )
        .bind(&sku)
        .bind(&location)
        .fetch_all(&self.store.pool)
        .await
        .map_err(backend("reading a demand series"))?;
        rows.iter()
            .map(|r| {
                Ok(DailyRow {
                    day: r.try_get(0)?,
                    sold: r.try_get(1)?,
                    returned: r.try_get(2)?,
                    received: r.try_get(3)?,
                    revenue: r.try_get(4)?,
                    promo_sold: r.try_get(5)?,
                    events: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend("reading a demand series"))
    }

    async fn histories(&self, series: Vec<(String, String)>) -> Result<Vec<History>, StoreError> {
        if series.is_empty() {
            return Ok(Vec::new());
        }
        self.store.count(2);
        let (skus, locations): (Vec<String>, Vec<String>) = series.iter().cloned().unzip();
        // Rows name their series by its place in the batch (`WITH ORDINALITY`), not by SKU and
        // location: two strings fewer to send and decode per row of two years' days. Only the
        // columns a forecast reads, in no order: each series' rows are sorted here, where they
        // arrive nearly sorted (the server's sort and the other columns were ~40 % of its time).
        let daily: Vec<(i64, i32, i64, i64)> = sqlx::query_as(
            "SELECT s.n, d.business_day - date '1970-01-01', d.sold, d.promo_sold
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(sku, location, n)
             JOIN demand_daily d USING (sku, location)",
        )
        .bind(&skus)
        .bind(&locations)
        .fetch_all(&self.store.pool)
        .await
        .map_err(backend("reading demand series"))?;
        let supplies: Vec<(i64, i32, i32)> = sqlx::query_as(
            "SELECT s.n, e.business_day - date '1970-01-01', e.lead_time_days
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(sku, location, n)
             JOIN demand_events e USING (sku, location)
             WHERE e.kind = 'supply' AND e.lead_time_days IS NOT NULL
             ORDER BY s.n, e.business_day",
        )
        .bind(&skus)
        .bind(&locations)
        .fetch_all(&self.store.pool)
        .await
        .map_err(backend("reading series' supplies"))?;
        let mut out: Vec<History> = series.iter().map(|_| History::default()).collect();
        // 1-based place in the batch → the series' history.
        let at = |n: i64| usize::try_from(n - 1).unwrap_or(usize::MAX);
        for (n, day, sold, promo_sold) in daily {
            if let Some(h) = out.get_mut(at(n)) {
                h.daily.push(SalesDay { day, sold, promo_sold });
            }
        }
        for h in &mut out {
            h.daily.sort_unstable_by_key(|d| d.day);
        }
        for (n, day, lead) in supplies {
            if let Some(h) = out.get_mut(at(n)) {
                h.supplies.push((day, lead));
            }
        }
        Ok(out)
    }

    async fn supplies(&self, sku: String, location: String) -> Result<Vec<(i32, i32)>, StoreError> {
        self.store.count(1);
        sqlx::query_as(
            "SELECT business_day - date '1970-01-01', lead_time_days FROM demand_events
             WHERE sku = $1 AND location = $2 AND kind = 'supply' AND lead_time_days IS NOT NULL
             ORDER BY business_day",
        )
        .bind(&sku)
        .bind(&location)
        .fetch_all(&self.store.pool)
        .await
        .map_err(backend("reading a series' supplies"))
    }

    async fn last_day(&self) -> Result<Option<i32>, StoreError> {
        self.store.count(1);
        sqlx::query_scalar("SELECT business_day - date '1970-01-01' FROM demand_watermark")
            .fetch_one(&self.store.pool)
            .await
            .map_err(backend("reading the last business day"))
    }

    async fn series(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.store.count(1);
        // A skip scan: one descent of the series index per series, instead of `DISTINCT` over
        // every day of every series (two years of days each) — 5x less at 3,000 series, and
        // the gap grows with history. Every run of every instance lists the series.
        sqlx::query_as(
            "WITH RECURSIVE series AS (
                 (SELECT sku, location FROM demand_daily ORDER BY sku, location LIMIT 1)
                 UNION ALL
                 SELECT next.sku, next.location FROM series, LATERAL (
                     SELECT d.sku, d.location FROM demand_daily d
                     WHERE (d.sku, d.location) > (series.sku, series.location)
                     ORDER BY d.sku, d.location LIMIT 1
                 ) next
             )
             SELECT sku, location FROM series",
        )
        .fetch_all(&self.store.pool)
        .await
        .map_err(backend("listing demand series"))
    }

    async fn ensure_partitions(&self, from_day: i32, to_day: i32) -> Result<Vec<String>, StoreError> {
        self.store.count(1);
        sqlx::query_scalar("SELECT demand_ensure_partitions(date '1970-01-01' + $1, date '1970-01-01' + $2)")
            .bind(from_day)
            .bind(to_day)
            .fetch_all(&self.store.pool)
            .await
            .map_err(backend("creating demand event partitions"))
    }

    async fn event_partitions(&self) -> Result<Vec<String>, StoreError> {
        self.store.count(1);
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'demand_events'::regclass ORDER BY 1",
        )
        .fetch_all(&self.store.pool)
        .await
        .map_err(backend("listing demand event partitions"))
    }
}
