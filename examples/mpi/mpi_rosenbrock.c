/*
 * pybridge-mpi-rosenbrock: an MPI program served through pybridge, the pattern of a
 * domain-decomposed solver. Run it as   pybridge.Simulator(["mpirun", "-n", "4", "pybridge-mpi-rosenbrock"])
 *
 *   rank 0   attaches to the channel (its name is in PYBRIDGE_CHANNEL, which mpirun passes to the
 *            ranks it starts on this node), waits for a request and broadcasts it;
 *   all      compute their share of the cost and the gradient: the Rosenbrock terms
 *            i = lo .. hi-1 of the chain, split evenly over the ranks (each rank's "subdomain");
 *   rank 0   receives the sums (MPI_Reduce straight into the shared-memory gradient) and replies.
 *
 * Any dimension (the driver says n_params); gradients on request. --work MS makes every rank spend
 * MS milliseconds per evaluation, standing in for a heavier model.
 *
 * When the driver closes the channel rank 0 broadcasts "stop" and every rank finalises and exits 0.
 * When a rank dies, mpirun ends the whole job; the driver sees its simulator gone (SimulatorCrashed).
 */
#include <mpi.h>
#include <pybridge/pybridge.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { STOP = 0 }; /* otherwise the command is the request kind */

static void spend(double ms) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do clock_gettime(CLOCK_MONOTONIC, &now);
    while ((now.tv_sec - start.tv_sec) * 1e3 + (now.tv_nsec - start.tv_nsec) * 1e-6 < ms);
}

/* This rank's terms of sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2, and their gradient. */
static double local_terms(const double *x, int n, int rank, int size, double *gradient) {
    int terms = n - 1, lo = (int)((long)terms * rank / size), hi = (int)((long)terms * (rank + 1) / size);
    double cost = 0.0;
    memset(gradient, 0, sizeof(double) * (size_t)n);
    for (int i = lo; i < hi; ++i) {
        double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        cost += 100.0 * a * a + b * b;
        gradient[i] += -400.0 * a * x[i] - 2.0 * b;
        gradient[i + 1] += 200.0 * a;
    }
    return cost;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double work_ms = (argc > 2 && strcmp(argv[1], "--work") == 0) ? atof(argv[2]) : 0.0;

    pybridge_channel *channel = NULL;
    int status = PYBRIDGE_OK;
    if (rank == 0) {
        pybridge_declaration declaration = {0, 0, PYBRIDGE_CAP_GRADIENT, 0}; /* n: the driver's */
        status = pybridge_channel_open(NULL, &declaration, &channel);
    }
    double *x = NULL, *gradient = NULL;
    int capacity = 0;
    for (;;) {
        /* What to do next, decided by rank 0: {command, n}. */
        pybridge_request request;
        int order[2] = {STOP, 0};
        if (rank == 0 && status == PYBRIDGE_OK && (status = pybridge_channel_wait(channel, &request)) == PYBRIDGE_OK) {
            order[0] = (int)request.kind;
            order[1] = (int)request.n_params;
        }
        MPI_Bcast(order, 2, MPI_INT, 0, MPI_COMM_WORLD);
        if (order[0] == STOP) break;
        int n = order[1];
        if (n > capacity) {
            capacity = n;
            x = realloc(x, sizeof(double) * (size_t)n);
            gradient = realloc(gradient, sizeof(double) * (size_t)n);
            if (!x || !gradient) MPI_Abort(MPI_COMM_WORLD, 3);
        }
        if (rank == 0) memcpy(x, request.params, sizeof(double) * (size_t)n);
        MPI_Bcast(x, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);

        double local = local_terms(x, n, rank, size, gradient), cost = 0.0;
        if (work_ms > 0) spend(work_ms);
        MPI_Reduce(&local, &cost, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (order[0] == PYBRIDGE_REQUEST_GRADIENT)  /* summed straight into shared memory */
            MPI_Reduce(gradient, rank == 0 ? request.gradient : NULL, n, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        if (rank == 0) status = pybridge_channel_reply(channel, cost);
    }
    if (rank == 0) {
        if (status != PYBRIDGE_CLOSED) fprintf(stderr, "mpi-rosenbrock: %s\n", pybridge_channel_last_error(channel));
        pybridge_channel_close(channel);
    }
    free(x);
    free(gradient);
    MPI_Finalize();
    return status == PYBRIDGE_OK || status == PYBRIDGE_CLOSED ? 0 : 1;
}
