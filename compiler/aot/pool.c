/* netjit bundle thread pool: the parallel-region entry points numba's parfor lowering calls.
 *
 * A bundle's kernels are numba's parallel (prange) variants. Their object code calls, by name:
 *   get_num_threads, get_thread_id, set_num_threads      - team size and the caller's index in it
 *   get_sched_size, allocate_sched, do_scheduling_*,     - cut a loop nest's iteration space into
 *   deallocate_sched, get/set_parallel_chunksize           divisions (one row of starts/stops each)
 *   numba_parallel_for                                   - run a gufunc over the divisions in parallel
 * This file gives them a small pool of persistent pthreads, written for bundles (no Python, no
 * OpenMP runtime). It is pasted into NAME_bundle.c, where HIDDEN keeps every symbol private to the
 * .so, so two bundles in one program each have their own pool.
 *
 * - Workers (count - 1 of them; the calling thread is member 0) start on the first region that
 *   wants them. Between regions a worker spins for up to 200 us (a net's regions follow each other
 *   within microseconds; NETJIT_AOT_SPIN_US changes it), yielding the core now and then, then
 *   sleeps on a condition variable, so an idle bundle burns no core. (Measured on the shared
 *   2-core VM, ResNet-50 batch 1 with 2 threads: a pure 1 ms spin took 528 ms a run, the same
 *   spin with sched_yield 141 ms, 200 us with yields 103 ms; one thread 89 ms.)
 * - One region runs on the pool at a time. A region started while the pool is busy (another host
 *   thread's run) or from inside a region (a nested prange) runs serially on its caller, so nothing
 *   can deadlock; get_num_threads() answers 1 inside a region so nested kernels size themselves
 *   for one thread.
 * - numba_parallel_for's calling convention is a gufunc's: fn(args, dims, steps, data) loops over
 *   dims[0] items, advancing args[j] by steps[j] bytes per item; dims has inner_ndim + 1 entries.
 *   A member's share is a contiguous run of items: dims[0] and the args pointers are adjusted.
 * - Member k of a region reads get_thread_id() == k (reduction arrays are indexed by it).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef HIDDEN
#define HIDDEN __attribute__((visibility("hidden")))
#endif

#define NJ_MAX_THREADS 256
/* How long a worker waiting for the next region, or a caller waiting for its team, spins before it
   sleeps: long enough to bridge the serial code between a net's regions, short enough that a
   bundle between runs gives its cores back at once. */
static long nj_spin_ns = 200000;     /* 200 us */

static inline void nj_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline int64_t nj_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One round of a bounded spin: pause, and every 64 rounds give the core away (an oversubscribed
   machine: let the thread with work run); 0 once the spin has lasted nj_spin_ns. */
static inline int nj_spin_round(unsigned k, int64_t *start) {
    nj_pause();
    if ((k & 63) == 0) {
        sched_yield();
        int64_t now = nj_now_ns();
        if (!*start) *start = now;
        else if (now - *start > nj_spin_ns) return 0;
    }
    return 1;
}

/* Spin while *word == value for at most nj_spin_ns; returns whether the wait ended by itself. */
static int nj_spin_gen(atomic_uint *word, unsigned value) {
    int64_t start = 0;
    for (unsigned k = 1;; k++) {
        if (atomic_load_explicit(word, memory_order_acquire) != value) return 1;
        if (!nj_spin_round(k, &start)) return 0;
    }
}

/* Spin while *word > 0 for at most nj_spin_ns; returns whether the wait ended by itself. */
static int nj_spin_pending(atomic_int *word) {
    int64_t start = 0;
    for (unsigned k = 1;; k++) {
        if (atomic_load_explicit(word, memory_order_acquire) <= 0) return 1;
        if (!nj_spin_round(k, &start)) return 0;
    }
}

typedef void (*nj_gufunc)(char **args, size_t *dims, size_t *steps, void *data);


static struct {
    pthread_mutex_t region;     /* held by the host thread whose region owns the pool */
    pthread_mutex_t lock;       /* guards sleeping and waking */
    pthread_cond_t wake, done;
    atomic_uint generation;     /* bumped once per region: workers wait for it to change */
    atomic_int pending;         /* members (other than 0) still running the current region */
    atomic_int started;         /* workers running */
    int wanted;                 /* members a region uses (NAME_set_num_threads), 0 = not yet set */
    /* the current region */
    nj_gufunc fn;
    char **args;
    size_t *dims, *steps;
    void *data;
    size_t inner_ndim, array_count, items;
    int members;
} nj_pool = {.region = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER,
             .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static unsigned nj_birth[NJ_MAX_THREADS];    /* generation when each worker was created */
/* Thread-locals in the initial-exec model: a few bytes of glibc's static TLS reserve (which exists
   for dlopen'ed libraries like this one) instead of calls to __tls_get_addr, which would make the
   .so need ld-linux.so by name. */
#define NJ_TLS static __thread __attribute__((tls_model("initial-exec")))
NJ_TLS int nj_in_region;            /* this thread is running part of a region */
NJ_TLS int nj_thread_id;            /* its index in that region's team */
NJ_TLS size_t nj_chunksize;

static int nj_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > NJ_MAX_THREADS ? NJ_MAX_THREADS : (int)n;
}

