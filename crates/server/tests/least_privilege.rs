//! `tally serve` on PostgreSQL runs as a role with only DML rights on tally's tables, as a
//! Kubernetes deployment would (the migration Job owns the schema, the pods write): it starts
//! when the schema is current and refuses to start, naming the migration, when it is not.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tally_config::{Secret, StoreConfig};
use tally_server::App;
use tally_server::app::Role;

async fn exec(url: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

fn with_url(config: &mut tally_config::Config, new_url: &str, migrate: bool) {
    if let StoreConfig::Postgres { url, migrate_on_start, .. } = &mut config.store {
        *url = Secret::new(new_url);
        *migrate_on_start = migrate;
    }
}

#[tokio::test]
async fn serve_runs_with_a_dml_only_role_and_refuses_a_schema_that_is_not_current() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = stack_config(Stack::PostgresRedis, dir.path(), tally_config::AuthMode::Keys).await;
    let StoreConfig::Postgres { url, .. } = &config.store else { panic!("postgres") };
    let owner_url = url.expose().to_owned();
    let (server, database) = owner_url.rsplit_once('/').unwrap();
    let writer = format!("tally_writer_{}", uuid::Uuid::new_v4().simple());
    let writer_url = format!("{}/{database}", server.replacen("postgres@", &format!("{writer}@"), 1));
    assert_ne!(writer_url, owner_url);

    // The migration Job, as the owner.
    let applied = App::new({
        let mut c = config.clone();
        with_url(&mut c, &owner_url, false);
        c
    })
    .migrate()
    .await
    .unwrap();
    assert!(!applied.is_empty());
    exec(
        &owner_url,
        &format!(
            "CREATE ROLE {writer} LOGIN;
             GRANT CONNECT ON DATABASE {database} TO {writer};
             GRANT USAGE ON SCHEMA public TO {writer};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {writer};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {writer};"
        ),
    )
    .await;

    // Migrating needs DDL rights the writer does not have …
    with_url(&mut config, &writer_url, true);
    let err = App::new(config.clone()).start(Role::All).await.err().expect("a writer cannot migrate");
    assert!(format!("{err:#}").contains("permission denied"), "{err:#}");

    // … and is not needed: with a current schema, serve starts and works as the writer.
    with_url(&mut config, &writer_url, false);
    let mut app = spawn_with(config.clone(), tempfile::tempdir().unwrap()).await;
    assert_eq!(app.post("/v1/events", WMS_KEY, &snapshot("lp-1", "SKU-LP", "wh-1", 9, 1)).await.status(), 202);
    app.eventually("/v1/stock/SKU-LP", |b| on_hand(b, "wh-1") == Some(9)).await;
    let pool = sqlx::PgPool::connect(&writer_url).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM inventory_audit").fetch_one(&pool).await.unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline, "the writer's flush never landed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Demand for a month with no partition yet: the writer cannot create tables, the
    // partition function (the owner's rights) makes it, and the event is staged.
    let refs =
        serde_json::json!({"skus": [{"sku": "SKU-LP"}], "locations": [{"location": "wh-1", "time_zone": "UTC"}]});
    assert_eq!(app.put("/v1/forecast/references", ADMIN_KEY, &refs).await.status(), 204);
    let sale = serde_json::json!({"specversion": "1.0", "id": "lp-sale-1", "source": "/pos", "type": "demand.sale",
        "data": {"sku": "SKU-LP", "location": "wh-1", "quantity": 2, "occurred_at": "2019-03-04T10:00:00Z"}});
    assert_eq!(app.post("/v1/forecast/events", ADMIN_KEY, &sale).await.status(), 202);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM demand_daily").fetch_one(&pool).await.unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(10), "the demand never landed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'demand_events'::regclass",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(partitions.contains(&"demand_events_2019_03".to_owned()), "{partitions:?}");
    app.stop().await;

    // A schema one migration behind: the writer refuses to start and names it.
    exec(&owner_url, "DELETE FROM schema_migrations WHERE version = 3").await;
    let err = App::new(config).start(Role::All).await.err().expect("refuses a schema that is not current");
    let message = format!("{err:#}");
    assert!(message.contains("migration 3: digest of each applied event's request is not applied"), "{message}");
    assert!(message.contains("tally migrate"), "{message}");
}
