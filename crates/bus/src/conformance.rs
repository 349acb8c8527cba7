//! The conformance suite every [`Bus`] implementation must pass. Each check takes a fresh bus
//! and unique topic/group names, so implementations backed by shared servers can run them
//! side by side.

use std::collections::HashMap;
use std::time::Duration;

use crate::{Assignment, Bus, Consumer, OutRecord, PartitionReader, Record};

fn rec(key: &str, n: usize) -> OutRecord {
    OutRecord {
        key: Some(key.to_owned()),
        headers: vec![("n".into(), n.to_string())],
        payload: n.to_string().into_bytes(),
    }
}

async fn assigned<B: Bus>(
    bus: &B,
    group: &str,
    topic: &str,
) -> (B::Consumer, Vec<<B::Consumer as Consumer>::Partition>) {
    let mut consumer = bus.subscribe(group, &[topic.to_owned()]).await.expect("subscribe");
    loop {
        match tokio::time::timeout(Duration::from_secs(30), consumer.next_assignment()).await {
            Ok(Ok(Assignment::Assigned(parts))) if !parts.is_empty() => return (consumer, parts),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("assignment failed: {e}"),
            Err(_) => panic!("no assignment within 30 s"),
        }
    }
}

async fn drain<P: PartitionReader>(parts: &mut [P], want: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < want {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {want} records arrived", out.len());
        for p in parts.iter_mut() {
            if let Ok(Ok(batch)) = tokio::time::timeout(Duration::from_millis(20), p.poll(1000)).await {
                out.extend(batch);
            }
        }
    }
    out
}

/// Records with one key arrive on one partition, in publish order, with headers intact.
pub async fn same_key_is_ordered_on_one_partition<B: Bus>(bus: B, topic: &str, group: &str) {
    bus.create_topic(topic, 4).await.expect("create topic");
    let keys = ["a", "b", "c", "d", "e"];
    for round in 0..20 {
        let batch = keys.iter().map(|k| rec(k, round)).collect();
        bus.publish(topic, batch).await.expect("publish");
    }
    let ends = bus.end_offsets(topic).await.expect("end offsets");
    assert_eq!(ends.len(), 4);
    assert_eq!(ends.iter().sum::<u64>(), 100, "every record is counted in its partition's end offset");
    let (_c, mut parts) = assigned(&bus, group, topic).await;
    for p in parts.iter_mut() {
        p.seek(0);
    }
    let got = drain(&mut parts, 100).await;
    let mut by_key: HashMap<&str, Vec<(u32, usize)>> = HashMap::new();
    for r in &got {
        let n: usize = std::str::from_utf8(&r.payload).expect("utf8").parse().expect("number");
        assert_eq!(r.header("n"), Some(n.to_string().as_str()), "headers survive");
        by_key
            .entry(keys.iter().find(|k| r.key.as_deref() == Some(**k)).expect("known key"))
            .or_default()
            .push((r.partition, n));
    }
    for (key, seen) in by_key {
        assert!(seen.windows(2).all(|w| w[0].0 == w[1].0), "key {key} spread over partitions");
        assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "key {key} out of order: {seen:?}");
        assert_eq!(seen.len(), 20);
    }
}

/// A committed position is what a new member of the group resumes from; nothing is
/// committed implicitly by reading.
pub async fn committed_position_is_where_the_group_resumes<B: Bus>(bus: B, topic: &str, group: &str) {
    bus.create_topic(topic, 1).await.expect("create topic");
    bus.publish(topic, (0..10).map(|i| rec("k", i)).collect()).await.expect("publish");
    {
        let (_c, mut parts) = assigned(&bus, group, topic).await;
        let p = &mut parts[0];
        assert_eq!(p.committed().await.expect("committed"), None, "reading alone commits nothing");
        p.seek(0);
        let got = drain(std::slice::from_mut(p), 10).await;
        assert_eq!(got.len(), 10);
        p.commit(got[5].offset + 1).await.expect("commit");
        assert_eq!(p.end_offset(), got[9].offset + 1);
    }
    let (_c, parts) = assigned(&bus, group, topic).await;
    let committed = parts[0].committed().await.expect("committed").expect("a committed offset");
    assert_eq!(committed, 6);
}

/// A waiting reader wakes up when a record is published.
pub async fn poll_wakes_when_a_record_arrives<B: Bus>(bus: B, topic: &str, group: &str) {
    bus.create_topic(topic, 1).await.expect("create topic");
    let (_c, mut parts) = assigned(&bus, group, topic).await;
    let mut p = parts.remove(0);
    p.seek(0);
    let waiter = tokio::spawn(async move { p.poll(10).await.map(|r| r.len()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "poll returned with nothing published");
    bus.publish(topic, vec![rec("k", 1)]).await.expect("publish");
    let n = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woke up").expect("join").expect("poll");
    assert_eq!(n, 1);
}

/// One member subscribed to several topics is assigned the partitions of all of them, each
/// reader naming its topic, and reads each topic's records from its own partitions.
pub async fn one_member_consumes_several_topics<B: Bus>(bus: B, topics: [&str; 2], group: &str) {
    for topic in topics {
        bus.create_topic(topic, 2).await.expect("create topic");
        bus.publish(topic, vec![rec(topic, 0), rec(topic, 1)]).await.expect("publish");
    }
    let names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let mut consumer = bus.subscribe(group, &names).await.expect("subscribe");
    let mut parts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while parts.len() < 4 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, consumer.next_assignment()).await {
            Ok(Ok(Assignment::Assigned(more))) => parts.extend(more),
            Ok(Ok(Assignment::Revoked(_))) => {}
            Ok(Err(e)) => panic!("assignment failed: {e}"),
            Err(_) => panic!("only {} of 4 partitions assigned within 30 s", parts.len()),
        }
    }
    let mut assigned: Vec<(String, u32)> = parts.iter().map(|p| (p.topic().to_owned(), p.partition())).collect();
    assigned.sort();
    let mut expected: Vec<(String, u32)> = names.iter().flat_map(|t| [(t.clone(), 0), (t.clone(), 1)]).collect();
    expected.sort();
    assert_eq!(assigned, expected);
    for p in parts.iter_mut() {
        p.seek(0);
    }
    let got = drain(&mut parts, 4).await;
    for topic in topics {
        let of_topic: Vec<&Record> = got.iter().filter(|r| r.topic == topic).collect();
        assert_eq!(of_topic.len(), 2, "{topic}");
        assert!(of_topic.iter().all(|r| r.key.as_deref() == Some(topic)), "a record read under another topic");
    }
}
