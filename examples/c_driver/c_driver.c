/* A driver written in C: pybridge from a C optimiser instead of Python.
 *
 *   pybridge-c-driver SIMULATOR [ARGS...]
 *
 * Creates a channel, starts the simulator with PYBRIDGE_CHANNEL set, accepts
 * its declaration (any dimension: 4 parameters here), then minimises its cost
 * by coordinate descent with a shrinking step, and prints the result. The
 * protocol is the shim's C driver API (pybridge/driver.h), the same calls
 * pybridge.Simulator makes. */
#define _POSIX_C_SOURCE 200809L
#include <pybridge/driver.h>

#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 4
#define SLICE_NS 100000000 /* wait in 100 ms slices, checking the simulator in between */

extern char **environ;

static pid_t simulator;

static int simulator_alive(void) { return waitpid(simulator, NULL, WNOHANG) == 0; }

/* One evaluation; returns 0 and the cost, or -1 if the simulator died or failed. */
static int evaluate(pybridge_driver *d, const double *x, double *cost) {
    if (pybridge_driver_send(d, PYBRIDGE_REQUEST_COST, x) != PYBRIDGE_OK) return -1;
    int rc;
    while ((rc = pybridge_driver_wait(d, SLICE_NS)) == PYBRIDGE_TIMEOUT) {
        if (!simulator_alive()) return -1;
    }
    pybridge_reply reply;
    if (rc != PYBRIDGE_OK || pybridge_driver_reply(d, &reply) != PYBRIDGE_OK || reply.status != PYBRIDGE_REPLY_OK) return -1;
    *cost = reply.cost;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: pybridge-c-driver SIMULATOR [ARGS...]\n");
        return 2;
    }
    pybridge_driver *d = NULL;
    if (pybridge_driver_create(NULL, NULL, &d) != PYBRIDGE_OK) {
        fprintf(stderr, "pybridge-c-driver: %s\n", pybridge_driver_last_error(d));
        pybridge_driver_destroy(d);
        return 1;
    }
    setenv(PYBRIDGE_CHANNEL_ENV, pybridge_driver_name(d), 1);
    int status = 1;
    if (posix_spawn(&simulator, argv[1], NULL, NULL, argv + 1, environ) != 0) {
        perror("pybridge-c-driver: cannot start the simulator");
        pybridge_driver_destroy(d);
        return 1;
    }
    pybridge_declaration declaration;
    int32_t pid;
    int rc;
    while ((rc = pybridge_driver_wait_declaration(d, SLICE_NS, &declaration, &pid)) == PYBRIDGE_TIMEOUT) {
        if (!simulator_alive()) break;
    }
    if (rc != PYBRIDGE_OK || (declaration.n_params != 0 && declaration.n_params != N) ||
        pybridge_driver_accept(d, N, 0, declaration.capabilities & PYBRIDGE_CAP_GRADIENT, 1, 500) != PYBRIDGE_OK) {
        fprintf(stderr, "pybridge-c-driver: handshake failed: %s\n", pybridge_driver_last_error(d));
        goto done;
    }
    double x[N] = {0.0, 0.0, 0.0, 0.0}, best, trial;
    int evaluations = 0;
    if (evaluate(d, x, &best) != 0) goto done;
    for (double step = 0.5; step > 1e-9; step *= 0.5) {
        for (int improved = 1; improved;) {
            improved = 0;
            for (int i = 0; i < N; ++i) {
                for (int sign = -1; sign <= 1; sign += 2) {
                    x[i] += sign * step;
                    if (evaluate(d, x, &trial) != 0) goto done;
                    ++evaluations;
                    if (trial < best) {
                        best = trial;
                        improved = 1;
                    } else {
                        x[i] -= sign * step;
                    }
                }
            }
        }
    }
    printf("minimum %.6f at x = [%.4f, %.4f, %.4f, %.4f] after %d evaluations\n", best, x[0], x[1], x[2], x[3],
           evaluations);
    status = 0;
done:
    pybridge_driver_shutdown(d); /* the simulator's wait returns PYBRIDGE_CLOSED: it leaves its loop */
    int exit_status = 0;
    if (waitpid(simulator, &exit_status, 0) < 0 || !WIFEXITED(exit_status) || WEXITSTATUS(exit_status) != 0) status = 1;
    pybridge_driver_destroy(d);
    return status;
}
