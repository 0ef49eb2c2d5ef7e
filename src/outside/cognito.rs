//! The user pool, as the reconciler sees it: every user, with their `sub` and status.
//! `ListUsers` returns at most 60 users a page; a pool of 100,000 users is ~1,700 calls.

use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::types::UserStatusType;
use serde::Serialize;

use tokio::time::Instant;

use crate::outside::aws::sdk_error;
use crate::outside::error::{StepError, System};
use crate::tenant::TenantId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUser {
    pub username: String,
    /// `None` only for a malformed user record; Cognito gives every user a `sub`.
    pub sub: Option<String>,
    pub status: String,
    pub enabled: bool,
}

impl PoolUser {
    /// Confirmed users need a tenant — admin-created users who set their password included
    /// (they never fire the PostConfirmation trigger). `EXTERNAL_PROVIDER` users are confirmed
    /// by their identity provider.
    pub fn needs_tenant(&self) -> bool {
        self.status == UserStatusType::Confirmed.as_str()
            || self.status == UserStatusType::ExternalProvider.as_str()
    }
}

#[derive(Debug, Clone)]
pub struct UserPool {
    client: Client,
    id: String,
}

impl UserPool {
    pub fn new(client: Client, id: &str) -> Self {
        Self {
            client,
            id: id.to_owned(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every user of the pool, page by page; `on_page` hears the running count (progress).
    /// Each page is retried on throttling and other transient failures until `deadline`: one
    /// throttled page of thousands must not end the run.
    pub async fn users(
        &self,
        deadline: Instant,
        mut on_page: impl FnMut(usize),
    ) -> Result<Vec<PoolUser>, StepError> {
        let action = format!("list users of pool '{}'", self.id);
        let mut users = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (out, _) = crate::outside::retry::until("cognito.list-users", deadline, || async {
                self.client
                    .list_users()
                    .user_pool_id(&self.id)
                    .attributes_to_get("sub")
                    .limit(60)
                    .set_pagination_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| sdk_error(System::Cognito, &action, e))
            })
            .await;
            let out = out?;
            users.extend(out.users().iter().map(pool_user));
            on_page(users.len());
            match out.pagination_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(users),
            }
        }
    }

    /// The one user whose `sub` this is, asked of the pool directly (the prune's re-check).
    pub async fn find_by_sub(
        &self,
        tenant: &TenantId,
        deadline: Instant,
    ) -> Result<Option<PoolUser>, StepError> {
        let action = format!("find user {tenant} in pool '{}'", self.id);
        let filter = format!("sub = \"{}\"", tenant.as_str());
        let (out, _) = crate::outside::retry::until("cognito.find-user", deadline, || async {
            self.client
                .list_users()
                .user_pool_id(&self.id)
                .filter(&filter)
                .limit(2)
                .send()
                .await
                .map_err(|e| sdk_error(System::Cognito, &action, e))
        })
        .await;
        Ok(out?
            .users()
            .iter()
            .map(pool_user)
            .find(|u| u.sub.as_deref() == Some(tenant.as_str())))
    }
}

fn pool_user(u: &aws_sdk_cognitoidentityprovider::types::UserType) -> PoolUser {
    PoolUser {
        username: u.username().unwrap_or_default().to_owned(),
        sub: u
            .attributes()
            .iter()
            .find(|a| a.name() == "sub")
            .and_then(|a| a.value())
            .map(str::to_owned),
        status: u
            .user_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        enabled: u.enabled(),
    }
}
