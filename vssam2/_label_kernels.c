/* Compiled CPU kernels over label maps (the Python face is vssam2/label_kernels.py): the
 * passes that numpy / torch can only write as several full-size temporaries and a stalling
 * histogram.
 *
 * Every function takes C-contiguous buffers of integers (numpy arrays, or torch CPU tensors
 * through .numpy()), checks their item sizes, formats and lengths, and releases the GIL while
 * it runs, so Python threads can run kernels side by side. The Python side (vssam2.refine,
 * vssam2.metrics.functional, vssam2.labels) chooses these kernels for CPU tensors and torch's
 * for CUDA tensors (vssam2.host_kernels).
 *
 * A 480p label map is memory-bound on a CPU: each kernel reads its maps once and allocates
 * nothing per pixel. Histograms over label maps would hit the same counter pixel after pixel
 * (long runs of one id), and a plain `hist[code]++` then waits on its own previous store; these
 * kernels count a block of 32 pixels run by run instead (one vector compare finds where runs
 * start, each run adds its length), so a block of one id is one increment.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Loops that GCC vectorises get an AVX2 build too, picked at load time on CPUs that have it
 * (function multi-versioning, through glibc's ifunc); elsewhere they are built for the
 * baseline instruction set. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define VECTOR_LOOP __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_LOOP
#endif

/* Pixels per block of the run-counting kernels: one bit each in a 32-bit run-start mask. */
#define BLOCK 32

typedef struct {
    Py_buffer view;
    int held;
} Buffer;

static void release(Buffer *buffers, int count) {
    for (int i = 0; i < count; i++) {
        if (buffers[i].held) {
            PyBuffer_Release(&buffers[i].view);
            buffers[i].held = 0;
        }
    }
}

/* Gets a C-contiguous buffer of integers of `itemsize` bytes from `obj` (writable if asked):
 * a float or mistyped array is an error, not a reinterpretation of its bytes. */
static int get_buffer(PyObject *obj, Buffer *out, Py_ssize_t itemsize, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &out->view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous%s array", name, writable ? " writable" : "");
        return -1;
    }
    out->held = 1;
    const char *format = out->view.format ? out->view.format : "B";
    if (*format == '@' || *format == '=' || *format == '<' || *format == '>' || *format == '!') format++;
    if (out->view.itemsize != itemsize || strlen(format) != 1 || !strchr("bBhHiIlLqQnN", *format)) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd-byte integers, got format '%s' of %zd-byte items", name,
                     itemsize, out->view.format ? out->view.format : "B", out->view.itemsize);
        return -1;
    }
    return 0;
}

static Py_ssize_t items(const Buffer *b, Py_ssize_t itemsize) { return b->view.len / itemsize; }

static int same_length(const Buffer *a, Py_ssize_t a_size, const Buffer *b, Py_ssize_t b_size, const char *what) {
    if (items(a, a_size) != items(b, b_size)) {
        PyErr_Format(PyExc_ValueError, "%s: lengths differ (%zd vs %zd)", what, items(a, a_size), items(b, b_size));
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------------------------------- */
/* Range check                                                                              */

VECTOR_LOOP static Py_ssize_t count_out_of_range_impl(const uint8_t *x, Py_ssize_t n, uint8_t limit, uint8_t also) {
    Py_ssize_t total = 0;
    Py_ssize_t i = 0;
    /* Byte counters per block of 255 pixels cannot overflow; the compare vectorises. */
    while (i < n) {
        Py_ssize_t stop = n - i < 255 ? n : i + 255;
        uint8_t bad = 0;
        for (; i < stop; i++) bad += (uint8_t)((x[i] >= limit) & (x[i] != also));
        total += bad;
    }
    return total;
}

PyDoc_STRVAR(count_out_of_range_doc,
             "count_out_of_range(ids, num_classes, also) -> int\n\n"
             "Number of uint8 ids that are >= num_classes and != also (the ignore id).");

static PyObject *count_out_of_range(PyObject *self, PyObject *args) {
    PyObject *obj;
    int num_classes, also;
    if (!PyArg_ParseTuple(args, "Oii", &obj, &num_classes, &also)) return NULL;
    if (num_classes < 0 || num_classes > 256 || also < 0 || also > 255) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= num_classes <= 256 and 0 <= also <= 255");
        return NULL;
    }
    Buffer ids;
    memset(&ids, 0, sizeof ids);
    if (get_buffer(obj, &ids, 1, 0, "ids") < 0) {
        release(&ids, 1);
        return NULL;
    }
    Py_ssize_t bad = 0;
    if (num_classes < 256) {
        Py_BEGIN_ALLOW_THREADS
        bad = count_out_of_range_impl(ids.view.buf, ids.view.len, (uint8_t)num_classes, (uint8_t)also);
        Py_END_ALLOW_THREADS
    }
    release(&ids, 1);
    return PyLong_FromSsize_t(bad);
}

/* --------------------------------------------------------------------------------------- */
/* Run-counting histograms                                                                  */

/* Whether x[0..BLOCK) all equal v (one vectorised OR of differences). */
static inline int block_equal_u32(const uint32_t *x, uint32_t v) {
    uint32_t diff = 0;
    for (int k = 0; k < BLOCK; k++) diff |= x[k] ^ v;
    return diff == 0;
}

static inline int lowest_bit(uint32_t x) { /* x != 0 */
#if defined(__GNUC__)
    return __builtin_ctz(x);
#else
    int k = 0;
    while (!(x & 1u)) x >>= 1, k++;
    return k;
#endif
}

/* Bit k set where x[k] != x[k - 1], for the BLOCK bytes at x; bit 0 compares with x[-1],
 * which must be readable unless `first` (then bit 0 is set). The callers set bit 0 anyway:
 * they count each block's runs on their own. */
static inline uint32_t change_mask_u8(const uint8_t *x, int first) {
    uint32_t changed = 1u;
    if (first) {
        for (int k = 1; k < BLOCK; k++) changed |= (uint32_t)(x[k] != x[k - 1]) << k;
        return changed;
    }
#if defined(__SSE2__)
    uint32_t same_low = (uint16_t)_mm_movemask_epi8(
        _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)x), _mm_loadu_si128((const __m128i *)(x - 1))));
    uint32_t same_high = (uint16_t)_mm_movemask_epi8(
        _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(x + 16)), _mm_loadu_si128((const __m128i *)(x + 15))));
    return ~(same_low | (same_high << 16));
