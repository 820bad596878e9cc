-- AlterEnum
ALTER TYPE "WeightsKind" ADD VALUE 'random';
