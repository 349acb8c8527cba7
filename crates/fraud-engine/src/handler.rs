//! Fraud's handler on the consumer runtime, one per assigned topic partition. On
//! `payments.transactions` it owns the histories of its accounts (in memory, persisted as one
//! document per account with the offset as version, reloaded from the store on resume) and
//! decides each transaction; on `customers.profiles` it stores profiles; on `fraud.labels` it
//! stores labels and joins them to decisions for the quality watch.
//!
//! Per round of transactions: history observed → features (the deciding version's schema) →
//! hard rules → a recent decision of the same transaction, or a recent score of the same
//! vector, is reused → one model call per version for the rest (micro-batched with the other
//! partitions' by the shared client) → the rules where the model cannot answer → thresholds,
//! reason codes → the decision appended (first wins by transaction id), cached and published.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tally_bus::{OutRecord, Record};
use tally_cache::Cache;
use tally_core::{AccountId, Attributes, Envelope};
use tally_fraud::{
    Assessed, DecidedBy, Decision, HardRules, History, Label, Profile, Thresholds, Transaction, assess, top_features,
};
use tally_model::ModelClient;
use tally_runtime::{Fresh, Handler, HandlerError, Output, OutputId, Parsed, Refusal};
use tally_store::ledger::{AppendedRow, Document, DocumentStore, Documents};

use crate::cards::{Card, Cards};
use crate::flags::FlagsView;
use crate::metrics::FraudMetrics;
use crate::quality::Quality;
use crate::records::{self, DecisionRecord, FraudOutcome, ShadowScore};
use crate::scores::ScoreCache;

/// `fraud.decisions`, the only output topic.
pub const DECISIONS: OutputId = OutputId(0);

/// Event types.
pub mod types {
    /// A payment transaction.
    pub const TRANSACTION: &str = "payment.transaction";
    /// A customer profile upsert.
    pub const PROFILE: &str = "customer.profile";
    /// A label.
    pub const LABEL: &str = "fraud.label";
    /// A decision (published).
    pub const DECISION: &str = "fraud.decision";
}

/// The rule scorer's thresholds (when the rules decide instead of the model).
pub const RULE_THRESHOLDS: Thresholds = Thresholds { review: 0.5, decline: 0.9 };

/// Features named as reasons per decision.
const TOP_FEATURES: usize = 3;

/// Above this many accounts in memory, histories already flushed are dropped.
const MAX_WORKING_SET: usize = 200_000;

/// A parsed fraud input.
#[derive(Debug, Clone)]
pub enum FraudEvent {
    /// A payment.
    Transaction(Box<Transaction>),
    /// A profile upsert.
    Profile(AccountId, Box<Profile>),
    /// A label.
    Label(Label),
}

impl FraudEvent {
    fn account(&self) -> &AccountId {
        match self {
            Self::Transaction(t) => &t.account_id,
            Self::Profile(a, _) => a,
            Self::Label(l) => &l.account_id,
        }
    }
}

/// What every partition's handler shares.
pub struct Shared<S, C> {
    /// The store (fraud's documents).
    pub store: S,
    /// The cache.
    pub cache: C,
    /// Model cards.
    pub cards: Arc<Cards>,
    /// The model client.
    pub client: Arc<ModelClient>,
    /// Version flags.
    pub flags: Arc<FlagsView>,
    /// Hard rules.
    pub rules: Arc<HardRules>,
    /// Quality watch.
    pub quality: Arc<Quality>,
    /// Metrics.
    pub metrics: Arc<FraudMetrics>,
    /// Decision cache lifetime.
    pub decision_ttl: Duration,
    /// Recent scores by feature vector (process-wide).
    pub scores: ScoreCache,
}

struct Account {
    history: History,
    /// Offset of the last transaction applied to it (its document's version).
    offset: u64,
    profile: Option<Profile>,
}

