/*
 * pybridge/pybridge.h — the C API of the pybridge shim.
 *
 * Link this into a simulator so that a Python driver (pybridge.Simulator)
 * can evaluate it through shared memory. The whole simulator side is:
 *
 *     pybridge_declaration decl = {3, 0, 0};       // 3 parameters, cost only
 *     pybridge_channel *ch = NULL;
 *     if (pybridge_channel_open(NULL, &decl, &ch) != PYBRIDGE_OK) {
 *         fprintf(stderr, "%s\n", pybridge_channel_last_error(ch));
 *         pybridge_channel_close(ch);
 *         return 1;
 *     }
 *     pybridge_request req;
 *     int rc;
 *     while ((rc = pybridge_channel_wait(ch, &req)) == PYBRIDGE_OK) {
 *         double cost = my_model(req.params, req.n_params);
 *         pybridge_channel_reply(ch, cost);
 *     }
 *     if (rc != PYBRIDGE_CLOSED) fprintf(stderr, "%s\n", pybridge_channel_last_error(ch));
 *     pybridge_channel_close(ch);
 *
 * Conventions: every function returns an int status (PYBRIDGE_OK = 0,
 * PYBRIDGE_CLOSED = 1 when the driver ended the session, a negative
 * PYBRIDGE_E_* on error) and puts its outputs last. The message of the last
 * error of a channel is pybridge_channel_last_error(). Nothing here aborts
 * the host process, throws, or keeps process-global state: a process may
 * serve several channels, each from its own thread. One channel must not be
 * used from two threads at once.
 *
 * When the driver dies: a simulator blocked in pybridge_channel_wait gets
 * PYBRIDGE_E_DRIVER_GONE within PYBRIDGE_LIVENESS_PERIOD_MS. One busy inside
 * an evaluation (hours, in CFD) is stopped by the channel's watchdog thread:
 * within PYBRIDGE_LIVENESS_PERIOD_MS of the driver's death it removes the
 * channel and sends SIGTERM to this process. A long computation that wants
 * to stop cleanly instead turns the watchdog off (pybridge_channel_set_watchdog,
 * or PYBRIDGE_WATCHDOG=0 in the environment) and asks
 * pybridge_channel_driver_alive() between its steps.
 */
#ifndef PYBRIDGE_PYBRIDGE_H
#define PYBRIDGE_PYBRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "pybridge/protocol.h"

#if defined(_WIN32)
#define PYBRIDGE_API
#else
#define PYBRIDGE_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by every function. */
enum pybridge_status {
    PYBRIDGE_OK = 0,
    PYBRIDGE_CLOSED = 1,                /* the driver shut the channel down: leave the loop, exit 0 */
    PYBRIDGE_TIMEOUT = 2,               /* (driver.h) the wait's time ran out: check your peer, wait again */
    PYBRIDGE_E_INVALID_ARGUMENT = -1,   /* a NULL pointer, an unknown flag, a call out of order */
    PYBRIDGE_E_NO_CHANNEL = -2,         /* no channel name, or no such channel (is the driver running?) */
    PYBRIDGE_E_SYSTEM = -3,             /* an OS call failed; the message names it and errno */
    PYBRIDGE_E_PROTOCOL = -4,           /* the segment is not a valid pybridge channel of our version */
    PYBRIDGE_E_REJECTED = -5,           /* the driver refused our declaration; the message says why */
    PYBRIDGE_E_DRIVER_GONE = -6,        /* the driver process died without closing the channel */
    PYBRIDGE_E_TAKEN = -7,              /* another simulator attached to this channel first */
    PYBRIDGE_E_NO_SPACE = -8            /* (driver.h) /dev/shm has no room for the segment */
};

/* What the simulator computes. A count of 0 means "the driver decides"
 * (a simulator that works for any dimension). */
