-- Leases: which process runs a job (scheduled reconciliation, backfill) right now. A row per
-- job with an expiry, taken and renewed by single statements, so it works through a
-- transaction-mode pooler (Neon's -pooler endpoint), where session-level advisory locks do not.
CREATE TABLE clerk_sync.leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMP(3) NOT NULL
);

-- When a stored event was last re-applied by `clerk-sync events replay`.
ALTER TABLE clerk_sync.inbox ADD COLUMN replayed_at TIMESTAMP(3);