HIDDEN void nj_pool_set_threads(int n) {
    nj_pool.wanted = n <= 0 ? nj_online_cpus() : n > NJ_MAX_THREADS ? NJ_MAX_THREADS : n;
}

HIDDEN int nj_pool_threads(void) {
    if (nj_pool.wanted == 0) nj_pool_set_threads(0);
    return nj_pool.wanted;
}

/* Member `id` of `members` runs its share of the current region's items. */
static void nj_run_share(int id, int members) {
    size_t lo = nj_pool.items * (size_t)id / (size_t)members;
    size_t hi = nj_pool.items * (size_t)(id + 1) / (size_t)members;
    if (hi <= lo) return;
    size_t dims[nj_pool.inner_ndim + 1];
    char *args[nj_pool.array_count ? nj_pool.array_count : 1];
    memcpy(dims, nj_pool.dims, sizeof(size_t) * (nj_pool.inner_ndim + 1));
    dims[0] = hi - lo;
    for (size_t j = 0; j < nj_pool.array_count; j++) args[j] = nj_pool.args[j] + nj_pool.steps[j] * lo;
    nj_in_region = 1;
    nj_thread_id = id;
    nj_pool.fn(args, dims, nj_pool.steps, nj_pool.data);
    nj_in_region = 0;
    nj_thread_id = 0;
}

static void *nj_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    /* The region that started this worker is the one after its birth generation (read before the
       worker runs: it may start after that region's generation was bumped). */
    unsigned seen = nj_birth[id];
    for (;;) {
        if (!nj_spin_gen(&nj_pool.generation, seen)) {
            pthread_mutex_lock(&nj_pool.lock);
            while (atomic_load_explicit(&nj_pool.generation, memory_order_acquire) == seen)
                pthread_cond_wait(&nj_pool.wake, &nj_pool.lock);
            pthread_mutex_unlock(&nj_pool.lock);
        }
        /* Every started worker answers every region (members or not), so none can lag a region
           behind and mistake the next one's fields for this one's; the generation cannot move on
           before this worker has answered, so it is exactly the next one. */
        seen = atomic_load_explicit(&nj_pool.generation, memory_order_acquire);
        int members = nj_pool.members;
        if (id < members) nj_run_share(id, members);
        if (atomic_fetch_sub_explicit(&nj_pool.pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&nj_pool.lock);
            pthread_cond_signal(&nj_pool.done);
            pthread_mutex_unlock(&nj_pool.lock);
        }
    }
    return NULL;
}

static void nj_after_fork_child(void) {
    /* The child has only the forking thread: its workers are gone, and so is any region. */
    pthread_mutex_init(&nj_pool.region, NULL);
    pthread_mutex_init(&nj_pool.lock, NULL);
    pthread_cond_init(&nj_pool.wake, NULL);
    pthread_cond_init(&nj_pool.done, NULL);
    atomic_store(&nj_pool.started, 0);
    atomic_store(&nj_pool.pending, 0);
    nj_in_region = 0;
}

/* Start workers up to `members - 1` (called with the region lock held); returns the team size
   that is available. */
static int nj_grow(int members) {
    static int atfork_done;
    int have = atomic_load(&nj_pool.started);
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, nj_after_fork_child);
        /* NETJIT_AOT_SPIN_US (optional): the spin before sleeping, in microseconds. */
        const char *spin = getenv("NETJIT_AOT_SPIN_US");
        if (spin && *spin) nj_spin_ns = atol(spin) * 1000L;
        atfork_done = 1;
    }
    while (have + 1 < members) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        nj_birth[have + 1] = atomic_load(&nj_pool.generation);
        int failed = pthread_create(&t, &attr, nj_worker, (void *)(intptr_t)(have + 1));
        pthread_attr_destroy(&attr);
        if (failed) break;
        have++;
        atomic_store(&nj_pool.started, have);
    }
    return have + 1;
}

static void nj_run_serial(nj_gufunc fn, char **args, size_t *dims, size_t *steps, void *data) {
    int was_in = nj_in_region, was_id = nj_thread_id;
    nj_in_region = 1;
    nj_thread_id = 0;       /* a serial region's team is its caller alone */
    fn(args, dims, steps, data);
    nj_in_region = was_in;
    nj_thread_id = was_id;
}

