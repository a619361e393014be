//! Small key/value settings shared by every process on the database.

use super::{Result, Store, on_writer};

impl Store {
    /// Stores `value` under `key` unless a value is there already, then returns the stored value.
    /// Two processes starting together therefore agree on one value.
    pub async fn setting_get_or_insert(&self, key: &str, value: &str) -> Result<String> {
        on_writer!(self, |pool, _d| {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(pool)
                .await?;
            let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await?;
            Ok(stored)
        })
    }
}
