-- Bytes of task content kept, bounded store-wide and per caller (owner), as
-- the embedded store bounds them: a new task that does not fit is refused
-- (the oldest finished tasks make room first, the caller's own first), and
-- several replicas share one count, kept here, in the database.
--
-- Sizes are the octet lengths of the task's stored JSON (task row, history,
-- artifacts and their chunks, events). A task is counted with what it was
-- created with, and again, whole, when it finishes; what it holds in
-- between is bounded by the per-caller limit on running tasks.

-- Bytes of this task counted in weave_a2a_usage (taken off again when the row goes).
ALTER TABLE weave_a2a_tasks ADD COLUMN counted bigint NOT NULL DEFAULT 0;

-- Bytes counted per owner, and for the whole store under owner ''.
CREATE TABLE weave_a2a_usage (
  owner  text   PRIMARY KEY,
  bytes  bigint NOT NULL
);

-- Making room for a caller: its oldest finished tasks.
CREATE INDEX weave_a2a_tasks_owner_finished ON weave_a2a_tasks (owner, updated_at) WHERE terminal;

-- Tasks stored before this version are counted as they are.
UPDATE weave_a2a_tasks t SET counted = octet_length(t.task::text)
  + coalesce((SELECT sum(octet_length(h.message::text)) FROM weave_a2a_task_history h WHERE h.task_id = t.id), 0)
  + coalesce((SELECT sum(octet_length(a.artifact::text)) FROM weave_a2a_task_artifacts a WHERE a.task_id = t.id), 0)
  + coalesce((SELECT sum(octet_length(c.parts::text)) FROM weave_a2a_artifact_chunks c WHERE c.task_id = t.id), 0)
  + coalesce((SELECT sum(octet_length(e.event::text)) FROM weave_a2a_events e WHERE e.task_id = t.id), 0);
INSERT INTO weave_a2a_usage (owner, bytes) SELECT '', coalesce(sum(counted), 0) FROM weave_a2a_tasks;
INSERT INTO weave_a2a_usage (owner, bytes) SELECT owner, sum(counted) FROM weave_a2a_tasks GROUP BY owner;

-- Lock order: whatever changes the counts locks the store-wide row first,
-- then owner rows, so two writers never wait for each other in a cycle.
-- (Rows of finished tasks that make room are taken with SKIP LOCKED while the
-- store-wide row is held: a writer holding one waits only for that row.)

-- Adds `delta` to the owner's count and the store's.
CREATE FUNCTION weave_a2a_count(p_owner text, p_delta bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_delta = 0 THEN RETURN; END IF;
  UPDATE weave_a2a_usage SET bytes = bytes + p_delta WHERE owner = '';
  INSERT INTO weave_a2a_usage AS u (owner, bytes) VALUES (p_owner, p_delta)
    ON CONFLICT (owner) DO UPDATE SET bytes = u.bytes + excluded.bytes;
END $$;

-- Deleted tasks (swept, deleted, making room) are taken off the counts.
CREATE FUNCTION weave_a2a_uncount() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE weave_a2a_usage SET bytes = bytes - g.n
    FROM (SELECT sum(counted) AS n FROM gone) g WHERE owner = '' AND g.n IS NOT NULL;
  UPDATE weave_a2a_usage u SET bytes = u.bytes - g.n
    FROM (SELECT owner, sum(counted) AS n FROM gone GROUP BY owner) g WHERE u.owner = g.owner;
  -- Owners with nothing kept leave no row (the table stays as small as the set of owners with tasks).
  DELETE FROM weave_a2a_usage u USING (SELECT DISTINCT owner FROM gone) g
    WHERE u.owner = g.owner AND u.bytes = 0 AND u.owner <> '';
  RETURN NULL;
END $$;
CREATE TRIGGER weave_a2a_tasks_uncount AFTER DELETE ON weave_a2a_tasks
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION weave_a2a_uncount();

-- Takes `p_bytes` for a new task of `p_owner`: NULL when they fit (and are
-- now counted), else 'caller' (the owner's share is held by unfinished
-- tasks) or 'store' (the whole store is). The oldest finished tasks are
-- deleted to make room, the owner's own first (others' free no room in its share).
CREATE FUNCTION weave_a2a_reserve(p_owner text, p_bytes bigint, p_max_owner bigint, p_max bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  owner_bytes bigint;
  store_bytes bigint;
  freed bigint;
  r record;
BEGIN
  SELECT bytes INTO store_bytes FROM weave_a2a_usage WHERE owner = '' FOR UPDATE;
  INSERT INTO weave_a2a_usage (owner, bytes) VALUES (p_owner, 0) ON CONFLICT (owner) DO NOTHING;
  SELECT bytes INTO owner_bytes FROM weave_a2a_usage WHERE owner = p_owner FOR UPDATE;
  IF owner_bytes + p_bytes > p_max_owner OR store_bytes + p_bytes > p_max THEN
    FOR r IN (SELECT id, true AS own FROM weave_a2a_tasks WHERE owner = p_owner AND terminal ORDER BY updated_at, id)
             UNION ALL
             (SELECT id, false FROM weave_a2a_tasks WHERE terminal AND owner <> p_owner ORDER BY updated_at, id) LOOP
      EXIT WHEN owner_bytes + p_bytes <= p_max_owner AND store_bytes + p_bytes <= p_max;
      EXIT WHEN NOT r.own AND owner_bytes + p_bytes > p_max_owner;
      -- SKIP LOCKED: a row another writer holds (a sweep deleting it) is left to it.
      DELETE FROM weave_a2a_tasks WHERE id = (SELECT id FROM weave_a2a_tasks WHERE id = r.id FOR UPDATE SKIP LOCKED)
        RETURNING counted INTO freed;
      CONTINUE WHEN NOT FOUND;
      store_bytes := store_bytes - freed;
      IF r.own THEN owner_bytes := owner_bytes - freed; END IF;
    END LOOP;
    IF owner_bytes + p_bytes > p_max_owner OR store_bytes + p_bytes > p_max THEN
      -- A refused owner with nothing kept leaves no row behind.
      DELETE FROM weave_a2a_usage WHERE owner = p_owner AND bytes = 0;
      RETURN CASE WHEN owner_bytes + p_bytes > p_max_owner THEN 'caller' ELSE 'store' END;
    END IF;
  END IF;
  PERFORM weave_a2a_count(p_owner, p_bytes);
  RETURN NULL;
END $$;