typedef struct pybridge_declaration {
    uint32_t n_params;     /* length of the parameter vector, or 0 */
    uint32_t n_residuals;  /* length of the residual vector (needs PYBRIDGE_CAP_RESIDUALS), or 0 */
    uint32_t capabilities; /* PYBRIDGE_CAP_* flags; 0 = cost only */
    uint32_t max_batch;    /* parameter vectors one request may carry (a vectorised code); 0 or 1 = one */
} pybridge_declaration;

/* One evaluation request: `count` parameter vectors (always 1 unless the
 * simulator declared max_batch > 1), stored one after the other: vector i is
 * params[i * n_params ... (i + 1) * n_params - 1], and its gradient and
 * residuals go at the same place in their regions. Every pointer points into
 * the shared segment and is valid until the reply to this request: read the
 * parameters in place and write the results in place, then reply. */
typedef struct pybridge_request {
    uint64_t seq;            /* sequence number of this request (1, 2, ...) */
    uint32_t kind;           /* enum pybridge_request_kind */
    uint32_t n_params;
    const double *params;    /* count * n_params values */
    double *gradient;        /* count * n_params values to fill, or NULL if kind != PYBRIDGE_REQUEST_GRADIENT */
    uint32_t n_residuals;
    double *residuals;       /* count * n_residuals values to fill, or NULL if kind != PYBRIDGE_REQUEST_RESIDUALS */
    uint32_t count;          /* parameter vectors in this request, 1 to the declared max_batch */
    double *costs;           /* count costs to fill before pybridge_channel_reply_batch */
} pybridge_request;

typedef struct pybridge_channel pybridge_channel;

/* Attaches to the channel and performs the handshake.
 *
 * name: the channel name, or NULL to read it from the PYBRIDGE_CHANNEL
 *       environment variable (set by pybridge.Simulator when it launches you).
 * declaration: what this simulator computes; the driver checks it against
 *       what its caller asked for and rejects a mismatch.
 * out: receives the channel handle. As with sqlite3_open, a handle is
 *       returned even when the call fails (unless memory ran out, then NULL),
 *       so pybridge_channel_last_error() can tell why; always close it.
 *
 * Exactly one simulator can attach to a channel: the first claims it
 * atomically, any later one gets PYBRIDGE_E_TAKEN.
 *
 * Blocks until the driver accepts or rejects the declaration, or until the
 * driver dies. Returns PYBRIDGE_OK, PYBRIDGE_E_NO_CHANNEL, PYBRIDGE_E_TAKEN,
 * PYBRIDGE_E_SYSTEM, PYBRIDGE_E_PROTOCOL, PYBRIDGE_E_REJECTED,
 * PYBRIDGE_E_DRIVER_GONE or PYBRIDGE_E_INVALID_ARGUMENT. */
PYBRIDGE_API int pybridge_channel_open(const char *name, const pybridge_declaration *declaration,
                                       pybridge_channel **out);

/* Detaches and frees the handle (NULL is allowed). Does not remove the
 * channel: the driver owns it. */
PYBRIDGE_API void pybridge_channel_close(pybridge_channel *channel);

/* Waits for the next request and fills *request.
 *
 * Returns PYBRIDGE_OK with a request to answer, PYBRIDGE_CLOSED when the
 * driver shut the channel down (leave your loop), PYBRIDGE_E_DRIVER_GONE when
 * the driver died (noticed within PYBRIDGE_LIVENESS_PERIOD_MS), or another
 * negative status on error. Calling it again before replying is an error. */
PYBRIDGE_API int pybridge_channel_wait(pybridge_channel *channel, pybridge_request *request);

/* Replies to the current request (of one vector) with its cost. For a
 * gradient request, write request->gradient first. For a residual request
 * the cost argument is ignored (the driver derives 0.5 * sum(r^2));
 * pybridge_channel_reply_residuals says so more plainly. A non-finite cost is
 * sent as it is; the driver applies its policy to it. A request of several
 * vectors is answered with pybridge_channel_reply_batch instead. */