/// One partition's handler.
pub struct FraudHandler<S, C> {
    shared: Arc<Shared<S, C>>,
    partition: u32,
    accounts: HashMap<AccountId, Account>,
    /// Decisions of this poll's transactions found in the cache (duplicates and replays).
    known: HashMap<String, DecisionRecord>,
    /// Accounts whose history changed this poll.
    dirty: HashSet<AccountId>,
    /// Cache entries to write when the poll finishes.
    cache_out: Vec<(String, Vec<u8>, Duration)>,
    /// Every offset below this is durable in the store.
    durable: u64,
    /// The schema features are computed in when the deciding version has no card (the rules
    /// decide then; the vector is stored for the audit).
    fallback_schema: tally_fraud::FeatureSchema,
}

fn refusal(e: tally_fraud::TransactionError) -> Refusal {
    Refusal { reason: e.code, detail: e.detail }
}

/// Reason codes a fraud event is refused for.
pub const REFUSALS: [&str; 3] = ["invalid_payload", "invalid_field", "unknown_type"];

impl<S: DocumentStore, C: Cache> FraudHandler<S, C> {
    /// A handler for one partition.
    pub fn new(shared: Arc<Shared<S, C>>, partition: u32) -> Self {
        Self {
            shared,
            partition,
            accounts: HashMap::new(),
            known: HashMap::new(),
            dirty: HashSet::new(),
            cache_out: Vec::new(),
            durable: 0,
            fallback_schema: tally_fraud::FeatureSchema::v1(),
        }
    }

