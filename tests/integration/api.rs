//! `GET /tenant` (the `api` handler) against the stack: real Cognito tokens from the stand-in's
//! user pools, verified by the handler itself against the pool's JWKS (no API Gateway in front),
//! the tenant's record and secret read as the API's role reads them. And the whole sequence a
//! person goes through, with the stand-in's Cognito calling the real trigger function.

use std::collections::HashMap;

use aws_sdk_cognitoidentityprovider::Client as Cognito;
use aws_sdk_cognitoidentityprovider::types::{
    AttributeType, AuthFlowType, ExplicitAuthFlowsType, LambdaConfigType,
};
use post_signup::lambda::api::{Api, ApiSettings, HttpRequest, HttpResponse};
use post_signup::tenant::TenantId;
use serde_json::{Value, json};

use crate::helpers::*;

const PASSWORD: &str = "Correct-horse-battery-1!";

/// The stand-in's Cognito, as a frontend calls it (given the time a ConfirmSignUp takes while
/// Cognito retries a trigger that timed out: up to 3 × 5 s).
async fn cognito() -> Cognito {
    Cognito::new(&aws_config(&settings_with(&[("PROVISION_BUDGET_MS", "20000")])).await)
}

/// A user pool of this test's own with one app client (and optionally a PostConfirmation
/// trigger ARN): (pool id, client id).
async fn fresh_pool(trigger: Option<&str>) -> (String, String) {
    let idp = cognito().await;
    let mut create = idp
        .create_user_pool()
        .pool_name(format!("api-test-{}", uuid::Uuid::new_v4()));
    if let Some(arn) = trigger {
        create = create.lambda_config(LambdaConfigType::builder().post_confirmation(arn).build());
    }
    let pool = create.send().await.unwrap().user_pool.unwrap().id.unwrap();
    let client = new_client(&pool).await;
    (pool, client)
}

async fn new_client(pool: &str) -> String {
    cognito()
        .await
        .create_user_pool_client()
        .user_pool_id(pool)
        .client_name("web")
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowUserPasswordAuth)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowRefreshTokenAuth)
        .send()
        .await
        .unwrap()
        .user_pool_client
        .unwrap()
        .client_id
        .unwrap()
}

