//! `bulletin subscribers export <list> [--status S] [--output FILE]`: the same CSV as the admin
//! API's `subscribers.csv`, paged the same way, to stdout or to a file written whole or not at all.

use std::path::Path;
use std::process::ExitCode;

use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{fail, find_list};
use crate::export::{ExportStatus, csv_chunks};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("reading the subscribers failed: {0}")]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

pub(super) async fn run(store: &Store, slug: &str, status: &str, output: Option<&Path>) -> ExitCode {
    let Some(status) = ExportStatus::parse(Some(status)) else {
        return fail(format_args!("--status is one of {}", ExportStatus::CHOICES));
    };
    let list = match find_list(store, slug).await {
        Ok(list) => list,
        Err(code) => return code,
    };
    match output {
        None => {
            let mut stdout = tokio::io::stdout();
            match write_export(store, list.id, status, &mut stdout).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(format_args!("export of {} failed: {e}", list.slug)),
            }
        }
        Some(path) => match export_to_file(store, list.id, status, path).await {
            Ok(rows) => {
                println!(
                    "Exported {rows} subscribers of {} ({}) to {}.",
                    list.slug,
                    status.as_str(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(format_args!(
                "export of {} failed, {} was not written: {e}",
                list.slug,
                path.display()
            )),
        },
    }
}

/// Writes the whole export to `out`; returns the number of subscriber rows.
async fn write_export<W: AsyncWrite + Unpin>(
    store: &Store,
    list_id: i64,
    status: ExportStatus,
    out: &mut W,
) -> Result<usize, ExportError> {
    let mut chunks = std::pin::pin!(csv_chunks(store.clone(), list_id, status));
    let mut rows = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        out.write_all(&chunk.bytes).await?;
        rows += chunk.rows;
    }
    out.flush().await?;
    Ok(rows)
}

/// Writes the export to a temporary file beside `path`, then renames it to `path`: a failed
/// export leaves no partial file (and an existing `path` untouched). Like any temporary file, it
/// is readable by its owner only, which suits a file of personal data.
async fn export_to_file(store: &Store, list_id: i64, status: ExportStatus, path: &Path) -> Result<usize, ExportError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".bulletin-export-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    let mut file = tokio::fs::File::from_std(temp.as_file().try_clone()?);
    let rows = write_export(store, list_id, status, &mut file).await?;
    file.sync_all().await?;
    drop(file);
    // Dropped on error, the temporary file is removed.
    temp.persist(path).map_err(|e| e.error)?;
    Ok(rows)
}