#else
    changed = 0;
    for (int k = 0; k < BLOCK; k++) changed |= (uint32_t)(x[k] != x[k - 1]) << k;
    return changed;
#endif
}

/* The same for BLOCK 4-byte ids. */
static inline uint32_t change_mask_u32(const uint32_t *x, int first) {
    uint32_t changed = 1u;
    if (first) {
        for (int k = 1; k < BLOCK; k++) changed |= (uint32_t)(x[k] != x[k - 1]) << k;
        return changed;
    }
#if defined(__SSE2__)
    uint32_t same = 0;
    for (int v = 0; v < BLOCK / 4; v++) {
        __m128i now = _mm_loadu_si128((const __m128i *)(x + 4 * v));
        __m128i before = _mm_loadu_si128((const __m128i *)(x + 4 * v - 1));
        same |= (uint32_t)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(now, before))) << (4 * v);
    }
    return ~same;
#else
    changed = 0;
    for (int k = 0; k < BLOCK; k++) changed |= (uint32_t)(x[k] != x[k - 1]) << k;
    return changed;
#endif
}

/* hist[(rows[i] << 8) | cols[i]] += 1 for all i. A block of BLOCK pixels is counted run by
 * run: one vector compare of each map with itself shifted by one marks where runs of one
 * pair start, and each run adds its length at once, so a block of one pair (the bulk of a
 * label map) is one increment. Two runs in a row never share a counter, so the increments
 * never wait on each other as a plain hist[code]++ over a region of one code does. */
static void joint_histogram_impl(const uint8_t *rows, const uint8_t *cols, Py_ssize_t n, int64_t *hist) {
    Py_ssize_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        const uint8_t *r = rows + i, *c = cols + i;
        uint32_t starts = change_mask_u8(r, i == 0) | change_mask_u8(c, i == 0) | 1u; /* runs are counted per block */
        while (starts) {
            int k = lowest_bit(starts);
            starts &= starts - 1;
            hist[((uint32_t)r[k] << 8) | c[k]] += (starts ? lowest_bit(starts) : BLOCK) - k;
        }
    }
    for (; i < n; i++) hist[((uint32_t)rows[i] << 8) | cols[i]]++;
}

PyDoc_STRVAR(joint_histogram_doc,
             "joint_histogram(rows, cols, hist) -> None\n\n"
             "Adds the counts of (rows[i], cols[i]) byte pairs to hist, an int64 buffer of 65536\n"
             "bins indexed rows[i] * 256 + cols[i]; rows and cols are uint8 buffers of one length.");

