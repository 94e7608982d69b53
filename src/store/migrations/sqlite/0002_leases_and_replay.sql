-- See migrations/postgres/0002_leases_and_replay.sql for the reasons.
CREATE TABLE clerk_sync_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DATETIME NOT NULL
);

ALTER TABLE clerk_sync_inbox ADD COLUMN replayed_at DATETIME;
