//! The Lambda process: which function this is (`POST_SIGNUP_HANDLER`: `trigger`, the default,
//! `worker`, `reconciler` or `api`), its cold start (settings, metrics collector, clients), and
//! the runtime loop that hands each invocation to its handler. One binary serves all four, so
//! one release build per architecture serves every function and `sam build`.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

use crate::lambda::api::{Api, ApiSettings, HttpRequest};
use crate::lambda::app::App;
use crate::lambda::settings::{Settings, var};
use crate::lambda::{reconciler, trigger, worker};
use crate::outside::cognito::UserPool;

const HANDLER_VAR: &str = "POST_SIGNUP_HANDLER";
/// Serves the function `POST_SIGNUP_HANDLER` names until the runtime stops it. `started`: when
/// the process started (Cognito's 5 s include the cold start).
pub async fn serve(started: tokio::time::Instant) -> Result<(), Error> {
    let role = std::env::var(HANDLER_VAR).unwrap_or_else(|_| "trigger".to_owned());
    if !matches!(role.as_str(), "trigger" | "worker" | "reconciler" | "api") {
        return Err(cold_start_failed(format!(
            "setting {HANDLER_VAR}: '{role}' is not one of trigger, worker, reconciler, api"
        )));
    }
    if role == "api" {
        return serve_api(started).await;
    }
    let settings = Settings::from_env().map_err(|e| cold_start_failed(e.to_string()))?;
    let function: &'static str = match role.as_str() {
        "worker" => "worker",
        "reconciler" => "reconciler",
        _ => "trigger",
    };
    let collector = crate::metrics::install(function);
    // One EMF document per invocation, printed when it ends (CloudWatch Logs makes metrics of it).
    let flush = move || {
        if let Some(c) = collector
            && let Err(e) = c.flush(std::io::stdout())
        {
            tracing::warn!(error = %e, "metrics not written");
        }
    };
    let pool_id = match (role.as_str(), &settings.user_pool_id) {
        ("reconciler", None) => {
            let problem = format!(
                "setting {}: is required by the reconciler",
                var::USER_POOL_ID
            );
            return Err(cold_start_failed(problem));
        }
        (_, id) => id.clone(),
    };
    // Fails only on settings or the template, which no retry can fix: Lambda reports an init
    // error. Outside calls that fail here are retried by the first invocation instead.
    let app = App::init(settings, started)
        .await
        .map_err(|e| cold_start_failed(format!("{e:#}")))?;
    tracing::info!(
        handler = role,
        init_ms = started.elapsed().as_secs_f64() * 1e3,
        "ready"
    );
    let app = &app;
    match role.as_str() {
        "worker" => {
            lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
                let answer = worker::handle(app, event).await;
                flush();
                answer
            }))
            .await
        }
        "reconciler" => {
            let pool = UserPool::new(
                aws_sdk_cognitoidentityprovider::Client::new(&app.aws_config()),
                &pool_id.unwrap_or_default(),
            );
            let pool = &pool;
            lambda_runtime::run(service_fn(
                move |event: LambdaEvent<serde_json::Value>| async move {
                    reconciler::handle(app, pool, event, flush).await
                },
            ))
            .await
        }
        _ => {
            lambda_runtime::run(service_fn(
                move |event: LambdaEvent<serde_json::Value>| async move {
                    let answer = trigger::handle(app, event).await;
                    flush();
                    answer
                },
            ))
            .await
        }
    }
}

/// The frontend's endpoint: its own settings (it needs no broker, cluster or queue), clients
/// with the API's timeout, one answer per request.
async fn serve_api(started: tokio::time::Instant) -> Result<(), Error> {
    let settings = ApiSettings::from_env().map_err(|e| cold_start_failed(e.to_string()))?;
    let aws = crate::outside::aws::load_config(
        crate::lambda::settings::DEFAULT_CONNECT_TIMEOUT,
        settings.timeout,
    )
    .await;
    let api = Api::init(settings, &aws).await.map_err(cold_start_failed)?;
    tracing::info!(
        handler = "api",
        init_ms = started.elapsed().as_secs_f64() * 1e3,
        "ready"
    );
    let api = &api;
    let collector = crate::metrics::install("api");
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let response = match serde_json::from_value::<HttpRequest>(event.payload) {
                Ok(request) => {
                    let response = api.handle(&request).await;
                    if let Some(c) = collector
                        && let Err(e) = c.flush(std::io::stdout())
                    {
                        tracing::warn!(error = %e, "metrics not written");
                    }
                    response
                }
                Err(e) => {
                    // Not an HTTP API (2.0) or function URL request: a wiring mistake.
                    tracing::error!(error = %e, "not an HTTP request event");
                    return Err(Error::from("not an HTTP API payload 2.0 request"));
                }
            };
            Ok::<_, Error>(serde_json::to_value(&response)?)
        },
    ))
    .await
}

fn cold_start_failed(problem: String) -> Error {
    tracing::error!(error = problem, "cold start failed");
    problem.into()
}