static PyObject *joint_histogram(PyObject *self, PyObject *args) {
    PyObject *objs[3];
    if (!PyArg_ParseTuple(args, "OOO", &objs[0], &objs[1], &objs[2])) return NULL;
    Buffer b[3];
    memset(b, 0, sizeof b);
    if (get_buffer(objs[0], &b[0], 1, 0, "rows") < 0 || get_buffer(objs[1], &b[1], 1, 0, "cols") < 0 ||
        get_buffer(objs[2], &b[2], 8, 1, "hist") < 0 || same_length(&b[0], 1, &b[1], 1, "rows and cols") < 0) {
        release(b, 3);
        return NULL;
    }
    if (items(&b[2], 8) != 65536) {
        PyErr_Format(PyExc_ValueError, "hist: expected 65536 int64 bins, got %zd", items(&b[2], 8));
        release(b, 3);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    joint_histogram_impl(b[0].view.buf, b[1].view.buf, b[0].view.len, b[2].view.buf);
    Py_END_ALLOW_THREADS
    release(b, 3);
    Py_RETURN_NONE;
}

/* hist[(seg[i] << 8) | base[i]] += 1, run by run as joint_histogram_impl; returns the
 * number of pixels whose id is not below rows (they are not counted). */
static Py_ssize_t vote_histogram_impl(const uint32_t *seg, const uint8_t *base, Py_ssize_t n, uint32_t rows,
                                      int64_t *hist) {
    Py_ssize_t bad = 0, i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        const uint32_t *s = seg + i;
        const uint8_t *c = base + i;
        uint32_t starts = change_mask_u32(s, i == 0) | change_mask_u8(c, i == 0) | 1u; /* runs are counted per block */
        while (starts) {
            int k = lowest_bit(starts);
            starts &= starts - 1;
            int length = (starts ? lowest_bit(starts) : BLOCK) - k;
            if (s[k] < rows) hist[((uint64_t)s[k] << 8) | c[k]] += length; else bad += length;
        }
    }
    for (; i < n; i++) {
        if (seg[i] < rows) hist[((uint64_t)seg[i] << 8) | base[i]]++; else bad++;
    }
    return bad;
}

PyDoc_STRVAR(vote_histogram_doc,
             "vote_histogram(segments, base, hist) -> int\n\n"
             "Adds the counts of (segment id, base id) pairs to hist, an int64 buffer of rows * 256\n"
             "bins indexed id * 256 + base id. segments is an int32 (or uint32) buffer, base a uint8\n"
             "buffer of the same length. Returns how many pixels had an id outside 0...rows-1 (negative\n"
             "int32 ids included); those are not counted.");

static PyObject *vote_histogram(PyObject *self, PyObject *args) {
    PyObject *objs[3];
    if (!PyArg_ParseTuple(args, "OOO", &objs[0], &objs[1], &objs[2])) return NULL;
    Buffer b[3];
    memset(b, 0, sizeof b);
    if (get_buffer(objs[0], &b[0], 4, 0, "segments") < 0 || get_buffer(objs[1], &b[1], 1, 0, "base") < 0 ||
        get_buffer(objs[2], &b[2], 8, 1, "hist") < 0 || same_length(&b[0], 4, &b[1], 1, "segments and base") < 0) {
        release(b, 3);
        return NULL;
    }
    Py_ssize_t bins = items(&b[2], 8);
    if (bins % 256 || bins / 256 > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "hist: expected rows * 256 int64 bins, got %zd", bins);
        release(b, 3);
        return NULL;
    }
    Py_ssize_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = vote_histogram_impl(b[0].view.buf, b[1].view.buf, items(&b[1], 1), (uint32_t)(bins / 256), b[2].view.buf);
    Py_END_ALLOW_THREADS
    release(b, 3);
    return PyLong_FromSsize_t(bad);
}

/* out[i] = paint[seg[i]] where that is >= 0, else base[i]. A block of one id is one memset
 * (or memcpy of the base): masklets are large, so almost every block is. Returns 0, or -1 at
 * the first id not below rows (the output is then partial). */
static int paint_votes_impl(const uint32_t *seg, const uint8_t *base, Py_ssize_t n, const int16_t *paint,
                            uint32_t rows, uint8_t *out) {
    Py_ssize_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        const uint32_t *s = seg + i;
        if (block_equal_u32(s, s[0])) {
            if (s[0] >= rows) return -1;
            if (paint[s[0]] >= 0) memset(out + i, paint[s[0]], BLOCK);
            else memcpy(out + i, base + i, BLOCK);
            continue;
        }
        uint32_t largest = 0;
        for (int k = 0; k < BLOCK; k++) largest = s[k] > largest ? s[k] : largest;
        if (largest >= rows) return -1;
        for (int k = 0; k < BLOCK; k++) {
            int16_t value = paint[s[k]];
            out[i + k] = value >= 0 ? (uint8_t)value : base[i + k];
        }
    }
    for (; i < n; i++) {
        if (seg[i] >= rows) return -1;
        int16_t value = paint[seg[i]];
        out[i] = value >= 0 ? (uint8_t)value : base[i];
    }
    return 0;
}

PyDoc_STRVAR(paint_votes_doc,
             "paint_votes(segments, base, paint, out) -> None\n\n"
             "out[i] = paint[segments[i]] where that is >= 0, else base[i]: int32 segment ids (histogram\n"
             "rows), uint8 base ids, an int16 paint id per row (-1 = keep the base) and a uint8 output of\n"
             "the segments' length. Raises ValueError if an id is outside 0...len(paint)-1.");