/// Signs a person up (SignUp, as a frontend does); returns the username and their `sub`.
async fn sign_up(client: &str) -> (String, TenantId) {
    let email = format!("{}@example.com", uuid::Uuid::new_v4());
    let out = cognito()
        .await
        .sign_up()
        .client_id(client)
        .username(&email)
        .password(PASSWORD)
        .user_attributes(
            AttributeType::builder()
                .name("email")
                .value(&email)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    (email, TenantId::parse(out.user_sub()).unwrap())
}

/// The access and ID tokens of a confirmed user.
async fn sign_in(client: &str, username: &str) -> (String, String) {
    let out = cognito()
        .await
        .initiate_auth()
        .client_id(client)
        .auth_flow(AuthFlowType::UserPasswordAuth)
        .auth_parameters("USERNAME", username)
        .auth_parameters("PASSWORD", PASSWORD)
        .send()
        .await
        .unwrap()
        .authentication_result
        .unwrap();
    (out.access_token.unwrap(), out.id_token.unwrap())
}

/// The person's ConfirmSignUp (any code works on the stack): Cognito runs the pool's trigger.
async fn confirm(
    client: &str,
    username: &str,
) -> Result<(), aws_sdk_cognitoidentityprovider::Error> {
    cognito()
        .await
        .confirm_sign_up()
        .client_id(client)
        .username(username)
        .confirmation_code("123456")
        .send()
        .await
        .map(drop)
        .map_err(Into::into)
}

/// An administrator's AdminConfirmSignUp: Cognito runs the pool's trigger.
async fn admin_confirm(
    pool: &str,
    username: &str,
) -> Result<(), aws_sdk_cognitoidentityprovider::Error> {
    cognito()
        .await
        .admin_confirm_sign_up()
        .user_pool_id(pool)
        .username(username)
        .send()
        .await
        .map(drop)
        .map_err(Into::into)
}

/// A confirmed user of `pool` (no trigger: the test provisions when it wants): (sub, access, id).
/// The record the stack's trigger (run by Cognito) wrote during `confirmation`, which succeeds.
async fn recorded_at_confirmation(
    confirmation: impl Future<Output = Result<(), aws_sdk_cognitoidentityprovider::Error>>,
    tenant: &TenantId,
) -> post_signup::tenant::record::TenantRecord {
    confirmation
        .await
        .expect("the confirmation, with the trigger run by Cognito, succeeds");
    let record = record_of(tenant)
        .await
        .expect("the trigger recorded the tenant");
    assert_eq!(record.origin, "sign-up");
    record
}

async fn confirmed_user(pool: &str, client: &str) -> (TenantId, String, String) {
    let (username, tenant) = sign_up(client).await;
    admin_confirm(pool, &username).await.unwrap();
    let (access, id) = sign_in(client, &username).await;
    (tenant, access, id)
}

/// The API as its Lambda runs it on the stack, for `pool` and `client`.
async fn api(pool: &str, client: &str) -> Api {
    let jwks = format!("{}/{pool}/.well-known/jwks.json", var("AWS_ENDPOINT_URL"));
    api_with_jwks(pool, client, &jwks).await
}

async fn api_with_jwks(pool: &str, client: &str, jwks: &str) -> Api {
    api_handing_off_to(pool, client, jwks, &fresh_queue().await).await
}

/// The API, handing off signed-in users with no record to `queue` (a test's own: no test sees
/// another's hand-offs).
async fn api_handing_off_to(pool: &str, client: &str, jwks: &str, queue: &str) -> Api {
    let env = stack_env();
    let over: HashMap<&str, String> = [
        ("USER_POOL_ID", pool.to_owned()),
        ("USER_POOL_CLIENT_IDS", client.to_owned()),
        ("COGNITO_JWKS_URL", jwks.to_owned()),
        ("CORS_ALLOWED_ORIGINS", "https://app.example.com".to_owned()),
        ("HANDOFF_QUEUE_URL", queue.to_owned()),
    ]
    .into_iter()
    .collect();
    let settings =
        ApiSettings::from_lookup(|k| over.get(k).cloned().or_else(|| env.get(k).cloned()))
            .expect("API settings");
    let aws = aws_config(&settings_with(&[])).await;
    Api::init(settings, &aws).await.expect("API cold start")
}

fn request(method: &str, headers: &[(&str, &str)]) -> HttpRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    serde_json::from_value(json!({
        "version": "2.0",
        "rawPath": "/tenant",
        "headers": headers,
        "requestContext": {"http": {"method": method}, "requestId": "test"},
    }))
    .unwrap()
}

async fn get(api: &Api, token: &str) -> HttpResponse {
    api.handle(&request(
        "GET",
        &[("authorization", &format!("Bearer {token}"))],
    ))
    .await
}

