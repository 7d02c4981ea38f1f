/*
 * pybridge/driver.h — the driver's end of a channel, as a C API.
 *
 * The simulator's end is pybridge.h; this is the other one: the side that
 * creates a channel, accepts or rejects the simulator's declaration, sends
 * requests and waits for replies — on one channel, or on several at once.
 * pybridge.Simulator (Python) drives through exactly these calls; a C or C++
 * optimiser can too:
 *
 *     pybridge_driver *d = NULL;
 *     if (pybridge_driver_create(NULL, NULL, &d) != PYBRIDGE_OK) { ... pybridge_driver_last_error(d) ... }
 *     // start the simulator with PYBRIDGE_CHANNEL=pybridge_driver_name(d) in its environment
 *     pybridge_declaration decl;
 *     int32_t simulator_pid;
 *     int rc;
 *     while ((rc = pybridge_driver_wait_declaration(d, 100000000, &decl, &simulator_pid)) == PYBRIDGE_TIMEOUT) {
 *         // every 100 ms: is the simulator still running?
 *     }
 *     rc = pybridge_driver_accept(d, 3, 0, 0, 1, 500);       // 3 parameters, cost only, 1 per request, spin 500 us
 *     memcpy(pybridge_driver_params(d), x, 3 * sizeof(double));
 *     rc = pybridge_driver_send(d, PYBRIDGE_REQUEST_COST, NULL);
 *     while ((rc = pybridge_driver_wait(d, 100000000)) == PYBRIDGE_TIMEOUT) { ... }
 *     pybridge_reply reply;
 *     pybridge_driver_reply(d, &reply);                        // reply.status, reply.cost
 *     pybridge_driver_shutdown(d);                             // the simulator's wait returns PYBRIDGE_CLOSED
 *     pybridge_driver_destroy(d);                              // removes what pybridge_driver_create made
 *
 * Who owns what: pybridge_driver_create makes the segment and the semaphores
 * and pybridge_driver_destroy removes them. A driver that makes them itself
 * (Python does, with multiprocessing.shared_memory and posix_ipc) creates a
 * header-only segment and the request semaphore, then takes the driver's end
 * with pybridge_driver_open, and removes them itself after
 * pybridge_driver_close.
 *
 * Conventions as in pybridge.h: int status codes (PYBRIDGE_OK, a positive
 * PYBRIDGE_CLOSED or PYBRIDGE_TIMEOUT, a negative PYBRIDGE_E_*), outputs
 * last, a handle returned even on failure (close it), the reason in
 * pybridge_driver_last_error(). Nothing aborts, throws or keeps global state.
 * One driver handle must not be used from two threads at once; waits never
 * block longer than the timeout they are given, so the caller can check its
 * simulator (and, from Python, signals) between them.
 */
#ifndef PYBRIDGE_DRIVER_H
#define PYBRIDGE_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#include "pybridge/pybridge.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pybridge_driver pybridge_driver;

/* Where the latest request stands (pybridge_driver_outcome). */
enum pybridge_outcome {
    PYBRIDGE_OUTCOME_NOT_SENT = 0, /* no request, or the last send was refused */
    PYBRIDGE_OUTCOME_PENDING = 1,  /* sent, no reply yet */
    PYBRIDGE_OUTCOME_ANSWERED = 2  /* the reply is in: pybridge_driver_reply */
};

/* A reply, read in place: the pointers are valid until the next send. */
typedef struct pybridge_reply {
    uint64_t seq;             /* the request it answers */
    int32_t status;           /* enum pybridge_reply_status */
    double cost;              /* = costs[0]; NaN for a residual request */
    const double *gradient;   /* count * n_params values, or NULL unless a gradient was requested */
    const double *residuals;  /* count * n_residuals values, or NULL unless residuals were requested */
    const char *error;        /* the simulator's message when status is PYBRIDGE_REPLY_FAILED, else "" */
    uint32_t count;           /* parameter vectors the request carried */
    const double *costs;      /* count costs (NaN for a residual request) */
} pybridge_reply;

/* Creates a channel — segment (memory reserved), request and reply
 * semaphores — and takes its driver's end. name: NULL for a fresh name,
 * "pybridge-" PID "-" 24 random hex digits (PYBRIDGE_NAME_PREFIX).
 * doorbell: NULL, or the name (without '/') of a semaphore several
 * channels share so that pybridge_driver_wait_any can wait on all of them;
 * created if missing and never removed here. */
PYBRIDGE_API int pybridge_driver_create(const char *name, const char *doorbell, pybridge_driver **out);

