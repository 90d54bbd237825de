-- Replies to INPUT_REQUIRED that arrived at a replica not running the task:
-- kept here until the replica whose handler waits for the reply takes them
-- (a notice `i:<taskId>` tells it), or withdrawn by the replica that got the
-- reply when nobody takes it in time.
CREATE TABLE weave_a2a_inbox (
  id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task_id  text NOT NULL REFERENCES weave_a2a_tasks (id) ON DELETE CASCADE,
  message  json NOT NULL
);
CREATE INDEX weave_a2a_inbox_task ON weave_a2a_inbox (task_id, id);
