//! Forward-only PostgreSQL migrations, expand/contract: a release only adds (tables, nullable
//! columns, indexes built `CONCURRENTLY`); what no running version reads any more is dropped
//! by a later release. They run under an advisory lock, so several processes starting at once
//! (or a migration Job beside running pods) apply each migration exactly once.

use sqlx::{Connection, PgConnection};

/// (version, name, statements). Append only; never edit a released entry. A migration's
/// statements run in one transaction. (An index on a large existing table will need
/// `CREATE INDEX CONCURRENTLY` outside a transaction; the first such migration adds that.)
const MIGRATIONS: &[(i64, &str, &[&str])] = &[(
    1,
    "inventory core tables",
    &[
        "CREATE TABLE inventory_sku (
            sku            TEXT PRIMARY KEY,
            version        BIGINT NOT NULL,
            applied_offset BIGINT NOT NULL,
            state          JSONB NOT NULL,
            updated_at_ms  BIGINT NOT NULL
        )",
        "CREATE TABLE stock_levels (
            sku              TEXT NOT NULL,
            location         TEXT NOT NULL,
            on_hand          BIGINT NOT NULL,
            reserved         BIGINT NOT NULL,
            safety_stock     BIGINT NOT NULL,
            available        BIGINT NOT NULL,
            snapshot_version BIGINT NOT NULL,
            version          BIGINT NOT NULL,
            updated_at_ms    BIGINT NOT NULL,
            PRIMARY KEY (sku, location)
        )",
        "CREATE TABLE channel_availability (
            sku               TEXT NOT NULL,
            channel           TEXT NOT NULL,
            available_to_sell BIGINT NOT NULL,
            version           BIGINT NOT NULL,
            updated_at_ms     BIGINT NOT NULL,
            PRIMARY KEY (sku, channel)
        )",
        // One row per applied event: the SKU's audit trail and the event's idempotency record.
        "CREATE TABLE inventory_audit (
            id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            sku            TEXT NOT NULL,
            location       TEXT,
            version        BIGINT NOT NULL,
            event_type     TEXT NOT NULL,
            event_source   TEXT NOT NULL,
            event_id       TEXT NOT NULL,
            outcome        TEXT NOT NULL,
            outcome_detail JSONB,
            topic          TEXT NOT NULL,
            partition      INTEGER NOT NULL,
            \"offset\"     BIGINT NOT NULL,
            on_hand_delta  BIGINT NOT NULL,
            on_hand        BIGINT NOT NULL,
            reserved       BIGINT NOT NULL,
            available      BIGINT NOT NULL,
            event_time_ms  BIGINT NOT NULL,
            recorded_at_ms BIGINT NOT NULL
        )",
        "CREATE INDEX inventory_audit_by_sku ON inventory_audit (sku, id)",
        "CREATE UNIQUE INDEX inventory_audit_by_event ON inventory_audit (event_source, event_id)",
        "CREATE INDEX inventory_audit_by_offset ON inventory_audit (topic, partition, \"offset\")",
        "CREATE TABLE consumer_offsets (
            grp         TEXT NOT NULL,
            topic       TEXT NOT NULL,
            partition   INTEGER NOT NULL,
            next_offset BIGINT NOT NULL,
            PRIMARY KEY (grp, topic, partition)
        )",
    ],
)];

/// Any fixed number identifies tally's migration lock among the database's advisory locks.
const LOCK_ID: i64 = 0x7a11_7a11;

/// Applies pending migrations, each in its own transaction; returns the names applied.
pub async fn apply(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_ID).execute(&mut *conn).await?;
    let result = apply_locked(conn).await;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_ID).execute(&mut *conn).await?;
    result
}

async fn apply_locked(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await?;
    let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *conn).await?;
    let mut applied = Vec::new();
    for (version, name, statements) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        let mut tx = conn.begin().await?;
        // Short lock waits: a migration that would queue behind a long transaction fails and is
        // retried, instead of blocking every query queued behind its lock.
        sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
        for statement in *statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        applied.push(format!("{version}: {name}"));
    }
    Ok(applied)
}
