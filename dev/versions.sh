# Pinned versions of every tool the local stack installs. Sourced by the dev/ scripts.
# Kubernetes minor matches the k8s-openapi feature in Cargo.toml (v1_36).
K8S_VERSION=v1.36.3
# etcd comes from the version k8s.io/kubernetes@$K8S_VERSION itself requires.
IAM_AUTHENTICATOR_VERSION=v0.7.2
MOTO_VERSION=5.1.16
CFN_LINT_VERSION=1.40.3
SAM_CLI_VERSION=1.145.0
BOTOCORE_AWSCLI_VERSION=1.42.50
CARGO_LAMBDA_VERSION=1.8.6
CACHE_DIR=${POST_SIGNUP_CACHE:-$HOME/.cache/post-signup}
GO_BIN_DIR=$CACHE_DIR/bin/k8s-$K8S_VERSION-iam-$IAM_AUTHENTICATOR_VERSION
