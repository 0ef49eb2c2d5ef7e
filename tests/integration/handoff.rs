//! The guaranteed finish: what the trigger cannot finish it hands off and still returns the
//! event; the worker (`tenantctl drain`, the SQS worker) finishes it; and even when neither the
//! record nor the hand-off can be written, the person is not shown an error.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use lambda_runtime::{Context, LambdaEvent};
use post_signup::lambda::app::App;
use post_signup::lambda::trigger::{self, Finish};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::*;
use crate::servers::closed_port;

async fn invoke(app: &App, event: &Value) -> Result<(Value, Finish), String> {
    let mut context = Context::default();
    context.request_id = "req-4711".to_owned();
    trigger::handle_reporting(app, LambdaEvent::new(event.clone(), context))
        .await
        .map_err(|e| e.to_string())
}

/// Settings of a lenient (Lambda-like) app: cold-start failures do not fail init.
async fn lambda_app(overrides: &[(&str, &str)], started: Instant) -> App {
    let settings = settings_with(overrides);
    let aws = aws_config(&settings).await;
    App::new(settings, aws, started).expect("settings and template are fine")
}

/// A Lambda-like app whose RabbitMQ does not answer, with a 1.5 s budget: nothing finishes.
async fn rabbitmq_down_app() -> App {
    let down = format!("http://127.0.0.1:{}", closed_port());
    lambda_app(
        &[
            ("RABBITMQ_MANAGEMENT_URL", &down),
            ("PROVISION_BUDGET_MS", "1500"),
        ],
        Instant::now(),
    )
    .await
}

