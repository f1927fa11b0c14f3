/**
 * The `audit:` section of config.yaml. Defaults were chosen from measurements on TrashNet
 * photos with planted copies (README, `pipeline audit`): see each field.
 */
import { z } from 'zod';

const unit = (name: string) => z.number().refine((v) => v > 0 && v <= 1, { message: `${name} must be > 0 and <= 1` });

export const AuditSchema = z
  .object({
    duplicates: z
      .object({
        /**
         * Two different files are near duplicates when their embeddings' cosine is at least
         * `cosine` and their 64-bit perceptual hashes differ in at most `phash_distance`
         * bits; or, for crops, which move many hash bits but few embedding dimensions, when
         * the cosine is at least `strong_cosine` and the hashes differ in at most
         * `strong_phash_distance` bits (unrelated photos differ in about 32).
         * Measured on TrashNet photos with planted copies: re-encoded, resized, brightened
         * and recoloured copies had cosine >= 0.855 and distance <= 6; 5-10% crops had
         * cosine >= 0.934 and distance 6..20; different photos of similar objects reached
         * cosine 0.89 at distance 18 and distance 4..6 at cosine <= 0.77.
         */
        cosine: unit('duplicates.cosine').default(0.85),
        phash_distance: z.number().int().min(0).max(64).default(8),
        strong_cosine: unit('duplicates.strong_cosine').default(0.93),
        strong_phash_distance: z.number().int().min(0).max(64).default(22),
      })
      .strict()
      .prefault({}),
    label_issues: z
      .object({
        /** Out-of-sample probabilities come from k-fold linear heads: k folds. */
        folds: z.number().int().min(3).max(20).default(5),
        epochs: z.number().int().min(1).max(1000).default(50),
        learning_rate: z.number().positive().max(10).default(0.001),
        dropout: z.number().min(0).max(0.95).default(0.2),
        seed: z.number().int().min(0).default(1),
      })
      .strict()
      .prefault({}),
    outliers: z
      .object({
        /** An image's typicality: mean cosine to its `neighbors` nearest images of its class. */
        neighbors: z.number().int().min(1).max(100).default(10),
        /** The least typical images listed per class. */
        per_class: z.number().int().min(0).max(1000).default(5),
      })
      .strict()
      .prefault({}),
    map: z
      .object({
        neighbors: z.number().int().min(2).max(100).default(15),
        min_dist: z.number().min(0).max(1).default(0.1),
        epochs: z.number().int().min(10).max(2000).default(200),
        seed: z.number().int().min(0).default(1),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type AuditConfig = z.output<typeof AuditSchema>;

export const DEFAULT_AUDIT_CONFIG: AuditConfig = AuditSchema.parse({});
