-- The lists a confirmation confirms move into the confirmation's own row, as a JSON array of list
-- ids: a signup then writes one row fewer. A list deleted since is skipped when the token is used
-- (the ids are matched against the lists table).

ALTER TABLE confirmations ADD COLUMN list_ids TEXT NOT NULL DEFAULT '[]';
UPDATE confirmations SET list_ids = (
    SELECT COALESCE(json_group_array(list_id), '[]')
    FROM (SELECT list_id FROM confirmation_lists WHERE confirmation_id = confirmations.id ORDER BY list_id));
DROP TABLE confirmation_lists;
