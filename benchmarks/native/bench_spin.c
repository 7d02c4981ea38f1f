/* The physical floor: two C processes exchange N doubles and a cost through
 * shared memory, each spinning on a sequence number on its own cache line.
 *   pybridge-bench-spin N ITERATIONS   prints the median and p99 round trip in ns */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cost.h"

struct shared {
    _Alignas(64) uint64_t request;
    _Alignas(64) uint64_t reply;
    double cost;
    _Alignas(64) double x[];
};

static int compare(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int main(int argc, char **argv) {
    const size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 8;
    const long iterations = argc > 2 ? atol(argv[2]) : 100000;
    struct shared *s = mmap(NULL, sizeof *s + n * sizeof(double), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) return 1;
    double *source = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; ++i) source[i] = 0.5;
    const pid_t child = fork();
    if (child == 0) {
        for (uint64_t seen = 0;;) {
            uint64_t request;
            while ((request = __atomic_load_n(&s->request, __ATOMIC_ACQUIRE)) == seen) __builtin_ia32_pause();
            if (request == UINT64_MAX) _exit(0);
            seen = request;
            s->cost = bench_sum_squares(s->x, n);
            __atomic_store_n(&s->reply, request, __ATOMIC_RELEASE);
        }
    }
    int64_t *samples = malloc((size_t)iterations * sizeof(int64_t));
    const long warmup = iterations / 10;
    for (long i = 1; i <= iterations + warmup; ++i) {
        const int64_t started = now_ns();
        memcpy(s->x, source, n * sizeof(double)); /* the parameters go in, as through pybridge */
        __atomic_store_n(&s->request, (uint64_t)i, __ATOMIC_RELEASE);
        while (__atomic_load_n(&s->reply, __ATOMIC_ACQUIRE) != (uint64_t)i) __builtin_ia32_pause();
        volatile double cost = s->cost;
        (void)cost;
        if (i > warmup) samples[i - warmup - 1] = now_ns() - started;
    }
    __atomic_store_n(&s->request, UINT64_MAX, __ATOMIC_RELEASE);
    waitpid(child, NULL, 0);
    qsort(samples, (size_t)iterations, sizeof *samples, compare);
    printf("{\"median_ns\": %lld, \"p99_ns\": %lld}\n", (long long)samples[iterations / 2],
           (long long)samples[iterations * 99 / 100]);
    return 0;
}
