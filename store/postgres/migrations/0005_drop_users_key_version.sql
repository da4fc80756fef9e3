-- 0005: drop users_key_version, as SQLite's migration 0006. No query reads
-- through it, and a rewrap's UPDATE of an indexed column can never be a
-- heap-only (HOT) update: every swapped row also rewrote the index.
DROP INDEX IF EXISTS users_key_version;
