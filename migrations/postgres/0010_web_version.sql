-- What a digest looks like: each item's picture (a URL from its feed; never fetched), each
-- digest's web version at an unguessable address, and a list's public archive of them.

ALTER TABLE items ADD COLUMN image_url TEXT;
ALTER TABLE items ADD COLUMN image_width INTEGER;

-- 32 hex digits of random; digests made before this have no web version.
ALTER TABLE digests ADD COLUMN public_id TEXT;
CREATE UNIQUE INDEX digests_public_id ON digests (public_id);

ALTER TABLE lists ADD COLUMN archive BOOLEAN NOT NULL DEFAULT FALSE;