fn provision(tenant: &TenantId) {
    let out = tenantctl_with(&["provision", "--sub", tenant.as_str()], &[], true);
    assert!(
        out.status.success(),
        "provision: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token signed with the stand-in's own Cognito key (the one in the pool's JWKS), with
/// `claims`: what only the claims make valid or not.
fn signed(claims: Value, key_pem: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("dummy".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem).expect("RSA key");
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn assert_refused(r: &HttpResponse, case: &str) {
    assert_eq!(r.status_code, 401, "{case}: {}", r.body);
    // Nothing that helps an attacker: one body for every reason.
    assert_eq!(r.body_json(), json!({"error": "unauthorized"}), "{case}");
    assert!(
        r.headers["www-authenticate"].starts_with("Bearer"),
        "{case}"
    );
    assert_eq!(r.headers["cache-control"], "no-store", "{case}");
}

#[tokio::test]
async fn a_user_gets_their_own_tenant_and_only_theirs() {
    let (pool, client) = fresh_pool(None).await;
    let api = api(&pool, &client).await;
    let (a, a_token, _) = confirmed_user(&pool, &client).await;
    let (b, b_token, _) = confirmed_user(&pool, &client).await;

    // Confirmed, not yet provisioned (the hand-off's case): "setting up", ask again.
    let r = get(&api, &a_token).await;
    assert_eq!(r.status_code, 202, "{}", r.body);
    assert_eq!(r.body_json()["status"], "provisioning");
    assert_eq!(r.headers["retry-after"], "2");
    assert_eq!(r.headers["cache-control"], "no-store");

    provision(&a);
    provision(&b);
    for (tenant, token) in [(&a, &a_token), (&b, &b_token)] {
        let r = get(&api, token).await;
        assert_eq!(r.status_code, 200, "{}", r.body);
        let body = r.body_json();
        assert_eq!(body["status"], "ready");
        assert_eq!(body["vhost"], tenant.as_str());
        assert_eq!(body["username"], tenant.as_str());
        assert_eq!(r.headers["cache-control"], "no-store");
        let broker = body["amqp_url"].as_str().unwrap();
        assert!(
            !broker.contains('@'),
            "no credentials in the broker URL: {broker}"
        );
        assert_eq!(body["web_stomp_url"], var("RABBITMQ_WEB_STOMP_URL"));
        // The answer is a working login to the tenant's own vhost.
        let mut url = url::Url::parse(broker).unwrap();
        url.set_username(body["username"].as_str().unwrap())
            .unwrap();
        url.set_password(body["password"].as_str()).unwrap();
        url.set_path(&format!("/{}", body["vhost"].as_str().unwrap()));
        amqp_login(url.as_str())
            .await
            .expect("the answered credentials log in");
    }
    // The tenant comes from the token only: whatever the request says, A gets A.
    let r = api
        .handle(&request(
            "GET",
            &[
                ("authorization", &format!("Bearer {a_token}")),
                ("x-tenant", b.as_str()),
                ("x-amzn-oidc-identity", b.as_str()),
            ],
        ))
        .await;
    assert_eq!(r.body_json()["vhost"], a.as_str());
    let a_password = get(&api, &a_token).await.body_json()["password"].clone();
    let b_password = get(&api, &b_token).await.body_json()["password"].clone();
    assert_ne!(a_password, b_password);
}

#[tokio::test]
async fn tokens_that_are_not_this_clients_valid_access_tokens_are_refused() {
    let (pool, client) = fresh_pool(None).await;
    let api = api(&pool, &client).await;
    let (tenant, access, id_token) = confirmed_user(&pool, &client).await;
    provision(&tenant);
    let key = std::fs::read(var("STACK_COGNITO_SIGNING_KEY")).unwrap();
    let issuer = format!(
        "https://cognito-idp.{}.amazonaws.com/{pool}",
        var("AWS_REGION")
    );
    let claims = |exp: i64, client_id: &str| {
        json!({"iss": issuer, "sub": tenant.as_str(), "client_id": client_id,
               "token_use": "access", "iat": exp - 3600, "exp": exp})
    };
    // The control: the same key and claims, in date, pass (so the cases below fail on their
    // own fault only).
    let good = signed(claims(now() + 600, &client), &key);
    assert_eq!(get(&api, &good).await.status_code, 200);

    // Another pool's access token (moto signs every pool with the same key: only the issuer
    // tells them apart, and it is checked).
    let (other_pool, other_client) = fresh_pool(None).await;
    let (_, other_access, _) = confirmed_user(&other_pool, &other_client).await;
    // Another app client of this pool.
    let third_client = new_client(&pool).await;
    // A forged signature: A's real token with the payload swapped for another sub.
    let forged = {
        let parts: Vec<&str> = access.split('.').collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = json!(fresh_tenant().as_str());
        format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(payload.to_string()),
            parts[2]
        )
    };
    // Signed by a key that is not the pool's (the stack CA's) under the pool's key id.
    let foreign_key =
        std::fs::read(std::path::Path::new(&var("STACK_CA_FILE")).with_file_name("ca.key"))
            .unwrap();
    let cases = [
        (
            "an expired token",
            signed(claims(now() - 600, &client), &key),
        ),
        ("another pool's token", other_access),
        ("an ID token", id_token),
        (
            "another app client's token",
            signed(claims(now() + 600, &third_client), &key),
        ),
        ("a forged signature", forged),
        (
            "a foreign key",
            signed(claims(now() + 600, &client), &foreign_key),
        ),
        ("an unsigned token", {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!(
                "{}.{}.",
                b64.encode(r#"{"alg":"none","kid":"dummy"}"#),
                b64.encode(claims(now() + 600, &client).to_string())
            )
        }),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (case, token) in &cases {
        assert_refused(&get(&api, token).await, case);
    }
    // No header, or another scheme.
    let r = api.handle(&request("GET", &[])).await;
    assert_refused(&r, "no header");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let basic = api
        .handle(&request("GET", &[("authorization", "Basic dXNlcjpwYXNz")]))
        .await;
    assert_refused(&basic, "basic auth");
    // The real token still works after all that (no lock-out, keys still cached).
    assert_eq!(get(&api, &access).await.status_code, 200);
}

#[tokio::test]
async fn keys_that_cannot_be_fetched_are_an_outage_not_a_bad_token() {
    let (pool, client) = fresh_pool(None).await;
    let (tenant, token, _) = confirmed_user(&pool, &client).await;
    provision(&tenant);
    // The pool's key endpoint answers 503 (a server of our own): every request is 503 with
    // Retry-After (ask again), never 401 (sign in again), also after the 30 s refetch guard
    // kicks in.
    let down = crate::servers::answering(503).await;
    let api = api_with_jwks(&pool, &client, &format!("{down}/keys")).await;
    for _ in 0..3 {
        let r = get(&api, &token).await;
        assert_eq!(r.status_code, 503, "{}", r.body);
        assert_eq!(r.body_json(), json!({"error": "unavailable"}));
        assert_eq!(r.headers["retry-after"], "2");
    }
    // A missing token is still the caller's problem, keys or not.
    assert_eq!(api.handle(&request("GET", &[])).await.status_code, 401);
}

#[tokio::test]
async fn suspended_and_offboarded_tenants_are_told_so_and_get_no_credentials() {
    let (pool, client) = fresh_pool(None).await;
    let api = api(&pool, &client).await;
    let (tenant, token, _) = confirmed_user(&pool, &client).await;
    provision(&tenant);
    assert_eq!(get(&api, &token).await.status_code, 200);

    operator_ok(&["suspend", "--sub", tenant.as_str()]);
    let r = get(&api, &token).await;
    assert_eq!(
        (r.status_code, r.body_json()),
        (403, json!({"status": "suspended"}))
    );
    operator_ok(&["resume", "--sub", tenant.as_str()]);
    assert_eq!(get(&api, &token).await.status_code, 200);

    operator_ok(&["deprovision", "--sub", tenant.as_str()]);
    let r = get(&api, &token).await;
    assert_eq!(
        (r.status_code, r.body_json()),
        (410, json!({"status": "offboarded"}))
    );
}

#[tokio::test]
async fn browsers_get_cors_only_for_allowed_origins() {
    let (pool, client) = fresh_pool(None).await;
    let api = api(&pool, &client).await;
    let (_, token, _) = confirmed_user(&pool, &client).await;
    let bearer = format!("Bearer {token}");
    let from = |origin: &'static str| {
        let bearer = bearer.clone();
        let api = &api;
        async move {
            api.handle(&request(
                "GET",
                &[("authorization", &bearer), ("origin", origin)],
            ))
            .await
        }
    };
    let allowed = from("https://app.example.com").await;
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(allowed.headers["vary"], "Origin");
    let other = from("https://evil.example.net").await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    let preflight = api
        .handle(&request(
            "OPTIONS",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
            ],
        ))
        .await;
    assert_eq!(preflight.status_code, 204);
    assert!(preflight.headers["access-control-allow-headers"].contains("authorization"));
    let post = api
        .handle(&request("POST", &[("authorization", &bearer)]))
        .await;
    assert_eq!(post.status_code, 405);
}

/// The stack's functions (`dev/functions.sh up`): the API's URL, or a loud failure.
fn functions_env() -> HashMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.stack/functions.env");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!("the stack's functions are not running ({path} is missing): run `bash dev/functions.sh up` (make test starts them)")
    });
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn a_person_signs_up_confirms_and_their_frontend_finds_the_tenant_ready() {
    // The stack's own pool: its PostConfirmation trigger is the real function, run by the
    // Lambda runtime emulator; nobody hands it an event.
    let functions = functions_env();
    let client = var("USER_POOL_CLIENT_IDS");
    let (username, tenant) = sign_up(&client).await;
    // The trigger ran during ConfirmSignUp: the tenant is recorded, and it is complete or
    // handed off (the worker finishes that one).
    let record = recorded_at_confirmation(confirm(&client, &username), &tenant).await;
    let (access, _) = sign_in(&client, &username).await;
    let url = format!("{}/tenant", functions["STACK_API_URL"]);
    let answer = http()
        .get(&url)
        .bearer_auth(&access)
        .send()
        .await
        .expect("the API answers");
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    if record.provisioned_at.is_some() {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["vhost"], tenant.as_str());
    } else {
        assert_eq!((status, &body["status"]), (202, &json!("provisioning")));
    }
    // And without a token, through the same runtime: 401.
    let anonymous = http().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[tokio::test]
