// Reads every row of `users` the way a Prisma 7 app does: the client generated from
// prisma/schema.prisma (by setup.sh), connected through @prisma/adapter-pg to DATABASE_URL.
// Prints the rows as one JSON array on stdout, ordered by id; DateTime fields become ISO 8601
// strings (Date#toJSON). Exits non-zero, with the reason on stderr, on any error.
//
//   DATABASE_URL=postgresql://... node tests/prisma/read-users.mjs

import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "@prisma/client";

const DATE_FIELDS = ["clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt", "deletedAt"];

const connectionString = process.env.DATABASE_URL;
if (!connectionString) {
  console.error("read-users.mjs: set DATABASE_URL to the database holding the users table");
  process.exit(2);
}

const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString }) });
try {
  const users = await prisma.user.findMany({ orderBy: { id: "asc" } });
  // The client must hand DateTime columns to the app as Date objects, not strings.
  for (const user of users) {
    for (const field of DATE_FIELDS) {
      const value = user[field];
      if (value !== null && !(value instanceof Date)) {
        throw new Error(`${user.id}.${field} is ${typeof value} ${JSON.stringify(value)}, not a Date`);
      }
    }
  }
  process.stdout.write(`${JSON.stringify(users)}\n`);
} catch (error) {
  console.error(`read-users.mjs: ${error?.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await prisma.$disconnect();
}
