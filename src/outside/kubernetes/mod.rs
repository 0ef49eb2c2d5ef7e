//! The Kubernetes API client: server-side apply, reads, lists by label and deletes in the
//! tenant namespace, authenticated with an EKS token the client pulls itself.
//!
//! The token is pulled, not pushed (as kube's own refresh layer does): a tower layer asks the
//! [`TokenSource`] for a header on every request, which signs a fresh token (microseconds) when
//! it has none or the one it has is near expiry. A request can therefore never leave without
//! credentials; if none can be had, the request fails before it is sent. (The layer is
//! synchronous — kube's service stack cannot be cloned into an async filter — so each method
//! first makes sure the AWS credentials are loaded, which is the only part that may do I/O.)

pub mod eks;
pub mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cells::cluster::ClusterAccess;
use crate::outside::aws::AwsCredentials;
use crate::outside::error::{FailureKind, StepError, System, chain, transport_kind};
use crate::outside::kubernetes::token::EksTokenSigner;
use crate::tenant::manifests::FIELD_MANAGER;

/// A token is re-signed when less than this is left of its 14 minutes.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(60);

/// Signs EKS tokens with the function's AWS credentials and caches the header.
pub struct TokenSource {
    signer: EksTokenSigner,
    aws_credentials: AwsCredentials,
    cached: Mutex<Option<(HeaderValue, SystemTime)>>,
}

impl TokenSource {
    pub fn new(signer: EksTokenSigner, aws_credentials: AwsCredentials) -> Self {
        Self {
            signer,
            aws_credentials,
            cached: Mutex::new(None),
        }
    }

    /// Signs a new token now, whatever is cached (the per-invocation warm-up: a warm container
    /// outlives a token, and signing costs microseconds).
    pub async fn refresh(&self) -> Result<(), StepError> {
        self.sign().await.map(drop)
    }

    async fn sign(&self) -> Result<HeaderValue, StepError> {
        let creds = self.aws_credentials.current().await?;
        self.sign_with(&creds)
    }

    fn sign_with(
        &self,
        creds: &aws_credential_types::Credentials,
    ) -> Result<HeaderValue, StepError> {
        let now = SystemTime::now();
        let token = self.signer.sign(creds, now).map_err(|e| {
            StepError::new(
                System::Aws,
                "sign EKS token",
                FailureKind::Other,
                e.to_string(),
            )
        })?;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.token.expose_secret()))
            .map_err(|_| {
            StepError::new(
                System::Aws,
                "sign EKS token",
                FailureKind::Other,
                "the token is not a valid header",
            )
        })?;
        value.set_sensitive(true);
        if let Ok(mut slot) = self.cached.lock() {
            *slot = Some((value.clone(), token.expires_at));
        }
        Ok(value)
    }

    /// Loads the AWS credentials if they are not cached (the only step that may do I/O).
    pub async fn ready(&self) -> Result<(), StepError> {
        self.aws_credentials.current().await.map(drop)
    }

    /// The `Authorization` header for the next request: the cached token while it has more
    /// than a minute left, else a fresh one. Fails (closed) when there are no credentials.
    pub fn header(&self) -> Result<HeaderValue, StepError> {
        let cached = self.cached.lock().ok().and_then(|slot| slot.clone());
        match cached {
            Some((value, expires)) if expires > SystemTime::now() + REFRESH_BEFORE_EXPIRY => {
                Ok(value)
            }
            _ => {
                let creds = self.aws_credentials.cached().ok_or_else(|| {
                    StepError::new(
                        System::Aws,
                        "sign EKS token",
                        FailureKind::Unauthorized,
                        "no AWS credentials loaded",
                    )
                })?;
                self.sign_with(&creds)
            }
        }
    }
}

/// What the client reads and writes: namespaced API objects of a kind known at compile time
/// (Secrets, Deployments).
pub trait TenantObject:
    kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + DeserializeOwned
    + Clone
    + std::fmt::Debug
{
}

impl<K> TenantObject for K where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
{
}

