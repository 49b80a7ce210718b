/* Exercises compiler/aot/pool.c the way numba's parfor code calls it (tests/aot/test_threads.py
 * compiles this with the pool pasted in): a region per call of `sum_region`, whose gufunc body adds
 * its items into a per-thread slot indexed by get_thread_id(); some bodies start a nested region;
 * several host threads run regions at once. Prints "ok" and exits 0 when every sum is right. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#define HIDDEN
#include POOL_C

typedef struct { const int64_t *values; int64_t *slots; int nested; int64_t nested_sum; } job_t;

static int64_t sum_region(const int64_t *values, int64_t n, int nested);

/* The gufunc: dims[0] schedule rows of (start, stop) for a 1-D loop; args[0] points at the current
   row (step: 2 entries), args[1] at the job (step 0). */
static void body(char **args, size_t *dims, size_t *steps, void *data) {
    (void)data;
    char *row = args[0];
    job_t *job = (job_t *)args[1];
    int64_t tid = get_thread_id();
    if (tid < 0 || tid >= 64) abort();
    for (size_t k = 0; k < dims[0]; k++, row += steps[0]) {
        const int64_t *r = (const int64_t *)row;
        for (int64_t i = r[0]; i <= r[1]; i++) {
            job->slots[tid] += job->values[i];
            if (job->nested && i == r[0]) {
                /* a prange kernel called from inside a region: must run serially, team of one */
                if (get_num_threads() != 1) abort();
                job->slots[tid] += 0 * sum_region(job->values, 100, 0);
            }
        }
    }
}

static int64_t sum_region(const int64_t *values, int64_t n, int nested) {
    int64_t start = 0, stop = n - 1;
    size_t threads = (size_t)get_num_threads();
    size_t divisions = get_sched_size(threads, 1, &start, &stop);
    int64_t *sched = allocate_sched(divisions * 2);
    do_scheduling_signed(1, &start, &stop, divisions, sched, 0);
    int64_t slots[64] = {0};
    job_t job = {values, slots, nested, 0};
    char *args[2] = {(char *)sched, (char *)&job};
    size_t dims[2] = {divisions, 2};
    size_t steps[2] = {2 * sizeof(int64_t), 0};
    numba_parallel_for((void *)body, args, dims, steps, NULL, 1, 2, (int)threads);
    deallocate_sched(sched);
    int64_t total = 0;
    for (size_t t = 0; t < threads; t++) total += slots[t];
    for (size_t t = threads; t < 64; t++) if (slots[t]) abort();   /* ids stay below the team size */
    return total;
}

static int64_t values[100000];

static void *caller(void *arg) {
    int64_t seed = (int64_t)(intptr_t)arg, bad = 0;
    for (int rep = 0; rep < 2000; rep++) {
        int64_t n = 1 + (seed * 7919 + rep * 104729) % 100000;
        int64_t want = n * (n - 1) / 2;
        if (sum_region(values, n, rep % 3 == 0) != want) bad++;
    }
    return (void *)(intptr_t)bad;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0, callers = argc > 2 ? atoi(argv[2]) : 3;
    for (int64_t i = 0; i < 100000; i++) values[i] = i;
    nj_pool_set_threads(threads);
    pthread_t t[16];
    int64_t bad = (int64_t)(intptr_t)caller((void *)1);          /* one caller, the pool to itself */
    for (int k = 0; k < callers; k++) pthread_create(&t[k], NULL, caller, (void *)(intptr_t)(k + 2));
    for (int k = 0; k < callers; k++) { void *r; pthread_join(t[k], &r); bad += (int64_t)(intptr_t)r; }
    printf("%s threads=%d workers=%d bad=%lld\n", bad ? "FAIL" : "ok", nj_pool_threads(),
           atomic_load(&nj_pool.started), (long long)bad);
    return bad != 0;
}
