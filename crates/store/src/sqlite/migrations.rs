//! Forward-only, additive schema migrations (expand/contract: a migration only adds; a later
//! release removes what no running version reads any more).

use tally_sqlite::rusqlite::{self, params};

/// (version, name, SQL). Append only; never edit a released entry.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "inventory core tables",
        "
CREATE TABLE inventory_sku (
    sku            TEXT PRIMARY KEY,
    version        INTEGER NOT NULL,
    applied_offset INTEGER NOT NULL,
    state          TEXT NOT NULL,
    updated_at_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE stock_levels (
    sku              TEXT NOT NULL,
    location         TEXT NOT NULL,
    on_hand          INTEGER NOT NULL,
    reserved         INTEGER NOT NULL,
    safety_stock     INTEGER NOT NULL,
    available        INTEGER NOT NULL,
    snapshot_version INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE channel_availability (
    sku               TEXT NOT NULL,
    channel           TEXT NOT NULL,
    available_to_sell INTEGER NOT NULL,
    version           INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    PRIMARY KEY (sku, channel)
) WITHOUT ROWID;
-- One row per applied event: the SKU's audit trail and the event's idempotency record.
CREATE TABLE inventory_audit (
    id             INTEGER PRIMARY KEY,
    sku            TEXT NOT NULL,
    location       TEXT,
    version        INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    event_source   TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    outcome_detail TEXT,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    offset         INTEGER NOT NULL,
    on_hand_delta  INTEGER NOT NULL,
    on_hand        INTEGER NOT NULL,
    reserved       INTEGER NOT NULL,
    available      INTEGER NOT NULL,
    event_time_ms  INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL
);
CREATE INDEX inventory_audit_by_sku ON inventory_audit (sku, id);
-- An event is applied once: a retried flush must not duplicate its row, and lookups by
-- Idempotency-Key find its outcome here.
CREATE UNIQUE INDEX inventory_audit_by_event ON inventory_audit (event_source, event_id);
-- Seeds a partition's dedupe window on resume.
CREATE INDEX inventory_audit_by_offset ON inventory_audit (topic, partition, offset);
CREATE TABLE consumer_offsets (
    grp         TEXT NOT NULL,
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
",
    ),
    (
        2,
        "digest of each applied event's request",
        // What the event asked for, so a key reused for a different request is refused
        // (InventoryEvent::digest). Nullable: rows from before it have none.
        "ALTER TABLE inventory_audit ADD COLUMN event_digest INTEGER;",
    ),
    (
        3,
        "the ledger's own idempotency records and keyed documents",
        // For subsystems whose rows are not one per event (ledger::Documents). Inventory keeps
        // its records in its audit rows (migration 1).
        "
CREATE TABLE ledger_processed (
    subsystem      TEXT NOT NULL,
    event_source   TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    offset         INTEGER NOT NULL,
    outcome_detail TEXT,
    event_digest   INTEGER,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (subsystem, event_source, event_id)
) WITHOUT ROWID;
CREATE INDEX ledger_processed_by_offset ON ledger_processed (subsystem, topic, partition, offset);
CREATE TABLE ledger_documents (
    subsystem     TEXT NOT NULL,
    key           TEXT NOT NULL,
    version       INTEGER NOT NULL,
    body          TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (subsystem, key)
) WITHOUT ROWID;
CREATE TABLE ledger_appended (
    seq            INTEGER PRIMARY KEY,
    subsystem      TEXT NOT NULL,
    row_id         TEXT NOT NULL,
    key            TEXT NOT NULL,
    body           TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    UNIQUE (subsystem, row_id)
);
CREATE INDEX ledger_appended_by_key ON ledger_appended (subsystem, key);
",
    ),
    (
        4,
        "demand staging: events, daily rollup, parked events, reference tables",
        // PostgreSQL partitions demand_events by month; SQLite has no partitions, and the
        // table is otherwise the same. Business days are days since 1970-01-01.
        "
CREATE TABLE demand_events (
    event_source   TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('sale', 'supply', 'return')),
    sku            TEXT NOT NULL,
    location       TEXT NOT NULL,
    business_day   INTEGER NOT NULL,
    units          INTEGER NOT NULL,
    revenue        REAL NOT NULL,
    promo          INTEGER NOT NULL,
    lead_time_days INTEGER,
    event_time_ms  INTEGER NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    offset         INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (event_source, event_id)
) WITHOUT ROWID;
-- Per-series reads (supplies for lead times, a series' events by day).
CREATE INDEX demand_events_by_series ON demand_events (sku, location, business_day);
CREATE TABLE demand_daily (
    sku           TEXT NOT NULL,
    location      TEXT NOT NULL,
    business_day  INTEGER NOT NULL,
    sold          INTEGER NOT NULL,
    returned      INTEGER NOT NULL,
    received      INTEGER NOT NULL,
    revenue       REAL NOT NULL,
    promo_sold    INTEGER NOT NULL,
    events        INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, location, business_day)
) WITHOUT ROWID;
CREATE TABLE demand_parked (
    event_source  TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    sku           TEXT NOT NULL,
    location      TEXT NOT NULL,
    missing       TEXT NOT NULL,
    headers       TEXT NOT NULL,
    payload       TEXT NOT NULL,
    event_time_ms INTEGER NOT NULL,
    topic         TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    offset        INTEGER NOT NULL,
    parked_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (event_source, event_id)
) WITHOUT ROWID;
CREATE INDEX demand_parked_by_sku ON demand_parked (sku);
CREATE INDEX demand_parked_by_location ON demand_parked (location);
CREATE TABLE demand_skus (
    sku           TEXT PRIMARY KEY,
    category      TEXT NOT NULL,
    brand         TEXT NOT NULL,
    price         REAL NOT NULL,
    pack_size     INTEGER NOT NULL,
    moq           INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE demand_locations (
    location      TEXT PRIMARY KEY,
    region        TEXT NOT NULL,
    time_zone     TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
",
    ),
    (
        5,
        "the last business day staged, kept in a row of its own",
        // `max(business_day)` over the rollup starts every forecast run, and the primary key
        // leads with the SKU: it read the whole rollup (~1 s at 30,000 series × two years, most
        // of an incremental run's time). An index on the day made a backfill's staging twice
        // as slow (its rows arrive series by series, each a random insert into it); a row
        // raised by each flush costs one statement. A process of the previous release still
        // staging during an upgrade does not raise it (runs start from an older day meanwhile).
        "
CREATE TABLE demand_watermark (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    business_day INTEGER
);
INSERT INTO demand_watermark (id, business_day) SELECT 1, max(business_day) FROM demand_daily;
",
    ),
    (
        6,
        "a series' supplies with lead times, read without visiting its sales",
        // Every forecast reads each series' supplies for its lead-time statistics. Through
        // the series index that visited every event of the series (sales are most of them)
        // and looked each up in the table to test its kind; supplies are a small share of
        // the events, so a partial index holding just them, with the lead time, answers
        // the read alone (`kind` is in it too: SQLite counts an index as covering only when
        // it holds every column the query names, its WHERE clause aside).
        "
CREATE INDEX demand_supplies_by_series ON demand_events (sku, location, business_day, lead_time_days, kind)
    WHERE kind = 'supply' AND lead_time_days IS NOT NULL;
",
    ),
];

/// The migrations not applied yet (`<version> <name>`).
pub fn pending(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    let current: i64 = if exists {
        conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?
    } else {
        0
    };
    Ok(MIGRATIONS.iter().filter(|(v, _, _)| *v > current).map(|(v, name, _)| format!("{v:04} {name}")).collect())
}

/// Applies pending migrations, each in its own transaction; returns the names applied.
pub fn apply(conn: &mut rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)",
    )?;
    let current: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![version, name, tally_core::now_ms()],
        )?;
        tx.commit()?;
        applied.push(format!("{version:04} {name}"));
    }
    Ok(applied)
}
