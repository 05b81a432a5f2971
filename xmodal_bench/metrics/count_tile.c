/* Fused compare-and-count over one float32 score tile (xmodal_bench.metrics.fused).
 *
 * For a rows x cols tile S (row stride ld), adds to
 *   row_counts[i]  the number of j with S[i][j] > row_thr[i]   (>= when row_ge)
 *   col_counts[j]  the number of i with S[i][j] > col_thr[j]   (>= when col_ge)
 * in one pass over the tile, the tile read once. Counts are exact integers. */
#include <stdint.h>
#include <stdlib.h>

#define KERNEL(NAME, ROW_OP, COL_OP)                                                              \
    static void NAME(const float *S, int64_t rows, int64_t cols, int64_t ld, const float *row_thr, \
                     const float *col_thr, int64_t *row_counts, int32_t *acc) {                    \
        for (int64_t i = 0; i < rows; ++i) {                                                       \
            const float *s = S + i * ld;                                                           \
            const float r = row_thr[i];                                                            \
            int32_t n = 0;                                                                         \
            for (int64_t j = 0; j < cols; ++j) {                                                   \
                const float v = s[j];                                                              \
                n += (v ROW_OP r);                                                                 \
                acc[j] += (v COL_OP col_thr[j]);                                                   \
            }                                                                                      \
            row_counts[i] += n;                                                                    \
        }                                                                                          \
    }

KERNEL(count_gt_gt, >, >)
KERNEL(count_gt_ge, >, >=)
KERNEL(count_ge_gt, >=, >)
KERNEL(count_ge_ge, >=, >=)

/* Returns 0, or -1 when the scratch counts cannot be allocated (nothing is changed then). */
int xmb_count_tile(const float *S, int64_t rows, int64_t cols, int64_t ld, const float *row_thr,
                   const float *col_thr, int row_ge, int col_ge, int64_t *row_counts,
                   int64_t *col_counts) {
    int32_t *acc = (int32_t *)calloc((size_t)(cols > 0 ? cols : 1), sizeof(int32_t));
    if (!acc) return -1;
    if (row_ge) {
        if (col_ge) count_ge_ge(S, rows, cols, ld, row_thr, col_thr, row_counts, acc);
        else count_ge_gt(S, rows, cols, ld, row_thr, col_thr, row_counts, acc);
    } else {
        if (col_ge) count_gt_ge(S, rows, cols, ld, row_thr, col_thr, row_counts, acc);
        else count_gt_gt(S, rows, cols, ld, row_thr, col_thr, row_counts, acc);
    }
    for (int64_t j = 0; j < cols; ++j) col_counts[j] += acc[j];
    free(acc);
    return 0;
}
