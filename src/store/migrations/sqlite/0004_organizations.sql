-- The same tables as on PostgreSQL (see migrations/postgres/0004_organizations.sql for the
-- reasons, and for the one deliberate difference from Prisma's DDL: no foreign key from
-- "userId" to the users table). SQLite cannot add a constraint to an existing table, so the
-- foreign key to organizations is part of CREATE TABLE; clerk-sync's connections enforce it
-- (sqlx turns PRAGMA foreign_keys on for every connection).
CREATE TABLE {organizations} (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "slug" TEXT,
    "imageUrl" TEXT,
    "createdBy" TEXT,
    "clerkCreatedAt" DATETIME,
    "clerkUpdatedAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "deletedAt" DATETIME,

    CONSTRAINT "organizations_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "organizations_slug_key" ON {organizations}("slug");

CREATE TABLE {memberships} (
    "id" TEXT NOT NULL,
    "organizationId" TEXT NOT NULL,
    "userId" TEXT NOT NULL,
    "role" TEXT NOT NULL,
    "clerkCreatedAt" DATETIME,
    "clerkUpdatedAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,

    CONSTRAINT "organization_memberships_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "organization_memberships_organizationId_fkey" FOREIGN KEY ("organizationId") REFERENCES {organizations} ("id") ON DELETE CASCADE ON UPDATE CASCADE
);

CREATE INDEX "organization_memberships_userId_idx" ON {memberships}("userId");
CREATE UNIQUE INDEX "organization_memberships_organizationId_userId_key" ON {memberships}("organizationId", "userId");

CREATE TABLE clerk_sync_organization_tombstones (
    organization_id TEXT PRIMARY KEY,
    deleted_at DATETIME NOT NULL
);

CREATE TABLE clerk_sync_membership_tombstones (
    membership_id TEXT PRIMARY KEY,
    deleted_at_ms INTEGER NOT NULL,
    organization_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    recorded_at DATETIME NOT NULL
);
