-- Rewrap replaces every person's wrapped data key and KEK version; with an index on
-- kek_version each of those updates also moved an index entry. The PostgreSQL schema
-- drops the index so that rewrap rewrites rows in place (see its 0005); SQLite follows,
-- so that both stores keep the same indexes. Counting data keys per KEK version (key
-- status, the rewrap job's start and the end of each pass) reads the whole table.
DROP INDEX persons_kek_version;
