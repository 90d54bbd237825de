-- Fencing of stale runners. A replica's lease has a generation, bumped when
-- the replica renews a lease that had already expired (it was cut off or
-- paused for longer than the TTL: its tasks may have been claimed). A task
-- records the generation of the lease it runs under; the runner's appends
-- require that generation, still current and unexpired, so a replica that
-- lost its lease cannot write to a task after another replica took it over.
ALTER TABLE weave_a2a_replicas ADD COLUMN generation bigint NOT NULL DEFAULT 1;
ALTER TABLE weave_a2a_tasks ADD COLUMN runner_gen bigint;
UPDATE weave_a2a_tasks SET runner_gen = 1 WHERE runner IS NOT NULL;
