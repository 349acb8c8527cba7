use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn defaults_are_valid_and_embedded() {
    let c = Config::load(None, env(&[])).expect("defaults load");
    assert_eq!(c.bus, BusConfig::Embedded { partitions: 4 });
    assert_eq!(c.store, StoreConfig::Sqlite);
}

#[test]
fn environment_overrides_the_file_with_double_underscore_nesting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, "[inventory]\nflush_interval_ms = 250\n[bus]\nkind = \"embedded\"\npartitions = 8\n")
        .expect("write");
    let c = Config::load(Some(&path), env(&[("TALLY_INVENTORY__FLUSH_INTERVAL_MS", "50"), ("HOME", "/root")]))
        .expect("loads");
    assert_eq!(c.inventory.flush_interval_ms, 50);
    assert_eq!(c.bus, BusConfig::Embedded { partitions: 8 });
}

#[test]
fn unknown_keys_are_rejected_from_file_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tally.toml");
    std::fs::write(&path, "[inventory]\nflush_intervall_ms = 250\n").expect("write");
    let err = Config::load(Some(&path), env(&[])).expect_err("typo in file");
    assert!(err.to_string().contains("flush_intervall_ms"), "{err}");
    let err = Config::load(None, env(&[("TALLY_INVENTORY__NOPE", "1")])).expect_err("typo in env");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = Config::load(None, env(&[("TALLY_BUS__KIND", "carrier-pigeon")])).expect_err("unknown backend");
    assert!(err.to_string().contains("carrier-pigeon"), "{err}");
    let err = Config::load(None, env(&[("TALLY_INVENTROY__FLUSH_INTERVAL_MS", "5")])).expect_err("unknown section");
    assert!(err.to_string().contains("TALLY_INVENTROY__FLUSH_INTERVAL_MS"), "the variable is named: {err}");
}

#[test]
fn variables_that_are_not_keys_are_left_alone() {
    let c = Config::load(None, env(&[("TALLY_SIM_API_KEY", "k"), ("TALLY_CONFIG", "/nowhere")])).expect("loads");
    assert_eq!(c, Config::default());
}

#[test]
fn cross_field_errors_name_the_key() {
    let err = Config::load(None, env(&[("TALLY_INVENTORY__FLUSH_INTERVAL_MS", "0")])).expect_err("zero interval");
    assert!(err.to_string().contains("inventory.flush_interval_ms"), "{err}");
    let err = Config::load(None, env(&[("TALLY_INVENTORY__FLUSH_PARALLELISM", "0")])).expect_err("no lanes");
    assert!(err.to_string().contains("inventory.flush_parallelism"), "{err}");
    let pool = env(&[
        ("TALLY_STORE__KIND", "postgres"),
        ("TALLY_STORE__URL", "postgres://localhost/tally"),
        ("TALLY_STORE__MAX_CONNECTIONS", "4"),
        ("TALLY_INVENTORY__FLUSH_PARALLELISM", "4"),
    ]);
    let err = Config::load(None, pool).expect_err("pool no larger than the flushes");
    assert!(err.to_string().contains("store.max_connections"), "{err}");
    let err = Config::load(None, env(&[("TALLY_STORE__MAX_CONNECTIONS", "4")])).expect_err("a store without kind");
    assert!(err.to_string().contains("store.kind") && err.to_string().contains("postgres"), "{err}");
    let err = Config::load(None, env(&[("TALLY_API__AUTH", "keys")])).expect_err("keys without keys");
    assert!(err.to_string().contains("api.keys"), "{err}");
    for wait in ["0", "10001"] {
        let err = Config::load(None, env(&[("TALLY_FORECAST__FETCH_WAIT_MS", wait)])).expect_err("fetch wait");
        assert!(err.to_string().contains("forecast.fetch_wait_ms"), "{wait}: {err}");
    }
    Config::load(None, env(&[("TALLY_FORECAST__FETCH_WAIT_MS", "10000")])).expect("the longest wait allowed");
}

#[test]
fn the_model_runs_under_sched_idle_unless_configured_normal() {
    assert_eq!(Config::default().forecast.model_priority, ModelPriority::Idle);
    let c = Config::load(None, env(&[("TALLY_FORECAST__MODEL_PRIORITY", "normal")])).expect("normal");
    assert_eq!(c.forecast.model_priority, ModelPriority::Normal);
    let err = Config::load(None, env(&[("TALLY_FORECAST__MODEL_PRIORITY", "realtime")])).expect_err("no such");
    assert!(err.to_string().contains("realtime") && err.to_string().contains("idle"), "{err}");
    assert_eq!(Config::default().forecast.group_nice, 19);
    let err = Config::load(None, env(&[("TALLY_FORECAST__GROUP_NICE", "20")])).expect_err("past 19");
    assert!(err.to_string().contains("forecast.group_nice"), "{err}");
}

