//! `tally fraud …`: tools around the fraud service that need no running tally.
//!
//! `tally fraud dataset` writes a labelled training (or evaluation) set: the payments
//! simulator's transactions measured by exactly the code the engine runs
//! ([`tally_fraud::assess`]), one CSV row each with the simulator's ground truth, the rule-based
//! score (for the side-by-side report) and the features of a schema version. The reference
//! model's training script (`models/fraud/train.py`) reads it.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tally_fraud::{FeatureSchema, HardRules, History, Profile, Transaction, assess};
use tally_sim::payments::{Pattern, Payments, PaymentsConfig, types};

/// `tally fraud dataset` arguments.
#[derive(Debug, clap::Args)]
pub struct DatasetArgs {
    /// Simulator seed (train and evaluate on different seeds).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Transactions to write.
    #[arg(long, default_value_t = 200_000)]
    pub transactions: usize,
    /// Customer accounts.
    #[arg(long, default_value_t = 5_000)]
    pub accounts: usize,
    /// Chance per transaction that a fraud episode starts.
    #[arg(long, default_value_t = 0.01)]
    pub fraud_rate: f64,
    /// Output CSV file (`-` for stdout).
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
}

/// Writes the dataset; returns (rows, fraud rows).
pub fn dataset(args: &DatasetArgs) -> anyhow::Result<(usize, usize)> {
    let out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?)
    };
    let mut out = std::io::BufWriter::new(out);
    let schema = FeatureSchema::v1();
    let rules = HardRules::default();
    write!(out, "transaction_id,account_id,occurred_at_ms,pattern,fraud,rule_score")?;
    for name in &schema.names {
        write!(out, ",{name}")?;
    }
    writeln!(out)?;

    let mut sim = Payments::new(PaymentsConfig {
        seed: args.seed,
        accounts: args.accounts,
        fraud_rate: args.fraud_rate,
        ..PaymentsConfig::default()
    });
    let mut profiles: HashMap<String, Profile> = HashMap::new();
    let mut histories: HashMap<String, History> = HashMap::new();
    let (mut rows, mut frauds) = (0, 0);
    while rows < args.transactions {
        for generated in sim.next_batch(1_024) {
            let payload = serde_json::to_vec(&generated.event.data)?;
            match generated.event.ty.as_str() {
                types::PROFILE => {
                    let (account, profile) = Profile::from_payload(&payload)?;
                    profiles.insert(account.as_str().to_owned(), profile);
                }
                types::TRANSACTION if rows < args.transactions => {
                    let tx = Transaction::from_payload(&payload)?;
                    let account = tx.account_id.as_str();
                    let history = histories.entry(account.to_owned()).or_default();
                    let a = assess(&schema, &rules, history, &tx, profiles.get(account));
                    let features = a.features.context("schema v1 is computed by this build")?;
                    let pattern = generated.pattern.unwrap_or(Pattern::Legitimate);
                    let fraud = pattern != Pattern::Legitimate;
                    write!(
                        out,
                        "{},{},{},{},{},{}",
                        tx.transaction_id.as_str(),
                        account,
                        tx.occurred_at_ms,
                        pattern.code(),
                        u8::from(fraud),
                        a.rule_score
                    )?;
                    for v in features {
                        write!(out, ",{v}")?;
                    }
                    writeln!(out)?;
                    rows += 1;
                    frauds += usize::from(fraud);
                }
                _ => {}
            }
        }
    }
    out.flush()?;
    Ok((rows, frauds))
}
