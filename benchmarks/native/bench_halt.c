/* What a thread finds after its CPU was halted for most of a 5 ms evaluation.
 *
 * A wait that costs at most 10 % of a core through a 5 ms evaluation leaves its
 * thread blocked, and its vCPU halted, for >= 4.5 ms of every 5. This measures
 * the same fixed work right after such a halt and after none, interleaved:
 *   - a walk through a 32 KiB working set (dependent loads: it runs as fast as
 *     the caches hold that set), and
 *   - pure arithmetic (dependent multiplies, no memory: as fast as the clock).
 * Each is preceded by a 300 us spin, as a forecast wait's window would be, so
 * what differs is only how long the thread was halted before. Three regimes:
 * never halted (the spin only), 4.5 ms halted in one block, and the same 4.5 ms
 * in naps of 1 ms (which also reports what a nap's wake-up costs in CPU).
 *   pybridge-bench-halt [ROUNDS]   prints JSON: median us per regime and work */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

enum { SET_BYTES = 32 * 1024, LOADS = 4000, MULTIPLIES = 20000, HALT_US = 4500, SPIN_US = 300, REGIMES = 3 };
static const char *const regime_names[REGIMES] = {"never halted", "halted 4.5 ms", "halted 4.5 ms in 1 ms naps"};
static const int64_t nap_us[REGIMES] = {0, HALT_US, 1000};

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t cpu_ns(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return ((int64_t)r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)r.ru_utime.tv_usec + r.ru_stime.tv_usec) * 1000;
}

/* Blocks for HALT_US in naps of at most `nap` us (0: no block), then spins SPIN_US. */
static void halt_then_spin(int64_t nap) {
    if (nap > 0) {
        const int64_t until = now_ns() + (int64_t)HALT_US * 1000;
        for (int64_t left; (left = until - now_ns()) > 0;) {
            const int64_t step = left < nap * 1000 ? left : nap * 1000;
            const struct timespec t = {0, (long)step};
            clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
        }
    }
    const int64_t spin_end = now_ns() + (int64_t)SPIN_US * 1000;
    while (now_ns() < spin_end) __builtin_ia32_pause();
}

static int compare(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int count) {
    qsort(values, (size_t)count, sizeof *values, compare);
    return values[count / 2];
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 80;
    if (rounds < 1) return 2;
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); /* as the forecast wait does */
    /* One random cycle through the set, so that every load depends on the last. */
    enum { SLOTS = SET_BYTES / sizeof(size_t) };
    static size_t next[SLOTS], order[SLOTS];
    for (size_t i = 0; i < SLOTS; ++i) order[i] = i;
    srand(1);
    for (size_t i = SLOTS - 1; i > 0; --i) {
        const size_t j = (size_t)rand() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < SLOTS; ++i) next[order[i]] = order[(i + 1) % SLOTS];
    double *walk = malloc(sizeof(double) * REGIMES * (size_t)rounds);
    double *arithmetic = malloc(sizeof(double) * REGIMES * (size_t)rounds);
    int64_t halted_cpu[REGIMES] = {0};
    size_t at = 0;
    uint64_t product = 1;
    for (int round = 0; round < rounds; ++round) {
        for (int r = 0; r < REGIMES; ++r) {
            for (int i = 0; i < LOADS; ++i) at = next[at]; /* the set in the caches before the halt */
            const int64_t cpu = cpu_ns();
            halt_then_spin(nap_us[r]);
            halted_cpu[r] += cpu_ns() - cpu;
            int64_t started = now_ns();
            for (int i = 0; i < LOADS; ++i) at = next[at];
            walk[r * rounds + round] = (double)(now_ns() - started) / 1e3;
            halt_then_spin(nap_us[r]);
            started = now_ns();
            for (int i = 0; i < MULTIPLIES; ++i) product = product * 6364136223846793005ULL + 1442695040888963407ULL;
            arithmetic[r * rounds + round] = (double)(now_ns() - started) / 1e3;
        }
    }
    printf("{\"set_bytes\": %d, \"halt_us\": %d, \"spin_us\": %d, \"regimes\": {", SET_BYTES, HALT_US, SPIN_US);
    for (int r = 0; r < REGIMES; ++r) {
        /* CPU of the halt and spin beyond the spin itself: what blocking (and each nap's wake-up) costs. */
        const double block_cpu_us = (double)halted_cpu[r] / rounds / 1e3 - SPIN_US;
        printf("%s\"%s\": {\"walk_us\": %.3f, \"arithmetic_us\": %.3f, \"block_cpu_us\": %.1f}", r ? ", " : "",
               regime_names[r], median(walk + r * rounds, rounds), median(arithmetic + r * rounds, rounds), block_cpu_us);
    }
    printf("}, \"checksum\": %zu}\n", (size_t)(at + product % 2)); /* keeps the work from being optimised away */
    free(walk);
    free(arithmetic);
    return 0;
}
