-- 0005: drop users_key_version, as SQLite's migration 0006. No query reads
-- through it, and a rewrap's UPDATE of an indexed column can never be a
-- heap-only (HOT) update: every swapped row also rewrote the index.
--
-- DROP INDEX takes an exclusive lock on users. Migrations run without a
-- statement timeout, so behind a long query the DROP would wait, and every
-- login of the replicas still running would queue behind the DROP; with a
-- lock timeout the migration fails instead, and is tried again when the
-- store opens next.
SET LOCAL lock_timeout = '5s';
DROP INDEX IF EXISTS users_key_version;
