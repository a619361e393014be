//! Importing subscribers from CSV (`email` required, `name` optional): every row validated like a
//! signup; a file with invalid rows imports nothing unless told to skip them. The file is read
//! twice (validate, then import) and streamed both times, so memory does not grow with its size.

use std::path::Path;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::domain::EmailAddress;
use crate::store::{ImportRow, List, RequestOrigin, SignupOutcome, Store, StoreError, SubscriptionStatus};

/// Rows per write transaction of a confirmed import.
const CHUNK: usize = 5_000;
/// Errors listed in a report (all are counted).
const MAX_LISTED_ERRORS: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Import as confirmed, with `consent` as the consent record; otherwise each new address
    /// gets a double opt-in email.
    pub confirmed: bool,
    pub consent: Option<String>,
    pub skip_invalid: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// Subscriptions created (or, for a confirmed import, pending ones confirmed).
    pub imported: u64,
    /// Valid rows left alone: already subscribed, unsubscribed, or suppressed.
    pub skipped: u64,
    pub invalid: u64,
    pub errors: Vec<RowError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Unreadable(String),
    #[error("A confirmed import needs a consent record: say where consent was given.")]
    ConsentRequired,
    #[error("{} of {} rows are invalid: nothing was imported (skip them to import the rest).", .0.invalid, .0.rows)]
    InvalidRows(ImportReport),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Columns {
    email: usize,
    name: Option<usize>,
}

fn open<R: std::io::Read>(input: R) -> Result<(csv::Reader<R>, Columns), ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ImportError::Unreadable(format!("cannot read the CSV header: {e}")))?;
    let find = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let email = find("email").ok_or_else(|| {
        ImportError::Unreadable("the CSV file needs a header row with an `email` column (and optionally `name`)".into())
    })?;
    let name = find("name");
    Ok((reader, Columns { email, name }))
}

/// Reads every record, calling `each` with its line and the parsed row (or the row's error).
fn read_rows(path: &Path, each: impl FnMut(u64, Result<ImportRow, String>) -> bool) -> Result<(), ImportError> {
    let file =
        std::fs::File::open(path).map_err(|e| ImportError::Unreadable(format!("cannot read the CSV file: {e}")))?;
    read_rows_from(std::io::BufReader::new(file), each)
}

/// As `read_rows`, from any reader (the fuzz target's bytes).
#[doc(hidden)]
pub fn read_rows_from<R: std::io::Read>(
    input: R,
    mut each: impl FnMut(u64, Result<ImportRow, String>) -> bool,
) -> Result<(), ImportError> {
    let (mut reader, columns) = open(input)?;
    // Byte records, decoded here: after a row that is not UTF-8, csv's string records keep the
    // failed row's position (found by fuzzing), so every later row would name the line before.
    let mut bytes = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut bytes) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, csv::Position::line);
                if !each(line, Err(format!("unreadable row: {e}"))) {
                    return Ok(());
                }
                continue;
            }
        }
        let line = bytes.position().map_or(line, csv::Position::line);
        let record = match csv::StringRecord::from_byte_record(std::mem::take(&mut bytes)) {
            Ok(record) => record,
            Err(e) => {
                if !each(line, Err(format!("unreadable row: line {line}: {}", e.utf8_error()))) {
                    return Ok(());
                }
                continue;
            }
        };
        let row = match record.get(columns.email).map(EmailAddress::parse) {
            None => Err("no email".to_owned()),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(email)) => {
                let name = columns
                    .name
                    .and_then(|i| record.get(i))
                    .map(|n| n.chars().filter(|c| !c.is_control()).take(200).collect::<String>())
                    .filter(|n| !n.is_empty());
                Ok(ImportRow { line, email, name })
            }
        };
        bytes = record.into_byte_record();
        if !each(line, row) {
            return Ok(());
        }
    }
}