/// A Kubernetes client for one namespace.
#[derive(Clone)]
pub struct Kubernetes {
    client: kube::Client,
    namespace: String,
    tokens: Arc<TokenSource>,
    /// A cell's own cluster (named in every error); `None` for the default cluster.
    cluster: Option<String>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    /// Builds the client once. kube's defaults would blow the 5 s budget (a retry layer, a 30 s
    /// connect timeout, no read timeout): all are replaced here; our own retry of transient
    /// failures (`crate::outside::retry`) runs inside the caller's deadline instead.
    pub fn new(
        access: &ClusterAccess,
        namespace: &str,
        tokens: TokenSource,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, StepError> {
        let fail = |detail: String| {
            StepError::new(
                System::Kubernetes,
                "build client",
                FailureKind::Other,
                detail,
            )
        };
        let uri: http::Uri = access
            .endpoint
            .as_str()
            .parse()
            .map_err(|e| fail(format!("endpoint: {e}")))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = namespace.to_owned();
        config.root_cert = Some(access.ca_der().map_err(|e| fail(format!("CA: {e}")))?);
        config.connect_timeout = Some(connect_timeout);
        config.read_timeout = Some(request_timeout);
        config.write_timeout = Some(request_timeout);
        config.default_retry = false;

        let tokens = Arc::new(tokens);
        let source = tokens.clone();
        let auth =
            tower::filter::FilterLayer::new(move |mut req: http::Request<kube::client::Body>| {
                let value = source.header()?;
                req.headers_mut().insert(http::header::AUTHORIZATION, value);
                Ok::<_, StepError>(req)
            });
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| fail(chain(&e)))?
            .with_layer(&auth)
            .build();
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
            tokens,
            cluster: None,
        })
    }

    /// This client is a cell's own cluster's: its errors name the cluster.
    pub fn in_cluster(mut self, name: &str) -> Self {
        self.cluster = Some(name.to_owned());
        self
    }

    fn error(&self, action: &str, e: kube::Error) -> StepError {
        match &self.cluster {
            None => kube_error(action, e),
            Some(c) => kube_error(&format!("{action} in cluster '{c}'"), e),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    fn api<K: TenantObject>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side apply with the one field manager, forcing ownership of the fields we set.
    /// The answer (which for a Secret echoes its data) is dropped unread.
    pub async fn apply<K>(&self, object: &K) -> Result<(), StepError>
    where
        K: TenantObject + Serialize,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&Default::default()).to_lowercase();
        let action = format!("apply {kind} '{}/{name}'", self.namespace);
        self.tokens.ready().await?;
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map(drop)
            .map_err(|e| self.error(&action, e))
    }

    /// An object by name, or `None` when it does not exist.
    pub async fn get<K>(&self, name: &str) -> Result<Option<K>, StepError>
    where
        K: TenantObject,
    {
        let kind = K::kind(&Default::default()).to_lowercase();
        self.tokens.ready().await?;
        self.api::<K>()
            .get_opt(name)
            .await
            .map_err(|e| self.error(&format!("read {kind} '{name}'"), e))
    }

    /// Metadata of every object of this kind carrying `label` (bulk: one call per page).
    pub async fn list_metadata<K>(
        &self,
        label: &str,
    ) -> Result<Vec<PartialObjectMeta<K>>, StepError>
    where
        K: TenantObject,
    {
        let kind = K::kind(&Default::default()).to_lowercase();
        let action = format!("list {kind}s labelled {label}");
        self.tokens.ready().await?;
        let api = self.api::<K>();
        let mut out = Vec::new();
        let mut params = ListParams::default().labels(label).limit(500);
        loop {
            let page = api
                .list_metadata(&params)
                .await
                .map_err(|e| self.error(&action, e))?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            out.extend(page.items);
            match next {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    /// Full objects of this kind carrying `label`.
    pub async fn list<K>(&self, label: &str) -> Result<Vec<K>, StepError>
    where
        K: TenantObject,
    {
        let kind = K::kind(&Default::default()).to_lowercase();
        self.tokens.ready().await?;
        self.api::<K>()
            .list(&ListParams::default().labels(label))
            .await
            .map(|l| l.items)
            .map_err(|e| self.error(&format!("list {kind}s labelled {label}"), e))
    }

    /// Deletes an object; one that is already gone counts as deleted (`Ok(false)`).
    pub async fn delete<K>(&self, name: &str) -> Result<bool, StepError>
    where
        K: TenantObject,
    {
        let kind = K::kind(&Default::default()).to_lowercase();
        self.tokens.ready().await?;
        match self
            .api::<K>()
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.error(&format!("delete {kind} '{name}'"), e)),
        }
    }
}

pub(crate) fn kube_error(action: &str, e: kube::Error) -> StepError {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            let retry_after = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            StepError::from_status(System::Kubernetes, action, status.code, &message)
                .with_retry_after(retry_after)
        }
        kube::Error::Service(inner) => match inner.downcast::<StepError>() {
            // The auth layer could not get a token: that failure, not an anonymous request.
            Ok(step) => *step,
            Err(other) => {
                let kind = transport_kind(other.as_ref());
                StepError::new(System::Kubernetes, action, kind, chain(other.as_ref()))
            }
        },
        other => {
            let kind = transport_kind(&other);
            StepError::new(System::Kubernetes, action, kind, chain(&other))
        }
    }
}