HIDDEN void numba_parallel_for(void *fn, char **args, size_t *dims, size_t *steps, void *data,
                               size_t inner_ndim, size_t array_count, int num_threads) {
    size_t items = dims[0];
    int members = num_threads < 1 ? 1 : num_threads;
    if ((size_t)members > items) members = items ? (int)items : 1;
    if (members <= 1 || nj_in_region || pthread_mutex_trylock(&nj_pool.region) != 0) {
        nj_run_serial((nj_gufunc)fn, args, dims, steps, data);
        return;
    }
    int available = nj_grow(members);
    if (members > available) members = available;
    nj_pool.fn = (nj_gufunc)fn;
    nj_pool.args = args;
    nj_pool.dims = dims;
    nj_pool.steps = steps;
    nj_pool.data = data;
    nj_pool.inner_ndim = inner_ndim;
    nj_pool.array_count = array_count;
    nj_pool.items = items;
    nj_pool.members = members;
    atomic_store_explicit(&nj_pool.pending, atomic_load(&nj_pool.started), memory_order_release);
    atomic_fetch_add_explicit(&nj_pool.generation, 1, memory_order_acq_rel);
    pthread_mutex_lock(&nj_pool.lock);
    pthread_cond_broadcast(&nj_pool.wake);
    pthread_mutex_unlock(&nj_pool.lock);
    nj_run_share(0, members);
    if (!nj_spin_pending(&nj_pool.pending)) {
        pthread_mutex_lock(&nj_pool.lock);
        while (atomic_load_explicit(&nj_pool.pending, memory_order_acquire) > 0)
            pthread_cond_wait(&nj_pool.done, &nj_pool.lock);
        pthread_mutex_unlock(&nj_pool.lock);
    }
    pthread_mutex_unlock(&nj_pool.region);
}

/* numba's thread queries (intp results: what parfor lowering declares). */
HIDDEN int64_t get_num_threads(void) { return nj_in_region ? 1 : nj_pool_threads(); }
HIDDEN int64_t get_thread_id(void) { return nj_thread_id; }
HIDDEN void set_num_threads(int n) { nj_pool_set_threads(n); }
HIDDEN size_t get_parallel_chunksize(void) { return nj_chunksize; }
HIDDEN void set_parallel_chunksize(size_t n) { nj_chunksize = n; }

/* The schedule: each division is one row of `dims` starts then `dims` stops (inclusive). The
   widest dimension is cut into at most `threads` contiguous runs; the others stay whole. */
static size_t nj_widest(size_t dims, const int64_t *starts, const int64_t *stops, int64_t *extent) {
    size_t best = 0;
    *extent = 0;
    for (size_t d = 0; d < dims; d++) {
        int64_t e = stops[d] >= starts[d] ? stops[d] - starts[d] + 1 : 0;
        if (e > *extent) { *extent = e; best = d; }
    }
    return best;
}

HIDDEN size_t get_sched_size(size_t threads, size_t dims, int64_t *starts, int64_t *stops) {
    int64_t extent;
    nj_widest(dims, starts, stops, &extent);
    size_t n = threads < 1 ? 1 : threads;
    return extent > 0 && (size_t)extent < n ? (size_t)extent : n;
}

HIDDEN int64_t *allocate_sched(size_t entries) { return (int64_t *)malloc(sizeof(int64_t) * (entries ? entries : 1)); }
HIDDEN void deallocate_sched(int64_t *sched) { free(sched); }

static void nj_schedule(size_t dims, const int64_t *starts, const int64_t *stops, size_t divisions,
                        int64_t *sched) {
    int64_t extent;
    size_t d = nj_widest(dims, starts, stops, &extent);
    for (size_t k = 0; k < divisions; k++) {
        int64_t *row = sched + k * 2 * dims;
        int64_t lo = extent * (int64_t)k / (int64_t)divisions;
        int64_t hi = extent * (int64_t)(k + 1) / (int64_t)divisions;
        for (size_t j = 0; j < dims; j++) { row[j] = starts[j]; row[dims + j] = stops[j]; }
        if (hi > lo) {
            row[d] = starts[d] + lo;
            row[dims + d] = starts[d] + hi - 1;
        } else {
            /* an empty division: start past stop in every dimension, signed or not */
            for (size_t j = 0; j < dims; j++) { row[j] = 1; row[dims + j] = 0; }
        }
    }
}

HIDDEN int64_t *do_scheduling_signed(size_t dims, int64_t *starts, int64_t *stops, size_t divisions,
                                     int64_t *sched, int64_t debug) {
    (void)debug;
    nj_schedule(dims, starts, stops, divisions, sched);
    return sched;
}

HIDDEN int64_t *do_scheduling_unsigned(size_t dims, int64_t *starts, int64_t *stops, size_t divisions,
                                       int64_t *sched, int64_t debug) {
    /* Unsigned loop bounds below 2^63 (anything a net's loop can have) read the same as signed. */
    (void)debug;
    nj_schedule(dims, starts, stops, divisions, sched);
    return sched;
}
