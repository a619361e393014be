-- A finished digest's counts by outcome, written once when it finishes: its deliveries do not
-- change after that, so the list and digest pages read two numbers instead of counting its
-- deliveries on every view. NULL while the digest is still going (counted live).

ALTER TABLE digests ADD COLUMN sent_count BIGINT;
ALTER TABLE digests ADD COLUMN failed_count BIGINT;

UPDATE digests SET
    sent_count = (SELECT COUNT(*) FROM deliveries x WHERE x.digest_id = digests.id AND x.status = 'sent'),
    failed_count = (SELECT COUNT(*) FROM deliveries x WHERE x.digest_id = digests.id AND x.status = 'failed')
WHERE status = 'done';
