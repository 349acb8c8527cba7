//! Forward-only PostgreSQL migrations, expand/contract: a release only adds (tables, nullable
//! columns, indexes built `CONCURRENTLY`); what no running version reads any more is dropped
//! by a later release. They run under an advisory lock, so several processes starting at once
//! (or a migration Job beside running pods) apply each migration exactly once. Index changes
//! on tables that may be large run `CONCURRENTLY`, outside a transaction, so writes go on.

use sqlx::{Connection, PgConnection};

/// One schema change. Append only; never edit a released entry.
pub(super) struct Migration {
    pub(super) version: i64,
    pub(super) name: &'static str,
    change: Change,
}

enum Change {
    /// Statements run in one transaction, with a short lock timeout.
    Statements(&'static [&'static str]),
    /// Index changes on tables that may already be large, built and dropped `CONCURRENTLY` —
    /// without blocking writes — and so outside a transaction; each step is idempotent, so a
    /// migration interrupted half-way is finished by the next run.
    Indexes(&'static [IndexChange]),
}

enum IndexChange {
    /// `CREATE INDEX CONCURRENTLY <name> <definition>`, unless a valid index of that name exists.
    Create { name: &'static str, definition: &'static str },
    /// `DROP INDEX CONCURRENTLY IF EXISTS <name>`.
    Drop { name: &'static str },
    /// An index on a partitioned table, which cannot be built `CONCURRENTLY` as one: the
    /// parent's is made `ON ONLY` the parent (no build, not valid yet), each partition's is
    /// built concurrently as `<partition>_<suffix>` and attached, and the parent's turns valid
    /// once every partition has one. A partition made meanwhile gets its index from the
    /// parent's definition when it is created.
    CreatePartitioned { name: &'static str, table: &'static str, suffix: &'static str, definition: &'static str },
}

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "inventory core tables",
        change: Change::Statements(&[
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
        ]),
    },
    Migration {
        version: 2,
        name: "audit rows found by offset through a BRIN index",
        // The B-tree on (topic, partition, offset) cost ~11 % of PostgreSQL's CPU per event
        // under load (docs/benchmarks.md) and serves one query, the idempotency window a
        // partition's new owner reads when Redis does not have it. Audit rows are appended
        // in offset order per partition, so a BRIN index — a few bytes per 128 pages, not
        // touched by inserts into a range not yet summarised — finds them; `minmax_multi`
        // keeps several intervals per range, so partitions whose offsets differ widely do not
        // widen each other's. `autosummarize` summarises each range once it fills. The B-tree
        // goes in the same migration: the query is unchanged, and the BRIN index serves it for
        // a version still running during the rollout too.
        change: Change::Indexes(&[
            IndexChange::Create {
                name: "inventory_audit_by_offset_brin",
                definition: "ON inventory_audit USING brin (\"offset\" int8_minmax_multi_ops) WITH (autosummarize = on)",
            },
            IndexChange::Drop { name: "inventory_audit_by_offset" },
        ]),
    },
    Migration {
        version: 3,
        name: "digest of each applied event's request",
        // What the event asked for, so a key reused for a different request is refused
        // (InventoryEvent::digest). A nullable column without a default: a catalogue change
        // only, no table rewrite, whatever the table's size.
        change: Change::Statements(&["ALTER TABLE inventory_audit ADD COLUMN event_digest BIGINT"]),
    },
    Migration {
        version: 4,
        name: "the ledger's own idempotency records and keyed documents",
        // For subsystems whose rows are not one per event (ledger::Documents). Inventory keeps
        // its records in its audit rows (migration 1). New, empty tables: no lock on anything
        // that exists.
        change: Change::Statements(&[
            "CREATE TABLE ledger_processed (
            subsystem      TEXT NOT NULL,
            event_source   TEXT NOT NULL,
            event_id       TEXT NOT NULL,
            topic          TEXT NOT NULL,
            partition      INTEGER NOT NULL,
            \"offset\"     BIGINT NOT NULL,
            outcome_detail JSONB,
            event_digest   BIGINT,
            recorded_at_ms BIGINT NOT NULL,
            PRIMARY KEY (subsystem, event_source, event_id)
        )",
            "CREATE INDEX ledger_processed_by_offset ON ledger_processed (subsystem, topic, partition, \"offset\")",
            "CREATE TABLE ledger_documents (
            subsystem     TEXT NOT NULL,
            key           TEXT NOT NULL,
            version       BIGINT NOT NULL,
            body          JSONB NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (subsystem, key)
        )",
            "CREATE TABLE ledger_appended (
            seq            BIGINT GENERATED ALWAYS AS IDENTITY,
            subsystem      TEXT NOT NULL,
            row_id         TEXT NOT NULL,
            key            TEXT NOT NULL,
            body           JSONB NOT NULL,
            recorded_at_ms BIGINT NOT NULL,
            PRIMARY KEY (subsystem, row_id)
        )",
            "CREATE INDEX ledger_appended_by_key ON ledger_appended (subsystem, key)",
        ]),
    },
    Migration {
        version: 5,
        name: "demand staging: events partitioned by month, daily rollup, parked events, reference tables",
        // New, empty tables. The event table has no default partition: a month's partition is
        // made ahead by demand_ensure_partitions (the forecast role calls it at start and
        // daily; a flush calls it for a month it has not seen), so attaching one never has to
        // scan a default partition under an exclusive lock.
        change: Change::Statements(&[
            "CREATE TABLE demand_events (
            event_source   TEXT NOT NULL,
            event_id       TEXT NOT NULL,
            kind           TEXT NOT NULL CHECK (kind IN ('sale', 'supply', 'return')),
            sku            TEXT NOT NULL,
            location       TEXT NOT NULL,
            business_day   DATE NOT NULL,
            units          BIGINT NOT NULL,
            revenue        DOUBLE PRECISION NOT NULL,
            promo          BOOLEAN NOT NULL,
            lead_time_days INTEGER,
            event_time_ms  BIGINT NOT NULL,
            topic          TEXT NOT NULL,
            partition      INTEGER NOT NULL,
            \"offset\"     BIGINT NOT NULL,
            recorded_at_ms BIGINT NOT NULL,
            PRIMARY KEY (event_source, event_id, business_day)
        ) PARTITION BY RANGE (business_day)",
            "CREATE INDEX demand_events_by_series ON demand_events (sku, location, business_day)",
            // The event table's key must include the partition column; this one does not, so an
            // event whose business day came out differently the second time (its location's
            // time zone corrected in between) is still staged once.
            "CREATE TABLE demand_event_keys (
            event_source TEXT NOT NULL,
            event_id     TEXT NOT NULL,
            PRIMARY KEY (event_source, event_id)
        )",
            // SECURITY DEFINER: the servers run with DML rights only (the migration Job owns
            // the schema), yet must make a month's partition when it is due; the function
            // does that one thing with the owner's rights, on a pinned search path.
            "CREATE FUNCTION demand_ensure_partitions(from_day DATE, to_day DATE) RETURNS SETOF TEXT
        LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
        DECLARE
            month DATE := date_trunc('month', from_day)::date;
            name  TEXT;
        BEGIN
            WHILE month <= to_day LOOP
                name := format('demand_events_%s', to_char(month, 'YYYY_MM'));
                IF to_regclass(name) IS NULL THEN
                    BEGIN
                        EXECUTE format('CREATE TABLE %I PARTITION OF demand_events FOR VALUES FROM (%L) TO (%L)',
                            name, month, (month + interval '1 month')::date);
                        RETURN NEXT name;
                    EXCEPTION WHEN duplicate_table OR unique_violation THEN
                        -- Another process made it at the same moment.
                        NULL;
                    END;
                END IF;
                month := (month + interval '1 month')::date;
            END LOOP;
        END
        $$",
            "CREATE TABLE demand_daily (
            sku           TEXT NOT NULL,
            location      TEXT NOT NULL,
            business_day  DATE NOT NULL,
            sold          BIGINT NOT NULL,
            returned      BIGINT NOT NULL,
            received      BIGINT NOT NULL,
            revenue       DOUBLE PRECISION NOT NULL,
            promo_sold    BIGINT NOT NULL,
            events        BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (sku, location, business_day)
        )",
            "CREATE TABLE demand_parked (
            event_source  TEXT NOT NULL,
            event_id      TEXT NOT NULL,
            event_type    TEXT NOT NULL,
            sku           TEXT NOT NULL,
            location      TEXT NOT NULL,
            missing       TEXT NOT NULL,
            headers       TEXT NOT NULL,
            payload       TEXT NOT NULL,
            event_time_ms BIGINT NOT NULL,
            topic         TEXT NOT NULL,
            partition     INTEGER NOT NULL,
            \"offset\"    BIGINT NOT NULL,
            parked_at_ms  BIGINT NOT NULL,
            PRIMARY KEY (event_source, event_id)
        )",
            "CREATE INDEX demand_parked_by_sku ON demand_parked (sku)",
            "CREATE INDEX demand_parked_by_location ON demand_parked (location)",
            "CREATE TABLE demand_skus (
            sku           TEXT PRIMARY KEY,
            category      TEXT NOT NULL,
            brand         TEXT NOT NULL,
            price         DOUBLE PRECISION NOT NULL,
            pack_size     BIGINT NOT NULL,
            moq           BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL
        )",
            "CREATE TABLE demand_locations (
            location      TEXT PRIMARY KEY,
            region        TEXT NOT NULL,
            time_zone     TEXT NOT NULL,
            updated_at_ms BIGINT NOT NULL
        )",
        ]),
    },
    Migration {
        version: 6,
        name: "the last business day staged, kept in a row of its own",
        // `max(business_day)` over the rollup starts every forecast run, and the primary key
        // leads with the SKU: it read the whole rollup. An index on the day would slow a
        // backfill's staging (rows arrive series by series, each a random insert into it); the
        // row is raised by each flush only when the day moves on (no row lock otherwise). A
        // process of the previous release still staging during a rolling upgrade does not raise
        // it: runs may start from an older day until a new process stages that day.
        change: Change::Statements(&[
            "CREATE TABLE demand_watermark (id INT PRIMARY KEY CHECK (id = 1), business_day DATE)",
            "INSERT INTO demand_watermark (id, business_day) SELECT 1, max(business_day) FROM demand_daily",
        ]),
    },
    Migration {
        version: 7,
        name: "a series' supplies with lead times, read without visiting its sales",
        // Every forecast reads its series' supplies for the lead-time statistics. Through the
        // series index that fetched every event of the series from the heap (sales are most
        // of them) to test its kind; a partial index of the supplies, with the lead time,
        // answers the read from the index alone.
        change: Change::Indexes(&[IndexChange::CreatePartitioned {
            name: "demand_supplies_by_series",
            table: "demand_events",
            suffix: "supplies",
            definition: "(sku, location, business_day) INCLUDE (lead_time_days)
                WHERE kind = 'supply' AND lead_time_days IS NOT NULL",
        }]),
    },
    Migration {
        version: 8,
        name: "ledger bodies compressed with lz4 where the server has it",
        // A forecast document is ~5 kB of JSON, over the 2 kB at which PostgreSQL compresses
        // a value. pglz took half of the write's time (330 ms against 180 ms per 3,000 bodies
        // with lz4); the forecast writes these on the primary the main contour writes on.
        // Only new values are compressed with lz4 (no rewrite); both read back alike. A
        // server built without lz4 keeps pglz.
        change: Change::Statements(&["DO $$ BEGIN
                ALTER TABLE ledger_documents ALTER COLUMN body SET COMPRESSION lz4;
                ALTER TABLE ledger_appended ALTER COLUMN body SET COMPRESSION lz4;
            EXCEPTION WHEN feature_not_supported THEN
                RAISE NOTICE 'this PostgreSQL has no lz4: ledger bodies stay compressed with pglz';
            END $$"]),
    },
];

/// Any fixed number identifies tally's migration lock among the database's advisory locks.
const LOCK_ID: i64 = 0x7a11_7a11;

/// How often a process waiting for another's migrations asks for the lock again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Applies pending migrations, each in its own transaction; returns the names applied.
pub async fn apply(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    // Polled, not `pg_advisory_lock`: a session blocked in that call holds a snapshot, and
    // `CREATE INDEX CONCURRENTLY` in the session holding the lock waits for every older
    // snapshot to go — a deadlock PostgreSQL detects and fails one of them with.
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)").bind(LOCK_ID).fetch_one(&mut *conn).await? {
        tokio::time::sleep(LOCK_POLL).await;
    }
    let result = apply_locked(conn).await;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_ID).execute(&mut *conn).await?;
    result
}

