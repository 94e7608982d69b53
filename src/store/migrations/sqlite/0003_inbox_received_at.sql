-- See migrations/postgres/0003_inbox_received_at.sql.
CREATE INDEX clerk_sync_inbox_received_at_idx ON clerk_sync_inbox (received_at);