async fn a_confirmed_user_with_no_record_is_handed_off_by_get_tenant_and_then_ready() {
    // A pool with no trigger: the user is confirmed, nothing recorded (as after a sign-up that
    // could write neither its record nor its hand-off).
    let (pool, client) = fresh_pool(None).await;
    let (tenant, access, _) = confirmed_user(&pool, &client).await;
    let queue = fresh_queue().await;
    let jwks = format!("{}/{pool}/.well-known/jwks.json", var("AWS_ENDPOINT_URL"));
    let api = api_handing_off_to(&pool, &client, &jwks, &queue).await;
    let first = get(&api, &access).await;
    assert_eq!(first.status_code, 202, "{}", first.body);
    assert_eq!(first.body_json()["status"], "provisioning");
    assert_eq!(
        queue_bodies(&queue).await,
        [json!({"sub": tenant.as_str(), "userPoolId": pool})],
        "handed off: the sub and the pool"
    );
    assert!(
        record_of(&tenant).await.is_none(),
        "nothing recorded by the API itself"
    );
    // The worker takes it as Lambda's event source delivers it; nobody runs tenantctl.
    assert!(worker_takes_handoff_of(&tenant, &queue).await);
    let ready = get(&api, &access).await;
    assert_eq!(ready.status_code, 200, "{}", ready.body);
    assert_eq!(ready.body_json()["vhost"], tenant.as_str());
    let record = record_of(&tenant).await.expect("the worker recorded it");
    assert!(record.converged(), "{record:?}");
    assert_eq!(traces_of(&tenant).await.len(), 5, "complete");
    // A recorded tenant is not handed off again.
    let _ = get(&api, &access).await;
    assert!(queue_bodies(&queue).await.is_empty());
}

