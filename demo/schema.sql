-- The reference platform's database (the primary; the replica follows it).
-- Applied by scripts/platform.sh on the primary's `demo` database; idempotent.
--
-- Versions: a community's feed_version is bumped by every change to one of its
-- posts, and the changed post takes the new value as its version. So a post's
-- version only rises, and one number (the event's version) orders both the
-- post and every page of its community's feed.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

CREATE TABLE IF NOT EXISTS communities (
  id           bigint PRIMARY KEY,
  name         text   NOT NULL,
  feed_version bigint NOT NULL DEFAULT 1,
  post_count   bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS posts (
  id           bigserial PRIMARY KEY,
  community_id bigint NOT NULL REFERENCES communities (id),
  author       text   NOT NULL,
  title        text   NOT NULL,
  body         text   NOT NULL,
  version      bigint NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS posts_feed ON posts (community_id, id DESC);

-- The database brownout of the incident drill: every read of feeds-service
-- calls this; it sleeps demo.read_delay_ms (a setting changed on the replica
-- only, by `scripts/platform.sh slow MS`), 0 when unset.
CREATE OR REPLACE FUNCTION demo_read_delay() RETURNS void LANGUAGE sql VOLATILE AS $$
  SELECT pg_sleep(coalesce(nullif(current_setting('demo.read_delay_ms', true), ''), '0')::float8 / 1000.0)
$$;

-- feeds-service reads as `feeds` (pg_stat_statements counts its queries by
-- this role), posts-service writes as `posts`.
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'feeds') THEN CREATE ROLE feeds LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'posts') THEN CREATE ROLE posts LOGIN; END IF;
END $$;
GRANT SELECT ON communities, posts TO feeds;
GRANT EXECUTE ON FUNCTION demo_read_delay() TO feeds;
GRANT SELECT, INSERT, UPDATE, DELETE ON communities, posts TO posts;
GRANT USAGE, SELECT ON SEQUENCE posts_id_seq TO posts;
GRANT CREATE ON SCHEMA public TO posts;  -- the outbox's tables (tiercache::MigrateOutbox)