/* Takes the driver's end of a channel the caller created: the shared-memory
 * object "/" name (at least the header's size, zero-filled) and the
 * semaphores "/" name "-req" and "/" name "-rep" must exist, and the
 * doorbell too if one is named (NULL: none). Writes the header (state
 * CREATED, this process as the driver). */
PYBRIDGE_API int pybridge_driver_open(const char *name, const char *doorbell, pybridge_driver **out);

/* Frees the handle; removes nothing (NULL is allowed). */
PYBRIDGE_API void pybridge_driver_close(pybridge_driver *driver);

/* Closes the handle and removes what pybridge_driver_create made (not a shared doorbell). */
PYBRIDGE_API void pybridge_driver_destroy(pybridge_driver *driver);

/* Every timeout_ns of this API is in nanoseconds; INT64_MAX means no limit
 * (any value is capped at about 31 years).
 *
 * Waits up to timeout_ns for the simulator's declaration and checks the
 * header it wrote. PYBRIDGE_OK with *declaration and *simulator_pid filled,
 * PYBRIDGE_TIMEOUT (check your simulator and wait again), or PYBRIDGE_E_PROTOCOL
 * (the simulator corrupted the header; it has been rejected). */
PYBRIDGE_API int pybridge_driver_wait_declaration(pybridge_driver *driver, int64_t timeout_ns,
                                                  pybridge_declaration *declaration, int32_t *simulator_pid);

/* Refuses the declaration; the simulator's open fails with PYBRIDGE_E_REJECTED and this reason. */
PYBRIDGE_API int pybridge_driver_reject(pybridge_driver *driver, const char *reason);

/* Fixes the shape, grows the segment (reserving the memory: PYBRIDGE_E_NO_SPACE
 * when /dev/shm is too small, with the sizes in the message), writes the
 * layout and lets requests flow. max_batch: parameter vectors one request
 * may carry, from 1 to what the simulator declared (its max_batch, or 1).
 * spin_us: how long either side spins before it blocks (0 = block at once);
 * 0 whatever was asked when the calling thread and the simulator may both run
 * on one and the same CPU only (a spin there holds the core the peer needs).
 * The driver's view of the layout is copied now and never read from shared
 * memory again. */
PYBRIDGE_API int pybridge_driver_accept(pybridge_driver *driver, uint32_t n_params, uint32_t n_residuals,
                                        uint32_t capabilities, uint32_t max_batch, uint32_t spin_us);

/* The agreed shape (after accept); any pointer may be NULL. */
PYBRIDGE_API int pybridge_driver_shape(const pybridge_driver *driver, uint32_t *n_params, uint32_t *n_residuals,
                                       uint32_t *capabilities, uint32_t *max_batch);

/* The parameter region (max_batch * n_params doubles), to fill in place; NULL before accept. */
PYBRIDGE_API double *pybridge_driver_params(pybridge_driver *driver);

/* Sends a request of this kind for params (n_params values, copied in), or
 * for the values already in the parameter region (params NULL or equal to
 * it). PYBRIDGE_E_INVALID_ARGUMENT, nothing sent, when a value is not finite
 * (the message names the first) or the channel does not serve this kind. */
PYBRIDGE_API int pybridge_driver_send(pybridge_driver *driver, uint32_t kind, const double *params);

/* As pybridge_driver_send, for count parameter vectors (1 to max_batch)
 * stored one after the other in params (count * n_params values). */
PYBRIDGE_API int pybridge_driver_send_batch(pybridge_driver *driver, uint32_t kind, uint32_t count,
                                            const double *params);

/* Waits for the reply to the latest request, as planned at the send (see
 * cpp/src/wait.hpp): while recent replies came within the spin budget, it
 * spins up to the budget, then blocks on the channel's own reply semaphore;
 * once they take milliseconds, it blocks until shortly before the forecast
 * reply, spins through it, and blocks again if the reply is late. Several
 * calls (slices) carry on one plan. timeout_ns bounds the blocking of this
 * call; timeout_ns = 0 never blocks (it spins only if the plan spins now).
 * PYBRIDGE_OK once answered, PYBRIDGE_TIMEOUT if not yet,
 * PYBRIDGE_E_INVALID_ARGUMENT if nothing was sent. */
PYBRIDGE_API int pybridge_driver_wait(pybridge_driver *driver, int64_t timeout_ns);

/* Spins for the reply for at most max_ns, and only within the spin that the
 * plan allows now: it never blocks, and returns at once before a forecast's
 * window opens or once the spin budget is spent. A later pybridge_driver_wait
 * carries on with what is left of the plan. For a caller that must not hold
 * something through the whole spin (the Python binding: the GIL, while other
 * threads of its process wait on simulators too). PYBRIDGE_OK once answered,
 * PYBRIDGE_TIMEOUT if not yet, PYBRIDGE_E_INVALID_ARGUMENT if nothing was
 * sent. */
