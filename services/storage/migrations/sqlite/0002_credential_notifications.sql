-- Nothing: SQLite cannot notify other processes, so an embedded store never caches
-- credentials (src/credential_cache.rs). The file keeps the two folders' numbering equal.
SELECT 1;
