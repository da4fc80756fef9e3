-- 0001: initial schema.
--
-- Times are INTEGER unix milliseconds (UTC); 0 stands for the zero time.
-- Tables are STRICT so a wrongly typed value is an error, not a silent
-- conversion. Nothing here holds a plaintext secret: ciphertexts come from
-- the keyring, hashes are keyed hashes, challenge ids are token hashes.

CREATE TABLE users (
	id                   TEXT    NOT NULL PRIMARY KEY,
	state                TEXT    NOT NULL CHECK (state IN ('pending', 'active')),
	ciphertext           TEXT    NOT NULL,
	key_version          INTEGER NOT NULL,
	algorithm            TEXT    NOT NULL,
	digits               INTEGER NOT NULL,
	period               INTEGER NOT NULL,
	skew                 INTEGER NOT NULL,
	last_step            INTEGER NOT NULL DEFAULT 0,
	failures             INTEGER NOT NULL DEFAULT 0,
	failure_window_start INTEGER NOT NULL DEFAULT 0,
	locked_until         INTEGER NOT NULL DEFAULT 0,
	pending_expires_at   INTEGER NOT NULL DEFAULT 0,
	confirmed_at         INTEGER NOT NULL DEFAULT 0,
	last_used_at         INTEGER NOT NULL DEFAULT 0,
	updated_at           INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Status counts and rewrap batches select by key version.
CREATE INDEX users_key_version ON users (key_version);

-- AUTOINCREMENT: a code id is never reused, not even after its row is gone,
-- so an id a client once saw can never name somebody else's code.
CREATE TABLE recovery_codes (
	id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	hash       BLOB    NOT NULL,
	created_at INTEGER NOT NULL,
	used_at    INTEGER          -- NULL while unused
) STRICT;

CREATE INDEX recovery_codes_user ON recovery_codes (user_id, used_at);

CREATE TABLE challenges (
	id_hash    BLOB    NOT NULL PRIMARY KEY,
	user_id    TEXT    NOT NULL,
	sealed     BLOB    NOT NULL,
	enroll     INTEGER NOT NULL CHECK (enroll IN (0, 1)),
	satisfied  INTEGER NOT NULL DEFAULT 0 CHECK (satisfied IN (0, 1)),
	attempts   INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- DeleteExpiredChallenges sweeps by expiry.
CREATE INDEX challenges_expires_at ON challenges (expires_at);

CREATE TABLE settings (
	key   TEXT NOT NULL PRIMARY KEY,
	value BLOB NOT NULL
) STRICT, WITHOUT ROWID;