PYBRIDGE_API int pybridge_channel_reply(pybridge_channel *channel, double cost);

/* Replies to the current request, of any count: request->costs (and the
 * gradients or residuals it asked for) are filled. A NaN cost marks that one
 * vector's evaluation as failed; the driver applies its policy to it alone. */
PYBRIDGE_API int pybridge_channel_reply_batch(pybridge_channel *channel);

/* Replies to the current residual request: request->residuals is filled. */
PYBRIDGE_API int pybridge_channel_reply_residuals(pybridge_channel *channel);

/* Reports that this evaluation failed (every vector of it, for a batch); the
 * message (truncated to PYBRIDGE_ERROR_TEXT_SIZE - 1 bytes) reaches the
 * driver's exception. The channel stays usable: wait for the next request. */
PYBRIDGE_API int pybridge_channel_reply_error(pybridge_channel *channel, const char *message);

/* The message of the last failed call on this channel ("" if none). Valid
 * until the next call on the channel. channel may be NULL (out of memory). */
PYBRIDGE_API const char *pybridge_channel_last_error(const pybridge_channel *channel);

/* The channel's name, without the leading '/'. */
PYBRIDGE_API const char *pybridge_channel_name(const pybridge_channel *channel);

/* Is the driver still there? PYBRIDGE_OK while it runs, PYBRIDGE_CLOSED once it
 * has shut the channel down, PYBRIDGE_E_DRIVER_GONE once it has died. Cheap
 * (a few microseconds; an atomic load while the watchdog runs): a long
 * evaluation may call it between its steps and stop early. May be called from
 * any thread, also while another thread computes. */
PYBRIDGE_API int pybridge_channel_driver_alive(pybridge_channel *channel);

/* Turns the watchdog thread on (enabled != 0) or off. It starts with the
 * channel unless PYBRIDGE_WATCHDOG=0 is set in the environment. While on, and
 * only while this process is not inside pybridge_channel_wait, the death of
 * the driver makes the watchdog remove the channel and raise SIGTERM in this
 * process (the default action ends it; a handler of yours may clean up first). */
PYBRIDGE_API int pybridge_channel_set_watchdog(pybridge_channel *channel, int enabled);

/* ---- Protocol helpers, shared by the shim, the Python module and the tests ---- */

/* How often a blocked side checks that its peer process is still alive. */
#define PYBRIDGE_LIVENESS_PERIOD_MS 100

/* The placement of the regions for a given shape. */
typedef struct pybridge_layout {
    uint64_t params_offset;
    uint64_t gradient_offset;  /* 0 without PYBRIDGE_CAP_GRADIENT */
    uint64_t residuals_offset; /* 0 without PYBRIDGE_CAP_RESIDUALS */
    uint64_t costs_offset;     /* 0 when max_batch is 1 */
    uint64_t segment_size;
} pybridge_layout;

/* Computes where the regions go for max_batch vectors per request (0 counts
 * as 1). Returns PYBRIDGE_E_INVALID_ARGUMENT for an unknown capability,
 * residuals without PYBRIDGE_CAP_RESIDUALS, or a segment that would not fit
 * in 63 bits. */
PYBRIDGE_API int pybridge_layout_compute(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities,
                                         uint32_t max_batch, pybridge_layout *out);

/* Checks a segment's header before anything trusts it: magic, version, the
 * header and segment sizes against mapped_size and, once the state is READY,
 * that every region lies inside the mapping where pybridge_layout_compute
 * puts it. Reads only the first min(mapped_size, sizeof(pybridge_header))
 * bytes. On failure writes a message to message (if message_size > 0) and
 * returns PYBRIDGE_E_PROTOCOL. */
PYBRIDGE_API int pybridge_header_validate(const void *segment, uint64_t mapped_size, char *message,
                                          size_t message_size);

/* The library's version, "MAJOR.MINOR.PATCH". */
PYBRIDGE_API const char *pybridge_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PYBRIDGE_PYBRIDGE_H */