/// Validates the whole file first: counts rows and collects errors.
async fn validate(path: &Path) -> Result<ImportReport, ImportError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut report = ImportReport::default();
        read_rows(&path, |line, row| {
            report.rows += 1;
            if let Err(message) = row {
                report.invalid += 1;
                if report.errors.len() < MAX_LISTED_ERRORS {
                    report.errors.push(RowError { line, message });
                }
            }
            true
        })?;
        Ok(report)
    })
    .await
    .map_err(|e| ImportError::Unreadable(format!("import aborted: {e}")))?
}

pub async fn import_file(
    store: &Store,
    config: &Config,
    list: &List,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    // A consent record is one line of text; PostgreSQL refuses NUL in text.
    let consent: Option<String> = options
        .consent
        .as_deref()
        .map(|c| c.chars().filter(|c| !c.is_control()).take(500).collect::<String>())
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let consent = consent.as_deref();
    if options.confirmed && consent.is_none() {
        return Err(ImportError::ConsentRequired);
    }
    let mut report = validate(path).await?;
    if report.invalid > 0 && !options.skip_invalid {
        return Err(ImportError::InvalidRows(report));
    }

    // Second pass: a blocking reader feeds chunks of valid rows to the database.
    let (tx, mut rx) = mpsc::channel::<Vec<ImportRow>>(2);
    let reader_path = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK);
        read_rows(&reader_path, |_, row| {
            if let Ok(row) = row {
                chunk.push(row);
                if chunk.len() == CHUNK {
                    return tx
                        .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                        .is_ok();
                }
            }
            true
        })?;
        if !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
        Ok::<_, ImportError>(())
    });
    let valid = report.rows - report.invalid;
    // Confirmed chunks are independent transactions: on PostgreSQL two are written at once, each
    // on its own connection (the server's work, on both cores, is most of an import's time).
    let in_flight_max = match store {
        Store::Sqlite(_) => 1,
        Store::Postgres(_) => 2,
    };
    let mut in_flight = std::collections::VecDeque::new();
    let erasures = crate::privacy::ErasureFilter::load(store, config).await?;
    while let Some(chunk) = rx.recv().await {
        let chunk = erasures.keep(store, list.id, chunk).await?;
        match consent {
            Some(consent) if options.confirmed => {
                let (store, consent, list_id) = (store.clone(), consent.to_owned(), list.id);
                in_flight.push_back(tokio::spawn(async move {
                    store.import_confirmed(list_id, &chunk, &consent).await
                }));
                if in_flight.len() >= in_flight_max
                    && let Some(first) = in_flight.pop_front()
                {
                    report.imported += joined(first).await?;
                }
            }
            _ => report.imported += opt_in_each(store, config, list, &chunk, consent).await?,
        }
    }
    while let Some(next) = in_flight.pop_front() {
        report.imported += joined(next).await?;
    }
    reader
        .await
        .map_err(|e| ImportError::Unreadable(format!("import aborted: {e}")))??;
    if report.imported > 0 {
        // A digest queued right after the import plans its chunks from these.
        store.analyze_subscribers().await?;
    }
    report.skipped = valid.saturating_sub(report.imported);
    Ok(report)
}

async fn joined(task: tokio::task::JoinHandle<Result<u64, StoreError>>) -> Result<u64, ImportError> {
    task.await
        .map_err(|e| ImportError::Unreadable(format!("import aborted: {e}")))?
        .map_err(ImportError::from)
}

/// Unconfirmed import: the signup path for each address that is neither unsubscribed from the
/// list nor suppressed.
async fn opt_in_each(
    store: &Store,
    config: &Config,
    list: &List,
    rows: &[ImportRow],
    consent: Option<&str>,
) -> Result<u64, StoreError> {
    let origin = RequestOrigin {
        ip: None,
        user_agent: Some("bulletin import".into()),
        page: consent.map(str::to_owned),
    };
    let lists = std::slice::from_ref(list);
    let mut started = 0;
    for row in rows {
        let status = store.subscription_status(list.id, &row.email.key()).await?;
        if status == Some(SubscriptionStatus::Unsubscribed) || !store.may_send_to(row.email.as_str(), false).await? {
            continue;
        }
        match crate::signup::start_opt_in(store, config, &row.email, lists, &origin).await? {
            SignupOutcome::AlreadyConfirmed => {}
            SignupOutcome::ConfirmationQueued | SignupOutcome::Throttled => started += 1,
        }
    }
    Ok(started)
}

