/* Running exact top-k lists over float32 score tiles (xmodal_bench.metrics.topk).
 *
 * For a rows x cols tile S (row stride ld) at (row0, col0) of a score matrix, merges each entry
 * into the top-k list of its row (row_k > 0) and of its column (col_k > 0). A list is kept in
 * the order of a stable descending sort: higher score first, on equal scores the lower index
 * (column index in a row list, row index in a column list), so the order the tiles come in does
 * not change the lists. Lists start as (-inf, INT32_MAX) sentinels. An entry costs a comparison
 * with its row's and its column's current k-th score (16 at a time, vectorised) unless it
 * reaches one of them; only those entries are looked at one by one. */
#include <math.h>
#include <stdint.h>

#define STEP 16

/* Puts (v, id) into the sorted list (val, idx) of length k when it belongs; returns the k-th score. */
static inline float insert(float *val, int32_t *idx, int64_t k, float v, int32_t id) {
    const float last = val[k - 1];
    if (v < last || (v == last && id > idx[k - 1])) return last;
    int64_t p = k - 1;
    while (p > 0 && val[p - 1] < v) {
        val[p] = val[p - 1];
        idx[p] = idx[p - 1];
        --p;
    }
    while (p > 0 && val[p - 1] == v && idx[p - 1] > id) {  // ties: the lower index first
        val[p] = val[p - 1];
        idx[p] = idx[p - 1];
        --p;
    }
    val[p] = v;
    idx[p] = id;
    return val[k - 1];
}

/* Bit t set: entry t of the STEP entries at s reaches the row threshold r or its column's ct[t]. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline uint32_t reached(const float *s, float r, const float *ct, const int do_rows, const int do_cols) {
    const __m512 v = _mm512_loadu_ps(s);
    __mmask16 hit = 0;
    if (do_rows) hit |= _mm512_cmp_ps_mask(v, _mm512_set1_ps(r), _CMP_GE_OQ);
    if (do_cols) hit |= _mm512_cmp_ps_mask(v, _mm512_loadu_ps(ct), _CMP_GE_OQ);
    return hit;
}
#elif defined(__AVX__)
#include <immintrin.h>
static inline uint32_t reached(const float *s, float r, const float *ct, const int do_rows, const int do_cols) {
    uint32_t hit = 0;
    for (int h = 0; h < STEP; h += 8) {
        const __m256 v = _mm256_loadu_ps(s + h);
        uint32_t m = 0;
        if (do_rows) m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(r), _CMP_GE_OQ));
        if (do_cols) m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_loadu_ps(ct + h), _CMP_GE_OQ));
        hit |= m << h;
    }
    return hit;
}
#else
static inline uint32_t reached(const float *s, float r, const float *ct, const int do_rows, const int do_cols) {
    uint32_t hit = 0;
    for (int t = 0; t < STEP; ++t) hit |= (uint32_t)((do_rows && s[t] >= r) | (do_cols && s[t] >= ct[t])) << t;
    return hit;
}
#endif

static inline __attribute__((always_inline)) void tile(
    const float *S, int64_t rows, int64_t cols, int64_t ld, int64_t row0, int64_t col0, float *row_val,
    int32_t *row_idx, int64_t row_k, float *col_val, int32_t *col_idx, float *col_kth, int64_t col_k,
    const int do_rows, const int do_cols) {
    float *ct = col_kth + col0;
    for (int64_t i = 0; i < rows; ++i) {
        const float *s = S + i * ld;
        float *rv = do_rows ? row_val + (row0 + i) * row_k : 0;
        int32_t *ri = do_rows ? row_idx + (row0 + i) * row_k : 0;
        float r = do_rows ? rv[row_k - 1] : INFINITY;
        const int32_t gi = (int32_t)(row0 + i);
        for (int64_t j0 = 0; j0 < cols; j0 += STEP) {
            uint32_t hit;
            if (j0 + STEP <= cols) {
                hit = reached(s + j0, r, ct + j0, do_rows, do_cols);
            } else {
                hit = (1u << (cols - j0)) - 1;  // the tail: every entry is checked below
            }
            while (hit) {  // thresholds only rise: an entry below them stays below
                const int64_t j = j0 + __builtin_ctz(hit);
                hit &= hit - 1;
                const float v = s[j];
                if (do_rows && v >= r) r = insert(rv, ri, row_k, v, (int32_t)(col0 + j));
                if (do_cols && v >= ct[j])
                    ct[j] = insert(col_val + (col0 + j) * col_k, col_idx + (col0 + j) * col_k, col_k, v, gi);
            }
        }
    }
}

/* row_val/row_idx: [all rows, row_k] lists; col_val/col_idx: [all cols, col_k] lists; col_kth
 * [all cols]: each column list's k-th score, kept up to date here. Lists are initialised by the
 * caller (sentinels). row_k == 0 or col_k == 0 leaves that direction out. */
void xmb_topk_tile(const float *S, int64_t rows, int64_t cols, int64_t ld, int64_t row0, int64_t col0,
                   float *row_val, int32_t *row_idx, int64_t row_k, float *col_val, int32_t *col_idx,
                   float *col_kth, int64_t col_k) {
    if (row_k > 0 && col_k > 0)
        tile(S, rows, cols, ld, row0, col0, row_val, row_idx, row_k, col_val, col_idx, col_kth, col_k, 1, 1);
    else if (row_k > 0)
        tile(S, rows, cols, ld, row0, col0, row_val, row_idx, row_k, col_val, col_idx, col_kth, col_k, 1, 0);
    else if (col_k > 0)
        tile(S, rows, cols, ld, row0, col0, row_val, row_idx, row_k, col_val, col_idx, col_kth, col_k, 0, 1);
}
