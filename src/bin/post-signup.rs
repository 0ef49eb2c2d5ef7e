//! The Lambda function: cold start once, then one handler call per Cognito event.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use post_signup::{app::App, handler, settings::Settings, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Cognito's 5 s include the cold start: the first invocation's budget counts from here.
    let started = tokio::time::Instant::now();
    post_signup::install_crypto_provider();
    telemetry::init(false);
    let app = match Settings::from_env() {
        Ok(settings) => App::init(settings, started).await,
        Err(e) => Err(e.into()),
    };
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            // Settings or template: no retry can fix these. Lambda reports an init error.
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
