-- 0006: drop users_key_version. No query reads through it (the rewrap's
-- pages walk the primary key, the counts scan the table), and keeping it
-- up to date was a third of the cost of every row a rewrap swaps in
-- (BenchmarkSwapSecrets: 10-12 → 6.5-7.5 µs a row), time during which
-- logins wait for the single writer.
DROP INDEX IF EXISTS users_key_version;