PYBRIDGE_API int pybridge_driver_spin(pybridge_driver *driver, int64_t max_ns);

/* For a caller with work of its own to do just before the reply (the Python
 * binding runs the interpreter once there: whatever runs first after a reply
 * is slow when it last ran milliseconds before; docs/performance.md).
 * pybridge_driver_window_in_ns: nanoseconds until the spin window of the
 * pending forecast wait opens; 0 when it is open, or the wait is no forecast,
 * or nothing is pending. pybridge_driver_wait_until_window: the first part of
 * pybridge_driver_wait alone, blocking until that window opens, the reply
 * comes, or timeout_ns passes, without spinning; PYBRIDGE_OK once answered,
 * else PYBRIDGE_TIMEOUT. pybridge_driver_wait then goes on from there. */
PYBRIDGE_API int64_t pybridge_driver_window_in_ns(const pybridge_driver *driver);
PYBRIDGE_API int pybridge_driver_wait_until_window(pybridge_driver *driver, int64_t timeout_ns);

/* Turns the forecast of pybridge_driver_wait on (the default) or off (plain
 * spin-then-block whatever the replies take), from the next request on. */
PYBRIDGE_API int pybridge_driver_set_forecast(pybridge_driver *driver, int enabled);

/* Waits up to timeout_ns until any of count drivers has its reply, blocking
 * on the doorbell they share (create them with the same doorbell). An
 * answered driver stays answered until its next send: pass only those whose
 * replies you have not taken yet. PYBRIDGE_OK with *ready the index of an
 * answered one (the lowest), PYBRIDGE_TIMEOUT, or
 * PYBRIDGE_E_INVALID_ARGUMENT when none has a request pending or they do not
 * share a doorbell. Each of the drivers may meanwhile be waited on alone by
 * pybridge_driver_wait (not at the same time): the simulator posts whichever
 * semaphore its driver sleeps on. With one request pending, it is waited for
 * as pybridge_driver_wait would, on its own semaphore. Several threads of one
 * process may wait at once on channels of one doorbell, each on its own: one
 * of them blocks on the doorbell and wakes the others as their replies come.
 * Threads of different processes must not wait on one doorbell at once (a
 * post does not say whose it is; they would take each other's). */
PYBRIDGE_API int pybridge_driver_wait_any(pybridge_driver *const *drivers, size_t count, int64_t timeout_ns,
                                          size_t *ready);

/* Where the latest request stands: enum pybridge_outcome. */
PYBRIDGE_API int pybridge_driver_outcome(const pybridge_driver *driver);

/* The reply to the latest request, once answered (PYBRIDGE_E_INVALID_ARGUMENT before). */
PYBRIDGE_API int pybridge_driver_reply(const pybridge_driver *driver, pybridge_reply *reply);

/* Asks the simulator, from the next request on, to stamp when it picked
 * each request up and when it replied (or stops asking: off by default). The
 * stamps put two clock reads, about 50 ns, on each round trip. */
PYBRIDGE_API int pybridge_driver_measure_latency(pybridge_driver *driver, int enabled);

/* The latest request's latency, once answered, in nanoseconds: *request_ns
 * from the send until the simulator picked it up, *reply_ns from its reply
 * until this driver saw it; what lies between is the model's own time. Both
 * -1 when the request was not timed (pybridge_driver_measure_latency), the
 * simulator's shim does not stamp its replies (releases before these stamps)
 * or its stamps are out of order. PYBRIDGE_E_INVALID_ARGUMENT before the
 * reply is in. */
PYBRIDGE_API int pybridge_driver_latency(const pybridge_driver *driver, int64_t *request_ns, int64_t *reply_ns);

/* The sequence number of the latest request (0 before the first). */
PYBRIDGE_API uint64_t pybridge_driver_seq(const pybridge_driver *driver);

/* Nanoseconds since the latest request was sent (for the caller's timeouts). */
PYBRIDGE_API int64_t pybridge_driver_elapsed_ns(const pybridge_driver *driver);

/* Asks the simulator to leave its loop: its wait returns PYBRIDGE_CLOSED. */
PYBRIDGE_API int pybridge_driver_shutdown(pybridge_driver *driver);

/* The channel's name (without '/'), the message of the last failed call. */
PYBRIDGE_API const char *pybridge_driver_name(const pybridge_driver *driver);
PYBRIDGE_API const char *pybridge_driver_last_error(const pybridge_driver *driver);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PYBRIDGE_DRIVER_H */