static PyObject *paint_votes(PyObject *self, PyObject *args) {
    PyObject *objs[4];
    if (!PyArg_ParseTuple(args, "OOOO", &objs[0], &objs[1], &objs[2], &objs[3])) return NULL;
    Buffer b[4];
    memset(b, 0, sizeof b);
    if (get_buffer(objs[0], &b[0], 4, 0, "segments") < 0 || get_buffer(objs[1], &b[1], 1, 0, "base") < 0 ||
        get_buffer(objs[2], &b[2], 2, 0, "paint") < 0 || get_buffer(objs[3], &b[3], 1, 1, "out") < 0 ||
        same_length(&b[0], 4, &b[1], 1, "segments and base") < 0 ||
        same_length(&b[0], 4, &b[3], 1, "segments and out") < 0) {
        release(b, 4);
        return NULL;
    }
    const int16_t *paint = b[2].view.buf;
    Py_ssize_t n = items(&b[0], 4), rows = items(&b[2], 2);
    for (Py_ssize_t r = 0; r < rows; r++) {
        if (paint[r] > 255) {
            PyErr_Format(PyExc_ValueError, "paint: row %zd paints id %d, not a byte", r, paint[r]);
            release(b, 4);
            return NULL;
        }
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = rows > UINT32_MAX ? -1 : paint_votes_impl(b[0].view.buf, b[1].view.buf, n, paint, (uint32_t)rows, b[3].view.buf);
    Py_END_ALLOW_THREADS
    release(b, 4);
    if (status < 0) {
        PyErr_Format(PyExc_ValueError, "segments: an id is outside 0...%zd (the paint table's rows)", rows - 1);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------------------------------- */
/* Video consistency: stable-run lengths                                                    */

/* Pixels per step. A block of the run state is carried through all the frames of a chunk
 * while it stays in L1, so the state and each frame cross the memory bus once per chunk
 * instead of once per frame. */
#define RUN_BLOCK 8192

/* Counts of x[i] >= t over n <= RUN_BLOCK bytes (byte counters per 255: they vectorise). */
static int64_t count_at_least(const uint8_t *x, Py_ssize_t n, uint8_t t) {
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n;) {
        Py_ssize_t end = n - i < 255 ? n : i + 255;
        uint8_t count = 0;
        for (; i < end; i++) count += (uint8_t)(x[i] >= t);
        total += count;
    }
    return total;
}

VECTOR_LOOP static void advance_runs_impl(const uint8_t *targets, const uint8_t *preds, Py_ssize_t frames, Py_ssize_t n,
                              const uint8_t *last_target, const uint8_t *last_preds, uint8_t *gt_run,
                              uint8_t *both_run, uint8_t cap, const uint8_t *thresholds, Py_ssize_t k,
                              int64_t *counts) {
    for (Py_ssize_t start = 0; start < n; start += RUN_BLOCK) {
        Py_ssize_t size = n - start < RUN_BLOCK ? n - start : RUN_BLOCK;
        uint8_t *g = gt_run + start, *b = both_run + start;
        for (Py_ssize_t f = 0; f < frames; f++) {
            const uint8_t *target = targets + f * n + start, *pred = preds + f * n + start;
            const uint8_t *before_target = f ? target - n : last_target + start;
            const uint8_t *before_pred = f ? pred - n : last_preds + start;
            for (Py_ssize_t i = 0; i < size; i++) {
                uint8_t same = (uint8_t)(target[i] == before_target[i]);
                uint8_t both = (uint8_t)(same & (pred[i] == before_pred[i]));
                uint8_t next_g = g[i] < cap ? g[i] + 1 : cap;
                uint8_t next_b = b[i] < cap ? b[i] + 1 : cap;
                g[i] = (uint8_t)(next_g * same);
                b[i] = (uint8_t)(next_b * both);
            }
            for (Py_ssize_t j = 0; j < k; j++) {
                counts[(f * k + j) * 2] += count_at_least(b, size, thresholds[j]);
                counts[(f * k + j) * 2 + 1] += count_at_least(g, size, thresholds[j]);
            }
        }
    }
}

PyDoc_STRVAR(advance_runs_doc,
             "advance_runs(targets, preds, frames, last_target, last_preds, gt_run, both_run, cap, thresholds,"
             " counts) -> None\n\n"
             "Frames of the mVC run-length state, in place. For each of `frames` frames (targets and preds\n"
             "hold them one after the other, each of the state's length; the frame before the first is\n"
             "last_target / last_preds): where target == the frame before's, gt_run <- min(gt_run + 1,\n"
             "cap), else 0; where also preds == the frame before's, both_run likewise, else 0. Then for\n"
             "each byte t = thresholds[j], counts[f, j, 0] = |both_run >= t| and counts[f, j, 1] =\n"
             "|gt_run >= t| after frame f. Maps are uint8; counts is int64 (frames * len(thresholds) * 2)\n"
             "and is overwritten.");

static PyObject *advance_runs(PyObject *self, PyObject *args) {
    PyObject *objs[6], *thresholds_obj, *counts_obj;
    Py_ssize_t frames;
    int cap;
    if (!PyArg_ParseTuple(args, "OOnOOOOiOO", &objs[0], &objs[1], &frames, &objs[2], &objs[3], &objs[4], &objs[5],
                          &cap, &thresholds_obj, &counts_obj))
        return NULL;
    static const char *names[6] = {"targets", "preds", "last_target", "last_preds", "gt_run", "both_run"};
    Buffer b[8];
    memset(b, 0, sizeof b);
    for (int i = 0; i < 6; i++) {
        if (get_buffer(objs[i], &b[i], 1, i >= 4, names[i]) < 0 ||
            (i == 1 && same_length(&b[0], 1, &b[1], 1, "targets and preds") < 0) ||
            (i > 2 && same_length(&b[2], 1, &b[i], 1, names[i]) < 0)) {
            release(b, 8);
            return NULL;
        }
    }
    if (get_buffer(thresholds_obj, &b[6], 1, 0, "thresholds") < 0 || get_buffer(counts_obj, &b[7], 8, 1, "counts") < 0) {
        release(b, 8);
        return NULL;
    }
    Py_ssize_t n = b[2].view.len, k = b[6].view.len;
    if (frames < 0 || b[0].view.len != frames * n || items(&b[7], 8) != 2 * k * frames || cap < 0 || cap > 255) {
        PyErr_SetString(PyExc_ValueError,
                        "advance_runs: need frames * len(state) bytes of targets and preds, "
                        "frames * len(thresholds) * 2 counts and 0 <= cap <= 255");
        release(b, 8);
        return NULL;
    }
    int64_t *counts = b[7].view.buf;
    Py_BEGIN_ALLOW_THREADS
    memset(counts, 0, (size_t)(2 * k * frames) * sizeof(int64_t));
    advance_runs_impl(b[0].view.buf, b[1].view.buf, frames, n, b[2].view.buf, b[3].view.buf, b[4].view.buf,
                      b[5].view.buf, (uint8_t)cap, b[6].view.buf, k, counts);
    Py_END_ALLOW_THREADS
    release(b, 8);
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------------------------------- */
/* Boundary band                                                                            */

/* The band of width w around a GT map's boundaries: valid pixels p with a pixel q of another
 * GT value in the window W(p) of chessboard radius w (inside the image). Such a q exists iff
 * W(p) holds two 4-adjacent pixels of different values: walk from p to q inside W(p), one
 * step at a time; conversely, of two different values one differs from p's. So the band is
 * the OR of two dilations: of the horizontal changes (pairs x, x+1) by w rows and w..w-1
 * columns, and of the vertical changes (pairs y, y+1) by w..w-1 rows and w columns. On rows
 * packed 64 pixels to a word that is a few word operations per pixel row, instead of the
 * window max and min of every pixel. */

/* Bit k set where a[k] != b[k], for the 64 bytes at a and b. */
static inline uint64_t differ_mask64(const uint8_t *a, const uint8_t *b) {
#if defined(__SSE2__)
    uint64_t same = 0;
    for (int k = 0; k < 4; k++) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + 16 * k));
        __m128i y = _mm_loadu_si128((const __m128i *)(b + 16 * k));
        same |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x, y)) << (16 * k);
    }
    return ~same;
