//! Bulk import of confirmed subscribers: multi-row statements, one transaction per chunk.

use sqlx::QueryBuilder;

use super::{Result, Store, now, on_writer};
use crate::domain::EmailAddress;

/// Rows per statement: 5 bound values each stays far below SQLite's 32,766-variable limit.
const ROWS_PER_STATEMENT: usize = 1_000;

#[derive(Debug, Clone)]
pub struct ImportRow {
    pub line: u64,
    pub email: EmailAddress,
    pub name: Option<String>,
}

impl Store {
    /// Imports `rows` into a list as confirmed, with `consent` as their consent record, in one
    /// write transaction. New and pending subscriptions become confirmed; unsubscribed ones and
    /// suppressed addresses are left alone. Returns how many subscriptions were imported.
    pub async fn import_confirmed(&self, list_id: i64, rows: &[ImportRow], consent: &str) -> Result<u64> {
        if let Store::Postgres(db) = self {
            return import_confirmed_postgres(&db.pool, list_id, rows, consent).await;
        }
        let now = now();
        let mut imported = 0;
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut insert =
                    QueryBuilder::new("INSERT INTO subscribers (email, email_key, name, created_at, link_key) ");
                insert.push_values(chunk, |mut b, row| {
                    b.push_bind(row.email.as_str())
                        .push_bind(row.email.key())
                        .push_bind(row.name.as_deref())
                        .push_bind(now)
                        .push(d.random_key);
                });
                insert.push(" ON CONFLICT (email_key) DO NOTHING");
                insert.build().execute(&mut *tx).await?;

                // Subscriber ids of this chunk, minus suppressed addresses.
                let mut select = QueryBuilder::new(
                    "SELECT s.id FROM subscribers s WHERE NOT EXISTS
                     (SELECT 1 FROM suppressions x WHERE x.email_key = s.email_key) AND s.email_key IN (",
                );
                let mut keys = select.separated(", ");
                for row in chunk {
                    keys.push_bind(row.email.key());
                }
                select.push(")");
                let ids: Vec<i64> = select.build_query_scalar().fetch_all(&mut *tx).await?;
                if ids.is_empty() {
                    continue;
                }

                let mut subscribe = QueryBuilder::new(
                    "INSERT INTO subscriptions (list_id, subscriber_id, status, created_at, consent_at, consent_note,
                                                confirmed_at, changed_at, status_at_hour_start, link_key) ",
                );
                subscribe.push_values(&ids, |mut b, id| {
                    b.push_bind(list_id)
                        .push_bind(*id)
                        .push_bind("confirmed")
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(consent)
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind("none")
                        .push(d.random_key);
                });
                subscribe.push(format!(
                    " ON CONFLICT (list_id, subscriber_id) DO UPDATE SET status = 'confirmed',
                      confirmed_at = excluded.confirmed_at, consent_note = excluded.consent_note, {}
                      WHERE subscriptions.status = 'pending'",
                    d.track_change("subscriptions.", "excluded.changed_at")
                ));
                imported += subscribe.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(imported)
    }
}

/// PostgreSQL binds whole columns as arrays (`UNNEST`, `= ANY`): one parameter per column instead
/// of one per value, which PostgreSQL plans ten times faster than a 1,000-value list.
async fn import_confirmed_postgres(
    pool: &sqlx::PgPool,
    list_id: i64,
    rows: &[ImportRow],
    consent: &str,
) -> Result<u64> {
    let now = now();
    let emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
    let keys: Vec<String> = rows.iter().map(|r| r.email.key()).collect();
    let names: Vec<Option<&str>> = rows.iter().map(|r| r.name.as_deref()).collect();
    let random = super::POSTGRES.random_key;
    let mut tx = super::begin(pool, "BEGIN").await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO subscribers (email, email_key, name, created_at, link_key)
         SELECT e, k, n, $4, {random} FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(e, k, n)
         -- Keys in one order: two chunks written at once that share an address wait for each
         -- other instead of deadlocking.
         ORDER BY k
         ON CONFLICT (email_key) DO NOTHING"
    )))
    .bind(&emails)
    .bind(&keys)
    .bind(&names)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let imported = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO subscriptions (list_id, subscriber_id, status, created_at, consent_at, consent_note, confirmed_at,
                                    changed_at, status_at_hour_start, link_key)
         SELECT $1, s.id, 'confirmed', $3, $3, $4, $3, $3, 'none', {random} FROM subscribers s
         WHERE s.email_key = ANY($2)
           AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email_key = s.email_key)
         ORDER BY s.id
         ON CONFLICT (list_id, subscriber_id) DO UPDATE SET status = 'confirmed',
            confirmed_at = excluded.confirmed_at, consent_note = excluded.consent_note, {}
         WHERE subscriptions.status = 'pending'",
        super::POSTGRES.track_change("subscriptions.", "excluded.changed_at")
    )))
    .bind(list_id)
    .bind(&keys)
    .bind(now)
    .bind(consent)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(imported)
}
