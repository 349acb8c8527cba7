//! `tally serve`: run until SIGTERM or Ctrl-C, then drain.

use tally_config::Config;
use tally_server::App;
use tally_server::app::Role;

use crate::RoleArg;

/// Runs the given role until a shutdown signal, then drains partitions and exits.
pub async fn serve(config: Config, role: RoleArg) -> anyhow::Result<()> {
    let role = match role {
        RoleArg::All => Role::All,
        RoleArg::Inventory => Role::Inventory,
        RoleArg::Fraud => Role::Fraud,
        RoleArg::Forecast => Role::Forecast,
        RoleArg::Api => Role::Api,
    };
    let app = App::new(config).start(role).await?;
    if let Some(addr) = app.addr {
        // One plain line that scripts (and the crash test) can wait for.
        println!("tally listening on http://{addr}");
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining");
        token.cancel();
    });
    app.wait().await;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
