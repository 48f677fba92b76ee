-- Rewrap replaces every person's wrapped data key and KEK version. With an index on
-- kek_version, each of those updates also wrote a new entry into every index of
-- persons; without it, PostgreSQL rewrites the row on its own page (a heap-only tuple)
-- and the indexes stay as they are: a million rewraps took 23.2 s of server time with
-- the index and 10.7 s without (PostgreSQL 15, 2 cores). Counting data keys per KEK
-- version (key status, the rewrap job's start and the end of each pass) reads the whole
-- table instead, about 0.2 s per million people.
DROP INDEX persons_kek_version;
