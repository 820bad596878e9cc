-- DropIndex
DROP INDEX "Batch_apiKeyId_createdAt_idx";

-- DropIndex
DROP INDEX "Generation_apiKeyId_createdAt_idx";

-- AlterTable
ALTER TABLE "Generation" ADD COLUMN     "deletedAt" TIMESTAMP(3);

-- AlterTable
ALTER TABLE "SandboxRun" ADD COLUMN     "apiKeyId" TEXT;

-- CreateIndex
CREATE INDEX "Batch_apiKeyId_createdAt_id_idx" ON "Batch"("apiKeyId", "createdAt", "id");

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_deletedAt_createdAt_id_idx" ON "Generation"("apiKeyId", "deletedAt", "createdAt", "id");

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_status_createdAt_id_idx" ON "Generation"("apiKeyId", "status", "createdAt", "id");

-- CreateIndex
CREATE INDEX "Generation_apiKeyId_engine_createdAt_id_idx" ON "Generation"("apiKeyId", "engine", "createdAt", "id");

-- CreateIndex
CREATE INDEX "SandboxRun_apiKeyId_createdAt_id_idx" ON "SandboxRun"("apiKeyId", "createdAt", "id");

-- AddForeignKey
ALTER TABLE "SandboxRun" ADD CONSTRAINT "SandboxRun_apiKeyId_fkey" FOREIGN KEY ("apiKeyId") REFERENCES "ApiKey"("id") ON DELETE SET NULL ON UPDATE CASCADE;
