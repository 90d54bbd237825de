-- A bound on the bytes one finished task keeps (maxBytesPerTask), as the
-- embedded store has: above it, the task's event log goes (but the last
-- event), then its history, then its artifacts, and its metadata's
-- 'weave.truncated' lists what went. Run by the store in the transaction of
-- the append that finishes a task, only when that task may be over the bound.

-- Octet length of everything task `p_id` holds: its row's task, history,
-- artifacts and their chunks, events (what weave_a2a_tasks.counted counts).
CREATE FUNCTION weave_a2a_task_bytes(p_id text) RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT octet_length(task::text) FROM weave_a2a_tasks WHERE id = p_id), 0)
    + coalesce((SELECT sum(octet_length(message::text)) FROM weave_a2a_task_history WHERE task_id = p_id), 0)
    + coalesce((SELECT sum(octet_length(artifact::text)) FROM weave_a2a_task_artifacts WHERE task_id = p_id), 0)
    + coalesce((SELECT sum(octet_length(parts::text)) FROM weave_a2a_artifact_chunks WHERE task_id = p_id), 0)
    + coalesce((SELECT sum(octet_length(event::text)) FROM weave_a2a_events WHERE task_id = p_id), 0)
$$;

-- Cuts finished task `p_id` to `p_max` bytes, recounts it exactly, and
-- returns what went ('events', 'history', 'artifacts', comma-separated), or
-- NULL when it fits (or is not finished, or is gone). A cut history or
-- artifact list reads back as an empty array: the task row's `task` keeps
-- its empty `history`/`artifacts` markers.
CREATE FUNCTION weave_a2a_truncate(p_id text, p_max bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  t record;
  total bigint;
  cut text[] := '{}';
BEGIN
  SELECT owner, seq, counted, terminal INTO t FROM weave_a2a_tasks WHERE id = p_id FOR UPDATE;
  IF NOT FOUND OR NOT t.terminal THEN RETURN NULL; END IF;
  total := weave_a2a_task_bytes(p_id);
  IF total > p_max THEN
    DELETE FROM weave_a2a_events WHERE task_id = p_id AND seq < t.seq;
    IF FOUND THEN cut := cut || 'events'::text; total := weave_a2a_task_bytes(p_id); END IF;
  END IF;
  IF total > p_max THEN
    DELETE FROM weave_a2a_task_history WHERE task_id = p_id;
    IF FOUND THEN cut := cut || 'history'::text; total := weave_a2a_task_bytes(p_id); END IF;
  END IF;
  IF total > p_max THEN
    -- Chunks go with their artifact (ON DELETE CASCADE).
    DELETE FROM weave_a2a_task_artifacts WHERE task_id = p_id;
    IF FOUND THEN cut := cut || 'artifacts'::text; END IF;
  END IF;
  IF cardinality(cut) > 0 THEN
    UPDATE weave_a2a_tasks SET task = (task::jsonb || jsonb_build_object('metadata',
        coalesce(task::jsonb -> 'metadata', '{}'::jsonb)
        || jsonb_build_object('weave.truncated', array_to_string(cut, ','))))::json
      WHERE id = p_id;
  END IF;
  -- Counted exactly from here: the finishing append's count is an estimate.
  total := weave_a2a_task_bytes(p_id);
  PERFORM weave_a2a_count(t.owner, total - t.counted);
  UPDATE weave_a2a_tasks SET counted = total WHERE id = p_id;
  RETURN CASE WHEN cardinality(cut) > 0 THEN array_to_string(cut, ',') END;
END $$;
