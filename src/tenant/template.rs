//! The backend Deployment template: embedded at build time, overridable by a file, parsed and
//! checked once at cold start so a bad template fails the first invocation, not every one.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;

/// The shipped template, `deploy/backend-deployment.yaml`.
pub const EMBEDDED: &str = include_str!("../../deploy/backend-deployment.yaml");

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("backend template {source_name}: cannot read: {cause}")]
    Read { source_name: String, cause: String },
    #[error("backend template {source_name}: {problem}")]
    Invalid {
        source_name: String,
        problem: String,
    },
}

#[derive(Debug, Clone)]
pub struct BackendTemplate {
    deployment: Deployment,
}

impl BackendTemplate {
    pub fn embedded() -> Result<Self, TemplateError> {
        Self::parse("(embedded deploy/backend-deployment.yaml)", EMBEDDED)
    }

    /// The file at `path`, or the embedded template.
    pub fn load(path: Option<&Path>) -> Result<Self, TemplateError> {
        match path {
            None => Self::embedded(),
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| TemplateError::Read {
                    source_name: name.clone(),
                    cause: e.to_string(),
                })?;
                Self::parse(&name, &text)
            }
        }
    }

    pub fn parse(source_name: &str, yaml: &str) -> Result<Self, TemplateError> {
        let invalid = |problem: String| TemplateError::Invalid {
            source_name: source_name.to_owned(),
            problem,
        };
        let raw: serde_json::Value =
            serde_saphyr::from_str(yaml).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
        let api_version = raw.get("apiVersion").and_then(|v| v.as_str());
        let kind = raw.get("kind").and_then(|v| v.as_str());
        if api_version != Some("apps/v1") || kind != Some("Deployment") {
            return Err(invalid(format!(
                "must be an apps/v1 Deployment, found apiVersion {api_version:?} kind {kind:?}"
            )));
        }
        let deployment: Deployment = serde_json::from_value(raw)
            .map_err(|e| invalid(format!("not a valid Deployment: {e}")))?;
        let spec = deployment
            .spec
            .as_ref()
            .ok_or_else(|| invalid("has no spec".into()))?;
        let pod = spec
            .template
            .spec
            .as_ref()
            .ok_or_else(|| invalid("has no spec.template.spec".into()))?;
        if pod.containers.is_empty() {
            return Err(invalid("has no containers".into()));
        }
        for c in &pod.containers {
            if c.image.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(format!("container '{}' has no image", c.name)));
            }
        }
        Ok(Self { deployment })
    }

    /// The template with its first container's image replaced (the `BackendImage` deploy
    /// parameter: your backend, without a rebuild or a template file of your own).
    pub fn with_image(mut self, image: &str) -> Self {
        if let Some(c) = self
            .deployment
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .and_then(|p| p.containers.first_mut())
        {
            c.image = Some(image.to_owned());
        }
        self
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(t: &BackendTemplate) -> &k8s_openapi::api::core::v1::PodSpec {
        t.deployment()
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    #[test]
    fn the_image_setting_replaces_the_first_containers_image() {
        let t = BackendTemplate::embedded()
            .unwrap()
            .with_image("123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend@sha256:abc");
        assert_eq!(
            pod(&t).containers[0].image.as_deref(),
            Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend@sha256:abc")
        );
    }

    #[test]
    fn the_shipped_template_parses_and_is_locked_down() {
        let t = BackendTemplate::embedded().unwrap();
        let pod = pod(&t);
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        for c in &pod.containers {
            let sc = c
                .security_context
                .as_ref()
                .expect("container securityContext");
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..])
            );
        }
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let cases = [
            ("{ not yaml: [", "not valid YAML"),
            (
                "apiVersion: v1\nkind: Pod\n",
                "must be an apps/v1 Deployment",
            ),
            ("apiVersion: apps/v1\nkind: Deployment\n", "has no spec"),
            (
                "apiVersion: apps/v1\nkind: Deployment\nspec:\n  selector: {}\n  template:\n    spec:\n      containers: []\n",
                "has no containers",
            ),
            (
                "apiVersion: apps/v1\nkind: Deployment\nspec:\n  selector: {}\n  template:\n    spec:\n      containers:\n        - name: a\n",
                "container 'a' has no image",
            ),
            (
                "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: many\n",
                "not a valid Deployment",
            ),
        ];
        for (yaml, expected) in cases {
            let e = BackendTemplate::parse("t.yaml", yaml)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected) && e.contains("t.yaml"), "{e}");
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let e = BackendTemplate::load(Some(Path::new("/nonexistent/x.yaml"))).unwrap_err();
        assert!(matches!(e, TemplateError::Read { .. }), "{e}");
    }
}