#else
    uint64_t differ = 0;
    for (int k = 0; k < 64; k++) differ |= (uint64_t)(a[k] != b[k]) << k;
    return differ;
#endif
}

/* Bit k set where a[k] != v, for the 64 bytes at a. */
static inline uint64_t not_value_mask64(const uint8_t *a, uint8_t v) {
#if defined(__SSE2__)
    __m128i value = _mm_set1_epi8((char)v);
    uint64_t same = 0;
    for (int k = 0; k < 4; k++) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + 16 * k));
        same |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x, value)) << (16 * k);
    }
    return ~same;
#else
    uint64_t differ = 0;
    for (int k = 0; k < 64; k++) differ |= (uint64_t)(a[k] != v) << k;
    return differ;
#endif
}

/* One GT row packed 64 pixels to a word, in one pass: horizontal changes (bit x: row[x] !=
 * row[x + 1], x < width - 1), vertical changes (row[x] != next[x]; 0 without a next row),
 * valid (row[x] != ignore) and differ (pred[x] != row[x]). The last, partial word is packed
 * from copies padded so that the pixels past the row set no bit. */
static void pack_row(const uint8_t *row, const uint8_t *next, const uint8_t *pred, Py_ssize_t width, uint8_t ignore,
                     Py_ssize_t words, uint64_t *changes_h, uint64_t *changes_v, uint64_t *valid, uint64_t *differ) {
    for (Py_ssize_t w = 0; w < words; w++) {
        Py_ssize_t start = w * 64;
        const uint8_t *r = row + start, *n = next ? next + start : NULL, *p = pred + start;
        uint8_t padded_r[65], padded_n[64], padded_p[64];
        if (start + 64 >= width) { /* the last word: pad with the last pixel (no change), ignore (not valid) */
            Py_ssize_t count = width - start;
            memset(padded_r, row[width - 1], sizeof padded_r);
            memcpy(padded_r, r, (size_t)count);
            memcpy(padded_n, padded_r, 64);
            if (n) memcpy(padded_n, n, (size_t)count);
            memcpy(padded_p, padded_r, 64);
            memcpy(padded_p, p, (size_t)count);
            r = padded_r, n = n ? padded_n : NULL, p = padded_p;
            valid[w] = not_value_mask64(r, ignore) & (count == 64 ? ~0ULL : ((1ULL << count) - 1));
        } else {
            valid[w] = not_value_mask64(r, ignore);
        }
        changes_h[w] = differ_mask64(r, r + 1);
        changes_v[w] = n ? differ_mask64(r, n) : 0;
        differ[w] = differ_mask64(r, p);
    }
}

