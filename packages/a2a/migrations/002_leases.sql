-- Ownership of running tasks. Each replica has a row here that it renews
-- (one heartbeat per replica, whatever the number of tasks it runs); a task
-- names the replica running it. A task whose runner stopped renewing is an
-- orphan: another replica claims it and fails it (or, for a capability
-- declared re-runnable, runs it again).
CREATE TABLE weave_a2a_replicas (
  id          text   PRIMARY KEY,
  -- Epoch ms, on the database's clock (replicas' clocks may disagree).
  expires_at  bigint NOT NULL
);

-- NULL for tasks written before leases existed: never claimed.
ALTER TABLE weave_a2a_tasks ADD COLUMN runner text;

-- Finding orphans: the unfinished tasks, by runner.
CREATE INDEX weave_a2a_tasks_running ON weave_a2a_tasks (runner) WHERE NOT terminal;
