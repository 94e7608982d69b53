// Reads every user with their organization memberships, and each membership's organization, the
// way a Prisma 7 app does: the client generated from prisma/schema.prisma (by setup.sh), connected
// through @prisma/adapter-pg to DATABASE_URL, with
//   include: { memberships: { include: { organization: true } } }
// Prints the users as one JSON array on stdout, ordered by id, each user's memberships ordered by
// organizationId; DateTime fields become ISO 8601 strings (Date#toJSON). Exits non-zero, with the
// reason on stderr, on any error.
//
//   DATABASE_URL=postgresql://... node tests/prisma/read-memberships.mjs
//
// With --membership-user ID it instead reads the memberships of user ID from the membership's side,
// `include: { user: true }`, and prints {"memberships": [...]}, or {"error": "..."} if the client
// refuses. That is for a user whose row does not exist (clerk-sync creates no foreign key from
// "userId" to users): what the relation, declared required, gives then.

import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "@prisma/client";

const DATE_FIELDS = {
  user: ["clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt", "deletedAt"],
  membership: ["clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt"],
  organization: ["clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt", "deletedAt"],
};

const connectionString = process.env.DATABASE_URL;
if (!connectionString) {
  console.error("read-memberships.mjs: set DATABASE_URL to the database holding the tables");
  process.exit(2);
}
const args = process.argv.slice(2);
const membershipUser = args[0] === "--membership-user" ? args[1] : undefined;
if (args.length > 0 && !membershipUser) {
  console.error("read-memberships.mjs: the only option is --membership-user USER_ID");
  process.exit(2);
}

/** The client must hand DateTime columns to the app as Date objects, not strings. */
function checkDates(kind, row) {
  for (const field of DATE_FIELDS[kind]) {
    const value = row[field];
    if (value !== null && !(value instanceof Date)) {
      throw new Error(`${kind} ${row.id}.${field} is ${typeof value} ${JSON.stringify(value)}, not a Date`);
    }
  }
}

const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString }) });
try {
  if (membershipUser) {
    let result;
    try {
      const memberships = await prisma.organizationMembership.findMany({
        where: { userId: membershipUser },
        orderBy: { id: "asc" },
        include: { user: true },
      });
      result = { memberships };
    } catch (error) {
      result = { error: String(error?.message ?? error) };
    }
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const users = await prisma.user.findMany({
      orderBy: { id: "asc" },
      include: {
        memberships: { orderBy: { organizationId: "asc" }, include: { organization: true } },
      },
    });
    for (const user of users) {
      checkDates("user", user);
      for (const membership of user.memberships) {
        checkDates("membership", membership);
        checkDates("organization", membership.organization);
      }
    }
    process.stdout.write(`${JSON.stringify(users)}\n`);
  }
} catch (error) {
  console.error(`read-memberships.mjs: ${error?.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await prisma.$disconnect();
}
