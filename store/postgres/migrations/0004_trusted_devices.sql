-- 0004: trusted devices (store.TrustedDevice), as SQLite's migration 0005.
-- Only keyed hashes of the device tokens are kept: token_hash of the
-- current token (unique), and prev_hash of the token the last use rotated
-- away, so that its reuse is seen. The id is public and random. Rows go
-- with their user (ON DELETE CASCADE), and DeleteUser,
-- ReplaceRecoveryCodes and a lockout delete them explicitly, in their own
-- transactions, after locking the users row.
CREATE TABLE trusted_devices (
	id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	token_hash   BYTEA  NOT NULL UNIQUE,
	prev_hash    BYTEA,
	label        TEXT   NOT NULL,
	created_at   BIGINT NOT NULL,
	last_used_at BIGINT NOT NULL,
	expires_at   BIGINT NOT NULL
);

-- Listing, revoking, reuse detection and the cascade select by user.
CREATE INDEX trusted_devices_user ON trusted_devices (user_id, prev_hash);
-- DeleteExpiredDevices sweeps by expiry.
CREATE INDEX trusted_devices_expires_at ON trusted_devices (expires_at);
