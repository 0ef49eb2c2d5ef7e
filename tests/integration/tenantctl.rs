//! tenantctl as a process: `token` as `aws eks get-token` prints it and as a kubectl exec
//! plugin against the real API server, and `provision` with its exit codes and output.
use std::collections::BTreeMap;
use std::process::{Command, Output};

use crate::helpers::*;
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = include_str!("../data/eks-token-vectors.json");
    serde_json::from_str::<Value>(text).unwrap()["cases"]
        .as_array()
        .unwrap()
        .clone()
}

fn query(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn decode(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.strip_prefix("k8s-aws-v1.").expect("prefix");
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn token_prints_the_exec_credential_botocore_would() {
    for case in vectors() {
        let s = |k: &str| case[k].as_str().unwrap().to_owned();
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", s("access_key_id")),
            ("AWS_SECRET_ACCESS_KEY", s("secret_access_key")),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ];
        if let Some(t) = case["session_token"].as_str() {
            env.push(("AWS_SESSION_TOKEN", t.to_owned()));
        }
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = tenantctl(
            &[
                "token",
                "--cluster-name",
                &s("cluster"),
                "--region",
                &s("region"),
                "--at",
                &s("at"),
            ],
            &env_ref,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cred["kind"], "ExecCredential");
        assert_eq!(cred["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(cred["spec"], serde_json::json!({}));
        assert_eq!(
            cred["status"]["expirationTimestamp"],
            case["expiration_timestamp"]
        );
        let token = cred["status"]["token"].as_str().unwrap();
        assert_eq!(query(&decode(token)), query(&s("presigned_url")));
        if case["session_token"].is_null() {
            assert_eq!(token, s("token"), "byte-identical to botocore");
        }
    }
}

#[test]
fn token_follows_kubernetes_exec_info() {
    let case = &vectors()[0];
    let s = |k: &str| case[k].as_str().unwrap().to_owned();
    let base = [
        ("AWS_ACCESS_KEY_ID", s("access_key_id")),
        ("AWS_SECRET_ACCESS_KEY", s("secret_access_key")),
        ("AWS_REGION", s("region")),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ];
    for (info, expected) in [
        (
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#,
            "client.authentication.k8s.io/v1",
        ),
        (
            r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{}}"#,
            "client.authentication.k8s.io/v1beta1",
        ),
        ("not json", "client.authentication.k8s.io/v1beta1"),
    ] {
        let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("KUBERNETES_EXEC_INFO", info));
        let out = tenantctl(&["token", "--cluster-name", "demo"], &env);
        assert!(out.status.success());
        let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cred["apiVersion"], expected, "{info}");
    }
}

#[test]
fn token_refuses_bad_input_clearly() {
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
        ("AWS_CONFIG_FILE", "/dev/null"),
    ];
    for (args, expected) in [
        (
            vec![
                "token",
                "--cluster-name",
                "bad name",
                "--region",
                "us-east-1",
            ],
            "invalid EKS cluster name",
        ),
        (
            vec!["token", "--cluster-name", "demo", "--region", "mars"],
            "invalid AWS region",
        ),
        (
            vec![
                "token",
                "--cluster-name",
                "demo",
                "--region",
                "us-east-1",
                "--at",
                "yesterday",
            ],
            "not an RFC 3339 time",
        ),
        (vec!["token", "--cluster-name", "demo"], "no AWS region"),
    ] {
        let out = tenantctl(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("s3cr3t-value") && out.stdout.is_empty());
    }
}

/// A kubeconfig that authenticates with `tenantctl token` as an exec credential plugin.
fn exec_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let env = stack_env();
    let pass: Vec<String> = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ]
    .iter()
    .map(|k| format!("          - name: {k}\n            value: \"{}\"", env[*k]))
    .collect();
    let kubeconfig = format!(
        r#"apiVersion: v1
kind: Config
clusters:
  - name: stack
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: post-signup
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1beta1
        command: {bin}
        args: ["token", "--cluster-name", "{cluster}", "--region", "{region}"]
        interactiveMode: Never
        env:
{env}
contexts:
  - name: stack
    context: {{cluster: stack, user: post-signup, namespace: {ns}}}
current-context: stack
"#,
        server = env["STACK_KUBE_API"],
        ca = env["STACK_CA_FILE"],
        bin = TENANTCTL,
        cluster = env["EKS_CLUSTER_NAME"],
        region = env["AWS_REGION"],
        env = pass.join("\n"),
        ns = env["TENANT_NAMESPACE"],
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    path
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    Command::new(var("STACK_KUBECTL"))
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .args(args)
        .output()
        .expect("kubectl runs")
}

