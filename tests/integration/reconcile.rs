//! The reconciler: every confirmed user of the pool ends with a complete tenant — including
//! admin-created users, who never fire the trigger — orphans are reported, and pruned on request.
//! The test runs in an installation of its own (user pool, namespace, secret prefix), as a second
//! installation sharing the broker and cluster would, so it never sees other tests' tenants.

use aws_sdk_cognitoidentityprovider::types::AttributeType;
use post_signup::tenant::TenantId;
use serde_json::Value;

use crate::helpers::*;

struct Installation {
    pool: String,
    namespace: String,
    prefix: String,
}

impl Installation {
    async fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let namespace = format!("rec-{id}");
        // The shipped namespace and RBAC, for this namespace.
        for file in ["namespace.yaml", "rbac.yaml", "rbac-operator.yaml"] {
            let text =
                std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap()
                    .replace("namespace: tenants", &format!("namespace: {namespace}"))
                    .replace("name: tenants", &format!("name: {namespace}"));
            kubectl_apply(&text);
        }
        let pool = cognito()
            .await
            .create_user_pool()
            .pool_name(format!("rec-{id}"))
            .send()
            .await
            .unwrap()
            .user_pool
            .unwrap()
            .id
            .unwrap();
        Self {
            pool,
            namespace,
            prefix: format!("post-signup/rec-{id}/"),
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("USER_POOL_ID", self.pool.as_str()),
            ("TENANT_NAMESPACE", self.namespace.as_str()),
            ("TENANT_SECRET_PREFIX", self.prefix.as_str()),
        ]
    }

    fn tenantctl(&self, args: &[&str]) -> (i32, Value) {
        let out = tenantctl_with(args, &self.env(), true);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{args:?}: no JSON on stdout; stderr: {stderr}"));
        (out.status.code().unwrap(), json)
    }

    fn reconcile(&self, extra: &[&str]) -> Value {
        let mut args = vec!["reconcile", "--output", "json"];
        args.extend_from_slice(extra);
        let (code, summary) = self.tenantctl(&args);
        assert_eq!(code, 0, "{summary}");
        summary
    }

    /// A confirmed user created by an administrator (no trigger fires); returns their sub.
    async fn confirmed_user(&self, name: &str) -> TenantId {
        let idp = cognito().await;
        idp.admin_create_user()
            .user_pool_id(&self.pool)
            .username(name)
            .user_attributes(
                AttributeType::builder()
                    .name("email")
                    .value(format!("{name}@example.com"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        idp.admin_set_user_password()
            .user_pool_id(&self.pool)
            .username(name)
            .password("Correct-Horse-9-Battery")
            .permanent(true)
            .send()
            .await
            .unwrap();
        let user = idp
            .admin_get_user()
            .user_pool_id(&self.pool)
            .username(name)
            .send()
            .await
            .unwrap();
        let sub = user
            .user_attributes()
            .iter()
            .find(|a| a.name() == "sub")
            .and_then(|a| a.value())
            .unwrap();
        TenantId::parse(sub).unwrap()
    }

    fn parts(&self, tenant: &TenantId) -> Value {
        let (code, status) = self.tenantctl(&["status", "--sub", tenant.as_str()]);
        assert_eq!(code, 0, "{status}");
        status
    }
}

async fn cognito() -> aws_sdk_cognitoidentityprovider::Client {
    aws_sdk_cognitoidentityprovider::Client::new(&aws_config(&settings_with(&[])).await)
}

fn kubectl_apply(manifest: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(var("STACK_KUBECTL"))
        .args(["--kubeconfig", &var("KUBECONFIG"), "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "kubectl apply");
}

fn kubectl_delete(namespace: &str, what: &str) {
    let ok = std::process::Command::new(var("STACK_KUBECTL"))
        .args([
            "--kubeconfig",
            &var("KUBECONFIG"),
            "-n",
            namespace,
            "delete",
            what,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kubectl delete {what}");
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn reconcile_repairs_provisions_reports_and_prunes() {
    let inst = Installation::new().await;
    let complete = inst.confirmed_user("complete").await;
    let broken = inst.confirmed_user("broken").await;
    let never = inst.confirmed_user("admin-created").await;
    let orphan = fresh_tenant();
    for tenant in [&complete, &broken, &orphan] {
        let (code, out) = inst.tenantctl(&["provision", "--sub", tenant.as_str()]);
        assert_eq!(code, 0, "{out}");
    }
    kubectl_delete(
        &inst.namespace,
        &format!("deployment/{}", broken.deployment_name()),
    );

    let dry = inst.reconcile(&["--dry-run"]);
    assert_eq!(dry["users"], 3, "{dry}");
    assert_eq!(dry["complete"], 1, "{dry}");
    assert_eq!(dry["repaired"], 2, "would repair: {dry}");
    assert_eq!(names(&dry["orphans"]), [orphan.to_string()], "{dry}");
    assert_eq!(
        inst.parts(&never)["complete"],
        false,
        "a dry run changes nothing"
    );

    let run = inst.reconcile(&[]);
    assert_eq!(
        (run["repaired"].as_u64(), run["failed"].as_u64()),
        (Some(2), Some(0)),
        "{run}"
    );
    assert_eq!(
        names(&run["orphans"]),
        [orphan.to_string()],
        "reported, not removed: {run}"
    );
    for tenant in [&complete, &broken, &never] {
        assert_eq!(inst.parts(tenant)["complete"], true, "{tenant}");
    }
    assert_eq!(
        inst.parts(&orphan)["complete"],
        true,
        "without --prune the orphan stays"
    );

    let pruned = inst.reconcile(&["--prune"]);
    assert_eq!(pruned["pruned"], 1, "{pruned}");
    let gone = inst.parts(&orphan);
    assert_eq!(
        gone["missing"].as_array().unwrap().len(),
        6,
        "nothing left: {gone}"
    );

    let again = inst.reconcile(&[]);
    assert_eq!(
        (
            again["complete"].as_u64(),
            again["repaired"].as_u64(),
            again["orphans"].as_array().unwrap().len()
        ),
        (Some(3), Some(0), 0),
        "a second run finds nothing to do: {again}"
    );
}