#[tokio::test]
async fn a_sign_up_that_can_write_neither_record_nor_hand_off_succeeds_is_counted_and_finished_by_get_tenant()
 {
    let functions = functions_env();
    let client = var("USER_POOL_CLIENT_IDS");
    let (username, tenant) = sign_up(&client).await;
    // The registry and SQS refuse this tenant's writes, and its secret cannot be stored, so
    // the trigger can neither finish nor record nor hand off.
    let sub = tenant.as_str();
    for (target, status, error) in [
        ("DynamoDB_20120810.PutItem", 500, "InternalServerError"),
        (
            "DynamoDB_20120810.TransactWriteItems",
            500,
            "InternalServerError",
        ),
        ("AmazonSQS.SendMessage", 503, "ServiceUnavailable"),
        ("secretsmanager.CreateSecret", 500, "InternalServiceError"),
        ("secretsmanager.PutSecretValue", 500, "InternalServiceError"),
    ] {
        aws_fault(json!({"target": target, "match": sub, "count": 1000, "status": status, "error": error})).await;
    }
    let confirmed = confirm(&client, &username).await;
    aws_fault(json!({"clear": true, "match": sub})).await;
    confirmed.expect("the person is not shown an error: their account is confirmed");
    assert!(
        record_of(&tenant).await.is_none(),
        "nothing could be recorded"
    );
    // The trigger logged it, and its metrics count it (the alarm's metric).
    let log_path = concat!(env!("CARGO_MANIFEST_DIR"), "/.stack/functions/trigger.log");
    let log = std::fs::read_to_string(log_path).expect("the trigger's log");
    let line = log
        .lines()
        .position(|l| l.contains("tenant neither recorded nor handed off") && l.contains(sub))
        .unwrap_or_else(|| panic!("no log line for {sub} in {log_path}"));
    let counted = log.lines().skip(line).any(|l| {
        serde_json::from_str::<Value>(l.trim()).is_ok_and(|doc| {
            doc["_aws"].is_object() && doc["Outcome"] == "unrecorded" && doc["Onboardings"] == 1
        })
    });
    assert!(
        counted,
        "an Onboardings document with Outcome unrecorded follows it in {log_path}"
    );

    // The person's first GET /tenant, through the stack's API function: 202, and handed off.
    let (access, _) = sign_in(&client, &username).await;
    let url = format!("{}/tenant", functions["STACK_API_URL"]);
    let first = http().get(&url).bearer_auth(&access).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    assert!(worker_takes_handoff_of(&tenant, &var("HANDOFF_QUEUE_URL")).await);
    let ready = http().get(&url).bearer_auth(&access).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["vhost"], sub);
    assert_eq!(traces_of(&tenant).await.len(), 5, "complete");
}

