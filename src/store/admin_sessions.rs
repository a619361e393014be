//! The dashboard's sessions, stored by the hash of their id.

use chrono::{DateTime, Utc};

use super::{Result, Store, on_pool, on_writer};

/// A live session: the admin token it was opened with (as its digest) and its CSRF token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminSession {
    pub token_digest: String,
    pub csrf: String,
}

impl Store {
    /// Records a new session; expired ones are deleted on the way.
    pub async fn create_admin_session(
        &self,
        id_hash: &str,
        token_digest: &str,
        csrf: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO admin_sessions (id_hash, token_digest, csrf, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id_hash)
            .bind(token_digest)
            .bind(csrf)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The session of `id_hash`, if it has not expired.
    pub async fn admin_session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<AdminSession>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, AdminSession>(
                "SELECT token_digest, csrf FROM admin_sessions WHERE id_hash = $1 AND expires_at > $2",
            )
            .bind(id_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?)
        })
    }

    pub async fn delete_admin_session(&self, id_hash: &str) -> Result<()> {
        on_writer!(self, |pool, _d| {
            sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
                .bind(id_hash)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
