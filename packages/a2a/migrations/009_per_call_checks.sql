-- A task's rows in weave_a2a_events, weave_a2a_task_history,
-- weave_a2a_task_artifacts and weave_a2a_artifact_chunks lose their foreign
-- keys: each key cost a check (one query per inserted row, seven per call),
-- and the store's statements already keep the rows tied to a task:
-- - rows are only ever inserted by the statement that inserts or updates
--   their task row, gated on that row (a task being deleted is locked, and a
--   deleted one matches nothing), so no row is inserted for a task that is gone;
-- - a deleted task's rows go with it, by the statement trigger below, in the
--   same transaction (what ON DELETE CASCADE did, once per statement);
-- - an artifact's chunks go with it, by the second statement trigger below.
-- weave_a2a_push_configs and weave_a2a_inbox keep theirs: they are not written per call.
ALTER TABLE weave_a2a_events DROP CONSTRAINT weave_a2a_events_task_id_fkey;
ALTER TABLE weave_a2a_task_history DROP CONSTRAINT weave_a2a_task_history_task_id_fkey;
ALTER TABLE weave_a2a_artifact_chunks DROP CONSTRAINT weave_a2a_artifact_chunks_task_id_artifact_pos_fkey;
ALTER TABLE weave_a2a_task_artifacts DROP CONSTRAINT weave_a2a_task_artifacts_task_id_fkey;

-- Deleted tasks (deleted, swept, making room) take their rows with them.
CREATE FUNCTION weave_a2a_delete_children() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM weave_a2a_events e USING gone g WHERE e.task_id = g.id;
  DELETE FROM weave_a2a_task_history h USING gone g WHERE h.task_id = g.id;
  -- Their chunks go by weave_a2a_task_artifacts_delete_chunks.
  DELETE FROM weave_a2a_task_artifacts a USING gone g WHERE a.task_id = g.id;
  RETURN NULL;
END $$;
CREATE TRIGGER weave_a2a_tasks_delete_children AFTER DELETE ON weave_a2a_tasks
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION weave_a2a_delete_children();

-- Deleted artifacts (a task deleted, cut to its bound, or rewritten) take their chunks with them.
CREATE FUNCTION weave_a2a_delete_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM weave_a2a_artifact_chunks c USING gone g WHERE c.task_id = g.task_id AND c.artifact_pos = g.pos;
  RETURN NULL;
END $$;
CREATE TRIGGER weave_a2a_task_artifacts_delete_chunks AFTER DELETE ON weave_a2a_task_artifacts
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION weave_a2a_delete_chunks();

-- 007's weave_a2a_reserve, behind a fast path: when the task fits the
-- store's bound and its owner's share (the owner has a row), two conditional
-- updates count it, the store's row first (the order everything that changes
-- counts keeps); three statements fewer per new task. Anything else (a new
-- owner, room to make, a refusal) goes the way 007 went.
ALTER FUNCTION weave_a2a_reserve(text, bigint, bigint, bigint) RENAME TO weave_a2a_reserve_room;
CREATE FUNCTION weave_a2a_reserve(p_owner text, p_bytes bigint, p_max_owner bigint, p_max bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE weave_a2a_usage SET bytes = bytes + p_bytes WHERE owner = '' AND bytes + p_bytes <= p_max;
  IF FOUND THEN
    UPDATE weave_a2a_usage SET bytes = bytes + p_bytes WHERE owner = p_owner AND bytes + p_bytes <= p_max_owner;
    IF FOUND THEN RETURN NULL; END IF;
    -- Not this way: the store's count is given back (its row stays locked) and 007's way decides.
    UPDATE weave_a2a_usage SET bytes = bytes - p_bytes WHERE owner = '';
  END IF;
  RETURN weave_a2a_reserve_room(p_owner, p_bytes, p_max_owner, p_max);
END $$;
