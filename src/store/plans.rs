//! The plans SQLite makes for the queries a busy dashboard or a scrape runs again and again.
//! SQLite plans without statistics (nothing runs ANALYZE on it), and then may prefer reading a
//! whole index in order over a search that needs a sort: invisible in a test's small database,
//! a cost that grows with every subscription and delivery ever made in production.

#[cfg(test)]
mod tests {
    use crate::store::{Store, counts, outbox};

    /// The plan's lines, as `EXPLAIN QUERY PLAN` gives them.
    async fn plan(store: &Store, sql: &str) -> Vec<String> {
        let Store::Sqlite(db) = store else {
            unreachable!("a SQLite store")
        };
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("2026-12-07T15:00:00Z")
                .fetch_all(&db.read)
                .await
                .expect("a plan");
        rows.into_iter().map(|(.., detail)| detail).collect()
    }

    #[tokio::test]
    async fn counts_and_queue_depths_search_and_never_read_a_whole_table() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("plans.db").display());
        let store = Store::connect(&url).await.expect("a database");
        store.migrate().await.expect("migrated");
        for (name, sql) in [
            ("list counts' changes", counts::CHANGES),
            ("queue depths", outbox::QUEUE_DEPTHS),
        ] {
            let plan = plan(&store, sql).await;
            for line in &plan {
                // A scan is fine only of a partial index that holds the queued rows alone.
                let whole = line.starts_with("SCAN ") && !line.contains("_ready");
                assert!(!whole, "{name} reads a whole table or index: {line} (plan: {plan:?})");
            }
        }
        let changes = plan(&store, counts::CHANGES).await;
        assert!(
            changes
                .iter()
                .any(|l| l.contains("COVERING INDEX subscriptions_changed")),
            "the changes are read from the index alone: {changes:?}"
        );
    }
}
