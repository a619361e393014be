//! Suppressed addresses: hard bounces and manual entries get no email at all.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::{Result, Store, StoreError, now, on_pool, on_writer};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Suppression {
    pub email: String,
    pub reason: String,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Suppresses an address. A manual entry replaces a bounce; a bounce never replaces a manual
    /// entry (it would let a new opt-in lift what an operator decided).
    pub async fn suppress(
        &self,
        email_key: &str,
        email: &str,
        reason: &'static str,
        detail: Option<&str>,
    ) -> Result<()> {
        on_writer!(self, |pool, _d| {
            sqlx::query(
                "INSERT INTO suppressions (email_key, email, reason, detail, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (email_key) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,
                        created_at = excluded.created_at
                 WHERE suppressions.reason = 'bounce'",
            )
            .bind(email_key)
            .bind(email)
            .bind(reason)
            .bind(detail)
            .bind(now())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn suppression(&self, email_key: &str) -> Result<Suppression> {
        on_pool!(self, |pool, _d| {
            sqlx::query_as::<_, Suppression>(
                "SELECT email, reason, detail, created_at FROM suppressions WHERE email_key = $1",
            )
            .bind(email_key)
            .fetch_optional(pool)
            .await?
            .ok_or(StoreError::NotFound)
        })
    }

    /// Which of `keys` (address keys or erasure hashes) are suppressed, in one read.
    pub async fn suppressed_among(&self, keys: &[&str]) -> Result<std::collections::HashSet<String>> {
        if keys.is_empty() {
            return Ok(Default::default());
        }
        let keys = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
        on_pool!(self, |pool, d| {
            let sql = format!(
                "SELECT email_key FROM suppressions WHERE email_key IN (SELECT t.value FROM {})",
                (d.json_values)("$1")
            );
            let found: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(keys)
                .fetch_all(pool)
                .await?;
            Ok(found.into_iter().collect())
        })
    }

    pub async fn unsuppress(&self, email_key: &str) -> Result<()> {
        on_writer!(self, |pool, _d| {
            let deleted = sqlx::query("DELETE FROM suppressions WHERE email_key = $1")
                .bind(email_key)
                .execute(pool)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }

    /// Whether mail of this kind may go to `recipient`. A confirmation email still goes to a
    /// bounced address (the reader signed up again: the mailbox may work now), never to a
    /// manually suppressed one.
    pub async fn may_send_to(&self, recipient: &str, is_confirmation: bool) -> Result<bool> {
        let key = recipient.to_lowercase();
        on_pool!(self, |pool, _d| {
            let reason: Option<String> = sqlx::query_scalar("SELECT reason FROM suppressions WHERE email_key = $1")
                .bind(&key)
                .fetch_optional(pool)
                .await?;
            Ok(match reason.as_deref() {
                None => true,
                Some("bounce") => is_confirmation,
                Some(_) => false,
            })
        })
    }
}
