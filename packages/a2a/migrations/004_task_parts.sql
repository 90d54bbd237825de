-- A task's history and artifacts move out of weave_a2a_tasks.task into rows
-- of their own, so an append writes what it adds (a message, an artifact
-- chunk), not the whole task again: the Nth chunk of a long artifact stream
-- costs what the first did. weave_a2a_tasks.task keeps the rest (status,
-- metadata), with empty `history`/`artifacts` arrays marking that the task has them.

-- The task's history messages, by 0-based position.
CREATE TABLE weave_a2a_task_history (
  task_id  text    NOT NULL REFERENCES weave_a2a_tasks (id) ON DELETE CASCADE,
  pos      integer NOT NULL, message json NOT NULL,
  PRIMARY KEY (task_id, pos)
);

-- One row per artifact, in task order; `artifact` without its parts.
CREATE TABLE weave_a2a_task_artifacts (
  task_id   text    NOT NULL REFERENCES weave_a2a_tasks (id) ON DELETE CASCADE,
  pos       integer NOT NULL,
  artifact  json    NOT NULL,
  PRIMARY KEY (task_id, pos)
);

-- An artifact's parts, one row per write that added some (a JSON array of
-- parts); the artifact's parts are the rows' arrays joined in chunk order.
CREATE TABLE weave_a2a_artifact_chunks (
  task_id       text    NOT NULL,
  artifact_pos  integer NOT NULL,
  chunk         integer NOT NULL,
  parts         json    NOT NULL,
  PRIMARY KEY (task_id, artifact_pos, chunk),
  FOREIGN KEY (task_id, artifact_pos) REFERENCES weave_a2a_task_artifacts (task_id, pos) ON DELETE CASCADE
);

-- Tasks written before this version: split their stored task.
INSERT INTO weave_a2a_task_history (task_id, pos, message)
  SELECT t.id, h.n - 1, h.m FROM weave_a2a_tasks t,
    json_array_elements(CASE WHEN json_typeof(t.task -> 'history') = 'array' THEN t.task -> 'history' ELSE '[]'::json END)
      WITH ORDINALITY AS h(m, n);
INSERT INTO weave_a2a_task_artifacts (task_id, pos, artifact)
  SELECT t.id, a.n - 1, (a.a::jsonb || '{"parts": []}'::jsonb)::json FROM weave_a2a_tasks t,
    json_array_elements(CASE WHEN json_typeof(t.task -> 'artifacts') = 'array' THEN t.task -> 'artifacts' ELSE '[]'::json END)
      WITH ORDINALITY AS a(a, n);
INSERT INTO weave_a2a_artifact_chunks (task_id, artifact_pos, chunk, parts)
  SELECT t.id, a.n - 1, 0, a.a -> 'parts' FROM weave_a2a_tasks t,
    json_array_elements(CASE WHEN json_typeof(t.task -> 'artifacts') = 'array' THEN t.task -> 'artifacts' ELSE '[]'::json END)
      WITH ORDINALITY AS a(a, n)
  WHERE json_typeof(a.a -> 'parts') = 'array';
UPDATE weave_a2a_tasks SET task = (
  task::jsonb
  || CASE WHEN json_typeof(task -> 'history') = 'array' THEN '{"history": []}'::jsonb ELSE '{}'::jsonb END
  || CASE WHEN json_typeof(task -> 'artifacts') = 'array' THEN '{"artifacts": []}'::jsonb ELSE '{}'::jsonb END
)::json;
