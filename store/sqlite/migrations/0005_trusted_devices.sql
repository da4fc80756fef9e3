-- 0005: trusted devices (store.TrustedDevice). Only keyed hashes of the
-- device tokens are kept: token_hash of the current token (unique), and
-- prev_hash of the token the last use rotated away, so that its reuse is
-- seen. The id is public and random. Rows go with their user (ON DELETE
-- CASCADE), and DeleteUser, ReplaceRecoveryCodes and a lockout delete them
-- explicitly in their own transactions.
CREATE TABLE trusted_devices (
	id           TEXT    NOT NULL PRIMARY KEY,
	user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	token_hash   BLOB    NOT NULL UNIQUE,
	prev_hash    BLOB,
	label        TEXT    NOT NULL,
	created_at   INTEGER NOT NULL,
	last_used_at INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Listing, revoking and reuse detection select by user (and prev_hash).
CREATE INDEX trusted_devices_user ON trusted_devices (user_id, prev_hash);
-- DeleteExpiredDevices sweeps by expiry.
CREATE INDEX trusted_devices_expires_at ON trusted_devices (expires_at);
