/* A 1-D rod, heated by a Gaussian source, cooled through its surface, held at
 * T = 0 at its left end and insulated at its right end:
 *
 *     dT/dt = alpha * d2T/dx2 - h * T + q0 * exp(-((x - 0.3) / 0.1)^2),   x in [0, 1], T(x, 0) = 0
 *
 * Finite volumes (100 cells), backward Euler (100 steps to t = 0.5). Five
 * sensors at x = 0.1, 0.3, 0.5, 0.7, 0.9 record T every 10 steps: 50 readings.
 * The unknowns a calibration recovers are theta = (alpha, h, q0). */
#ifndef HEAT_MODEL_H
#define HEAT_MODEL_H

#ifdef __cplusplus
extern "C" {
#endif

#define HEAT_N_PARAMS 3
#define HEAT_N_READINGS 50

/* Simulates with theta = (alpha, h, q0) and writes the HEAT_N_READINGS sensor
 * readings (sample-major: reading[sample * 5 + sensor]). Returns 0, or -1 with
 * a message in *why when theta is not physical (alpha <= 0 or h < 0). */
int heat_model_run(const double theta[HEAT_N_PARAMS], double readings[HEAT_N_READINGS], const char **why);

/* Reads HEAT_N_READINGS numbers from a text file. Returns 0, or -1. */
int heat_model_read_measurements(const char *path, double readings[HEAT_N_READINGS]);

#ifdef __cplusplus
}
#endif

#endif
