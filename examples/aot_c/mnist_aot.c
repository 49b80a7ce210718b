/* Classify the MNIST test digits with an ahead-of-time compiled LeNet bundle (netjit aot).
 *
 *   mnist_aot IMAGES.idx LABELS.idx WEIGHTS.bin [LOGITS_OUT.f32]
 *
 * IMAGES/LABELS are the uncompressed IDX files (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte);
 * WEIGHTS is the bundle's NAME.weights.bin. The bundle is chosen at compile time: build.sh passes
 * -DBUNDLE=lenet and includes lenet.h. The batch size is the bundle's (its input's first dim);
 * a last partial batch is padded with zeros. Prints the accuracy; with LOGITS_OUT also writes every
 * digit's logits as raw float32 (what tests compare with the Python loader). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BUNDLE
#define BUNDLE lenet
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(suffix) CAT(BUNDLE, suffix)

size_t FN(_weights_bytes)(void);
size_t FN(_scratch_bytes)(void);
int FN(_num_inputs)(void);
int FN(_num_outputs)(void);
int FN(_input_ndim)(int);
const int64_t *FN(_input_shape)(int);
size_t FN(_output_bytes)(int);
const char *FN(_input_dtype)(int);
const char *FN(_strerror)(int);
int FN(_run)(const void *, void *, const void *const *, void *const *);

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return NULL; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "%s: read failed\n", path); fclose(f); free(buf); return NULL; }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

/* 64-byte aligned copy of a file (the bundle wants aligned weights). */
static void *aligned_bytes(size_t n) { return aligned_alloc(64, (n + 63) / 64 * 64 + 64); }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s IMAGES.idx LABELS.idx WEIGHTS.bin [LOGITS_OUT.f32]\n", argv[0]); return 2; }
    size_t isize, lsize, wsize;
    unsigned char *images = read_file(argv[1], &isize), *labels = read_file(argv[2], &lsize);
    unsigned char *wfile = read_file(argv[3], &wsize);
    if (!images || !labels || !wfile) return 1;
    if (isize < 16 || be32(images) != 0x803 || lsize < 8 || be32(labels) != 0x801) {
        fprintf(stderr, "not IDX image/label files\n"); return 1;
    }
    size_t count = be32(images + 4), rows = be32(images + 8), cols = be32(images + 12);
    if (be32(labels + 4) != count || isize < 16 + count * rows * cols || lsize < 8 + count) {
        fprintf(stderr, "image and label files disagree\n"); return 1;
    }
    if (wsize != FN(_weights_bytes)()) {
        fprintf(stderr, "%s: %zu bytes, the bundle wants %zu\n", argv[3], wsize, FN(_weights_bytes)()); return 1;
    }
    const int64_t *shape = FN(_input_shape)(0);
    if (FN(_num_inputs)() != 1 || FN(_num_outputs)() != 1 || FN(_input_ndim)(0) != 4 ||
        shape[1] != 1 || (size_t)shape[2] != rows || (size_t)shape[3] != cols || strcmp(FN(_input_dtype)(0), "float32")) {
        fprintf(stderr, "the bundle does not take N x 1 x %zu x %zu float32 images\n", rows, cols); return 1;
    }
    size_t batch = (size_t)shape[0], pixels = rows * cols;
    size_t classes = FN(_output_bytes)(0) / sizeof(float) / batch;
    void *weights = aligned_bytes(wsize), *scratch = aligned_bytes(FN(_scratch_bytes)());
    float *input = aligned_bytes(batch * pixels * sizeof(float));
    float *logits = aligned_bytes(batch * classes * sizeof(float));
    float *all = malloc(count * classes * sizeof(float));
    if (!weights || !scratch || !input || !logits || !all) { fprintf(stderr, "out of memory\n"); return 1; }
    memcpy(weights, wfile, wsize);
    const void *ins[1] = {input};
    void *outs[1] = {logits};
    size_t correct = 0;
    for (size_t start = 0; start < count; start += batch) {
        size_t n = count - start < batch ? count - start : batch;
        memset(input, 0, batch * pixels * sizeof(float));
        for (size_t i = 0; i < n * pixels; i++) input[i] = images[16 + start * pixels + i] / 255.0f;
        int code = FN(_run)(weights, scratch, ins, outs);
        if (code) { fprintf(stderr, "run failed: %s\n", FN(_strerror)(code)); return 1; }
        for (size_t b = 0; b < n; b++) {
            const float *row = logits + b * classes;
            size_t best = 0;
            for (size_t c = 1; c < classes; c++) if (row[c] > row[best]) best = c;
            correct += best == labels[8 + start + b];
            memcpy(all + (start + b) * classes, row, classes * sizeof(float));
        }
    }
    /* the bundle split its kernels over this many threads (its pool; NAME_set_num_threads) */
    printf("threads: %d\n", FN(_get_num_threads)());
    printf("accuracy: %.4f (%zu/%zu)\n", (double)correct / (double)count, correct, count);
    if (argc > 4) {
        FILE *f = fopen(argv[4], "wb");
        if (!f || fwrite(all, sizeof(float), count * classes, f) != count * classes) { perror(argv[4]); return 1; }
        fclose(f);
    }
    return 0;
}
