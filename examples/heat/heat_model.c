#include "heat_model.h"

#include <math.h>
#include <stdio.h>

enum { N_CELLS = 100, N_STEPS = 100, SAMPLE_EVERY = 10, N_SENSORS = 5 };
static const double LENGTH = 1.0;
static const double T_END = 0.5;
static const double SENSOR_X[N_SENSORS] = {0.1, 0.3, 0.5, 0.7, 0.9};

int heat_model_run(const double theta[HEAT_N_PARAMS], double readings[HEAT_N_READINGS], const char **why) {
    const double alpha = theta[0], h = theta[1], q0 = theta[2];
    if (!(alpha > 0.0)) {
        *why = "alpha (diffusivity) must be > 0";
        return -1;
    }
    if (!(h >= 0.0)) {
        *why = "h (surface cooling rate) must be >= 0";
        return -1;
    }
    const double dx = LENGTH / N_CELLS, dt = T_END / N_STEPS, k = alpha / (dx * dx);
    double temperature[N_CELLS] = {0}, source[N_CELLS];
    double lower[N_CELLS], diag[N_CELLS], upper[N_CELLS], rhs[N_CELLS], c_prime[N_CELLS];
    for (int i = 0; i < N_CELLS; ++i) {
        const double x = (i + 0.5) * dx, z = (x - 0.3) / 0.1;
        source[i] = q0 * exp(-z * z);
        /* Backward Euler: (1/dt + h) T_i - k (T_{i-1} - 2 T_i + T_{i+1}) = T_i_old / dt + q_i */
        lower[i] = -k;
        upper[i] = -k;
        diag[i] = 1.0 / dt + h + 2.0 * k;
    }
    diag[0] += k; /* Dirichlet T = 0 at x = 0, half a cell from the first centre: 2k instead of k */
    lower[0] = 0.0;
    diag[N_CELLS - 1] -= k; /* insulated right end: no flux */
    upper[N_CELLS - 1] = 0.0;

    int sample = 0;
    for (int step = 1; step <= N_STEPS; ++step) {
        for (int i = 0; i < N_CELLS; ++i) rhs[i] = temperature[i] / dt + source[i];
        /* Thomas algorithm for the tridiagonal system. */
        c_prime[0] = upper[0] / diag[0];
        rhs[0] /= diag[0];
        for (int i = 1; i < N_CELLS; ++i) {
            const double m = diag[i] - lower[i] * c_prime[i - 1];
            c_prime[i] = upper[i] / m;
            rhs[i] = (rhs[i] - lower[i] * rhs[i - 1]) / m;
        }
        temperature[N_CELLS - 1] = rhs[N_CELLS - 1];
        for (int i = N_CELLS - 2; i >= 0; --i) temperature[i] = rhs[i] - c_prime[i] * temperature[i + 1];

        if (step % SAMPLE_EVERY == 0) {
            for (int s = 0; s < N_SENSORS; ++s) {
                readings[sample * N_SENSORS + s] = temperature[(int)(SENSOR_X[s] / dx)];
            }
            ++sample;
        }
    }
    return 0;
}

int heat_model_read_measurements(const char *path, double readings[HEAT_N_READINGS]) {
    FILE *file = fopen(path, "r");
    if (file == NULL) return -1;
    int count = 0;
    while (count < HEAT_N_READINGS && fscanf(file, "%lf", &readings[count]) == 1) ++count;
    fclose(file);
    return count == HEAT_N_READINGS ? 0 : -1;
}
