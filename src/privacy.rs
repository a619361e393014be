//! A reader's data on request (GDPR Article 15) and its erasure (Article 17), for the API and the
//! command line alike.

use std::path::Path;

use crate::config::Config;
use crate::domain::{EmailAddress, keyed_hex};
use crate::store::{ImportRow, Store, StoreError, SubscriberData};

/// The keyed hash an erasure leaves of an address (HMAC-SHA256 under the installation's secret):
/// it names no address, and is the same for the same address as long as the secret is.
pub fn erased_key(secret: &[u8], email_key: &str) -> String {
    format!(
        "erased:{}",
        keyed_hex(secret, format!("erasure:{email_key}").as_bytes())
    )
}

/// Everything stored about `email`, or `None` when nothing is.
pub async fn data_of(store: &Store, email: &EmailAddress) -> Result<Option<SubscriberData>, StoreError> {
    store.subscriber_data(&email.key()).await
}

/// Erases `email` everywhere: every table, and the `.eml` files the file transport wrote to it
/// (under `outbox_dir`). `false`: nothing was stored about it.
pub async fn erase(store: &Store, secret: &[u8], outbox_dir: &Path, email: &EmailAddress) -> Result<bool, StoreError> {
    let key = email.key();
    let Some(erased) = store.erase(&key, &erased_key(secret, &key)).await? else {
        return Ok(false);
    };
    for (id, kind) in &erased.messages {
        // The names the sender gives them (`delivery::Worker::process`).
        let name = format!("{id:010}-{kind}");
        for file in [format!("{name}.eml"), format!(".{name}.eml.tmp")] {
            match std::fs::remove_file(outbox_dir.join(&file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %file, error = %e, "cannot remove an erased reader's email file"),
            }
        }
    }
    // On SQLite the deleted rows' bytes are zeroed in the file (secure_delete), but the WAL still
    // holds the pages as they were until a checkpoint starts it over.
    store.checkpoint_truncate().await?;
    Ok(true)
}

/// What an import must not do after an erasure: add an address back to a list it had left, or
/// add one that is suppressed. Checks only when some address was ever erased.
pub struct ErasureFilter {
    secret: Option<Vec<u8>>,
}

impl ErasureFilter {
    pub async fn load(store: &Store, config: &Config) -> Result<Self, StoreError> {
        if !store.any_erasure().await? {
            return Ok(Self { secret: None });
        }
        let secret = match crate::app::load_secret(store, config).await {
            Ok(secret) => secret,
            Err(crate::app::StartError::Database(e)) => return Err(e),
            Err(e) => return Err(StoreError::Batch(e.to_string())),
        };
        Ok(Self { secret: Some(secret) })
    }

    /// The rows of `rows` that may be imported into `list_id`.
    pub async fn keep(&self, store: &Store, list_id: i64, rows: Vec<ImportRow>) -> Result<Vec<ImportRow>, StoreError> {
        let Some(secret) = &self.secret else {
            return Ok(rows);
        };
        let hashes: Vec<String> = rows.iter().map(|r| erased_key(secret, &r.email.key())).collect();
        let records = store.erasure_records(&hashes).await?;
        if records.is_empty() {
            return Ok(rows);
        }
        Ok(rows
            .into_iter()
            .zip(hashes)
            .filter(|(_, hash)| {
                records
                    .get(hash)
                    .is_none_or(|r| !r.suppressed && !r.left_lists.contains(&list_id))
            })
            .map(|(row, _)| row)
            .collect())
    }
}
