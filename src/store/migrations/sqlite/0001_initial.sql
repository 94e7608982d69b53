-- The same tables as on PostgreSQL (see migrations/postgres/0001_initial.sql for the reasons);
-- SQLite has no schemas, so clerk-sync's own tables carry a clerk_sync_ prefix instead.
CREATE TABLE {users} (
    "id" TEXT NOT NULL,
    "email" TEXT,
    "firstName" TEXT,
    "lastName" TEXT,
    "name" TEXT,
    "imageUrl" TEXT,
    "username" TEXT,
    "clerkCreatedAt" DATETIME,
    "clerkUpdatedAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "deletedAt" DATETIME,

    CONSTRAINT "{table}_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "{table}_email_key" ON {users}("email");
CREATE INDEX "{table}_email_idx" ON {users}("email");
CREATE UNIQUE INDEX "{table}_username_key" ON {users}("username");
CREATE INDEX "{table}_username_idx" ON {users}("username");

CREATE TABLE clerk_sync_inbox (
    svix_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    user_id TEXT,
    outcome TEXT NOT NULL,
    error TEXT,
    payload TEXT NOT NULL,
    svix_timestamp INTEGER NOT NULL,
    received_at DATETIME NOT NULL
);
CREATE INDEX clerk_sync_inbox_failed_idx ON clerk_sync_inbox (received_at) WHERE outcome = 'failed';

CREATE TABLE clerk_sync_tombstones (
    user_id TEXT PRIMARY KEY,
    deleted_at DATETIME NOT NULL
);

CREATE TABLE clerk_sync_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at DATETIME NOT NULL
);
