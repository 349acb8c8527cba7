use super::*;
use crate::conformance;

fn open(dir: &tempfile::TempDir) -> EmbeddedLog {
    EmbeddedLog::open(EmbeddedLogOptions {
        path: dir.path().join("tally.db"),
        default_partitions: 4,
        durability: Durability::Normal,
    })
    .expect("open log")
}

#[tokio::test]
async fn embedded_log_keeps_per_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::same_key_is_ordered_on_one_partition(open(&dir), "t", "g").await;
}

#[tokio::test]
async fn embedded_log_resumes_from_the_committed_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::committed_position_is_where_the_group_resumes(open(&dir), "t", "g").await;
}

#[tokio::test]
async fn embedded_log_wakes_readers_on_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::poll_wakes_when_a_record_arrives(open(&dir), "t", "g").await;
}

#[tokio::test]
async fn records_and_offsets_survive_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(&dir);
        log.create_topic("t", 2).await.expect("create");
        log.publish(
            "t",
            (0..50).map(|i| OutRecord { key: Some(format!("k{i}")), headers: vec![], payload: vec![1] }).collect(),
        )
        .await
        .expect("publish");
    }
    let log = open(&dir);
    assert_eq!(log.partitions("t"), Some(2));
    log.publish("t", vec![OutRecord { key: Some("k0".into()), headers: vec![], payload: vec![2] }])
        .await
        .expect("publish");
    let mut consumer = log.subscribe("g", &["t".to_owned()]).await.expect("subscribe");
    let Assignment::Assigned(parts) = consumer.next_assignment().await.expect("assign") else { panic!("assigned") };
    let total: u64 = parts.iter().map(|p| p.end_offset()).sum();
    assert_eq!(total, 51, "offsets continue after reopen instead of restarting at 0");
    assert!(log.create_topic("t", 3).await.is_err(), "partition count mismatch is reported");
}

#[tokio::test]
async fn a_second_member_of_the_same_group_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let first = log.subscribe("g", &["t".to_owned()]).await.expect("first member");
    assert!(log.subscribe("g", &["t".to_owned()]).await.is_err());
    drop(first);
    assert!(log.subscribe("g", &["t".to_owned()]).await.is_ok(), "membership ends when the consumer is dropped");
}

#[tokio::test]
async fn retention_deletes_only_old_records_every_group_has_consumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = |n: usize| {
        (0..n).map(|i| OutRecord { key: Some(format!("k{i}")), headers: vec![], payload: vec![1] }).collect()
    };
    {
        let log = open(&dir);
        log.create_topic("in", 1).await.expect("create");
        log.create_topic("out", 1).await.expect("create");
        log.publish("in", recs(100)).await.expect("publish");
        log.publish("out", recs(10)).await.expect("publish");
        let mut consumer = log.subscribe("g", &["in".to_owned()]).await.expect("subscribe");
        let Assignment::Assigned(mut parts) = consumer.next_assignment().await.expect("assign") else {
            panic!("assigned")
        };
        parts[0].commit(60).await.expect("commit");

        assert_eq!(log.enforce_retention(std::time::Duration::from_secs(3600)).await.expect("retention"), 0);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        // "in": everything below the group's position; "out" (no group): all but the newest.
        assert_eq!(log.enforce_retention(std::time::Duration::ZERO).await.expect("retention"), 60 + 9);
    }
    let log = open(&dir);
    log.publish("in", recs(1)).await.expect("publish");
    let mut consumer = log.subscribe("g", &["in".to_owned()]).await.expect("subscribe");
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await.expect("assign") else { panic!("assigned") };
    assert_eq!(parts[0].end_offset(), 101, "offsets continue after retention and reopen");
    assert_eq!(parts[0].committed().await.expect("committed"), Some(60));
    parts[0].seek(60);
    let mut offsets = Vec::new();
    while offsets.len() < 41 {
        offsets.extend(parts[0].poll(100).await.expect("poll").iter().map(|r| r.offset));
    }
    assert_eq!(offsets, (60..101).collect::<Vec<u64>>(), "unconsumed records are all kept");
}

#[tokio::test]
async fn embedded_log_gives_one_member_every_partition_of_several_topics() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::one_member_consumes_several_topics(open(&dir), ["sales", "returns"], "g").await;
}