#[tokio::test]
async fn rabbitmq_down_hands_off_and_drain_finishes_the_tenant() {
    let queue = fresh_queue().await;
    let down = format!("http://127.0.0.1:{}", closed_port());
    let app = lambda_app(
        &[
            ("RABBITMQ_MANAGEMENT_URL", &down),
            ("HANDOFF_QUEUE_URL", &queue),
            ("PROVISION_BUDGET_MS", "1500"),
        ],
        Instant::now(),
    )
    .await;
    let tenant = fresh_tenant();
    let event = signup_event(tenant.as_str());
    let started = std::time::Instant::now();
    let (returned, finish) = invoke(&app, &event)
        .await
        .expect("the person is not failed");
    assert!(
        started.elapsed() < Duration::from_millis(1500 + 500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(finish, Finish::HandedOff);
    assert_eq!(returned, event, "Cognito gets its event back");
    assert_eq!(
        queue_bodies(&queue).await,
        [json!({"sub": tenant.as_str(), "userPoolId": event["userPoolId"]})],
        "the hand-off holds the sub and the pool, nothing else"
    );
    assert!(!traces_of(&tenant).await.contains(&"rabbitmq user"));

    // RabbitMQ is back (the real one): the operator drains the queue.
    let out = tenantctl_with(&["drain"], &[("HANDOFF_QUEUE_URL", &queue)], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["received"], 1, "{summary}");
    assert_eq!(summary["provisioned"], 1, "{summary}");
    assert_eq!(
        traces_of(&tenant).await.len(),
        5,
        "complete: {:?}",
        traces_of(&tenant).await
    );
    assert!(queue_bodies(&queue).await.is_empty(), "the queue is empty");
    let record = record_of(&tenant).await.expect("recorded at sign-up");
    assert_eq!(record.origin, "sign-up");
    assert!(record.handed_off_at.is_some(), "{record:?}");
    assert_eq!(
        record.outcome,
        post_signup::tenant::record::LastOutcome::Provisioned,
        "the worker recorded its outcome: {record:?}"
    );
    assert!(record.converged());
}

#[tokio::test]
async fn a_recorded_sign_up_is_never_a_failure_even_when_the_handoff_fails() {
    let tenant = fresh_tenant();
    aws_fault(json!({"target": "AmazonSQS.SendMessage", "match": tenant.as_str(), "count": 1000, "status": 503, "error": "ServiceUnavailable"})).await;
    let app = rabbitmq_down_app().await;
    let (_, finish) = invoke(&app, &signup_event(tenant.as_str()))
        .await
        .expect("the tenant's intent is recorded: the person is not failed");
    assert_eq!(finish, Finish::Recorded);
    let record = record_of(&tenant).await.expect("recorded");
    assert_eq!(
        record.outcome,
        post_signup::tenant::record::LastOutcome::Failed
    );
    let detail = record.outcome_detail.clone().unwrap_or_default();
    assert!(detail.contains("rabbitmq"), "the failing step: {detail}");
    assert!(
        !detail.contains("127.0.0.1"),
        "no host in the record: {detail}"
    );
    // Nothing is queued; the record is what the reconciler finishes from.
    let p = app_with(&[]).await;
    let converged = post_signup::ops::converge::converge(
        p.provisioner().await.unwrap(),
        &record,
        post_signup::ops::converge::ConvergeOptions::new(p.budget()),
    )
    .await
    .expect("finished from the record");
    assert_eq!(converged.version, record.version);
    assert_eq!(traces_of(&tenant).await.len(), 5);
}

#[tokio::test]
async fn when_neither_the_record_nor_the_handoff_can_be_written_the_sign_up_still_succeeds() {
    let tenant = fresh_tenant();
    aws_fault(json!({"target": "AmazonSQS.SendMessage", "match": tenant.as_str(), "count": 1000, "status": 503, "error": "ServiceUnavailable"})).await;
    aws_fault(json!({"target": "DynamoDB_20120810.PutItem", "match": tenant.as_str(), "count": 1000, "status": 500, "error": "InternalServerError"})).await;
    let path = std::env::temp_dir().join(format!("event-{tenant}.json"));
    let event = signup_event(tenant.as_str());
    std::fs::write(&path, event.to_string()).unwrap();
    let down = format!("http://127.0.0.1:{}", closed_port());
    let out = tenantctl_with(
        &["provision", "--event", path.to_str().unwrap()],
        &[
            ("RABBITMQ_MANAGEMENT_URL", &down),
            ("PROVISION_BUDGET_MS", "1500"),
        ],
        false,
    );
    let _ = std::fs::remove_file(&path);
    aws_fault(json!({"clear": true, "match": tenant.as_str()})).await;
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer, event,
        "Cognito gets its event back: no error for the person"
    );
    // The detail is in the logs, for the alarm's reader.
    assert!(
        logs.contains("tenant neither recorded nor handed off"),
        "{logs}"
    );
    assert!(record_of(&tenant).await.is_none());
}

#[tokio::test]
async fn a_slow_secrets_manager_at_cold_start_still_answers_in_time() {
    // A copy of the admin secret that the stand-in answers only after 6 s.
    let admin = json!({
        "username": var("RABBITMQ_ADMIN_USERNAME"),
        "password": var("RABBITMQ_ADMIN_PASSWORD"),
        "tenant_password_key": "k".repeat(40),
    });
    let id = format!("post-signup/slow-admin-{}", uuid::Uuid::new_v4());
    secrets_manager()
        .await
        .create_secret()
        .name(&id)
        .secret_string(admin.to_string())
        .send()
        .await
        .unwrap();
    aws_fault(json!({"target": "secretsmanager.GetSecretValue", "match": id, "count": 1, "delay_ms": 6000})).await;
    let queue = fresh_queue().await;
    let process_start = Instant::now();
    let settings = settings_with(&[
        ("RABBITMQ_ADMIN_SECRET_ID", &id),
        ("HANDOFF_QUEUE_URL", &queue),
    ]);
    let aws = aws_config(&settings).await;
    let app = App::start(settings, aws, process_start)
        .await
        .expect("init does not fail on a slow call");
    let tenant = fresh_tenant();
    let (_, finish) = invoke(&app, &signup_event(tenant.as_str()))
        .await
        .expect("answered");
    let total = process_start.elapsed();
    assert!(
        total < Duration::from_millis(4500 + 300),
        "init + invocation took {total:?}"
    );
    assert_eq!(finish, Finish::HandedOff);
    assert_eq!(queue_bodies(&queue).await.len(), 1);
}

#[tokio::test]
async fn the_worker_reports_only_failed_messages() {
    let app = App::init_with(settings_with(&[]), &aws_config(&settings_with(&[])).await)
        .await
        .unwrap();
    let good = fresh_tenant();
    let record = |id: &str, body: String| {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_owned());
        m.body = Some(body);
        m
    };
    let mut event = SqsEvent::default();
    event.records = vec![
        record(
            "m-good",
            json!({"sub": good.as_str(), "userPoolId": "us-east-1_x"}).to_string(),
        ),
        record("m-bad", json!({"sub": "alice"}).to_string()),
    ];
    let response =
        post_signup::lambda::worker::handle(&app, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-bad"]);
    assert_eq!(traces_of(&good).await.len(), 5);
}

#[tokio::test]
async fn a_slow_queue_cannot_hold_the_answer_past_the_budget() {
    let tenant = fresh_tenant();
    // The registry is down too, so only the hand-off could save the sign-up.
    aws_fault(json!({"target": "DynamoDB_20120810.PutItem", "match": tenant.as_str(), "count": 1000, "status": 500, "error": "InternalServerError"})).await;
    aws_fault(json!({"target": "AmazonSQS.SendMessage", "match": tenant.as_str(), "count": 1, "delay_ms": 6000})).await;
    let app = rabbitmq_down_app().await;
    let started = std::time::Instant::now();
    let (_, finish) = invoke(&app, &signup_event(tenant.as_str()))
        .await
        .expect("neither provisioned nor handed off in time, and still no error for the person");
    assert!(
        started.elapsed() < Duration::from_millis(1500 + 400),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(finish, Finish::Unrecorded);
}
