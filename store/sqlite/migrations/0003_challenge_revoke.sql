-- 0003: what revoking a held login at the app needs (its session
-- credentials), encrypted under the keyring and bound to the user, so the
-- sweeper can end the app session of a challenge that expired unused.
-- NULL: nothing to revoke, or already handed to the revoker.
ALTER TABLE challenges ADD COLUMN revoke BLOB;