#[test]
fn api_keys_need_a_valid_hash_and_known_scopes() {
    let key = ApiKeyConfig {
        id: "ozon".into(),
        hash: hash_api_key("s3cret"),
        scopes: vec!["stock:write:partner:ozon".into()],
        sources: vec!["/partners/ozon/".into()],
    };
    assert!(key.validate().is_ok());
    for covering in ["/api/wms", "/", "/api/"] {
        let bad = ApiKeyConfig { sources: vec![covering.into()], ..key.clone() };
        assert!(bad.validate().expect_err("another key's namespace").contains("/api/"), "{covering}");
    }
    let bad = ApiKeyConfig { id: "oz on".into(), ..key.clone() };
    assert!(bad.validate().expect_err("id spelled like an id").starts_with("id:"));
    assert!(crate::auth::sources_overlap("/partners/", "/partners/ozon"));
    assert!(!crate::auth::sources_overlap("/partners/ozon", "/partners/wb"));
    assert_eq!(
        key.parsed_scopes(),
        vec![Scope::StockWrite(tally_core::ChannelId::parse("partner:ozon").expect("valid"))]
    );
    let bad = ApiKeyConfig { scopes: vec!["stock:delete".into()], ..key.clone() };
    assert!(bad.validate().expect_err("bad scope").contains("unknown scope"));
    let bad = ApiKeyConfig { hash: "s3cret".into(), ..key };
    assert!(bad.validate().is_err(), "a plain-text key is not accepted as a hash");
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s} {s:?}"), "*** ***");
    assert_eq!(serde_json::to_string(&s).expect("serialise"), "\"***\"");
    assert_eq!(s.expose(), "hunter2");
}

#[test]
fn effective_configuration_renders_as_toml() {
    let text = Config::default().to_toml();
    assert!(text.contains("flush_interval_ms = 100"), "{text}");
    assert!(text.contains("kind = \"embedded\""), "{text}");
}

#[test]
fn production_backends_are_configured_by_kind_and_their_urls_are_masked() {
    let c = Config::load(
        None,
        env(&[
            ("TALLY_STORE__KIND", "postgres"),
            ("TALLY_STORE__URL", "postgres://tally:hunter2@db:5432/tally"),
            ("TALLY_CACHE__KIND", "redis"),
            ("TALLY_CACHE__URL", "redis://:hunter3@cache:6379"),
        ]),
    )
    .expect("loads");
    let StoreConfig::Postgres { url, max_connections, .. } = &c.store else { panic!("postgres: {:?}", c.store) };
    assert_eq!(url.expose(), "postgres://tally:hunter2@db:5432/tally");
    assert_eq!(*max_connections, 16);
    let CacheConfig::Redis { key_prefix, .. } = &c.cache else { panic!("redis: {:?}", c.cache) };
    assert_eq!(key_prefix, "tally:");
    let printed = c.to_toml();
    assert!(!printed.contains("hunter2") && !printed.contains("hunter3"), "{printed}");
    let err = Config::load(None, env(&[("TALLY_STORE__KIND", "postgres"), ("TALLY_STORE__URL", "mysql://x")]))
        .expect_err("wrong scheme");
    assert!(err.to_string().contains("store.url"), "{err}");
}

#[test]
fn two_keys_cannot_share_an_id_or_a_source() {
    let key = |id: &str, sources: &[&str]| ApiKeyConfig {
        id: id.into(),
        hash: hash_api_key(id),
        scopes: vec!["stock:read".into()],
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut c = Config::default();
    c.api.auth = AuthMode::Keys;
    c.api.keys = vec![key("wms", &["/wms/"]), key("ozon", &["/ozon"])];
    assert!(c.validate().is_ok());
    c.api.keys = vec![key("wms", &["/wms/"]), key("other", &["/wms/eu-1"])];
    let err = c.validate().expect_err("overlapping sources").to_string();
    assert!(err.contains("api.keys[1].sources"), "{err}");
    c.api.keys = vec![key("wms", &[]), key("wms", &[])];
    assert!(c.validate().expect_err("same id").to_string().contains("api.keys[1].id"));
}
