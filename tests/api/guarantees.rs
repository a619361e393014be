//! The guarantees the fast write path must keep: the unsubscribe window inside a claimed batch,
//! the per-address caps inside one group-commit batch, the list cache taking lists created
//! elsewhere at once, and no signup answered before it is committed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::app::{Backend, MAIL_WAIT, TestApp};
use crate::support::fixtures::{import_confirmed, push_items, wait_until};

on_both_backends!(
    unsubscribe_mid_batch_stops_the_rest_within_the_window,
    a_send_rate_does_not_stretch_the_window,
    list_bombing_in_one_batch_sends_one_confirmation,
    a_list_created_by_the_cli_takes_signups_at_once,
    every_answered_signup_is_already_stored,
);

/// The documented unsubscribe window: `RECHECK_AFTER` (500 ms) plus the SMTP transaction
/// already under way, rounded up.
const UNSUBSCRIBE_WINDOW: Duration = Duration::from_secs(1);

async fn digest(app: &TestApp, id: &Value) -> Value {
    app.admin(Method::GET, &format!("/api/digests/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn digests_to(app: &TestApp, email: &str) -> usize {
    app.smtp
        .messages_to(email)
        .iter()
        .filter(|m| m.subject().is_some_and(|s| s.starts_with("Daily Briefing — ")))
        .count()
}

fn digest_count(app: &TestApp) -> usize {
    app.smtp
        .messages()
        .iter()
        .filter(|m| m.subject().is_some_and(|s| s.starts_with("Daily Briefing — ")))
        .count()
}

/// One SMTP connection sends the whole (single) batch in delivery order, slowly. A reader near
/// the end of the batch unsubscribes while the batch is being sent: the claim-time check saw them
/// subscribed, so only the re-check within the window can keep their message back.
async fn unsubscribe_mid_batch_stops_the_rest_within_the_window(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_SMTP_POOL", "1")]).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers: Vec<String> = (0..60).map(|n| format!("reader{n:02}@news.example")).collect();
    import_confirmed(&app, "daily", &readers).await;
    push_items(&app, "daily", &[("a", "Story A", 10), ("b", "Story B", 20)]).await;
    // Four stalled replies per message (MAIL, RCPT, DATA, end of data): at least 60 ms each, so
    // the 60 messages of the batch take 3.6 s or more.
    app.smtp.stall(Duration::from_millis(15));
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["recipients"], 60, "{created}");
    let id = created["id"].clone();

    app.smtp.wait_for_count(3, MAIL_WAIT).await;
    // The reader whose message comes last in the batch, and proof that it was claimed with the
    // rest (so the claim-time check has already let it through).
    let last = app
        .sql_strings(
            "SELECT CAST(subscription_id AS TEXT) || ' ' || recipient || ' ' ||
                    CASE WHEN lease_until IS NULL THEN 'free' ELSE 'leased' END
             FROM deliveries WHERE id = (SELECT MAX(id) FROM deliveries)",
        )
        .await;
    let [subscription, target, lease]: [&str; 3] = last[0]
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("one delivery row");
    assert_eq!(lease, "leased", "the whole digest is one claimed batch");
    assert_eq!(
        app.sql_strings("SELECT CAST(COUNT(*) AS TEXT) FROM deliveries").await,
        ["60"]
    );
    let target = target.to_owned();

    let token = app.unsubscribe_token(subscription).await;
    let r = app
        .client
        .post(app.url(&format!("/unsubscribe?token={token}")))
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Committed by now.
    let unsubscribed = Instant::now();
    let sent_at_unsubscribe = digest_count(&app);
    assert!(
        sent_at_unsubscribe < 40,
        "the batch is still far from its end: {sent_at_unsubscribe} sent"
    );

    // Wait for the digest, noting how far the batch had got when the window closed.
    let deadline = unsubscribed + Duration::from_secs(20);
    let mut sent_after_window = None;
    let done = loop {
        let d = digest(&app, &id).await;
        if sent_after_window.is_none() && unsubscribed.elapsed() >= UNSUBSCRIBE_WINDOW {
            sent_after_window = Some(digest_count(&app));
        }
        if d["status"] == "done" {
            break d;
        }
        assert!(Instant::now() < deadline, "digest stuck: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Sending is sequential on one connection: while other messages were still to come after the
    // window closed, the last message's transaction would have started after it.
    let sent_after_window = sent_after_window.expect("the digest took longer than the window");
    assert!(
        sent_after_window <= 58,
        "the last message would have started after the window: {sent_after_window} sent at its end"
    );

    assert_eq!(digests_to(&app, &target), 0, "{target} unsubscribed mid-batch");
    assert_eq!(
        app.sql_strings("SELECT status FROM deliveries WHERE id = (SELECT MAX(id) FROM deliveries)")
            .await,
        ["cancelled"]
    );
    let counts = app.smtp.recipient_counts();
    for reader in readers.iter().filter(|r| **r != target) {
        assert_eq!(counts.get(reader.as_str()), Some(&1), "{reader} gets the digest once");
    }
    assert_eq!(digest_count(&app), 59);
    assert_eq!(
        (done["sent"].as_i64(), done["failed"].as_i64(), done["pending"].as_i64()),
        (Some(59), Some(0), Some(0)),
        "{done}"
    );
    app.smtp.stall(Duration::ZERO);
}

/// The answer to one signup: status, content type, body.
type Answer = (u16, String, Vec<u8>);

/// Fires signups of `emails` concurrently (joined, not one after another), in a task of their own.
fn fire(app: &TestApp, emails: Vec<String>) -> tokio::task::JoinHandle<Vec<Answer>> {
    let (client, url) = (app.client.clone(), app.url("/subscriptions"));
    tokio::spawn(async move {
        futures_util::future::join_all(emails.iter().map(|email| {
            let request = client
                .post(&url)
                .json(&json!({"email": email, "lists": ["daily"]}))
                .send();
            async move {
                let r = request.await.unwrap();
                let status = r.status().as_u16();
                let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
                (status, content_type, r.bytes().await.unwrap().to_vec())
            }
        }))
        .await
    })
}

/// How long the test holds the database's write lock while a burst of signups piles up in front
/// of the writer: a fixed stall, like the SMTP server's, checked afterwards (see below).
const HOLD: Duration = Duration::from_millis(150);

/// 40 signups of one address fired at once, among 10 of other addresses, land in one
/// group-commit batch: the caps (one email per 5 minutes) must hold inside the batch, in its
/// order, not only against what earlier batches wrote.
///
/// The first signup to reach an idle writer is a batch of its own (PostgreSQL has two writers:
/// two such batches), and a victim's signup alone in a batch tests nothing the database state
/// would not already stop. So the test holds the write lock, sends three other addresses first,
/// then the burst, and releases the lock once it has piled up: the victim's 40 signups are then
/// written by one batch, which the test checks (its subscription was created and last consented
/// by the same batch). A machine so slow that the burst did not pile up in time gets two more
/// rounds, each with a victim of its own.
async fn list_bombing_in_one_batch_sends_one_confirmation(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let mut probe = Probe::open(app.db.url()).await;
    let mut answers: Vec<Answer> = Vec::new();
    let mut victims: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    let mut in_one_batch = false;
    while !in_one_batch && victims.len() < 3 {
        let round = victims.len();
        let victim = format!("victim{round}@news.example");
        let round_others: Vec<String> = (0..10).map(|n| format!("other{round}-{n}@news.example")).collect();
        let mut burst: Vec<String> = Vec::new();
        for n in 0..40 {
            burst.push(victim.clone());
            if n % 6 == 2 {
                burst.push(round_others[3 + n / 6].clone());
            }
        }
        assert_eq!(burst.len(), 47);

        probe.hold_writes().await;
        let lead = fire(&app, round_others[..3].to_vec());
        tokio::time::sleep(HOLD).await;
        let bombing = fire(&app, burst);
        tokio::time::sleep(HOLD).await;
        probe.release().await;
        answers.extend(lead.await.unwrap());
        answers.extend(bombing.await.unwrap());

        in_one_batch = probe.written_by_one_batch(&victim).await;
        victims.push(victim);
        others.extend(round_others);
    }
    assert!(
        in_one_batch,
        "in {} rounds the victim's signups never landed in one batch",
        victims.len()
    );
    assert_eq!(answers.len(), 50 * victims.len());
    for answer in &answers {
        assert_eq!(answer.0, 202, "{answer:?}");
        assert_eq!(answer, &answers[0], "byte-identical answers");
    }

    let expected = 11 * victims.len();
    app.smtp.wait_for_count(expected, MAIL_WAIT).await;
    // Whatever else was queued would be sent by now.
    wait_until("the outbox has nothing queued", || async {
        app.sql_strings("SELECT CAST(id AS TEXT) FROM outbox WHERE status = 'queued'")
            .await
            .is_empty()
    })
    .await;
    let counts: HashMap<String, usize> = app.smtp.recipient_counts();
    for victim in &victims {
        assert_eq!(
            counts.get(victim.as_str()),
            Some(&1),
            "one confirmation for {victim}: {counts:?}"
        );
        assert!(
            app.smtp.messages_to(victim)[0]
                .subject()
                .is_some_and(|s| s.contains("Daily Briefing"))
        );
    }
    for other in &others {
        assert_eq!(counts.get(other.as_str()), Some(&1), "{other}: {counts:?}");
    }
    assert_eq!(app.smtp.count(), expected);

    // The caps as stored, and nothing more than one email's worth of rows per victim.
    let one_each = vec!["1".to_owned(); victims.len()];
    assert_eq!(
        app.sql_strings(
            "SELECT CAST(confirmations_day_count AS TEXT) FROM subscribers WHERE email_key LIKE 'victim%' ORDER BY email_key"
        )
        .await,
        one_each,
        "confirmations_day_count"
    );
    assert_eq!(
        app.sql_strings(
            "SELECT CAST(COUNT(c.id) AS TEXT) FROM subscribers s LEFT JOIN confirmations c ON c.subscriber_id = s.id
             WHERE s.email_key LIKE 'victim%' GROUP BY s.email_key ORDER BY s.email_key"
        )
        .await,
        one_each,
        "one confirmation token each"
    );
    assert_eq!(
        app.sql_strings(
            "SELECT CAST(COUNT(*) AS TEXT) FROM outbox WHERE recipient LIKE 'victim%' GROUP BY recipient ORDER BY recipient"
        )
        .await,
        one_each,
        "one email queued each"
    );
    assert_eq!(
        app.sql_strings(
            "SELECT s.status FROM subscriptions s JOIN subscribers u ON u.id = s.subscriber_id
             WHERE u.email_key LIKE 'victim%'"
        )
        .await,
        vec!["pending".to_owned(); victims.len()]
    );
}

/// The signup path reads lists from a cache; a list the CLI (another process) creates must
/// take signups at once, not when the cache next expires.
async fn a_list_created_by_the_cli_takes_signups_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("a", "Alpha Letter").await;
    // Loads the list cache (with list a only).
    assert_eq!(app.signup_json("first@news.example", &["a"]).await.status(), 202);

    let out = app.cli(&[
        "lists",
        "create",
        "b",
        "--name",
        "Bravo Bulletin",
        "--description",
        "Made by the CLI",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let r = app.signup_json("second@news.example", &["b"]).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "confirmation_sent");

    let mail = app
        .smtp
        .wait_for(|m| m.rcpt_to.iter().any(|r| r == "second@news.example"), MAIL_WAIT)
        .await;
    let subject = mail.subject().unwrap();
    assert!(subject.contains("Bravo Bulletin"), "{subject}");
    assert!(!subject.contains("Alpha Letter"), "{subject}");
    assert!(mail.text_body().contains("Bravo Bulletin"), "{}", mail.text_body());
    assert_eq!(
        app.subscribers("b").await,
        [("second@news.example".to_owned(), "pending".to_owned())]
    );
}

/// A connection of the test's own, beside the app's pools.
enum Probe {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Probe {
    async fn open(url: &str) -> Probe {
        use sqlx::Connection;
        if url.starts_with("sqlite:") {
            Probe::Sqlite(sqlx::SqliteConnection::connect(url).await.expect("SQLite probe"))
        } else {
            Probe::Postgres(sqlx::PgConnection::connect(url).await.expect("PostgreSQL probe"))
        }
    }

    async fn execute(&mut self, sql: &'static str) {
        match self {
            Probe::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
            Probe::Postgres(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
        }
        .expect(sql)
    }

    /// Takes the lock every signup batch needs, until `release`: SQLite's write lock; on
    /// PostgreSQL, a lock on `subscribers` that the batch's first statement waits for.
    async fn hold_writes(&mut self) {
        match self {
            Probe::Sqlite(_) => self.execute("BEGIN IMMEDIATE").await,
            Probe::Postgres(_) => {
                self.execute("BEGIN").await;
                self.execute("LOCK TABLE subscribers IN SHARE ROW EXCLUSIVE MODE").await;
            }
        }
    }

    async fn release(&mut self) {
        self.execute("ROLLBACK").await;
    }

    /// Whether one batch wrote every signup of `email`: a batch stamps its rows with one time,
    /// and the subscription keeps the time of the batch that created it and of the last one
    /// that recorded consent.
    async fn written_by_one_batch(&mut self, email: &str) -> bool {
        const SQL: &str = "SELECT COUNT(*) FROM subscriptions s JOIN subscribers u ON u.id = s.subscriber_id
                           WHERE u.email_key = $1 AND s.created_at = s.consent_at";
        let (n,): (i64,) = match self {
            Probe::Sqlite(c) => sqlx::query_as(SQL).bind(email).fetch_one(c).await,
            Probe::Postgres(c) => sqlx::query_as(SQL).bind(email).fetch_one(c).await,
        }
        .expect("probe query");
        n == 1
    }

    /// (pending subscriptions, queued-or-sent confirmation emails) of `email`.
    async fn stored(&mut self, email: &str) -> (i64, i64) {
        const SQL: &str = "SELECT
              (SELECT COUNT(*) FROM subscriptions s JOIN subscribers u ON u.id = s.subscriber_id
               WHERE u.email_key = $1 AND s.status = 'pending'),
              (SELECT COUNT(*) FROM outbox WHERE recipient = $1 AND kind = 'confirmation')";
        match self {
            Probe::Sqlite(c) => sqlx::query_as(SQL).bind(email).fetch_one(c).await,
            Probe::Postgres(c) => sqlx::query_as(SQL).bind(email).fetch_one(c).await,
        }
        .expect("probe query")
    }
}

/// 100 signups at once; as each answer arrives, the signup and its email must already be in
/// the database: a request is answered only once its batch has committed.
async fn every_answered_signup_is_already_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let mut probe = Probe::open(app.db.url()).await;
    assert_eq!(probe.stored("nobody@news.example").await, (0, 0));

    let mut requests = tokio::task::JoinSet::new();
    for n in 0..100 {
        let client = app.client.clone();
        let url = app.url("/subscriptions");
        requests.spawn(async move {
            let email = format!("burst{n:03}@news.example");
            let r = client
                .post(url)
                .json(&json!({"email": email, "lists": ["daily"]}))
                .send()
                .await
                .unwrap();
            (email, r.status().as_u16())
        });
    }
    let mut answered = 0;
    while let Some(done) = requests.join_next().await {
        let (email, status) = done.expect("request task");
        assert_eq!(status, 202, "{email}");
        assert_eq!(
            probe.stored(&email).await,
            (1, 1),
            "{email} was answered before its signup was committed"
        );
        answered += 1;
    }
    assert_eq!(answered, 100);
    app.smtp.wait_for_count(100, MAIL_WAIT).await;
}

/// `BULLETIN_SEND_RATE` makes a worker wait for its slot: the wait comes before the last check,
/// not between the check and the send. One message every 2 s; the second reader unsubscribes as
/// soon as the first message arrives, 2 s before the second would go.
async fn a_send_rate_does_not_stretch_the_window(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_SMTP_POOL", "1"), ("BULLETIN_SEND_RATE", "0.5")]).await
    else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers: Vec<String> = (0..3).map(|n| format!("paced{n}@news.example")).collect();
    import_confirmed(&app, "daily", &readers).await;
    push_items(&app, "daily", &[("a", "Story A", 10)]).await;
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id: Value = r.json::<Value>().await.unwrap()["id"].clone();

    app.smtp.wait_for_count(1, MAIL_WAIT).await;
    let second = app
        .sql_strings(
            "SELECT CAST(subscription_id AS TEXT) || ' ' || recipient FROM deliveries
             ORDER BY id LIMIT 1 OFFSET 1",
        )
        .await;
    let (subscription, target) = second[0].split_once(' ').expect("a second delivery");
    let target = target.to_owned();
    assert_eq!(digests_to(&app, &target), 0, "the second message waits for its slot");
    let token = app.unsubscribe_token(subscription).await;
    let r = app
        .client
        .post(app.url(&format!("/unsubscribe?token={token}")))
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    wait_until("the digest is done", || async {
        digest(&app, &id).await["status"] == "done"
    })
    .await;
    assert_eq!(digests_to(&app, &target), 0, "{target} unsubscribed before its slot");
    assert_eq!(digest_count(&app), 2, "the other two readers get it");
}
