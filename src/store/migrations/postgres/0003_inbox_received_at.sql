-- The status page and `clerk-sync events list` read the newest events and the last hour's;
-- without this index they would scan the whole inbox.
CREATE INDEX inbox_received_at_idx ON clerk_sync.inbox (received_at);
