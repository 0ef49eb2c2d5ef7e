//! EKS `DescribeCluster`: the API server's endpoint and CA, once per cold start, when they are
//! not given as settings.

use crate::cells::cluster::{ClusterAccess, ClusterName};
use crate::outside::aws::sdk_error;
use crate::outside::error::{FailureKind, StepError, System};

pub async fn describe_cluster(
    client: &aws_sdk_eks::Client,
    name: &ClusterName,
) -> Result<ClusterAccess, StepError> {
    let action = format!("describe cluster '{name}'");
    let out = client
        .describe_cluster()
        .name(name.as_str())
        .send()
        .await
        .map_err(|e| sdk_error(System::Eks, &action, e))?;
    let bad = |problem: &str| {
        StepError::new(
            System::Eks,
            action.clone(),
            FailureKind::BadResponse,
            problem.to_owned(),
        )
    };
    let cluster = out
        .cluster()
        .ok_or_else(|| bad("no cluster in the answer"))?;
    let endpoint = cluster
        .endpoint()
        .ok_or_else(|| bad("the cluster has no endpoint yet (is it still creating?)"))?;
    let ca_data = cluster
        .certificate_authority()
        .and_then(|c| c.data())
        .ok_or_else(|| bad("the cluster has no certificateAuthority.data"))?;
    ClusterAccess::parse(endpoint, ca_data).map_err(|e| bad(&e))
}