/// The migrations not applied yet (`<version>: <name>`), read-only: what a process without DDL
/// rights checks before it starts.
pub async fn pending(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    let done: Vec<i64> = if exists {
        sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *conn).await?
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS.iter().filter(|m| !done.contains(&m.version)).map(|m| format!("{}: {}", m.version, m.name)).collect())
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
    for Migration { version, name, change } in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        match change {
            Change::Statements(statements) => {
                let mut tx = conn.begin().await?;
                // Short lock waits: a migration that would queue behind a long transaction
                // fails and is retried, instead of blocking every query queued behind its lock.
                sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
                for statement in *statements {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                record(&mut tx, *version, name).await?;
                tx.commit().await?;
            }
            Change::Indexes(changes) => {
                for index in *changes {
                    change_index(conn, index).await?;
                }
                record(conn, *version, name).await?;
            }
        }
        applied.push(format!("{version}: {name}"));
    }
    Ok(applied)
}

async fn record(conn: &mut PgConnection, version: i64, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
        .bind(version)
        .bind(name)
        .execute(conn)
        .await
        .map(drop)
}

async fn change_index(conn: &mut PgConnection, change: &IndexChange) -> Result<(), sqlx::Error> {
    match change {
        IndexChange::Create { name, definition } => create_concurrently(conn, name, definition).await?,
        IndexChange::Drop { name } => {
            sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}")).execute(&mut *conn).await?;
        }
        IndexChange::CreatePartitioned { name, table, suffix, definition } => {
            sqlx::query(&format!("CREATE INDEX IF NOT EXISTS {name} ON ONLY {table} {definition}"))
                .execute(&mut *conn)
                .await?;
            // The partitions without an index attached to the parent's (all of them at
            // first; those a migration interrupted half-way left, on the next run).
            let missing: Vec<String> = sqlx::query_scalar(
                "SELECT p.relname::text FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
                 WHERE i.inhparent = $1::regclass
                   AND NOT EXISTS (SELECT 1 FROM pg_inherits a JOIN pg_index x ON x.indexrelid = a.inhrelid
                                   WHERE a.inhparent = $2::regclass AND x.indrelid = p.oid)
                 ORDER BY 1",
            )
            .bind(table)
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
            for partition in missing {
                let child = format!("{partition}_{suffix}");
                create_concurrently(conn, &child, &format!("ON {partition} {definition}")).await?;
                sqlx::query(&format!("ALTER INDEX {name} ATTACH PARTITION {child}")).execute(&mut *conn).await?;
            }
        }
    }
    Ok(())
}

/// `CREATE INDEX CONCURRENTLY <name> <definition>`, unless a valid index of that name exists.
async fn create_concurrently(conn: &mut PgConnection, name: &str, definition: &str) -> Result<(), sqlx::Error> {
    // A concurrent build that failed leaves an invalid index behind under the name; it is
    // dropped and built again.
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relname = $1 AND pg_table_is_visible(c.oid)",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    match valid {
        Some(true) => return Ok(()),
        Some(false) => {
            sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}")).execute(&mut *conn).await?;
        }
        None => {}
    }
    sqlx::query(&format!("CREATE INDEX CONCURRENTLY {name} {definition}")).execute(&mut *conn).await?;
    Ok(())
}
