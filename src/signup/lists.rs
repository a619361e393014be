//! The lists, kept in memory for the signup path: every signup names lists, and reading them on
//! each request would put a query on the write path. A slug the cache does not know makes it
//! re-read at once, so a list created a moment ago (by another process, or the CLI) takes signups
//! straight away; a list created through this process's API empties it; otherwise it is re-read
//! when older than `MAX_AGE` (the one thing that can lag: a signup that names no list, on a site
//! whose second list another process created in the last `MAX_AGE`, goes to the first list).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{List, Store, StoreError};

const MAX_AGE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct ListCache {
    cached: RwLock<Option<(Instant, Arc<[List]>)>>,
    /// One re-read at a time: concurrent requests wait for it rather than repeat it.
    reloading: tokio::sync::Mutex<()>,
}

impl ListCache {
    /// Every list, from memory when the copy is fresh.
    pub async fn all(&self, store: &Store) -> Result<Arc<[List]>, StoreError> {
        match self.fresh(MAX_AGE) {
            Some(lists) => Ok(lists),
            None => self.reload(store, Instant::now()).await,
        }
    }

    /// Every list, re-read unless someone re-read them after `seen` (the moment the caller found
    /// a slug missing).
    pub async fn reload(&self, store: &Store, seen: Instant) -> Result<Arc<[List]>, StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        if let Some((loaded, lists)) = self.snapshot()
            && loaded >= seen
        {
            return Ok(lists);
        }
        let started = Instant::now();
        let lists: Arc<[List]> = store.lists().await?.into();
        if let Ok(mut cached) = self.cached.write() {
            *cached = Some((started, lists.clone()));
        }
        Ok(lists)
    }

    /// The lists named by `slugs` (trimmed); a slug not found makes the cache re-read once.
    /// Returns every list and, per slug, its list if there is one.
    pub async fn lookup(
        &self,
        store: &Store,
        slugs: &[String],
    ) -> Result<(Arc<[List]>, Vec<Option<List>>), StoreError> {
        let asked = Instant::now();
        let mut all = self.all(store).await?;
        let find = |all: &[List]| -> Vec<Option<List>> {
            slugs
                .iter()
                .map(|s| all.iter().find(|l| l.slug == s.trim()).cloned())
                .collect()
        };
        let mut found = find(&all);
        if found.iter().any(Option::is_none) {
            all = self.reload(store, asked).await?;
            found = find(&all);
        }
        Ok((all, found))
    }

    /// Drops the copy: the next request re-reads (this process just created a list).
    pub fn forget(&self) {
        if let Ok(mut cached) = self.cached.write() {
            *cached = None;
        }
    }

    fn snapshot(&self) -> Option<(Instant, Arc<[List]>)> {
        self.cached.read().ok().and_then(|c| c.clone())
    }

    fn fresh(&self, max_age: Duration) -> Option<Arc<[List]>> {
        self.snapshot()
            .filter(|(loaded, _)| loaded.elapsed() < max_age)
            .map(|(_, lists)| lists)
    }
}
