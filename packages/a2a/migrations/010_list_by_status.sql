-- ListTasks in the order A2A asks for (§3.1.4): by the status timestamp,
-- most recent first, keyset-paged on (status_at, id); it was by creation.
--
-- status_at is the task's status.timestamp in epoch ms, as the task shows it
-- (not corrected by the writer's clock offset as created_at and updated_at
-- are: clients filter and page by the timestamps they read), or updated_at
-- for a task whose status carries none. The store writes it with every
-- status. A row written without it (by a replica older than this migration,
-- during a rolling upgrade) lists last until a newer replica writes it.
ALTER TABLE weave_a2a_tasks ADD COLUMN status_at bigint NOT NULL DEFAULT 0;

-- Tasks stored before this version: from their status as stored.
UPDATE weave_a2a_tasks SET status_at = CASE
  WHEN task -> 'status' ->> 'timestamp'
       ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$'
  THEN floor(extract(epoch FROM (task -> 'status' ->> 'timestamp')::timestamptz) * 1000)::bigint
  ELSE updated_at END;

-- The list is per tenant and owner, as 003's index on created_at was; ids
-- compare as bytes (COLLATE "C"), the order the embedded store keeps.
DROP INDEX weave_a2a_tasks_tenant_owner_created;
CREATE INDEX weave_a2a_tasks_tenant_owner_status
  ON weave_a2a_tasks (tenant, owner, status_at DESC, id COLLATE "C" DESC);