    async fn load_accounts(&mut self, accounts: Vec<AccountId>) -> Result<(), HandlerError> {
        let missing: Vec<AccountId> = accounts.into_iter().filter(|a| !self.accounts.contains_key(a)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = missing.iter().map(|a| records::history_doc(a.as_str())).collect();
        let stored: HashMap<String, (i64, String)> =
            self.shared.store.documents(keys).await?.into_iter().map(|(k, v, b)| (k, (v, b))).collect();
        for account in missing {
            let (history, offset) = match stored.get(&records::history_doc(account.as_str())) {
                Some((version, body)) => {
                    let history = serde_json::from_str(body).map_err(|e| HandlerError {
                        during: "reading an account history",
                        hint: tally_store::RetryHint::Permanent,
                        source: Box::new(e),
                    })?;
                    (history, *version as u64)
                }
                None => (History::default(), 0),
            };
            self.accounts.insert(account, Account { history, offset, profile: None });
        }
        Ok(())
    }

    /// Takes the profiles found in the cache (kept fresh by the profile partitions); returns the
    /// store keys of the profiles of accounts this worker has none for and the cache did not
    /// hold.
    fn take_profiles(&mut self, accounts: &[AccountId], cached: Vec<Option<Vec<u8>>>) -> Vec<String> {
        let mut from_store = Vec::new();
        for (account, value) in accounts.iter().zip(cached) {
            match value.and_then(|v| serde_json::from_slice::<Profile>(&v).ok()) {
                Some(p) => {
                    if let Some(a) = self.accounts.get_mut(account) {
                        a.profile = Some(p);
                    }
                }
                None if self.accounts.get(account).is_some_and(|a| a.profile.is_none()) => {
                    from_store.push(records::profile_doc(account.as_str()));
                }
                None => {}
            }
        }
        from_store
    }

    /// Profiles from the store, for accounts the cache had none for.
    async fn load_profiles(&mut self, keys: Vec<String>) -> Result<(), HandlerError> {
        if keys.is_empty() {
            return Ok(());
        }
        for (key, _, body) in self.shared.store.documents(keys).await? {
            let account = key.trim_start_matches("profile/");
            if let (Ok(id), Ok(p)) = (AccountId::parse(account.to_owned()), serde_json::from_str::<Profile>(&body))
                && let Some(a) = self.accounts.get_mut(&id)
            {
                a.profile = Some(p);
            }
        }
        Ok(())
    }

    /// Decides a round of transactions in order.
    async fn decide(
        &mut self,
        txs: Vec<(usize, Box<Transaction>, Attributes, u64)>,
        answers: &mut [Option<Result<FraudOutcome, Refusal>>],
        out: &mut Output<Documents>,
    ) {
        let flags = self.shared.flags.get();
        struct Pending {
            slot: usize,
            tx: Box<Transaction>,
            attributes: Attributes,
            offset: u64,
            card: Option<Arc<Card>>,
            assessed: Assessed,
            decision: Option<DecisionRecord>,
        }
        let mut pending = Vec::with_capacity(txs.len());
        for (slot, tx, attributes, offset) in txs {
            let known = self.known.get(tx.transaction_id.as_str()).cloned();
            if let Some(k) = &known
                && k.offset != offset
            {
                // The same transaction again under another event id: its decision stands and
                // its history already counts it.
                self.shared.metrics.duplicate_transaction();
                answers[slot] = Some(Ok(FraudOutcome::Decided(Box::new(k.clone()))));
                continue;
            }
            let version = flags.deciding(&tx.account_id).to_owned();
            let card = match self.shared.cards.get(&version) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "the deciding model version has no usable card; the rules decide");
                    None
                }
            };
            let account = self.accounts.entry(tx.account_id.clone()).or_insert_with(|| Account {
                history: History::default(),
                offset: 0,
                profile: None,
            });
            let schema = card.as_ref().map_or(&self.fallback_schema, |c| &c.schema);
            let assessed = assess(schema, &self.shared.rules, &mut account.history, &tx, account.profile.as_ref());
            account.offset = offset;
            self.dirty.insert(tx.account_id.clone());
            pending.push(Pending { slot, tx, attributes, offset, card, assessed, decision: known });
        }

        // Scores for the rows no hard rule and no earlier decision settled: the score cache,
        // then one model call per version for the misses.
        let needs: Vec<usize> = pending
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.decision.is_none() && p.assessed.hard.is_none() && p.card.is_some() && p.assessed.features.is_some()
            })
            .map(|(i, _)| i)
            .collect();
        let mut scores: HashMap<usize, (f32, DecidedBy)> = HashMap::new();
        let mut by_version: HashMap<String, Vec<usize>> = HashMap::new();
        for &i in &needs {
            let p = &pending[i];
            let version = p.card.as_ref().map(|c| c.version.clone()).unwrap_or_default();
            match self.shared.scores.get(&version, p.assessed.features.as_deref().unwrap_or_default()) {
                Some(score) => {
                    scores.insert(i, (score, DecidedBy::Cache));
                }
                None => by_version.entry(version).or_default().push(i),
            }
        }
        // The shadow version scores every row the deciding version was asked for.
        let shadow_card = flags.shadow.as_ref().and_then(|v| self.shared.cards.get(v).ok());
        let shadow_rows: Vec<usize> = if shadow_card.is_some() { needs.clone() } else { Vec::new() };
        let mut calls = Vec::new();
        for (version, rows) in &by_version {
            let data: Vec<f32> =
                rows.iter().flat_map(|&i| pending[i].assessed.features.clone().unwrap_or_default()).collect();
            calls.push((version.clone(), rows.clone(), data));
        }
        if let Some(card) = &shadow_card {
            let width = card.schema.names.len();
            // Shadow features: the shadow's own schema (equal to the deciding one's in the usual
            // case of a retrained model; recomputed otherwise).
            let data: Vec<f32> = shadow_rows
                .iter()
                .flat_map(|&i| {
                    pending[i]
                        .assessed
                        .features
                        .clone()
                        .filter(|f| f.len() == width)
                        .unwrap_or_else(|| vec![0.0; width])
                })
                .collect();
            calls.push((format!("shadow:{}", card.version), shadow_rows.clone(), data));
        }
        let client = Arc::clone(&self.shared.client);
        let started = std::time::Instant::now();
        let results = futures_util::future::join_all(calls.iter().map(|(version, rows, data)| {
            let client = Arc::clone(&client);
            let v = version.strip_prefix("shadow:").unwrap_or(version).to_owned();
            let (n, data) = (rows.len(), data.clone());
            async move { client.score(&v, n, data).await }
        }))
        .await;
        if !calls.is_empty() {
            self.shared.metrics.model_call(started.elapsed());
        }
        let mut shadow_scores: HashMap<usize, f32> = HashMap::new();
        for ((version, rows, data), result) in calls.iter().zip(results) {
            let shadow = version.starts_with("shadow:");
            match result {
                Ok(s) => {
                    for (&i, score) in rows.iter().zip(s) {
                        if shadow {
                            shadow_scores.insert(i, score);
                        } else {
                            scores.insert(i, (score, DecidedBy::Model));
                        }
                    }
                    let card =
                        if shadow { shadow_card.clone() } else { rows.first().and_then(|&i| pending[i].card.clone()) };
                    if let Some(card) = card {
                        self.shared.quality.scored(&card, data);
                    }
                }
                Err(e) => {
                    self.shared.metrics.model_unavailable(&e);
                    tracing::debug!(error = %e, version, rows = rows.len(), "no model score; the rules decide");
                }
            }
        }

        let now = tally_core::now_ms();
        for (i, p) in pending.into_iter().enumerate() {
            let record = match p.decision {
                Some(known) => known, // a replay: the decision already made (and maybe published)
                None => {
                    let (verdict, score, decided_by, version, mut reasons, thresholds_of) =
                        match (&p.assessed.hard, scores.get(&i)) {
                            (Some((verdict, reason)), _) => (
                                *verdict,
                                p.assessed.rule_score,
                                DecidedBy::Rules,
                                String::new(),
                                vec![reason.clone()],
                                None,
                            ),
                            (None, Some((score, by))) => {
                                let card = p.card.as_ref();
                                let thresholds = card.map_or(RULE_THRESHOLDS, |c| c.thresholds);
                                (
                                    thresholds.verdict(*score),
                                    *score,
                                    *by,
                                    card.map(|c| c.version.clone()).unwrap_or_default(),
                                    Vec::new(),
                                    card.cloned(),
                                )
                            }
                            (None, None) => (
                                RULE_THRESHOLDS.verdict(p.assessed.rule_score),
                                p.assessed.rule_score,
                                DecidedBy::Rules,
                                String::new(),
                                Vec::new(),
                                None,
                            ),
                        };
                    for r in &p.assessed.rule_reasons {
                        if reasons.iter().all(|x| x.code != r.code) {
                            reasons.push(r.clone());
                        }
                    }
                    if let (Some(card), Some(features)) = (&thresholds_of, &p.assessed.features)
                        && let Some(c) = card.contributions(1, features)
                    {
                        reasons.extend(top_features(&card.schema.names, &c[0], TOP_FEATURES));
                    }
                    let model_version = if version.is_empty() {
                        p.card.as_ref().map(|c| c.version.clone()).unwrap_or_default()
                    } else {
                        version
                    };
                    let shadow = shadow_card.as_ref().map(|c| {
                        let score = shadow_scores.get(&i).copied();
                        ShadowScore {
                            version: c.version.clone(),
                            score,
                            verdict: score.map(|s| c.thresholds.verdict(s)),
                        }
                    });
                    DecisionRecord {
                        decision: Decision {
                            transaction_id: p.tx.transaction_id.clone(),
                            account_id: p.tx.account_id.clone(),
                            verdict,
                            score,
                            decided_by,
                            model_version,
                            schema_version: p.card.as_ref().map_or(0, |c| c.schema.version),
                            reasons,
                            decided_at_ms: now,
                        },
                        features: p.assessed.features.clone().unwrap_or_default(),
                        shadow,
                        offset: p.offset,
                        partition: self.partition,
                    }
                }
            };
            self.shared.metrics.decided(&record.decision);
            let tx_id = record.decision.transaction_id.as_str().to_owned();
            let body = serde_json::to_string(&record).unwrap_or_default();
            out.effects.appended.push(AppendedRow {
                id: format!("decision/{tx_id}"),
                key: records::transaction_rows(&tx_id),
                body: body.clone(),
            });
            out.publish(DECISIONS, decision_record(&record, &p.attributes));
            out.event_times_us.push((p.attributes.time.unix_timestamp_nanos() / 1000) as i64);
            self.cache_out.push((records::decision_key(&tx_id), body.into_bytes(), self.shared.decision_ttl));
            if record.decision.decided_by == DecidedBy::Model
                && let Some(features) = p.assessed.features.as_ref()
            {
                self.shared.scores.insert(&record.decision.model_version, features, record.decision.score);
            }
            answers[p.slot] = Some(Ok(FraudOutcome::Decided(Box::new(record))));
        }
    }
}