/* A frame's bits as one long row: each image row is `words` words (bits past the frame width
 * are 0) followed by `guard` zero words, and the plane starts with `guard` zero words too.
 * A guard is at least as wide as the band radius, so shifting the long row by up to the
 * radius moves no bit from one image row into the next, and no read leaves the plane. */
typedef struct {
    Py_ssize_t words;  /* words per image row */
    Py_ssize_t guard;  /* zero words before each row (and after the last) */
    Py_ssize_t stride; /* words + guard */
    Py_ssize_t total;  /* words in a plane: guard + height * stride */
} PlaneLayout;

static uint64_t *plane_row(uint64_t *plane, const PlaneLayout *layout, Py_ssize_t y) {
    return plane + layout->guard + y * layout->stride;
}

/* dst[i] |= bits of src shifted so that bit x of the result is bit x + d of src, over the
 * plane's words guard..total-1 (the reads stay within the plane for |d| <= 64 * guard). */
VECTOR_LOOP static void or_shifted(const uint64_t *src, uint64_t *dst, const PlaneLayout *layout, Py_ssize_t d) {
    Py_ssize_t q = d >= 0 ? d / 64 : -((-d + 63) / 64); /* floor(d / 64) */
    int r = (int)(d - q * 64);                          /* 0..63 */
    Py_ssize_t start = layout->guard, stop = layout->total - layout->guard;
    const uint64_t *low = src + q, *high = src + q + 1;
    if (r == 0) {
        for (Py_ssize_t i = start; i < stop; i++) dst[i] |= low[i];
    } else {
        for (Py_ssize_t i = start; i < stop; i++) dst[i] |= (low[i] >> r) | (high[i] << (64 - r));
    }
}

/* x |= x shifted by d bits (d != 0), in place: bit p gets bit p + d as it was before. Word i
 * reads words i + floor(d / 64) and the one after, all on the side not yet written when the
 * loop walks away from them (up for d > 0, down for d < 0). */
VECTOR_LOOP static void or_shifted_in_place(uint64_t *x, const PlaneLayout *layout, Py_ssize_t d) {
    Py_ssize_t q = d >= 0 ? d / 64 : -((-d + 63) / 64); /* floor(d / 64) */
    int r = (int)(d - q * 64);                          /* 0..63 */
    Py_ssize_t start = layout->guard, stop = layout->total - layout->guard;
    if (d > 0) {
        for (Py_ssize_t i = start; i < stop; i++)
            x[i] |= r ? (x[i + q] >> r) | (x[i + q + 1] << (64 - r)) : x[i + q];
    } else {
        for (Py_ssize_t i = stop - 1; i >= start; i--)
            x[i] |= r ? (x[i + q] >> r) | (x[i + q + 1] << (64 - r)) : x[i + q];
    }
}

/* dst = OR of src shifted by sign * e for e = 0..count - 1 (1 <= count <= 64 * guard + 1),
 * by doubling the span 1, 2, 4, ... in place: about log2(count) passes. Every bit is then
 * the OR of src over a span on one side of it, so reading it up to count - 1 bits further
 * that way only reaches guard zeros past the row's end, never the next row. */
static void run_or(const uint64_t *src, uint64_t *dst, const PlaneLayout *layout, Py_ssize_t count, int sign) {
    memcpy(dst, src, (size_t)layout->total * sizeof(uint64_t));
    Py_ssize_t span = 1;
    for (; span * 2 <= count; span *= 2) or_shifted_in_place(dst, layout, sign * span);
    if (span < count) or_shifted_in_place(dst, layout, sign * (count - span));
}

