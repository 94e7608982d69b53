-- Clerk Organizations and their memberships, beside the users table (in its schema), exactly as
-- Prisma creates the `Organization` and `OrganizationMembership` models of prisma/schema.prisma
-- (prisma/expected-ddl.sql), with ONE deliberate difference: no foreign key from
-- organization_memberships."userId" to the users table (Prisma's DDL has
-- "organization_memberships_userId_fkey"). Clerk sends membership events independently of user
-- events: a membership may arrive before its user, and a user may be hard-deleted while events
-- about their memberships are still in flight; a foreign key would refuse those rows, or the
-- user's deletion. The Prisma model still declares the relation, for `include`.
-- An app that already has its own "organizations" or "organization_memberships" table is refused
-- before this runs (migrations.rs): adopting existing organization tables is not supported.
CREATE TABLE {organizations} (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "slug" TEXT,
    "imageUrl" TEXT,
    "createdBy" TEXT,
    "clerkCreatedAt" TIMESTAMP(3),
    "clerkUpdatedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    "deletedAt" TIMESTAMP(3),

    CONSTRAINT "organizations_pkey" PRIMARY KEY ("id")
);

-- Nullable and unique: an organization whose slug a newer one took over holds NULL until its own
-- next event.
CREATE UNIQUE INDEX "organizations_slug_key" ON {organizations}("slug");

CREATE TABLE {memberships} (
    "id" TEXT NOT NULL,
    "organizationId" TEXT NOT NULL,
    "userId" TEXT NOT NULL,
    "role" TEXT NOT NULL,
    "clerkCreatedAt" TIMESTAMP(3),
    "clerkUpdatedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "organization_memberships_pkey" PRIMARY KEY ("id")
);

CREATE INDEX "organization_memberships_userId_idx" ON {memberships}("userId");
CREATE UNIQUE INDEX "organization_memberships_organizationId_userId_key" ON {memberships}("organizationId", "userId");

-- Removing an organization's row removes its memberships. (No "userId" foreign key: see above.)
ALTER TABLE {memberships} ADD CONSTRAINT "organization_memberships_organizationId_fkey" FOREIGN KEY ("organizationId") REFERENCES {organizations}("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Deleted organization ids, kept after the deletion so that a late organization.created or
-- organization.updated cannot bring the organization back.
CREATE TABLE clerk_sync.organization_tombstones (
    organization_id TEXT PRIMARY KEY,
    deleted_at TIMESTAMP(3) NOT NULL
);

-- Deleted memberships, for the same reason: deleted_at_ms is Clerk's time of the deletion (ms),
-- organization_id and user_id the pair it joined, recorded_at when clerk-sync recorded it.
CREATE TABLE clerk_sync.membership_tombstones (
    membership_id TEXT PRIMARY KEY,
    deleted_at_ms BIGINT NOT NULL,
    organization_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    recorded_at TIMESTAMP(3) NOT NULL
);
