/* A simulator that misbehaves on purpose, for the fault-injection suite.
 *
 *   faulty_sim FAULT AT WORK_US [SUICIDE_US]
 *
 * Serves cost = sum((x_i - 1)^2) for 2 parameters, sleeping WORK_US
 * microseconds per evaluation, and at evaluation number AT (1-based) does
 * FAULT: none, segv, abort, exit:N, hang, nan or fail (a reported failure).
 * With SUICIDE_US, a thread SIGKILLs the process that many microseconds after
 * it starts, whatever it is doing (attaching, computing, waiting). */
#define _POSIX_C_SOURCE 200809L
#include <pybridge/pybridge.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_us(long us) {
    struct timespec t = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&t, &t) != 0) {
    }
}

static void *assassin(void *arg) {
    sleep_us((long)(size_t)arg);
    kill(getpid(), SIGKILL);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: faulty_sim FAULT AT WORK_US [SUICIDE_US]\n");
        return 2;
    }
    const char *fault = argv[1];
    const long at = atol(argv[2]), work_us = atol(argv[3]);
    if (argc > 4) {
        pthread_t thread;
        pthread_create(&thread, NULL, assassin, (void *)(size_t)atol(argv[4]));
    }
    const pybridge_declaration declaration = {2, 0, 0};
    pybridge_channel *channel = NULL;
    int rc = pybridge_channel_open(NULL, &declaration, &channel);
    pybridge_request request;
    long served = 0;
    while (rc == PYBRIDGE_OK && (rc = pybridge_channel_wait(channel, &request)) == PYBRIDGE_OK) {
        ++served;
        if (work_us > 0) sleep_us(work_us);
        double cost = 0.0;
        for (uint32_t i = 0; i < request.n_params; ++i) cost += (request.params[i] - 1.0) * (request.params[i] - 1.0);
        if (served == at) {
            fprintf(stderr, "faulty_sim: injecting %s at evaluation %ld\n", fault, served);
            fflush(stderr);
            if (strcmp(fault, "segv") == 0) {
                volatile int *null = NULL;
                *null = 1;
            } else if (strcmp(fault, "abort") == 0) {
                abort();
            } else if (strncmp(fault, "exit:", 5) == 0) {
                exit(atoi(fault + 5));
            } else if (strcmp(fault, "hang") == 0) {
                for (;;) sleep_us(1000000);
            } else if (strcmp(fault, "nan") == 0) {
                cost = NAN;
            } else if (strcmp(fault, "fail") == 0) {
                rc = pybridge_channel_reply_error(channel, "injected failure");
                continue;
            }
        }
        rc = pybridge_channel_reply(channel, cost);
    }
    if (rc != PYBRIDGE_CLOSED) fprintf(stderr, "faulty_sim: %s\n", pybridge_channel_last_error(channel));
    pybridge_channel_close(channel);
    return rc == PYBRIDGE_CLOSED ? 0 : 1;
}