#[cfg(test)]
mod properties {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("write");
        file
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes at all: the reader ends, with rows, row errors or a refusal; never a panic
        /// or a loop.
        #[test]
        fn any_bytes_are_read_to_the_end(body in proptest::collection::vec(any::<u8>(), 0..2048), header in any::<bool>()) {
            let mut bytes = if header { b"email,name\n".to_vec() } else { Vec::new() };
            bytes.extend(body);
            let file = file_of(&bytes);
            let mut calls = 0u64;
            let _ = read_rows(file.path(), |_, _| {
                calls += 1;
                true
            });
            prop_assert!(calls <= bytes.len() as u64 + 1);
        }

        /// Rows of valid and invalid addresses: each is reported once, on its own line, valid ones
        /// as parsed addresses with names cleaned of control characters and cut to 200.
        #[test]
        fn rows_come_back_on_their_lines(rows in proptest::collection::vec(
            (prop_oneof!["[a-z]{1,12}@[a-z]{1,12}\\.org", "[a-z@. ]{0,12}"], "[ -~\\t]{0,300}"), 0..40)
        ) {
            let mut body = String::from("email,name\n");
            for (email, name) in &rows {
                let name: String = name.chars().filter(|c| *c != ',' && *c != '"').collect();
                body.push_str(&format!("{email},{name}\n"));
            }
            let file = file_of(body.as_bytes());
            let mut seen = Vec::new();
            read_rows(file.path(), |line, row| {
                seen.push((line, row));
                true
            })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Every generated line has its comma, so none is blank: one record per row.
            let expected: Vec<(u64, &(String, String))> =
                rows.iter().enumerate().map(|(i, r)| (i as u64 + 2, r)).collect();
            prop_assert_eq!(seen.len(), expected.len());
            for ((line, row), (expected_line, (email, _))) in seen.iter().zip(expected) {
                prop_assert_eq!(*line, expected_line);
                match (row, EmailAddress::parse(email.trim())) {
                    (Ok(row), Ok(address)) => {
                        prop_assert_eq!(&row.email, &address);
                        if let Some(name) = &row.name {
                            prop_assert!(name.chars().count() <= 200 && !name.chars().any(char::is_control));
                        }
                    }
                    (Err(_), Err(_)) => {}
                    (row, parsed) => prop_assert!(false, "line {}: {:?} but {:?}", line, row, parsed),
                }
            }
        }
    }
}

#[cfg(test)]
mod lines {
    use super::*;

    /// An unreadable row (bad UTF-8) is reported on its own line, and the rows after it on theirs.
    #[test]
    fn unreadable_rows_are_reported_on_their_line() {
        let body: &[u8] = b"email,name\nfirst@x.org,One\nbad@x.org,B\xf7d\nafter@x.org,Three\n";
        let mut seen = Vec::new();
        read_rows_from(body, |line, row| {
            seen.push((line, row.is_ok()));
            true
        })
        .unwrap();
        assert_eq!(seen, [(2, true), (3, false), (4, true)]);
    }

    /// Found by fuzzing (fuzz/run csv_import): lines came back out of order (an unreadable row was
    /// reported one line late). They never go backwards now.
    #[test]
    fn the_fuzzers_file_reports_lines_in_order() {
        let body: &[u8] = include_bytes!("../tests/data/fuzz/csv-unreadable-row-line.csv");
        let mut lines = Vec::new();
        read_rows_from(body, |line, _| {
            lines.push(line);
            true
        })
        .unwrap();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    }
}
