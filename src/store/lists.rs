//! Newsletter lists.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, Store, StoreError, conflict_on_unique, now, on_pool, on_writer};
use crate::domain::ListSlug;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct List {
    #[serde(skip)]
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, sqlx::FromRow, PartialEq, Eq, utoipa::ToSchema)]
pub struct ListCounts {
    pub pending: i64,
    pub confirmed: i64,
    pub unsubscribed: i64,
}

#[derive(Debug, Clone)]
pub struct NewList {
    pub slug: ListSlug,
    pub name: String,
    pub description: String,
}

/// What `PATCH /api/lists/{slug}` changes: each field left `None` stays as it is.
#[derive(Debug, Clone, Default)]
pub struct ListChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub archive: Option<bool>,
}

/// Every list, oldest first (the order they appear on the signup page).
pub(super) const ALL_LISTS: &str = "SELECT id, slug, name, description, created_at FROM lists ORDER BY id";

impl Store {
    /// Creates a list; `Conflict` when the slug is taken.
    pub async fn create_list(&self, new: &NewList) -> Result<List> {
        on_writer!(self, |pool, _d| {
            sqlx::query_as::<_, List>(
                "INSERT INTO lists (slug, name, description, created_at) VALUES ($1, $2, $3, $4)
                 RETURNING id, slug, name, description, created_at",
            )
            .bind(new.slug.as_str())
            .bind(&new.name)
            .bind(&new.description)
            .bind(now())
            .fetch_one(pool)
            .await
            .map_err(conflict_on_unique)
        })
    }

    /// Every list, oldest first (the order they appear on the signup page).
    pub async fn lists(&self) -> Result<Vec<List>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, List>(ALL_LISTS).fetch_all(pool).await?)
        })
    }

    pub async fn list_by_slug(&self, slug: &str) -> Result<List> {
        on_pool!(self, |pool, _d| {
            sqlx::query_as::<_, List>("SELECT id, slug, name, description, created_at FROM lists WHERE slug = $1")
                .bind(slug)
                .fetch_optional(pool)
                .await?
                .ok_or(StoreError::NotFound)
        })
    }

    /// Every list with its subscription counts per state (see `counts_by_list`).
    pub async fn lists_with_counts(&self) -> Result<Vec<(List, ListCounts)>> {
        let counts = self.counts_by_list(super::now()).await?;
        Ok(self
            .lists()
            .await?
            .into_iter()
            .map(|l| {
                let c = counts.get(&l.id).copied().unwrap_or_default();
                (l, c)
            })
            .collect())
    }

    /// One list's subscription counts per state.
    pub async fn list_counts(&self, list_id: i64) -> Result<ListCounts> {
        Ok(self
            .counts_by_list(super::now())
            .await?
            .get(&list_id)
            .copied()
            .unwrap_or_default())
    }

    /// Whether the list's archive of sent digests is public.
    pub async fn list_archive(&self, list_id: i64) -> Result<bool> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_scalar("SELECT archive FROM lists WHERE id = $1")
                .bind(list_id)
                .fetch_optional(pool)
                .await?
                .unwrap_or(false))
        })
    }

    /// Changes what is given of a list's name, description and archive; the list as it is now,
    /// with its archive setting.
    pub async fn update_list(&self, list_id: i64, change: &ListChange) -> Result<(List, bool)> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            list: List,
            archive: bool,
        }
        on_writer!(self, |pool, _d| {
            let row = sqlx::query_as::<_, Row>(
                "UPDATE lists SET name = COALESCE($1, name), description = COALESCE($2, description),
                        archive = COALESCE($3, archive)
                 WHERE id = $4 RETURNING id, slug, name, description, created_at, archive",
            )
            .bind(change.name.as_deref())
            .bind(change.description.as_deref())
            .bind(change.archive)
            .bind(list_id)
            .fetch_optional(pool)
            .await?
            .ok_or(StoreError::NotFound)?;
            Ok((row.list, row.archive))
        })
    }
}
