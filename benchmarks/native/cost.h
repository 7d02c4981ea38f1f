/* The cost functions every transport in the benchmark evaluates, in one
 * place, so that in-process and out-of-process runs compute the very same. */
#ifndef PYBRIDGE_BENCH_COST_H
#define PYBRIDGE_BENCH_COST_H

#include <stddef.h>

/* sum((x - 1)^2): the latency benchmark's cost. */
static inline double bench_sum_squares(const double *x, size_t n) {
    double cost = 0.0;
    for (size_t i = 0; i < n; ++i) cost += (x[i] - 1.0) * (x[i] - 1.0);
    return cost;
}

/* The Rosenbrock function and, if gradient != NULL, its gradient. */
static inline double bench_rosenbrock(const double *x, size_t n, double *gradient) {
    double cost = 0.0;
    if (gradient != NULL) {
        for (size_t i = 0; i < n; ++i) gradient[i] = 0.0;
    }
    for (size_t i = 0; i + 1 < n; ++i) {
        const double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        cost += 100.0 * a * a + b * b;
        if (gradient != NULL) {
            gradient[i] += -400.0 * a * x[i] - 2.0 * b;
            gradient[i + 1] += 200.0 * a;
        }
    }
    return cost;
}

#endif
