# Pinned versions of every tool the local stack and the lint/benchmark targets install.
# Sourced by the dev/ scripts.

# Kubernetes minor matches the k8s-openapi feature in Cargo.toml (v1_36); etcd is the version
# k8s.io/kubernetes@$K8S_VERSION itself requires, kubectl comes from the same release.
K8S_VERSION=v1.36.3
IAM_AUTHENTICATOR_VERSION=v0.7.2
# kwok simulates the node the tenants' pods run on (its k8s.io modules are v0.36).
KWOK_VERSION=v0.8.0

CACHE_DIR=${POST_SIGNUP_CACHE:-$HOME/.cache/post-signup}
GO_BIN_DIR=$CACHE_DIR/bin/k8s-$K8S_VERSION-iam-$IAM_AUTHENTICATOR_VERSION
KWOK_BIN_DIR=$CACHE_DIR/bin/kwok-$KWOK_VERSION
# Python tools, each set in its own virtualenv keyed by the hash of its requirements file.
STACK_REQUIREMENTS=dev/requirements-stack.txt
LINT_REQUIREMENTS=dev/requirements-lint.txt
# RabbitMQ 4.0 (with Erlang 27) from Debian trixie, in a root filesystem of its own run with
# chroot; RabbitMQ 3.10 is the host's own (bookworm). Both run in every stack.
RABBITMQ4_SUITE=trixie
RABBITMQ4_ROOTFS=$CACHE_DIR/rootfs/$RABBITMQ4_SUITE-rabbitmq
