-- Tasks of an A2A server, shared by the replicas of one agent.
-- Times are epoch milliseconds (bigint), as the TaskStore seam speaks them.
CREATE TABLE weave_a2a_tasks (
  id          text PRIMARY KEY,
  owner       text    NOT NULL,
  skill       text    NOT NULL,
  context_id  text    NOT NULL,
  state       text    NOT NULL,
  terminal    boolean NOT NULL,
  -- The task as it is now (status, history, artifacts, metadata): read whole, never queried into.
  task        json    NOT NULL,
  created_at  bigint  NOT NULL,
  updated_at  bigint  NOT NULL,
  -- Number of the last event in weave_a2a_events: appends are conditional on it.
  seq         integer NOT NULL
);

-- ListTasks: the caller's tasks, newest first, keyset-paged on (created_at, id).
CREATE INDEX weave_a2a_tasks_owner_created ON weave_a2a_tasks (owner, created_at DESC, id DESC);
-- Sweeping expired finished tasks.
CREATE INDEX weave_a2a_tasks_finished ON weave_a2a_tasks (updated_at) WHERE terminal;

-- Every event of every task, in order: replayed to reconnecting subscribers on any replica.
CREATE TABLE weave_a2a_events (
  task_id  text    NOT NULL REFERENCES weave_a2a_tasks (id) ON DELETE CASCADE,
  seq      integer NOT NULL,
  event    json    NOT NULL,
  PRIMARY KEY (task_id, seq)
);

-- Push-notification configs. `config` is AES-256-GCM ciphertext of the JSON
-- config (webhook URL and secrets), bound to (task_id, id) as associated data.
CREATE TABLE weave_a2a_push_configs (
  task_id   text   NOT NULL REFERENCES weave_a2a_tasks (id) ON DELETE CASCADE,
  id        text   NOT NULL,
  position  bigint GENERATED ALWAYS AS IDENTITY,
  config    bytea  NOT NULL,
  PRIMARY KEY (task_id, id)
);
