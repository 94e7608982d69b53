-- The app's table ({users}, "users" unless configured), exactly as Prisma creates the design's recommended `User` model
-- (`prisma/schema.prisma`), with two deliberate changes:
--   * "email" is nullable: Clerk users may sign up with a phone number, a username or a wallet;
--   * "deletedAt" marks users deleted in soft-delete mode.
-- Unique indexes allow many NULLs, so users without email or username never collide.
CREATE TABLE {users} (
    "id" TEXT NOT NULL,
    "email" TEXT,
    "firstName" TEXT,
    "lastName" TEXT,
    "name" TEXT,
    "imageUrl" TEXT,
    "username" TEXT,
    "clerkCreatedAt" TIMESTAMP(3),
    "clerkUpdatedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    "deletedAt" TIMESTAMP(3),

    CONSTRAINT "{table}_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "{table}_email_key" ON {users}("email");
CREATE INDEX "{table}_email_idx" ON {users}("email");
CREATE UNIQUE INDEX "{table}_username_key" ON {users}("username");
CREATE INDEX "{table}_username_idx" ON {users}("username");

-- clerk-sync: end of the users table (an existing table is adopted instead of created above)

-- Every verified delivery, keyed by svix-id: a redelivery finds its row and changes nothing.
-- The raw body is kept so failed events can be inspected and replayed.
CREATE TABLE clerk_sync.inbox (
    svix_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    user_id TEXT,
    outcome TEXT NOT NULL,
    error TEXT,
    payload TEXT NOT NULL,
    svix_timestamp BIGINT NOT NULL,
    received_at TIMESTAMP(3) NOT NULL
);
-- Failed events are few and looked up by operators; a partial index keeps the hot path cheap.
CREATE INDEX inbox_failed_idx ON clerk_sync.inbox (received_at) WHERE outcome = 'failed';

-- Deleted user ids, kept after the row is gone so a late user.created/updated cannot bring the
-- user back.
CREATE TABLE clerk_sync.tombstones (
    user_id TEXT PRIMARY KEY,
    deleted_at TIMESTAMP(3) NOT NULL
);

-- Small named values clerk-sync keeps for itself (cursors, leases).
CREATE TABLE clerk_sync.state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL
);
