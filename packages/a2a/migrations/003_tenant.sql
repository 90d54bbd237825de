-- Tenants (A2A multi-tenancy): a task belongs to the tenant its request named
-- ('' = none) as well as to its owner; ListTasks is scoped by both.
ALTER TABLE weave_a2a_tasks ADD COLUMN tenant text NOT NULL DEFAULT '';

DROP INDEX weave_a2a_tasks_owner_created;
CREATE INDEX weave_a2a_tasks_tenant_owner_created
  ON weave_a2a_tasks (tenant, owner, created_at DESC, id DESC);
