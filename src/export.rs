//! Exporting a list's subscribers as CSV, for the admin API, the dashboard and the CLI alike.
//!
//! Columns: `email,name,status,created_at,confirmed_at,unsubscribed_at,consent_at,consent_ip`.
//! Times are RFC 3339 UTC with milliseconds (`2026-12-03T06:15:03.123Z`), an absent one an empty
//! cell; `created_at` is the subscription's. Cells are quoted only when they need it (a comma, a
//! quote, a line break), lines end with `\n`. A cell that a spreadsheet would run as a formula
//! (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'` (OWASP's
//! advice on CSV injection): names come from imports and signups.
//!
//! The export is a stream of chunks, one per page of [`PAGE`] rows, each page its own short
//! query: memory stays flat whatever the list's size.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::Stream;

use crate::store::{ExportRow, Store, StoreError, SubscriptionStatus};

/// Rows per query (and per chunk of output).
pub const PAGE: i64 = 5_000;

/// The header row, as written.
pub const HEADER: &str = "email,name,status,created_at,confirmed_at,unsubscribed_at,consent_at,consent_ip\n";

/// Which subscriptions an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportStatus {
    One(SubscriptionStatus),
    All,
}

impl ExportStatus {
    /// The accepted values, for messages.
    pub const CHOICES: &'static str = "pending, confirmed, unsubscribed or all";

    /// `pending`, `confirmed` (also when absent or empty), `unsubscribed` or `all`.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value.map(str::trim) {
            None | Some("") => Some(Self::One(SubscriptionStatus::Confirmed)),
            Some("all") => Some(Self::All),
            Some(other) => SubscriptionStatus::parse(other).map(Self::One),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::One(status) => status.as_str(),
            Self::All => "all",
        }
    }

    fn filter(self) -> Option<SubscriptionStatus> {
        match self {
            Self::One(status) => Some(status),
            Self::All => None,
        }
    }
}

/// A piece of the CSV text and how many subscriber rows it holds (the header has none).
#[derive(Debug, Clone)]
pub struct CsvChunk {
    pub bytes: Vec<u8>,
    pub rows: usize,
}

/// The text of a cell as a spreadsheet may safely open it: a leading `'` on anything it would
/// otherwise evaluate.
pub fn defuse(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The CSV lines of `rows`, header excluded.
pub fn write_rows(rows: &[ExportRow]) -> Vec<u8> {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(rows.len() * 128));
    for row in rows {
        let optional_time = |t: Option<DateTime<Utc>>| t.map(time).unwrap_or_default();
        let (created, confirmed) = (time(row.created_at), optional_time(row.confirmed_at));
        let (unsubscribed, consent) = (optional_time(row.unsubscribed_at), time(row.consent_at));
        let cells = [
            row.email.as_str(),
            row.name.as_deref().unwrap_or_default(),
            row.status.as_str(),
            &created,
            &confirmed,
            &unsubscribed,
            &consent,
            row.consent_ip.as_deref().unwrap_or_default(),
        ];
        // Writing into a Vec cannot fail.
        for cell in cells {
            let _ = out.write_field(defuse(cell).as_bytes());
        }
        let _ = out.write_record(None::<&[u8]>);
    }
    out.into_inner().unwrap_or_default()
}

enum Cursor {
    Header,
    After(i64),
    Done,
}

/// The whole export of a list: the header, then one chunk per page of [`PAGE`] rows, read
/// only as the consumer asks for more. A database error ends the stream with that error.
pub fn csv_chunks(
    store: Store,
    list_id: i64,
    status: ExportStatus,
) -> impl Stream<Item = Result<CsvChunk, StoreError>> + Send + 'static {
    futures_util::stream::try_unfold(Cursor::Header, move |cursor| {
        let store = store.clone();
        async move {
            let after = match cursor {
                Cursor::Done => return Ok(None),
                Cursor::Header => {
                    let header = CsvChunk {
                        bytes: HEADER.as_bytes().to_vec(),
                        rows: 0,
                    };
                    return Ok(Some((header, Cursor::After(0))));
                }
                Cursor::After(after) => after,
            };
            let rows = store.export_page(list_id, status.filter(), after, PAGE).await?;
            let next = match rows.last() {
                None => return Ok(None),
                Some(_) if (rows.len() as i64) < PAGE => Cursor::Done,
                Some(last) => Cursor::After(last.id),
            };
            let chunk = CsvChunk {
                bytes: write_rows(&rows),
                rows: rows.len(),
            };
            Ok(Some((chunk, next)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(email: &str, name: Option<&str>) -> ExportRow {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        ExportRow {
            id: 1,
            email: email.into(),
            name: name.map(Into::into),
            status: "confirmed".into(),
            created_at: t("2026-12-03T06:15:03.123Z"),
            confirmed_at: Some(t("2026-12-03T07:00:00Z")),
            unsubscribed_at: None,
            consent_at: t("2026-12-03T06:15:03.100+01:00"),
            consent_ip: Some("2001:db8::1".into()),
        }
    }

    #[test]
    fn rows_are_quoted_and_times_are_utc_with_milliseconds() {
        let out = String::from_utf8(write_rows(&[
            row("ann@news.example", Some("Ann, \"the\" reader")),
            row("bob@news.example", None),
        ]))
        .unwrap();
        assert_eq!(
            out,
            "ann@news.example,\"Ann, \"\"the\"\" reader\",confirmed,2026-12-03T06:15:03.123Z,\
             2026-12-03T07:00:00.000Z,,2026-12-03T05:15:03.100Z,2001:db8::1\n\
             bob@news.example,,confirmed,2026-12-03T06:15:03.123Z,2026-12-03T07:00:00.000Z,,\
             2026-12-03T05:15:03.100Z,2001:db8::1\n"
        );
        assert_eq!(
            HEADER.trim_end().split(',').count(),
            out.lines().nth(1).unwrap().split(',').count()
        );
    }

    #[test]
    fn formula_cells_are_defused() {
        for (name, written) in [
            ("=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\""),
            ("+1", "'+1"),
            ("-1+2", "'-1+2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tTab", "'\tTab"),
            ("\rCR", "\"'\rCR\""),
            ("Ann = Bob", "Ann = Bob"),
            ("O'Brien", "O'Brien"),
        ] {
            let out = String::from_utf8(write_rows(&[row("=1+1@news.example", Some(name))])).unwrap();
            assert!(
                out.starts_with(&format!("'=1+1@news.example,{written},confirmed,")),
                "{name:?} → {out:?}"
            );
        }
    }

    #[test]
    fn status_parses_with_confirmed_as_default() {
        assert_eq!(
            ExportStatus::parse(None),
            Some(ExportStatus::One(SubscriptionStatus::Confirmed))
        );
        assert_eq!(
            ExportStatus::parse(Some("")),
            Some(ExportStatus::One(SubscriptionStatus::Confirmed))
        );
        assert_eq!(ExportStatus::parse(Some("all")), Some(ExportStatus::All));
        assert_eq!(
            ExportStatus::parse(Some("unsubscribed")),
            Some(ExportStatus::One(SubscriptionStatus::Unsubscribed))
        );
        assert_eq!(ExportStatus::parse(Some("Confirmed")), None);
        assert_eq!(ExportStatus::parse(Some("bounced")), None);
    }
}
