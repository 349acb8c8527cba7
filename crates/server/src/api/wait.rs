//! Publish an event and wait for what the engine made of it — the one mechanism behind every
//! synchronous write (reservations, adjustments, fraud scoring, profile upserts): an in-process
//! notification when the partition's worker runs here, else the idempotency record the worker
//! stores with the effects (another instance decided it).

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tally_core::EventKey;
use tally_runtime::{Resolution, Waiters};
use tally_store::Ledger;

use super::ApiError;
use super::problem::ItemError;

/// The stored outcome of `key`, if the event was applied; an error if the key was used for a
/// different request (another digest).
pub async fn stored_outcome<O: DeserializeOwned, L: Ledger>(
    ledger: &L,
    key: &EventKey,
    digest: i64,
) -> Result<Option<O>, ApiError> {
    let Some(done) = ledger.processed(key.clone()).await? else { return Ok(None) };
    if done.digest.is_some_and(|d| d != digest) {
        return Err(key_reused(key));
    }
    Ok(done.outcome.map(|o| o.decode()).transpose()?)
}

/// The problem of a key used for a different request.
pub fn key_reused(key: &EventKey) -> ApiError {
    let detail = format!(
        "Idempotency-Key {:?} was already used for a different request; use a new key for a new request",
        key.id
    );
    ApiError::IdempotencyKeyReused { detail, errors: Vec::new() }
}

/// Publishes (`publish`) the event of `key` and waits up to `timeout` for its outcome.
pub async fn publish_and_wait<O, L, P>(
    waiters: &Waiters<O>,
    ledger: &L,
    key: EventKey,
    digest: i64,
    timeout: Duration,
    publish: P,
) -> Result<O, ApiError>
where
    O: Clone + DeserializeOwned + Send + 'static,
    L: Ledger,
    P: Future<Output = Result<(), ApiError>>,
{
    if let Some(outcome) = stored_outcome(ledger, &key, digest).await? {
        return Ok(outcome);
    }
    let mut rx = waiters.register(key.clone());
    if let Err(e) = publish.await {
        waiters.forget(&key);
        return Err(e);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    poll.tick().await;
    let result = loop {
        tokio::select! {
            resolved = &mut rx => match resolved {
                Ok(Resolution::Applied(outcome)) => break Ok(outcome),
                Ok(Resolution::DeadLettered { reason: "idempotency_key_reused", .. }) => break Err(key_reused(&key)),
                Ok(Resolution::DeadLettered { reason, detail }) => {
                    break Err(ApiError::InvalidEvents {
                        detail: "the event was rejected by the engine".into(),
                        errors: vec![ItemError { index: 0, code: reason.into(), detail }],
                    })
                }
                // Duplicate whose outcome is only in the store, or no local worker: poll.
                Ok(Resolution::DuplicateUnknown) | Err(_) => rx = waiters.register(key.clone()),
            },
            _ = poll.tick() => {
                match stored_outcome(ledger, &key, digest).await {
                    Ok(Some(outcome)) => break Ok(outcome),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                break Err(ApiError::Pending(format!(
                    "event {} was accepted but its outcome is not known yet; retry with the same Idempotency-Key",
                    key.id
                )))
            }
        }
    };
    waiters.forget(&key);
    result
}
