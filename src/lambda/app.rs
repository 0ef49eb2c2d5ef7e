//! Cold start: everything that is done once per container, never per invocation.
//!
//! Cognito's 5 s include the cold start, and an error at init would reach the person signing up
//! with no second try. So init does only what cannot fail for outside reasons (settings, the
//! template, clients) and makes the outside calls (admin secret ∥ DescribeCluster) bounded by
//! the first invocation's deadline. If they fail or run late, the container still starts: the
//! invocation hands the tenant off, and the next invocation tries the cold-start calls again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::lambda::settings::Settings;
use crate::ops::placement::Placement;
use crate::ops::provision::Provisioner;
use crate::outside::aws::{load_config, region};
use crate::outside::broker_pool::Brokers;
use crate::outside::cluster_pool::{ClusterSettings, Clusters};
use crate::outside::registry::Registry;
use crate::outside::secrets_manager::SecretsManager;
use crate::outside::sqs::HandoffQueue;
use crate::tenant::plan::Plans;
use crate::tenant::template::BackendTemplate;

pub struct App {
    pub settings: Settings,
    pub handoff: HandoffQueue,
    /// Needs no cold-start call: the trigger records the tenant even while those are running.
    pub registry: Registry,
    /// Which cell a new tenant lives in (needs no cold-start call either).
    pub placement: Placement,
    aws: aws_config::SdkConfig,
    template: BackendTemplate,
    pub plans: Plans,
    region: String,
    provisioner: OnceCell<Provisioner>,
    /// When this container started (process start for the Lambda).
    started: Instant,
    first_invocation: AtomicBool,
    /// Every cell's broker must be reachable at start (tenantctl, tests); the Lambda's is
    /// lenient: a cell whose admin secret fails fails only its own tenants.
    strict: bool,
}

impl App {
    /// The Lambda's cold start: clients, then the outside calls bounded by the first
    /// invocation's deadline (`started` + budget − hand-off reserve). Fails only on settings
    /// or template errors, which no retry can fix.
    pub async fn init(settings: Settings, started: Instant) -> anyhow::Result<Self> {
        let aws = load_config(settings.connect_timeout, settings.budget).await;
        Self::start(settings, aws, started).await
    }

