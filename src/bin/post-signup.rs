//! The Lambda functions: the PostConfirmation trigger, the hand-off worker, the scheduled
//! reconciler and the frontend's `GET /tenant`, one binary for all four (`lambda::runtime`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // Cognito's 5 s include the cold start: the first invocation's budget counts from here.
    let started = tokio::time::Instant::now();
    post_signup::install_crypto_provider();
    post_signup::telemetry::init(false);
    post_signup::lambda::runtime::serve(started).await
}