#[tokio::test]
async fn each_cognito_confirmation_reaches_the_real_trigger_as_cognito_sends_it() {
    // The stack's pool, whose PostConfirmation is the real trigger function.
    let _ = functions_env();
    let pool = var("USER_POOL_ID");
    let client = var("USER_POOL_CLIENT_IDS");
    // An administrator's confirmation: Cognito sends PostConfirmation_ConfirmSignUp, and the
    // person gets a tenant as after their own confirmation.
    let (username, tenant) = sign_up(&client).await;
    let record = recorded_at_confirmation(admin_confirm(&pool, &username), &tenant).await;
    if record.provisioned_at.is_none() {
        assert!(worker_takes_handoff_of(&tenant, &var("HANDOFF_QUEUE_URL")).await);
    }
    // (The stack's functions provision on the stack's broker, whichever one this run tests:
    // the record says what was applied.)
    let before = record_of(&tenant).await.unwrap();
    assert!(
        before.provisioned_at.is_some() && before.converged(),
        "provisioned: {before:?}"
    );

    // A forgotten password: Cognito sends PostConfirmation_ConfirmForgotPassword, which the
    // trigger passes through; the tenant is left as it is.
    cognito()
        .await
        .forgot_password()
        .client_id(&client)
        .username(&username)
        .send()
        .await
        .expect("ForgotPassword");
    cognito()
        .await
        .confirm_forgot_password()
        .client_id(&client)
        .username(&username)
        .confirmation_code("123456")
        .password("Another-horse-battery-2!")
        .send()
        .await
        .expect("ConfirmForgotPassword, with the trigger run by Cognito, succeeds");
    let after = record_of(&tenant).await.unwrap();
    assert_eq!(after.version, before.version, "nothing changed: {after:?}");
    assert_eq!(
        after.generation, before.generation,
        "no new password for the broker"
    );
    let log = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.stack/functions/trigger.log"
    ))
    .unwrap();
    assert!(
        log.lines().any(|l| l.contains("nothing to provision")
            && l.contains("PostConfirmation_ConfirmForgotPassword")),
        "the trigger saw Cognito's source and passed it through"
    );
}

