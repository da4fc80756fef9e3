-- 0002: leases for work one process does at a time (key rewrap), with the
-- state its holder last saved so an interrupted job resumes.
--
-- lease_until is unix milliseconds; a lease that ended before now is free.
CREATE TABLE jobs (
	name        TEXT    NOT NULL PRIMARY KEY,
	owner       TEXT    NOT NULL,
	lease_until INTEGER NOT NULL,
	state       BLOB    NOT NULL
) STRICT, WITHOUT ROWID;