/* dst = OR of src shifted by every d in -before..after (1 <= before, 0 <= after): the run
 * 0..after, and the run -before..-1 as the run -(before - 1)..0 moved by -1. The guards of
 * dst are not cleared (only image rows are read later). scratch: one plane. */
static void dilate_rows(const uint64_t *src, uint64_t *dst, uint64_t *scratch, const PlaneLayout *layout,
                        Py_ssize_t before, Py_ssize_t after) {
    run_or(src, dst, layout, after + 1, 1);
    run_or(src, scratch, layout, before, -1);
    or_shifted(scratch, dst, layout, -1);
}

/* Bits set in x (SWAR: no popcnt instruction is assumed). */
static inline int64_t popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int64_t)((x * 0x0101010101010101ULL) >> 56);
}

/* Planes a frame needs: horizontal and vertical changes, their dilations, valid and differ
 * bits, and a scratch plane; plus one row to gather a row's neighbourhood. */
#define BAND_PLANES 7

/* One frame: counts[0] = |band|, counts[1] = |{p in band : preds = target}|; band bytes (0/1)
 * into band_out if given. planes: BAND_PLANES * layout->total + layout->words zeroed words. */
VECTOR_LOOP static void boundary_band_frame(const uint8_t *target, const uint8_t *preds, Py_ssize_t height, Py_ssize_t width,
                                Py_ssize_t radius, uint8_t ignore, const PlaneLayout *layout, uint64_t *planes,
                                int64_t *counts, uint8_t *band_out) {
    Py_ssize_t words = layout->words, total = layout->total;
    uint64_t *changes_h = planes, *changes_v = planes + total, *wide_h = planes + 2 * total;
    uint64_t *wide_v = planes + 3 * total, *valid = planes + 4 * total, *differ = planes + 5 * total;
    uint64_t *scratch = planes + 6 * total, *near = planes + BAND_PLANES * total;
    for (Py_ssize_t y = 0; y < height; y++) {
        const uint8_t *row = target + y * width;
        pack_row(row, y + 1 < height ? row + width : NULL, preds + y * width, width, ignore, words,
                 plane_row(changes_h, layout, y), plane_row(changes_v, layout, y), plane_row(valid, layout, y),
                 plane_row(differ, layout, y));
    }
    /* Horizontal dilation: pair (x', x' + 1) lies in columns x - r..x + r iff x' in x - r..x + r - 1. */
    dilate_rows(changes_h, wide_h, scratch, layout, radius, radius - 1);
    dilate_rows(changes_v, wide_v, scratch, layout, radius, radius);
    /* Vertical dilation. Row y needs the horizontal changes of rows y - r..y + r and the
     * vertical pairs (y', y' + 1) with y' in y - r..y + r - 1: merged, rows y - r..y + r - 1
     * of both (wide_v becomes their OR) and row y + r of the horizontal ones. */
    for (Py_ssize_t y = 0; y < height; y++) {
        uint64_t *both = plane_row(wide_v, layout, y);
        const uint64_t *horizontal = plane_row(wide_h, layout, y);
        for (Py_ssize_t i = 0; i < words; i++) both[i] |= horizontal[i];
    }
    int64_t band_total = 0, agree_total = 0;
    for (Py_ssize_t y = 0; y < height; y++) {
        Py_ssize_t low = y - radius < 0 ? 0 : y - radius;
        Py_ssize_t high = y + radius - 1 > height - 1 ? height - 1 : y + radius - 1;
        if (y + radius <= height - 1)
            memcpy(near, plane_row(wide_h, layout, y + radius), (size_t)words * sizeof(uint64_t));
        else
            memset(near, 0, (size_t)words * sizeof(uint64_t));
        for (Py_ssize_t k = low; k <= high; k++) {
            const uint64_t *source = plane_row(wide_v, layout, k);
            for (Py_ssize_t i = 0; i < words; i++) near[i] |= source[i];
        }
        const uint64_t *valid_row = plane_row(valid, layout, y), *differ_row = plane_row(differ, layout, y);
        for (Py_ssize_t i = 0; i < words; i++) {
            uint64_t band = near[i] & valid_row[i];
            band_total += popcount64(band);
            agree_total += popcount64(band & ~differ_row[i]);
            if (band_out) {
                Py_ssize_t start = i * 64, stop = start + 64 < width ? start + 64 : width;
                for (Py_ssize_t x = start; x < stop; x++) band_out[y * width + x] = (uint8_t)((band >> (x - start)) & 1);
            }
        }
    }
    counts[0] = band_total;
    counts[1] = agree_total;
}

/* Zeroed scratch planes of `words` words for the calling thread, kept between calls: fresh
 * memory for every chunk would pay its page faults again (≈ 0.3 ms for 480p). Zeroing them
 * each call matters: the guards must be 0, and their places move with the layout. */
#if defined(__GNUC__)
static __thread uint64_t *cached_planes = NULL;
static __thread size_t cached_words = 0;

