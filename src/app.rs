//! Cold start: everything that is done once per container, never per invocation.

use std::time::Duration;

use anyhow::Context as _;

use crate::aws::{CredentialsSource, load_config, region};
use crate::eks_token::EksTokenSigner;
use crate::kubernetes::Kubernetes;
use crate::provision::Provisioner;
use crate::rabbitmq::RabbitMq;
use crate::secrets_manager::SecretsManager;
use crate::settings::Settings;
use crate::template::BackendTemplate;

pub struct App {
    pub settings: Settings,
    pub provisioner: Provisioner,
}

impl App {
    /// Loads settings, the template, the admin secret and (if not configured) the cluster's
    /// endpoint and CA; builds every client. Outside calls run concurrently and are each
    /// bounded by the budget, because Cognito's 5 s include a cold start.
    pub async fn init(settings: Settings) -> anyhow::Result<Self> {
        let aws = load_config(settings.connect_timeout, settings.budget).await;
        Self::init_with(settings, &aws).await
    }

    /// As [`App::init`], with an AWS config of the caller's (tests point it elsewhere).
    pub async fn init_with(
        settings: Settings,
        aws: &aws_config::SdkConfig,
    ) -> anyhow::Result<Self> {
        let aws = aws.clone();
        let template = BackendTemplate::load(settings.template_path.as_deref())?;
        let region = region(&aws)?;
        let signer =
            EksTokenSigner::new(&settings.cluster_name, &region).context("EKS token signer")?;
        let credentials = CredentialsSource::new(&aws)?;
        let secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws));

        let admin = secrets.admin_secret(&settings.admin_secret_id);
        let access = async {
            match &settings.cluster_access {
                Some(access) => Ok(access.clone()),
                None => {
                    crate::eks::describe_cluster(
                        &aws_sdk_eks::Client::new(&aws),
                        &settings.cluster_name,
                    )
                    .await
                }
            }
        };
        let (admin, access) = tokio::join!(Box::pin(admin), Box::pin(access));
        let admin = admin?;
        let access = access?;

        // Per-request timeouts are a backstop for calls made outside the orchestrator (tenantctl
        // status): inside it, the deadline fires first and reports which steps were unfinished.
        let request_timeout = settings.budget + Duration::from_millis(500);
        let rabbitmq = RabbitMq::new(
            settings.management_url.clone(),
            admin.credential,
            settings.connect_timeout,
            request_timeout,
        )?;
        let kubernetes = Kubernetes::new(
            &access,
            &settings.namespace,
            settings.connect_timeout,
            request_timeout,
        )?;
        tracing::info!(
            cluster = %settings.cluster_name,
            region = %region,
            endpoint = %access.endpoint,
            namespace = %settings.namespace,
            "cold start complete"
        );
        let provisioner = Provisioner {
            rabbitmq,
            secrets,
            kubernetes,
            signer,
            credentials,
            password_key: admin.password_key,
            amqp_base: settings.amqp_url.clone(),
            secret_prefix: settings.secret_prefix.clone(),
            template,
        };
        Ok(Self {
            settings,
            provisioner,
        })
    }

    pub fn budget(&self) -> Duration {
        self.settings.budget
    }
}
