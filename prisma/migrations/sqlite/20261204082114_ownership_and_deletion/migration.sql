-- DropIndex
DROP INDEX "Batch_apiKeyId_createdAt_idx";

-- DropIndex
DROP INDEX "Generation_apiKeyId_createdAt_idx";

-- AlterTable
ALTER TABLE "Generation" ADD COLUMN "deletedAt" DATETIME;

-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_SandboxRun" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "prompt" TEXT NOT NULL,
    "params" JSONB NOT NULL,
    "engines" JSONB NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'queued',
    "apiKeyId" TEXT,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "finishedAt" DATETIME,
    CONSTRAINT "SandboxRun_apiKeyId_fkey" FOREIGN KEY ("apiKeyId") REFERENCES "ApiKey" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
INSERT INTO "new_SandboxRun" ("createdAt", "engines", "finishedAt", "id", "params", "prompt", "status") SELECT "createdAt", "engines", "finishedAt", "id", "params", "prompt", "status" FROM "SandboxRun";
DROP TABLE "SandboxRun";
ALTER TABLE "new_SandboxRun" RENAME TO "SandboxRun";
CREATE INDEX "SandboxRun_apiKeyId_createdAt_id_idx" ON "SandboxRun"("apiKeyId", "createdAt", "id");
CREATE INDEX "SandboxRun_createdAt_idx" ON "SandboxRun"("createdAt");
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;

-- CreateIndex
CREATE INDEX "Batch_apiKeyId_createdAt_id_idx" ON "Batch"("apiKeyId", "createdAt", "id");

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_deletedAt_createdAt_id_idx" ON "Generation"("apiKeyId", "deletedAt", "createdAt", "id");

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_status_createdAt_id_idx" ON "Generation"("apiKeyId", "status", "createdAt", "id");

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_engine_createdAt_id_idx" ON "Generation"("apiKeyId", "engine", "createdAt", "id");