static uint64_t *band_planes(size_t words) {
    if (words > cached_words) {
        free(cached_planes);
        cached_planes = malloc(words * sizeof(uint64_t));
        cached_words = cached_planes ? words : 0;
        if (!cached_planes) return NULL;
    }
    memset(cached_planes, 0, words * sizeof(uint64_t));
    return cached_planes;
}

static void band_planes_done(uint64_t *planes) { (void)planes; /* kept for the next call */ }
#else
/* No thread-local storage: a buffer per call. */
static uint64_t *band_planes(size_t words) { return calloc(words, sizeof(uint64_t)); }

static void band_planes_done(uint64_t *planes) { free(planes); }
#endif

PyDoc_STRVAR(boundary_band_doc,
             "boundary_band(target, preds, frames, height, width, radius, ignore, counts, band=None) -> None\n\n"
             "Boundary band of each (height, width) GT frame: valid pixels (target != ignore) within\n"
             "chessboard distance radius of a pixel with another GT value (pixels outside the frame do not\n"
             "count). counts[2k] = |band|, counts[2k + 1] = |{p in band : preds = target}| of frame k;\n"
             "band, if given, gets the band as 0/1 bytes. target, preds and band are uint8 buffers of\n"
             "frames * height * width; counts is int64 (2 * frames).");

static PyObject *boundary_band(PyObject *self, PyObject *args) {
    PyObject *objs[3], *band_obj = Py_None;
    Py_ssize_t frames, height, width, radius;
    int ignore;
    if (!PyArg_ParseTuple(args, "OOnnnniO|O", &objs[0], &objs[1], &frames, &height, &width, &radius, &ignore,
                          &objs[2], &band_obj))
        return NULL;
    Buffer b[4];
    memset(b, 0, sizeof b);
    if (get_buffer(objs[0], &b[0], 1, 0, "target") < 0 || get_buffer(objs[1], &b[1], 1, 0, "preds") < 0 ||
        get_buffer(objs[2], &b[2], 8, 1, "counts") < 0 || same_length(&b[0], 1, &b[1], 1, "target and preds") < 0 ||
        (band_obj != Py_None &&
         (get_buffer(band_obj, &b[3], 1, 1, "band") < 0 || same_length(&b[0], 1, &b[3], 1, "target and band") < 0))) {
        release(b, 4);
        return NULL;
    }
    if (frames < 0 || height < 0 || width < 0 || radius < 1 || ignore < 0 || ignore > 255 ||
        b[0].view.len != frames * height * width || items(&b[2], 8) != 2 * frames) {
        PyErr_SetString(PyExc_ValueError,
                        "boundary_band: need radius >= 1, 0 <= ignore <= 255, frames * height * width map bytes "
                        "and 2 * frames counts");
        release(b, 4);
        return NULL;
    }
    PlaneLayout layout;
    layout.words = (width + 63) / 64;
    layout.guard = (radius + 63) / 64;
    layout.stride = layout.words + layout.guard;
    layout.total = layout.guard + height * layout.stride;
    int empty = frames == 0 || height == 0 || width == 0;
    uint64_t *planes = empty ? NULL : band_planes(BAND_PLANES * (size_t)layout.total + (size_t)layout.words);
    if (!empty && !planes) {
        release(b, 4);
        return PyErr_NoMemory();
    }
    const uint8_t *target = b[0].view.buf, *preds = b[1].view.buf;
    uint8_t *band = band_obj != Py_None ? b[3].view.buf : NULL;
    int64_t *counts = b[2].view.buf;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t size = height * width;
    for (Py_ssize_t k = 0; k < frames; k++) {
        if (size == 0) {
            counts[2 * k] = counts[2 * k + 1] = 0;
            continue;
        }
        boundary_band_frame(target + k * size, preds + k * size, height, width, radius, (uint8_t)ignore, &layout,
                            planes, counts + 2 * k, band ? band + k * size : NULL);
    }
    Py_END_ALLOW_THREADS
    if (planes) band_planes_done(planes);
    release(b, 4);
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"count_out_of_range", count_out_of_range, METH_VARARGS, count_out_of_range_doc},
    {"joint_histogram", joint_histogram, METH_VARARGS, joint_histogram_doc},
    {"vote_histogram", vote_histogram, METH_VARARGS, vote_histogram_doc},
    {"paint_votes", paint_votes, METH_VARARGS, paint_votes_doc},
    {"advance_runs", advance_runs, METH_VARARGS, advance_runs_doc},
    {"boundary_band", boundary_band, METH_VARARGS, boundary_band_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vssam2._label_kernels",
    "Compiled CPU kernels over label maps (run-counting histograms, majority-vote painting,\n"
    "mVC run lengths, boundary bands, id range checks). They release the GIL.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__label_kernels(void) { return PyModule_Create(&module); }
