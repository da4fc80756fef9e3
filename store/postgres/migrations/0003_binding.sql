-- 0003: which keyring binding each secret is sealed under (store.Binding).
-- Rows written before namespaces are bound to the bare user id (0); new
-- secrets to 'user:' || id (1). A rewrap moves the old rows.
ALTER TABLE users ADD COLUMN binding SMALLINT NOT NULL DEFAULT 0 CHECK (binding IN (0, 1));
