-- Seed data: :communities communities; community c has about
-- :posts_max / c^0.6 posts (at least 30), so popular communities have long feeds.
-- Only when the table is empty. psql variables: communities, posts_max.
INSERT INTO communities (id, name)
SELECT c, 'community ' || c FROM generate_series(1, :communities) AS c
WHERE NOT EXISTS (SELECT 1 FROM communities);

INSERT INTO posts (community_id, author, title, body, version)
SELECT c, 'author' || (p % 97), 'post ' || p || ' of community ' || c,
       repeat('lorem ipsum dolor sit amet ', 6), 1
FROM generate_series(1, :communities) AS c,
     LATERAL generate_series(1, greatest(30, (:posts_max / power(c, 0.6))::int)) AS p
WHERE NOT EXISTS (SELECT 1 FROM posts);

UPDATE communities c SET post_count = s.n
FROM (SELECT community_id, count(*) AS n FROM posts GROUP BY community_id) s
WHERE s.community_id = c.id AND c.post_count = 0;
ANALYZE communities;
ANALYZE posts;
