//! The Lambda function: cold start once, then one handler call per Cognito event.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use post_signup::{app::App, handler, settings::Settings, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    post_signup::install_crypto_provider();
    telemetry::init(false);
    let started = std::time::Instant::now();
    let app = match Settings::from_env().map_err(anyhow::Error::from) {
        Ok(settings) => App::init(settings).await,
        Err(e) => Err(e),
    };
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            // Lambda reports this as an init error and starts a fresh container for the next try.
            tracing::error!(error = format!("{e:#}"), "cold start failed");
            return Err(format!("{e:#}").into());
        }
    };
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1e3, "ready");
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        handler::handle(app, event)
    }))
    .await
}