#[test]
fn kubectl_authenticates_with_tenantctl_as_its_exec_plugin() {
    let dir = std::env::temp_dir().join(format!("tenantctl-kubectl-{}", fresh_tenant()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = exec_kubeconfig(&dir);

    let out = kubectl(&kubeconfig, &["auth", "whoami", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains(&var("STACK_FUNCTION_GROUP")), "{who}");

    // Allowed: get in the tenant namespace. Not allowed: list.
    let out = kubectl(&kubeconfig, &["get", "secret", "no-such-secret"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&kubeconfig, &["get", "deployments"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn provision_prints_a_summary_without_secrets() {
    let tenant = fresh_tenant();
    let path = std::env::temp_dir().join(format!("event-{tenant}.json"));
    std::fs::write(&path, signup_event(tenant.as_str()).to_string()).unwrap();
    let out = tenantctl_on_stack(&["provision", "--event", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // What Lambda would return to Cognito: the event, unchanged.
    let returned: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(returned, signup_event(tenant.as_str()));
    assert!(stderr.contains("tenant provisioned"), "{stderr}");
    let out = tenantctl_on_stack(&["provision", "--sub", tenant.as_str()]);
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["action"], "provisioned");
    assert_eq!(summary["converged"]["report"]["tenant"], tenant.as_str());
    assert_eq!(
        summary["converged"]["report"]["steps"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    // Every log line is JSON with a level and message.
    for line in stderr.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    let password = tenant_secret_json_blocking(&tenant);
    for text in [&*stdout, &*stderr] {
        assert!(!text.contains(&password), "the tenant password leaked");
        assert!(!text.contains(&var("RABBITMQ_ADMIN_PASSWORD")));
        assert!(!text.contains(&var("AWS_SECRET_ACCESS_KEY")));
        assert!(!text.contains("k8s-aws-v1."));
    }
    let _ = std::fs::remove_file(path);
}

fn tenant_secret_json_blocking(tenant: &post_signup::tenant::TenantId) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let json = rt
        .block_on(tenant_secret_json(tenant))
        .expect("secrets manager entry");
    json["password"].as_str().unwrap().to_owned()
}

#[test]
fn provision_refuses_bad_events_with_exit_2_and_skips_forgot_password() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
    for (file, expected) in [
        (
            "malformed-missing-sub.json",
            "request.userAttributes.sub is missing",
        ),
        (
            "malformed-empty-sub.json",
            "request.userAttributes.sub is empty",
        ),
        ("malformed-non-uuid-sub.json", "is not a UUID"),
        (
            "malformed-wrong-trigger.json",
            "unsupported triggerSource 'PreSignUp_SignUp'",
        ),
        ("malformed-not-json.txt", "is not JSON"),
        ("no-such-file.json", "reading event file"),
    ] {
        let out = tenantctl_on_stack(&["provision", "--event", &format!("{dir}/{file}")]);
        assert_eq!(out.status.code(), Some(2), "{file}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{file}: {stderr}");
        if file.ends_with(".json") && file != "no-such-file.json" {
            // What Lambda would answer: an InvalidEvent error.
            let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(answer["errorType"], "InvalidEvent", "{file}");
            assert!(
                answer["errorMessage"].as_str().unwrap().contains(expected),
                "{file}"
            );
        } else {
            assert!(out.stdout.is_empty(), "{file}");
        }
    }
    let out = tenantctl_on_stack(&[
        "provision",
        "--event",
        &format!("{dir}/forgot-password.json"),
    ]);
    assert!(out.status.success());
    let forgot: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/forgot-password.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        forgot
    );
}

#[test]
fn provision_reads_stdin_and_reports_settings_errors_by_name() {
    let mut child = Command::new(TENANTCTL)
        .env_clear()
        .args(["provision", "--event", "-"])
        .env("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signup_event(fresh_tenant().as_str()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("setting EKS_CLUSTER_NAME: is required"));
}
