//! The `tally` command line: one binary, many roles.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub mod bench;
pub mod demand;
pub mod demo;
pub mod driver;
pub mod forecast;
pub mod fraud;
pub mod model_server;
pub mod payments;
pub mod serve;

/// tally — event-driven commerce backends: inventory sync, fraud scoring, demand forecasting.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about)]
pub struct Cli {
    /// Configuration file (default: $TALLY_CONFIG, else ./tally.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run tally (every role in one process by default).
    Serve {
        /// Which role this process runs.
        #[arg(long, value_enum, default_value_t = RoleArg::All)]
        role: RoleArg,
    },
    /// Start tally embedded, drive simulated traffic through it and summarise.
    Demo(demo::DemoArgs),
    /// Send simulated traffic to a running tally (embedded file or HTTP).
    Simulate(driver::SimulateArgs),
    /// Run a benchmark scenario.
    Bench {
        /// Scenario.
        #[command(subcommand)]
        scenario: BenchScenario,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Configuration tools.
    Config {
        /// Action.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// API key tools.
    ApiKey {
        /// Action.
        #[command(subcommand)]
        action: ApiKeyAction,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Serve models over the Open Inference Protocol v2 (REST and gRPC).
    ModelServer(model_server::ModelServerArgs),
    /// Fraud service tools.
    Fraud {
        /// Action.
        #[command(subcommand)]
        action: FraudAction,
    },
    /// Demand forecasting tools.
    Forecast {
        /// What to do.
        #[command(subcommand)]
        action: ForecastAction,
    },
}

/// `tally forecast …`
#[derive(Debug, Subcommand)]
pub enum ForecastAction {
    /// Load demand history from a CSV file into the staging tables (idempotent per file).
    Import(forecast::ImportArgs),
}

/// `tally fraud …`
#[derive(Debug, Subcommand)]
pub enum FraudAction {
    /// Write a labelled dataset (simulated payments → the engine's features) as CSV.
    Dataset(fraud::DatasetArgs),
}

/// Process roles.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    All,
    /// Inventory consumers only.
    Inventory,
    /// Fraud consumers only.
    Fraud,
    /// Demand consumers and the forecast refresh only.
    Forecast,
    /// HTTP API only.
    Api,
}

/// Benchmark scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchScenario {
    /// The inventory engine, embedded.
    Inventory(bench::InventoryBenchArgs),
    /// The fraud scoring service, the model server against MLServer, model quality.
    Fraud(bench::fraud::FraudBenchArgs),
    /// Demand forecasting: the full refresh (model and end to end) and its accuracy.
    Forecast(bench::forecast::ForecastBenchArgs),
}

/// `tally config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate and print the effective configuration (secrets masked).
    Check,
}

/// `tally api-key …`
#[derive(Debug, Subcommand)]
pub enum ApiKeyAction {
    /// Generate a key and print it with the configuration entry (hash only) to add.
    New {
        /// Key id (who it belongs to).
        #[arg(long)]
        id: String,
        /// Scopes, e.g. stock:read, stock:write:partner:ozon, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<tally_config::Config> {
    Ok(tally_config::Config::load_default(path)?)
}

/// Runs a parsed command line; the exit code says whether it worked.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Serve { role } => {
            let config = load_config(config_path)?;
            tally_server::telemetry::init(&config.log);
            runtime()?.block_on(serve::serve(config, role))
        }
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::ModelServer(args) => {
            let config = load_config(config_path)?;
            tally_server::telemetry::init(&config.log);
            runtime()?.block_on(model_server::run(args))
        }
        Command::Fraud { action: FraudAction::Dataset(args) } => {
            let (rows, frauds) = fraud::dataset(&args)?;
            eprintln!("wrote {rows} transactions ({frauds} fraud) to {}", args.out.display());
            Ok(())
        }
        Command::Forecast { action: ForecastAction::Import(args) } => {
            let config = load_config(config_path)?;
            tally_server::telemetry::init(&config.log);
            runtime()?.block_on(forecast::import(config, args))
        }
        Command::Simulate(args) => {
            let config = load_config(config_path)?;
            runtime()?.block_on(driver::simulate(config, args))
        }
        Command::Bench { scenario: BenchScenario::Fraud(args) } => {
            let config = load_config(config_path)?;
            runtime()?.block_on(bench::fraud::run(config, args))
        }
        Command::Bench { scenario: BenchScenario::Forecast(args) } => runtime()?.block_on(bench::forecast::run(args)),
        Command::Bench { scenario: BenchScenario::Inventory(args) } => {
            let config = load_config(config_path)?;
            runtime()?.block_on(bench::inventory(config, args))
        }
        Command::Migrate => {
            let config = load_config(config_path)?;
            tally_server::telemetry::init(&config.log);
            let applied = runtime()?.block_on(tally_server::App::new(config).migrate())?;
            if applied.is_empty() {
                println!("schema is up to date");
            }
            for m in applied {
                println!("applied {m}");
            }
            Ok(())
        }
        Command::Config { action: ConfigAction::Check } => {
            let config = load_config(config_path)?;
            print!("{}", config.to_toml());
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::ApiKey { action: ApiKeyAction::New { id, scopes } } => {
            for s in &scopes {
                tally_config::Scope::parse(s).map_err(anyhow::Error::msg)?;
            }
            let key = format!("tly_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            println!("API key (shown once, give it to {id}): {key}");
            println!("\nAdd to the configuration:\n");
            println!("[[api.keys]]\nid = {id:?}\nhash = {:?}\nscopes = {scopes:?}", tally_config::hash_api_key(&key));
            Ok(())
        }
        Command::Openapi => {
            println!("{}", tally_server::api::openapi_json());
            Ok(())
        }
    }
}