fn decision_record(record: &DecisionRecord, cause: &Attributes) -> OutRecord {
    let mut env = Envelope::new("/tally/fraud", types::DECISION, serde_json::to_value(record).unwrap_or_default());
    env.id = format!("decision-{}", record.decision.transaction_id.as_str());
    env.subject = Some(record.decision.account_id.as_str().to_owned());
    env.traceparent = cause.traceparent.clone();
    let (headers, payload) = env.to_binary();
    OutRecord::keyed(record.decision.account_id.as_str(), headers, payload)
}

impl<S: DocumentStore, C: Cache> Handler for FraudHandler<S, C> {
    type Event = FraudEvent;
    type Outcome = FraudOutcome;
    type Effects = Documents;

    fn parse(&self, attributes: &Attributes, record: &Record) -> Result<Parsed<FraudEvent>, Refusal> {
        let event = match attributes.ty.as_str() {
            types::TRANSACTION => {
                FraudEvent::Transaction(Box::new(Transaction::from_payload(&record.payload).map_err(refusal)?))
            }
            types::PROFILE => {
                let (account, profile) = Profile::from_payload(&record.payload).map_err(refusal)?;
                FraudEvent::Profile(account, Box::new(profile))
            }
            types::LABEL => FraudEvent::Label(Label::from_payload(&record.payload).map_err(refusal)?),
            other => {
                return Err(Refusal {
                    reason: "unknown_type",
                    detail: format!(
                        "fraud consumes {}, {} and {}, not {other:?}",
                        types::TRANSACTION,
                        types::PROFILE,
                        types::LABEL
                    ),
                });
            }
        };
        Ok(Parsed { partition_key: event.account().as_str().to_owned(), digest: digest(&record.payload), event })
    }

