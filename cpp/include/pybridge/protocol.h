/*
 * pybridge/protocol.h — the shared-memory layout of one pybridge channel.
 *
 * This header is the single definition of the wire format. The shim
 * (cpp/src), the Python driver (pybridge/protocol.py, which reads every
 * offset from the compiled module) and the documentation (docs/protocol.md)
 * all derive from it. Change a field here and bump PYBRIDGE_PROTOCOL_VERSION;
 * the one exception is a field added in padding that a peer of the same
 * version may leave zero and that its reader takes zero to mean "absent"
 * (request_flags, picked_at_ns and replied_at_ns): peers built before it
 * still connect.
 *
 * A channel is one POSIX shared-memory object plus two POSIX named
 * semaphores, all created by the driver (the Python side):
 *
 *     shared memory   "/" NAME               the segment below
 *     semaphore       "/" NAME "-req"        driver -> simulator: a request (or a state change) is ready
 *     semaphore       "/" NAME "-rep"        simulator -> driver: a reply (or the declaration) is ready
 *
 * and optionally a "doorbell": a semaphore several channels share, named in
 * the header, so that one driver thread can wait on all of them at once.
 * The driver says which of the two it sleeps on (driver_sleeping), and the
 * simulator posts that one: a thread waiting on one channel is never woken
 * by another channel's reply, nor does it swallow another waiter's.
 *
 * Waiting: each side spins on the sequence numbers for up to spin_us (yielding
 * its core every 10 us, for a peer just woken onto the same core), then
 * raises its *_sleeping flag and blocks on its semaphore. A side posts the
 * other's semaphore only if that flag is raised (state changes always post).
 *
 * The segment starts with a pybridge_header; the parameter, gradient,
 * residual and cost regions follow at the offsets the header gives. Every
 * offset and size is validated against the mapped size before it is used.
 *
 * Batches: a simulator that evaluates several parameter vectors at once (a
 * vectorised or GPU code) declares how many one request may carry. Each
 * region then holds max_batch vectors, one after the other (vector i of the
 * parameters starts at params_offset + i * n_params doubles), and the costs
 * come back in a region of their own; a request says how many vectors it
 * carries (request_count). Without batches (max_batch = 1) the one cost
 * travels in the reply line's `cost`.
 *
 * Latency: asked to (PYBRIDGE_REQUEST_TIMED), the simulator stamps when it
 * picked the request up and when it replied, on CLOCK_MONOTONIC (one clock
 * for every process of the node), so that the driver can split the round
 * trip into the request's latency, the model's own time and the reply's
 * latency (pybridge_driver_latency). Asked, not always: the stamps put two
 * clock reads on the round trip's critical path.
 *
 * Plain C99 with fixed-width fields and explicit padding, so C, C++,
 * Fortran (via iso_c_binding) and numpy all see the same bytes. Fields that
 * the peer reads while they change (state, *_seq) are accessed atomically by
 * the implementation; the semaphores order everything else.
 */
#ifndef PYBRIDGE_PROTOCOL_H
#define PYBRIDGE_PROTOCOL_H

#include <stdint.h>

/* "PYBRIDGE" read as a little-endian uint64. */
#define PYBRIDGE_MAGIC UINT64_C(0x4547444952425950)
#define PYBRIDGE_PROTOCOL_VERSION 4u

/* The environment variable through which a launched simulator learns its channel. */
#define PYBRIDGE_CHANNEL_ENV "PYBRIDGE_CHANNEL"
/* Every name pybridge creates starts with this: "pybridge-" KIND PID "-" 24 hex digits, where KIND is
 * "" for a channel and "bell-" for a doorbell, PID the creating process (so that anyone can tell whose
 * it is, and whether its creator still lives) and the hex digits 96 random bits (so that nobody can
 * guess or squat a name). */
#define PYBRIDGE_NAME_PREFIX "pybridge-"
#define PYBRIDGE_REQUEST_SEM_SUFFIX "-req"
#define PYBRIDGE_REPLY_SEM_SUFFIX "-rep"
/* Longest channel name accepted (without the leading '/'): the name plus
 * a semaphore suffix must fit in reply_semaphore. */
#define PYBRIDGE_CHANNEL_NAME_MAX 59
#define PYBRIDGE_SEMAPHORE_NAME_SIZE 64

/* Regions start on cache-line boundaries: no false sharing with the header,
 * and aligned loads for the simulator's maths. */
#define PYBRIDGE_REGION_ALIGN 64u

/* Values of pybridge_header.driver_sleeping: which semaphore the simulator posts. */
#define PYBRIDGE_SLEEPING_ON_REPLY 1u    /* "/" NAME "-rep": the driver waits on this channel alone */
#define PYBRIDGE_SLEEPING_ON_DOORBELL 2u /* "/" doorbell: the driver waits on several channels at once */

/* Channel lifecycle (pybridge_header.state). See docs/protocol.md. */
enum pybridge_state {
    PYBRIDGE_STATE_CREATED = 1,  /* driver made the segment; no simulator yet */
    PYBRIDGE_STATE_DECLARED = 2, /* simulator wrote its declaration and posted "-rep" */
    PYBRIDGE_STATE_READY = 3,    /* driver accepted it and fixed the layout; requests may flow */
    PYBRIDGE_STATE_REJECTED = 4, /* driver refused the declaration; error[] says why */
    PYBRIDGE_STATE_CLOSED = 5    /* driver shut the channel down; the simulator leaves its loop */
};

