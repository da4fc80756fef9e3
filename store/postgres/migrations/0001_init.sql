-- 0001: the whole schema as of totpgate's first PostgreSQL release: the
-- SQLite schema (store/sqlite/migrations 0001 and 0002) in PostgreSQL.
--
-- Times are BIGINT unix milliseconds (UTC); 0 stands for the zero time.
-- Integers are BIGINT, as SQLite's INTEGER is 64 bits. User ids are
-- COLLATE "C" so that they compare and sort by their bytes, as Go compares
-- strings (SecretsPage pages through them in that order). Nothing here
-- holds a plaintext secret: ciphertexts come from the keyring, hashes are
-- keyed hashes, challenge ids are token hashes.

CREATE TABLE users (
	id                   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	state                TEXT   NOT NULL CHECK (state IN ('pending', 'active')),
	ciphertext           TEXT   NOT NULL,
	key_version          BIGINT NOT NULL,
	algorithm            TEXT   NOT NULL,
	digits               BIGINT NOT NULL,
	period               BIGINT NOT NULL,
	skew                 BIGINT NOT NULL,
	last_step            BIGINT NOT NULL DEFAULT 0,
	failures             BIGINT NOT NULL DEFAULT 0,
	failure_window_start BIGINT NOT NULL DEFAULT 0,
	locked_until         BIGINT NOT NULL DEFAULT 0,
	pending_expires_at   BIGINT NOT NULL DEFAULT 0,
	confirmed_at         BIGINT NOT NULL DEFAULT 0,
	last_used_at         BIGINT NOT NULL DEFAULT 0,
	updated_at           BIGINT NOT NULL DEFAULT 0
);

-- Status counts and rewrap batches select by key version.
CREATE INDEX users_key_version ON users (key_version);

-- An identity column draws from a sequence, which never hands out a value
-- twice (like SQLite's AUTOINCREMENT): an id a client once saw can never
-- name somebody else's code.
CREATE TABLE recovery_codes (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	hash       BYTEA  NOT NULL,
	created_at BIGINT NOT NULL,
	used_at    BIGINT          -- NULL while unused
);

CREATE INDEX recovery_codes_user ON recovery_codes (user_id, used_at);

CREATE TABLE challenges (
	id_hash    BYTEA  NOT NULL PRIMARY KEY,
	user_id    TEXT COLLATE "C" NOT NULL,
	sealed     BYTEA  NOT NULL,
	enroll     SMALLINT NOT NULL CHECK (enroll IN (0, 1)),
	satisfied  SMALLINT NOT NULL DEFAULT 0 CHECK (satisfied IN (0, 1)),
	attempts   BIGINT NOT NULL DEFAULT 0,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);

-- DeleteExpiredChallenges sweeps by expiry.
CREATE INDEX challenges_expires_at ON challenges (expires_at);

CREATE TABLE settings (
	key   TEXT  NOT NULL PRIMARY KEY,
	value BYTEA NOT NULL
);

-- Leases for work one process does at a time (key rewrap), with the state
-- its holder last saved so an interrupted job resumes. A lease that ended
-- before now is free.
CREATE TABLE jobs (
	name        TEXT   NOT NULL PRIMARY KEY,
	owner       TEXT   NOT NULL,
	lease_until BIGINT NOT NULL,
	state       BYTEA  NOT NULL
);