    async fn prepare(&mut self, events: &[&FraudEvent]) -> Result<(), HandlerError> {
        let mut accounts = Vec::new();
        let mut transactions = Vec::new();
        for e in events {
            if let FraudEvent::Transaction(t) = e {
                accounts.push(t.account_id.clone());
                transactions.push(t.transaction_id.as_str().to_owned());
            }
            if let FraudEvent::Label(l) = e {
                transactions.push(l.transaction_id.as_str().to_owned());
            }
        }
        accounts.sort();
        accounts.dedup();
        // One cache round trip for the poll's profiles and the decisions already made for its
        // transactions (duplicates, replays), beside the store read of histories not in memory.
        let keys: Vec<String> = accounts
            .iter()
            .map(|a| records::profile_key(a.as_str()))
            .chain(transactions.iter().map(|t| records::decision_key(t)))
            .collect();
        let shared = Arc::clone(&self.shared);
        let (loaded, cached) = tokio::join!(self.load_accounts(accounts.clone()), async {
            if keys.is_empty() {
                return Vec::new();
            }
            shared.cache.get_many(&keys).await.unwrap_or_else(|e| {
                // Profiles then come from the store; duplicates are still caught by the
                // idempotency window and the first-wins decision row.
                tracing::warn!(error = %e, "cache read failed; using the store");
                vec![None; keys.len()]
            })
        });
        loaded?;
        let mut cached = cached.into_iter();
        let profiles: Vec<Option<Vec<u8>>> = cached.by_ref().take(accounts.len()).collect();
        let from_store = self.take_profiles(&accounts, profiles);
        self.load_profiles(from_store).await?;
        self.known.clear();
        for (tx, value) in transactions.into_iter().zip(cached) {
            if let Some(record) = value.and_then(|v| serde_json::from_slice::<DecisionRecord>(&v).ok()) {
                self.known.insert(tx, record);
            }
        }
        Ok(())
    }

    fn already_applied(&self, event: &FraudEvent, offset: u64) -> bool {
        match event {
            FraudEvent::Transaction(t) => {
                self.accounts.get(&t.account_id).is_some_and(|a| offset <= a.offset && a.offset > 0)
            }
            _ => false,
        }
    }