/* What a simulator can compute besides the cost (bit flags). */
enum pybridge_capability {
    PYBRIDGE_CAP_GRADIENT = 1u << 0, /* d cost / d params, written to the gradient region */
    PYBRIDGE_CAP_RESIDUALS = 1u << 1 /* a residual vector; cost = 0.5 * sum(r^2) */
};
#define PYBRIDGE_CAP_ALL (PYBRIDGE_CAP_GRADIENT | PYBRIDGE_CAP_RESIDUALS)

/* What one request asks for (pybridge_header.request_kind). */
enum pybridge_request_kind {
    PYBRIDGE_REQUEST_COST = 1,          /* the cost alone */
    PYBRIDGE_REQUEST_GRADIENT = 2,      /* the cost and the gradient */
    PYBRIDGE_REQUEST_RESIDUALS = 3      /* the residual vector */
};

/* Flags of one request (pybridge_header.request_flags). */
#define PYBRIDGE_REQUEST_TIMED 1u /* stamp picked_at_ns and replied_at_ns on the reply */

/* Outcome of one evaluation (pybridge_header.reply_status). */
enum pybridge_reply_status {
    PYBRIDGE_REPLY_OK = 0,
    PYBRIDGE_REPLY_FAILED = 1 /* this evaluation failed; error[] holds the simulator's message */
};

#define PYBRIDGE_ERROR_TEXT_SIZE 640

typedef struct pybridge_header {
    /* Identity, written by the driver before the simulator starts. (offset 0) */
    uint64_t magic;        /* PYBRIDGE_MAGIC */
    uint32_t version;      /* PYBRIDGE_PROTOCOL_VERSION */
    uint32_t header_size;  /* sizeof(pybridge_header) */
    uint64_t segment_size; /* bytes in the whole segment; grows once, at READY */
    int32_t driver_pid;
    int32_t simulator_pid; /* the attached simulator: claimed 0 -> pid with an atomic compare-and-swap,
                              so that of several racing simulators exactly one attaches */
    uint32_t state;        /* enum pybridge_state */

    /* Declaration, written by the simulator. 0 = "whatever the driver asks for". (offset 36) */
    uint32_t declared_n_params;
    uint32_t declared_n_residuals;
    uint32_t declared_capabilities; /* enum pybridge_capability flags */

    /* Layout, fixed by the driver when it moves the state to READY. (offset 48) */
    uint32_t n_params;
    uint32_t n_residuals;
    uint32_t capabilities;
    uint32_t spin_us;          /* how long either side spins before blocking; 0 = block at once */
    uint64_t params_offset;    /* max_batch * n_params doubles */
    uint64_t gradient_offset;  /* max_batch * n_params doubles, or 0 without PYBRIDGE_CAP_GRADIENT */
    uint64_t residuals_offset; /* max_batch * n_residuals doubles, or 0 without PYBRIDGE_CAP_RESIDUALS */

    /* Batches. (offset 88) The declared count sits here, not in the declaration block above,
     * which is full; it is written by the simulator with the rest of its declaration. */
    uint32_t declared_max_batch; /* vectors one request may carry; 0 or 1 = one */
    uint32_t max_batch;          /* fixed by the driver at READY: 1 <= max_batch <= declared_max_batch (or 1) */
    uint64_t costs_offset;       /* max_batch doubles, or 0 when max_batch is 1 (the cost is in `cost`) */
    uint8_t pad0[24];

    /* Request line: written by the driver only. Own cache line. (offset 128) */
    uint64_t request_seq; /* incremented once per request; 0 = none yet */
    uint32_t request_kind; /* enum pybridge_request_kind */
    uint32_t driver_sleeping; /* 0, or PYBRIDGE_SLEEPING_ON_*: the driver blocks, the simulator must post */
    uint32_t request_count; /* parameter vectors in this request: 1 to max_batch */
    uint32_t request_flags; /* PYBRIDGE_REQUEST_* flags; 0 from a driver older than them */
    uint8_t pad1[40];

    /* Reply line: written by the simulator only. Own cache line. (offset 192) */
    uint64_t reply_seq; /* = the request_seq this reply answers */
    int32_t reply_status; /* enum pybridge_reply_status */
    uint32_t simulator_sleeping; /* 1 while the simulator blocks on "-req": the driver must post it */
    double cost; /* the cost when max_batch is 1 (NaN for residuals); else the costs region has them */
    /* Stamped when the request was PYBRIDGE_REQUEST_TIMED, else left as they were (0 at first). */
    int64_t picked_at_ns;  /* CLOCK_MONOTONIC when the simulator picked this request up */
    int64_t replied_at_ns; /* CLOCK_MONOTONIC just before it published this reply */
    uint8_t pad2[24];

    /* Names (without '/') of the semaphores the simulator posts: the
     * channel's own NAME "-rep", and the doorbell it shares with other
     * channels ("" if none). Written by the driver before the simulator
     * starts. (offset 256) */
    char reply_semaphore[PYBRIDGE_SEMAPHORE_NAME_SIZE];
    char doorbell[PYBRIDGE_SEMAPHORE_NAME_SIZE];

    /* NUL-terminated message: why an evaluation failed (simulator) or why
     * the declaration was rejected (driver). (offset 384) */
    char error[PYBRIDGE_ERROR_TEXT_SIZE];
} pybridge_header; /* 1024 bytes */

#endif /* PYBRIDGE_PROTOCOL_H */
