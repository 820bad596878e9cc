-- DropIndex
DROP INDEX "Generation_apiKeyId_engine_createdAt_id_idx";

-- DropIndex
DROP INDEX "Generation_apiKeyId_status_createdAt_id_idx";

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_deletedAt_status_createdAt_id_idx" ON "Generation"("apiKeyId", "deletedAt", "status", "createdAt", "id");

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_deletedAt_engine_createdAt_id_idx" ON "Generation"("apiKeyId", "deletedAt", "engine", "createdAt", "id");
