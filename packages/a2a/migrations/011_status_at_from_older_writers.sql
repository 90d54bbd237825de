-- status_at (010) for the rows a replica older than 010 writes: during a
-- rolling upgrade the database is migrated first and replicas of the old
-- version go on serving until they are replaced. They do not know the
-- column: their INSERTs left it 0 and their UPDATEs left it as it was, so
-- their tasks dropped out of every replica's ListTasks "changed since T"
-- (statusTimestampAfter filters on status_at), and a finished one was never
-- written again to put it right.
--
-- The triggers below compute it for those writes only, from the task as
-- stored, as 010's backfill did. A replica of this version or newer always
-- writes status_at itself: its INSERT carries the task's status time (never
-- 0), and a status change carries a new status timestamp, so the triggers'
-- WHEN clauses (checked without calling any function) keep them off its
-- writes. One exception: a state change in the same millisecond as the
-- status before it keeps the same status_at; the trigger then fires and
-- computes the value the replica wrote.
--
-- What remains: an older replica's status change that keeps the state
-- (WORKING to WORKING with a new message, say) cannot be told apart from
-- any other write of its, and leaves the task's previous status_at; a
-- later state change (by any replica) puts it right.

-- The status time of a task as stored: its status.timestamp in epoch ms
-- when it has the form of an ISO 8601 date-time (as 010's backfill read
-- it), else `p_updated_at`. One that has the form but names no time
-- (month 13, say) counts as none: a write of an older replica must not
-- fail on it.
CREATE FUNCTION weave_a2a_status_at(p_task json, p_updated_at bigint) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
  ts text := p_task -> 'status' ->> 'timestamp';
BEGIN
  IF ts ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$' THEN
    BEGIN
      RETURN floor(extract(epoch FROM ts::timestamptz) * 1000)::bigint;
    EXCEPTION WHEN data_exception THEN
      NULL;
    END;
  END IF;
  RETURN p_updated_at;
END $$;

CREATE FUNCTION weave_a2a_status_at_of_older_writer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.status_at := weave_a2a_status_at(NEW.task, NEW.updated_at);
  RETURN NEW;
END $$;

-- An INSERT without status_at (the column's default, 0).
CREATE TRIGGER weave_a2a_tasks_status_at_insert BEFORE INSERT ON weave_a2a_tasks
  FOR EACH ROW WHEN (NEW.status_at = 0)
  EXECUTE FUNCTION weave_a2a_status_at_of_older_writer();

-- An UPDATE that changes the state but not status_at. `OF state`: the
-- statements that do not set the state (claiming orphans, counting bytes,
-- cutting a finished task) do not even check the WHEN clause.
CREATE TRIGGER weave_a2a_tasks_status_at_update BEFORE UPDATE OF state ON weave_a2a_tasks
  FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state AND NEW.status_at = OLD.status_at)
  EXECUTE FUNCTION weave_a2a_status_at_of_older_writer();

-- Rows an older replica inserted since 010 (before these triggers).
UPDATE weave_a2a_tasks SET status_at = weave_a2a_status_at(task, updated_at) WHERE status_at = 0;
