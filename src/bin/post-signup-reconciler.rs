//! The scheduled reconciler Lambda: every confirmed user of the pool gets a complete tenant.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use post_signup::app::App;
use post_signup::cognito::UserPool;
use post_signup::lifecycle::{ReconcileOptions, reconcile};
use post_signup::settings::{Settings, var};
use post_signup::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = tokio::time::Instant::now();
    post_signup::install_crypto_provider();
    telemetry::init(false);
    let settings = Settings::from_env().map_err(|e| e.to_string())?;
    let pool_id = settings.user_pool_id.clone().ok_or_else(|| {
        format!(
            "setting {}: is required by the reconciler",
            var::USER_POOL_ID
        )
    })?;
    let app = App::init(settings, started)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let pool = UserPool::new(
        aws_sdk_cognitoidentityprovider::Client::new(&app.aws_config()),
        &pool_id,
    );
    let (app, pool) = (&app, &pool);
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let provisioner = app.provisioner().await.map_err(|e| format!("{e:#}"))?;
            let options = ReconcileOptions {
                dry_run: false,
                prune: false,
                concurrency: app.settings.concurrency,
                budget: app.budget(),
            };
            let summary = reconcile(provisioner, pool, options, |_, _| {})
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, Error>(serde_json::to_value(summary)?)
        },
    ))
    .await
}