    async fn apply(
        &mut self,
        events: Vec<Fresh<FraudEvent>>,
        out: &mut Output<Documents>,
    ) -> Vec<Result<FraudOutcome, Refusal>> {
        let mut answers: Vec<Option<Result<FraudOutcome, Refusal>>> = vec![None; events.len()];
        let mut txs = Vec::new();
        for (slot, Fresh { event, attributes, offset }) in events.into_iter().enumerate() {
            match event {
                FraudEvent::Transaction(tx) => txs.push((slot, tx, attributes, offset)),
                FraudEvent::Profile(account, profile) => {
                    let body = serde_json::to_string(&profile).unwrap_or_default();
                    out.effects.put(
                        records::profile_doc(account.as_str()),
                        Document { version: offset as i64, body: body.clone() },
                    );
                    self.cache_out.push((
                        records::profile_key(account.as_str()),
                        body.into_bytes(),
                        Duration::from_secs(24 * 3600),
                    ));
                    answers[slot] = Some(Ok(FraudOutcome::ProfileStored));
                }
                FraudEvent::Label(label) => {
                    let tx = label.transaction_id.as_str().to_owned();
                    let mut decision = self.known.get(&tx).cloned();
                    if decision.is_none()
                        && let Ok(rows) = self.shared.store.appended(records::transaction_rows(&tx)).await
                    {
                        decision = rows
                            .into_iter()
                            .find(|(id, _)| id.starts_with("decision/"))
                            .and_then(|(_, body)| serde_json::from_str::<DecisionRecord>(&body).ok());
                    }
                    if let Some(d) = &decision {
                        if matches!(d.decision.decided_by, DecidedBy::Model | DecidedBy::Cache)
                            && let Ok(card) = self.shared.cards.get(&d.decision.model_version)
                        {
                            self.shared.quality.labelled(&card, d.decision.score, label.fraud);
                        }
                        if let (Some(s), Some(score)) = (&d.shadow, d.shadow.as_ref().and_then(|s| s.score))
                            && let Ok(card) = self.shared.cards.get(&s.version)
                        {
                            self.shared.quality.labelled(&card, score, label.fraud);
                        }
                    }
                    out.effects.appended.push(AppendedRow {
                        id: format!("label/{tx}"),
                        key: records::transaction_rows(&tx),
                        body: serde_json::to_string(&label).unwrap_or_default(),
                    });
                    answers[slot] = Some(Ok(FraudOutcome::LabelStored { joined: decision.is_some() }));
                }
            }
        }
        if !txs.is_empty() {
            self.decide(txs, &mut answers, out).await;
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Refusal { reason: "invalid_payload", detail: "not answered".into() })))
            .collect()
    }

    async fn finish(&mut self, out: &mut Output<Documents>) {
        for account in std::mem::take(&mut self.dirty) {
            if let Some(a) = self.accounts.get(&account) {
                let body = serde_json::to_string(&a.history).unwrap_or_default();
                out.effects.put(records::history_doc(account.as_str()), Document { version: a.offset as i64, body });
            }
        }
        let entries = std::mem::take(&mut self.cache_out);
        if !entries.is_empty()
            && let Err(e) = self.shared.cache.set_many_expiring(entries).await
        {
            // Decisions are in the store either way; the cache only saves lookups and calls.
            tracing::warn!(error = %e, "caching decisions failed");
        }
        if self.accounts.len() > MAX_WORKING_SET {
            // Only histories the store already holds leave memory: a reload must read exactly
            // the state this worker had.
            let durable = self.durable;
            self.accounts.retain(|_, a| a.offset >= durable);
        }
    }

    fn durable(&mut self, next_offset: u64) {
        self.durable = next_offset;
    }

    fn key_name(&self) -> &'static str {
        "account_id"
    }

    fn outcome_code(&self, outcome: &FraudOutcome) -> &'static str {
        outcome.code()
    }
}

/// A digest of a payload (FNV-1a): the same event id with another payload is refused. The HTTP
/// API computes the same before publishing, to refuse a reused transaction id at once.
pub fn digest(payload: &[u8]) -> i64 {
    records::fnv1a(payload.iter().copied()) as i64
}
