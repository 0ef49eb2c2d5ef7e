//! The hand-off worker Lambda: an SQS event source, partial batch failures.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use post_signup::{app::App, settings::Settings, telemetry, worker};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = tokio::time::Instant::now();
    post_signup::install_crypto_provider();
    telemetry::init(false);
    let settings = Settings::from_env().map_err(|e| e.to_string())?;
    let app = App::init(settings, started)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        worker::handle(app, event)
    }))
    .await
}