/// A function of this test's own behind the Invoke API: answers each invocation with the next
/// of `answers` (a delay, then a payload), and counts them.
async fn function_server(
    answers: Vec<(u64, Value)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/2015-03-31/functions/test/invocations",
        listener.local_addr().unwrap()
    );
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let answers = Arc::new(answers);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let answers = answers.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let (delay, payload) = answers[n.min(answers.len() - 1)].clone();
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                let body = payload.to_string();
                let error = if payload.get("errorMessage").is_some() {
                    "X-Amz-Function-Error: Unhandled\r\n"
                } else {
                    ""
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{error}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
    (url, count)
}

async fn register_function(arn: &str, url: &str) {
    http()
        .post(format!("{}/_standin/functions", var("STACK_AWS_STANDIN")))
        .json(&json!({"arn": arn, "url": url}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

#[tokio::test]
async fn the_stack_cognito_calls_the_trigger_as_cognito_does() {
    // A function that times out once (Cognito's 5 s), then returns the event: Cognito retries,
    // and the person's ConfirmSignUp succeeds after the second attempt.
    let arn = format!(
        "arn:aws:lambda:us-east-1:111122223333:function:t-{}",
        uuid::Uuid::new_v4()
    );
    let (url, count) = function_server(vec![(6000, json!({})), (0, json!({}))]).await;
    register_function(&arn, &url).await;
    let (pool, client) = fresh_pool(Some(&arn)).await;
    let (username, _) = sign_up(&client).await;
    cognito()
        .await
        .confirm_sign_up()
        .client_id(&client)
        .username(&username)
        .confirmation_code("123456")
        .send()
        .await
        .expect("confirmed after a retry");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A function that fails: its message reaches the caller, and the user stays confirmed.
    let arn = format!(
        "arn:aws:lambda:us-east-1:111122223333:function:t-{}",
        uuid::Uuid::new_v4()
    );
    let (url, count) = function_server(vec![(
        0,
        json!({"errorType": "Failure", "errorMessage": "Setting up failed. Reference r-1."}),
    )])
    .await;
    register_function(&arn, &url).await;
    let (pool2, client2) = fresh_pool(Some(&arn)).await;
    let (username2, _) = sign_up(&client2).await;
    let err = cognito()
        .await
        .admin_confirm_sign_up()
        .user_pool_id(&pool2)
        .username(&username2)
        .send()
        .await
        .expect_err("the trigger's error reaches the caller");
    let text = format!("{:?}", err.into_service_error());
    assert!(text.contains("UserLambdaValidation"), "{text}");
    assert!(
        text.contains("PostConfirmation failed with error Setting up failed. Reference r-1."),
        "{text}"
    );
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "an error is never retried"
    );
    let user = cognito()
        .await
        .admin_get_user()
        .user_pool_id(&pool2)
        .username(&username2)
        .send()
        .await
        .unwrap();
    assert_eq!(user.user_status().map(|s| s.as_str()), Some("CONFIRMED"));
    let _ = pool;
}