    /// As [`App::init`], with an AWS config of the caller's (tests point it elsewhere).
    pub async fn start(
        settings: Settings,
        aws: aws_config::SdkConfig,
        started: Instant,
    ) -> anyhow::Result<Self> {
        let app = Self::new(settings, aws, started)?;
        let deadline = app.work_deadline(started + app.settings.budget);
        match tokio::time::timeout_at(deadline, app.provisioner()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                error = format!("{e:#}"),
                "cold-start calls failed; the invocation will hand off and retry them"
            ),
            Err(_) => tracing::warn!(
                "cold-start calls did not finish in the first invocation's budget; the invocation will hand off"
            ),
        }
        Ok(app)
    }

    /// For tenantctl and tests: every cold-start call must succeed, or this fails with why.
    pub async fn init_with(
        settings: Settings,
        aws: &aws_config::SdkConfig,
    ) -> anyhow::Result<Self> {
        let mut app = Self::new(settings, aws.clone(), Instant::now())?;
        app.strict = true;
        app.provisioner().await?;
        Ok(app)
    }

    /// Everything that needs no outside call.
    pub fn new(
        settings: Settings,
        aws: aws_config::SdkConfig,
        started: Instant,
    ) -> anyhow::Result<Self> {
        let mut template = BackendTemplate::load(settings.template_path.as_deref())?;
        if let Some(image) = &settings.backend_image {
            template = template.with_image(image);
        }
        let plans = Plans::load(settings.plans_path.as_deref())?;
        let region = region(&aws)?;
        let handoff =
            HandoffQueue::new(aws_sdk_sqs::Client::new(&aws), &settings.handoff_queue_url);
        let registry = Registry::new(
            aws_sdk_dynamodb::Client::new(&aws),
            &settings.registry_table,
        );
        let placement = Placement::new(settings.cells.clone(), registry.clone(), plans.clone());
        Ok(Self {
            settings,
            handoff,
            registry,
            placement,
            aws,
            template,
            plans,
            region,
            provisioner: OnceCell::new(),
            started,
            first_invocation: AtomicBool::new(true),
            strict: false,
        })
    }

    /// The provisioner, built on first use (admin secret ∥ DescribeCluster ∥ entropy warm-up).
    /// A failed build is not cached: the next call tries again.
    pub async fn provisioner(&self) -> anyhow::Result<&Provisioner> {
        self.provisioner.get_or_try_init(|| self.build()).await
    }

    /// The built provisioner, to swap a client in tests.
    pub fn provisioner_mut(&mut self) -> Option<&mut Provisioner> {
        self.provisioner.get_mut()
    }

    async fn build(&self) -> anyhow::Result<Provisioner> {
        let settings = &self.settings;
        let secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&self.aws));

        // The first TLS handshake seeds aws-lc's random generator from CPU-jitter entropy (tens
        // of milliseconds of CPU, more on a fractional Lambda vCPU). Doing it here, on a
        // blocking thread while the admin secret is in flight, keeps it off the first request.
        let entropy = tokio::task::spawn_blocking(warm_up_entropy);
        // Per-request timeouts are a backstop for calls made outside the orchestrator (tenantctl
        // status): inside it, the deadline fires first and reports which steps were unfinished.
        let request_timeout = settings.budget + Duration::from_millis(500);
        let brokers = Brokers::new(
            settings.cells.clone(),
            secrets.clone(),
            settings.connect_timeout,
            request_timeout,
        );
        let admin = async {
            let (loaded, warmed) = tokio::join!(brokers.load_all(), self.placement.warm());
            if let Err(e) = warmed {
                tracing::warn!(error = %e, "cells' counters not read at start; placement reads them");
            }
            let failed: Vec<_> = loaded
                .into_iter()
                .filter_map(|(c, r)| r.err().map(|e| (c, e)))
                .collect();
            let all_failed = failed.len() == settings.cells.all().len();
            match failed.into_iter().next() {
                Some((cell, e)) if self.strict || all_failed => {
                    Err(anyhow::Error::new(e).context(format!("cell '{cell}'")))
                }
                Some((cell, e)) => {
                    tracing::warn!(cell, error = %e, "a cell's broker is not ready; its tenants are handed off until it is");
                    Ok(())
                }
                None => Ok(()),
            }
        };
        let clusters = Clusters::new(
            &settings.cluster_name,
            settings.cluster_access.clone(),
            settings.cells.clone(),
            ClusterSettings {
                aws: &self.aws,
                region: &self.region,
                namespace: &settings.namespace,
                connect_timeout: settings.connect_timeout,
                request_timeout,
            },
        )
        .context("clusters")?;
        // The default cluster must answer DescribeCluster (when asked); a cell's own cluster
        // that does not fails only its own tenants (tenantctl and tests: every one must).
        let access = async {
            let loaded = clusters.load_all().await;
            for (name, result) in loaded {
                match result {
                    Err(e) if self.strict || name == clusters.default_name() => {
                        return Err(anyhow::Error::new(e).context(format!("cluster '{name}'")));
                    }
                    Err(e) => {
                        tracing::warn!(cluster = name, error = %e, "a cell's cluster is not ready; its tenants are handed off until it is");
                    }
                    Ok(()) => {}
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        let (admin, access, _) = tokio::join!(Box::pin(admin), Box::pin(access), entropy);
        admin?;
        access?;
        tracing::info!(
            cluster = %settings.cluster_name,
            region = %self.region,
            namespace = %settings.namespace,
            "cold-start calls complete"
        );
        Ok(Provisioner {
            brokers,
            placement: self.placement.clone(),
            secrets,
            clusters,
            secret_prefix: settings.secret_prefix.clone(),
            template: self.template.clone(),
            plans: self.plans.clone(),
            registry: self.registry.clone(),
        })
    }

    pub fn aws_config(&self) -> aws_config::SdkConfig {
        self.aws.clone()
    }

    pub fn budget(&self) -> Duration {
        self.settings.budget
    }

    /// Where this invocation's budget counts from: the container's start for the first one
    /// (Cognito's 5 s include the cold start), the handler's start after that.
    pub fn invocation_start(&self) -> Instant {
        self.begin().0
    }

    /// As [`App::invocation_start`], also saying whether this is the container's first
    /// invocation (a cold start).
    pub fn begin(&self) -> (Instant, bool) {
        if self.first_invocation.swap(false, Ordering::SeqCst) {
            (self.started, true)
        } else {
            (Instant::now(), false)
        }
    }

    /// Counts the first invocation's budget from `started` instead of the container's start
    /// (benchmarks: a cold start run earlier, its duration kept, before a simultaneous burst).
    pub fn count_cold_start_from(&mut self, started: Instant) {
        self.started = started;
    }

    /// The deadline for provisioning itself: the hand-off reserve is kept back.
    pub fn work_deadline(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.settings.handoff_reserve)
            .unwrap_or(deadline)
    }
}

fn warm_up_entropy() {
    let mut buf = [0u8; 32];
    let _ = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut buf);
}
