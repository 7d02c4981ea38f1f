// The simulator's end of a channel: attach, handshake, serve requests.
// Implements the C API of pybridge/pybridge.h; nothing here throws across it.

#include <fcntl.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <csignal>
#include <cstring>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include "names.hpp"
#include "process.hpp"
#include "report.hpp"
#include "pybridge/pybridge.h"
#include "wait.hpp"

// The layout the driver fixed at READY, copied out of shared memory once and
// never read from it again: a peer that later scribbles over the header's
// sizes or offsets cannot make us read or write outside the mapping.
struct agreed_layout {
    uint32_t n_params = 0;
    uint32_t n_residuals = 0;
    uint32_t capabilities = 0;
    uint32_t max_batch = 1;
    double *params = nullptr;
    double *gradient = nullptr;
    double *residuals = nullptr;
    double *costs = nullptr;  // the costs region, or the reply line's `cost` when max_batch is 1
};

struct pybridge_channel {
    std::string name;
    int fd = -1;
    void *base = MAP_FAILED;
    size_t mapped_size = 0;
    sem_t *request_sem = SEM_FAILED;
    sem_t *reply_sem = SEM_FAILED;     // posted when the driver waits on this channel alone
    sem_t *doorbell_sem = SEM_FAILED;  // posted when it waits on several (none: SEM_FAILED)
    pid_t driver_pid = 0;
    agreed_layout layout;
    uint64_t last_seq = 0;   // the last request handed to the caller
    int64_t picked_at_ns = 0;  // when it was picked up (CLOCK_MONOTONIC)
    bool timed = false;        // the driver asked for picked_at_ns and replied_at_ns on its reply
    bool pending = false;    // a request waits for its reply
    uint32_t pending_kind = 0;
    uint32_t pending_count = 0;
    pybridge::detail::SpinPolicy spin;
    pybridge::detail::Forecast forecast;  // of the gap between requests
    char error[1024] = "";  // fixed size: reporting an error must not allocate

    // The watchdog (see pybridge_channel_set_watchdog) and what it shares with the serving thread.
    std::thread watchdog;
    std::mutex watchdog_mutex;
    std::condition_variable watchdog_wake;
    bool watchdog_stop = false;           // guarded by watchdog_mutex
    std::atomic<bool> in_wait{false};     // the serving thread is inside pybridge_channel_wait
    std::atomic<bool> driver_dead{false}; // seen dead by the watchdog

    pybridge_header *header() const { return static_cast<pybridge_header *>(base); }
};

namespace {

using pybridge::detail::process_alive;

// Fields the peer changes while we look are read and written atomically.
template <typename T>
T load(const T &field) {
    return pybridge::detail::load_acquire(field);
}
template <typename T>
void store(T &field, T value) {
    pybridge::detail::store_release(field, value);
}

constexpr std::chrono::milliseconds kLivenessPeriod{PYBRIDGE_LIVENESS_PERIOD_MS};

using pybridge::detail::fail;
using pybridge::detail::fail_errno;

bool valid_name(const char *name) { return pybridge::detail::valid_name(name, PYBRIDGE_CHANNEL_NAME_MAX); }
bool valid_semaphore_name(const char *name) {
    return pybridge::detail::valid_name(name, PYBRIDGE_SEMAPHORE_NAME_SIZE - 1);
}

// Maps the whole object as it is now and validates the header.
int map_segment(pybridge_channel *ch) {
    struct stat info;
    if (::fstat(ch->fd, &info) != 0) return fail_errno(ch, "fstat");
    if (ch->base != MAP_FAILED) {
        ::munmap(ch->base, ch->mapped_size);
        ch->base = MAP_FAILED;
    }
    const auto size = static_cast<uint64_t>(info.st_size);
    if (size < sizeof(pybridge_header)) {
        return fail(ch, PYBRIDGE_E_PROTOCOL, "channel '%s' is %llu bytes, too small for a pybridge header",
                    ch->name.c_str(), static_cast<unsigned long long>(size));
    }
    void *base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, ch->fd, 0);
    if (base == MAP_FAILED) return fail_errno(ch, "mmap");
    ch->base = base;
    ch->mapped_size = size;
    char message[512];
    if (pybridge_header_validate(base, size, message, sizeof message) != PYBRIDGE_OK) {
        return fail(ch, PYBRIDGE_E_PROTOCOL, "channel '%s': %s", ch->name.c_str(), message);
    }
    return PYBRIDGE_OK;
}

// The driver owns the channel, but a dead driver cannot remove it: the
// survivor does, so that a killed driver leaks nothing. Safe because the
// owner is gone; a name already removed (ENOENT) is fine.
void remove_channel(pybridge_channel *ch) {
    char object[PYBRIDGE_CHANNEL_NAME_MAX + 16];  // no allocation on the wait path
    std::snprintf(object, sizeof object, "/%s", ch->name.c_str());
    ::shm_unlink(object);
    std::snprintf(object, sizeof object, "/%s%s", ch->name.c_str(), PYBRIDGE_REQUEST_SEM_SUFFIX);
    ::sem_unlink(object);
    std::snprintf(object, sizeof object, "/%s%s", ch->name.c_str(), PYBRIDGE_REPLY_SEM_SUFFIX);
    ::sem_unlink(object);
    // Not the doorbell: other channels share it, and `pybridge clean` removes it once its owner is gone.
}

int driver_gone(pybridge_channel *ch) {
    remove_channel(ch);
    return fail(ch, PYBRIDGE_E_DRIVER_GONE,
                "the driver process (pid %d) of channel '%s' died without closing it; removed the channel, stopping",
                static_cast<int>(ch->driver_pid), ch->name.c_str());
}

double *region(const pybridge_channel *ch, uint64_t offset) {
    return reinterpret_cast<double *>(static_cast<char *>(ch->base) + offset);
}

// Watches the driver while the simulator computes. A blocked
// pybridge_channel_wait notices a dead driver by itself; an evaluation can
// last hours, so without this thread a killed driver would leave its
// simulator computing (and its CPUs or MPI ranks busy) until the end.
void watchdog_loop(pybridge_channel *ch) {
    std::unique_lock<std::mutex> lock(ch->watchdog_mutex);
    while (!ch->watchdog_stop) {
        ch->watchdog_wake.wait_for(lock, kLivenessPeriod);
        if (ch->watchdog_stop || process_alive(ch->driver_pid)) continue;
        ch->driver_dead.store(true);
        if (ch->in_wait.load()) continue;  // the wait returns PYBRIDGE_E_DRIVER_GONE itself
        remove_channel(ch);
        ::kill(::getpid(), SIGTERM);
        return;
    }
}

void start_watchdog(pybridge_channel *ch) {
    if (ch->watchdog.joinable()) return;
    {
        std::lock_guard<std::mutex> lock(ch->watchdog_mutex);
        ch->watchdog_stop = false;
    }
    try {
        ch->watchdog = std::thread(watchdog_loop, ch);
    } catch (...) {  // no thread to be had: serve without a watchdog rather than fail
    }
}

void stop_watchdog(pybridge_channel *ch) {
    if (!ch->watchdog.joinable()) return;
    {
        std::lock_guard<std::mutex> lock(ch->watchdog_mutex);
        ch->watchdog_stop = true;
    }
    ch->watchdog_wake.notify_all();
    ch->watchdog.join();
}

int taken(pybridge_channel *ch, int32_t owner) {
    return fail(ch, PYBRIDGE_E_TAKEN,
                "channel '%s' is already taken by simulator pid %d: exactly one simulator may attach to a "
                "channel (start one per channel, e.g. one per pybridge.Simulator or pool worker)",
                ch->name.c_str(), static_cast<int>(owner));
}

int check_declaration(pybridge_channel *ch, const pybridge_declaration *d) {
    if ((d->capabilities & ~PYBRIDGE_CAP_ALL) != 0) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT, "unknown capability flags 0x%x", d->capabilities);
    }
    if (d->n_residuals != 0 && (d->capabilities & PYBRIDGE_CAP_RESIDUALS) == 0) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT,
                    "n_residuals is %u but PYBRIDGE_CAP_RESIDUALS is not declared", d->n_residuals);
    }
    return PYBRIDGE_OK;
}

int open_channel(pybridge_channel *ch, const char *name, const pybridge_declaration *declaration) {
    if (declaration == nullptr) return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT, "declaration is NULL");
    if (name == nullptr) {
        name = std::getenv(PYBRIDGE_CHANNEL_ENV);
        if (name == nullptr || *name == '\0') {
            return fail(ch, PYBRIDGE_E_NO_CHANNEL,
                        "%s is not set: start this program from pybridge.Simulator, or pass the channel name",
                        PYBRIDGE_CHANNEL_ENV);
        }
    }
    if (*name == '/') ++name;
    if (!valid_name(name)) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT,
                    "invalid channel name '%.64s': use 1 to %d characters from [A-Za-z0-9._-]", name,
                    PYBRIDGE_CHANNEL_NAME_MAX);
    }
    ch->name = name;
    const int status = check_declaration(ch, declaration);
    if (status != PYBRIDGE_OK) return status;

    const std::string object = "/" + ch->name;
    ch->fd = ::shm_open(object.c_str(), O_RDWR, 0);
    if (ch->fd < 0) {
        if (errno == ENOENT) {
            return fail(ch, PYBRIDGE_E_NO_CHANNEL, "no channel named '%s' exists (has its driver exited?)",
                        ch->name.c_str());
        }
        return fail_errno(ch, "shm_open");
    }
    if (int rc = map_segment(ch); rc != PYBRIDGE_OK) {
        // Came late: another simulator attached, and the driver grew the segment between our fstat
        // and our look at the header. "Taken" is the news, not the size.
        if (rc == PYBRIDGE_E_PROTOCOL && ch->base != MAP_FAILED && ch->header()->magic == PYBRIDGE_MAGIC &&
            ch->header()->version == PYBRIDGE_PROTOCOL_VERSION) {
            if (const int32_t owner = load(ch->header()->simulator_pid); owner != 0) return taken(ch, owner);
        }
        return rc;
    }
    pybridge_header *h = ch->header();
    ch->driver_pid = h->driver_pid;
    // Claim the channel: of several simulators racing to attach, exactly one
    // turns simulator_pid from 0 into its pid; checking the state alone would
    // let two of them see CREATED and both declare.
    int32_t unclaimed = 0;
    if (!__atomic_compare_exchange_n(&h->simulator_pid, &unclaimed, static_cast<int32_t>(::getpid()), false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        return taken(ch, unclaimed);
    }
    if (const uint32_t state = load(h->state); state != PYBRIDGE_STATE_CREATED) {
        return fail(ch, PYBRIDGE_E_PROTOCOL, "channel '%s' is not waiting for a simulator (state %u)",
                    ch->name.c_str(), state);
    }
    ch->request_sem = ::sem_open((object + PYBRIDGE_REQUEST_SEM_SUFFIX).c_str(), 0);
    if (ch->request_sem == SEM_FAILED) return fail_errno(ch, "sem_open (request)");
    ch->reply_sem = ::sem_open((object + PYBRIDGE_REPLY_SEM_SUFFIX).c_str(), 0);
    if (ch->reply_sem == SEM_FAILED) return fail_errno(ch, "sem_open (reply)");
    // The header names the doorbell, if any (validated NUL-terminated above).
    if (const char *doorbell = h->doorbell; *doorbell != '\0') {
        if (!valid_semaphore_name(doorbell)) {
            return fail(ch, PYBRIDGE_E_PROTOCOL, "channel '%s' names an invalid doorbell", ch->name.c_str());
        }
        ch->doorbell_sem = ::sem_open(("/" + std::string(doorbell)).c_str(), 0);
        if (ch->doorbell_sem == SEM_FAILED) return fail_errno(ch, "sem_open (doorbell)");
    }

    h->declared_n_params = declaration->n_params;
    h->declared_n_residuals = declaration->n_residuals;
    h->declared_capabilities = declaration->capabilities;
    h->declared_max_batch = declaration->max_batch;
    store(h->state, static_cast<uint32_t>(PYBRIDGE_STATE_DECLARED));
    if (::sem_post(ch->reply_sem) != 0) return fail_errno(ch, "sem_post (declaration)");

    for (;;) {
        const uint32_t state = load(ch->header()->state);
        if (state == PYBRIDGE_STATE_READY) break;
        if (state == PYBRIDGE_STATE_REJECTED) {
            char reason[PYBRIDGE_ERROR_TEXT_SIZE];
            std::memcpy(reason, ch->header()->error, sizeof reason);
            reason[sizeof reason - 1] = '\0';
            return fail(ch, PYBRIDGE_E_REJECTED, "the driver rejected this simulator: %s", reason);
        }
        if (state == PYBRIDGE_STATE_CLOSED) {
            return fail(ch, PYBRIDGE_E_REJECTED, "the driver closed channel '%s' during the handshake",
                        ch->name.c_str());
        }
        // State changes are always posted; the flag only makes block() complete.
        const auto changed = [ch] { return load(ch->header()->state) != PYBRIDGE_STATE_DECLARED; };
        if (!pybridge::detail::block(changed, ch->header()->simulator_sleeping, ch->request_sem, kLivenessPeriod) &&
            !process_alive(ch->driver_pid)) {
            return driver_gone(ch);
        }
    }
    // The driver grew the segment to its final size before announcing READY.
    if (int rc = map_segment(ch); rc != PYBRIDGE_OK) return rc;
    h = ch->header();
    const auto mismatch = [](uint32_t declared, uint32_t actual) { return declared != 0 && declared != actual; };
    if (mismatch(declaration->n_params, h->n_params) || mismatch(declaration->n_residuals, h->n_residuals) ||
        (declaration->capabilities & ~h->capabilities) != 0 ||
        h->max_batch > std::max<uint32_t>(declaration->max_batch, 1)) {
        return fail(ch, PYBRIDGE_E_PROTOCOL,
                    "the driver fixed a shape (%u parameters, %u residuals, capabilities 0x%x, batches of %u) that "
                    "contradicts the declaration (%u, %u, 0x%x, %u)",
                    h->n_params, h->n_residuals, h->capabilities, h->max_batch, declaration->n_params,
                    declaration->n_residuals, declaration->capabilities, declaration->max_batch);
    }
    // map_segment validated every region against the mapping: keep our own copy from now on.
    ch->layout.n_params = h->n_params;
    ch->layout.n_residuals = h->n_residuals;
    ch->layout.capabilities = h->capabilities;
    ch->layout.max_batch = h->max_batch;
    ch->layout.costs = h->max_batch > 1 ? region(ch, h->costs_offset) : &h->cost;
    ch->layout.params = region(ch, h->params_offset);
    ch->layout.gradient = (h->capabilities & PYBRIDGE_CAP_GRADIENT) ? region(ch, h->gradient_offset) : nullptr;
    ch->layout.residuals = (h->capabilities & PYBRIDGE_CAP_RESIDUALS) ? region(ch, h->residuals_offset) : nullptr;
    // Requests are numbered from 1 after READY; one may be waiting already.
    ch->last_seq = 0;
    ch->spin.set_budget(h->spin_us);
    const char *watchdog = std::getenv("PYBRIDGE_WATCHDOG");
    if (watchdog == nullptr || std::strcmp(watchdog, "0") != 0) start_watchdog(ch);
    return PYBRIDGE_OK;
}

int finish_reply(pybridge_channel *ch, int32_t status) {
    pybridge_header *h = ch->header();
    h->reply_status = status;
    if (ch->timed) {  // for pybridge_driver_latency: one clock read, ~25 ns; the pick-up time came with the wait's
        h->picked_at_ns = ch->picked_at_ns;
        h->replied_at_ns = pybridge::detail::monotonic_ns(pybridge::detail::Clock::now());
    }
    store(h->reply_seq, ch->last_seq);
    ch->pending = false;
    if (pybridge::detail::wake_driver(h->driver_sleeping, ch->reply_sem, ch->doorbell_sem) != 0) {
        return fail_errno(ch, "sem_post (reply)");
    }
    return PYBRIDGE_OK;
}

int check_pending(pybridge_channel *ch) {
    if (!ch->pending) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT, "no request to reply to: call pybridge_channel_wait first");
    }
    return PYBRIDGE_OK;
}

}  // namespace

extern "C" {

int pybridge_channel_open(const char *name, const pybridge_declaration *declaration, pybridge_channel **out) {
    if (out == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    *out = new (std::nothrow) pybridge_channel;
    if (*out == nullptr) return PYBRIDGE_E_SYSTEM;
    try {
        return open_channel(*out, name, declaration);
    } catch (...) {  // std::string may throw bad_alloc; it must not reach C callers
        return PYBRIDGE_E_SYSTEM;
    }
}

void pybridge_channel_close(pybridge_channel *ch) {
    if (ch == nullptr) return;
    stop_watchdog(ch);
    if (ch->base != MAP_FAILED) ::munmap(ch->base, ch->mapped_size);
    if (ch->fd >= 0) ::close(ch->fd);
    if (ch->request_sem != SEM_FAILED) ::sem_close(ch->request_sem);
    if (ch->reply_sem != SEM_FAILED) ::sem_close(ch->reply_sem);
    if (ch->doorbell_sem != SEM_FAILED) ::sem_close(ch->doorbell_sem);
    delete ch;
}

int pybridge_channel_wait(pybridge_channel *ch, pybridge_request *request) {
    if (ch == nullptr || request == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (ch->base == MAP_FAILED || ch->reply_sem == SEM_FAILED) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT, "the channel is not open");
    }
    if (ch->pending) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT, "reply to request %llu before waiting for the next one",
                    static_cast<unsigned long long>(ch->last_seq));
    }
    pybridge_header *h = ch->header();
    // Only newer requests count: a post left over from a request the driver
    // gave up on must not make us serve it twice.
    const auto ready = [h, ch] {
        return load(h->request_seq) > ch->last_seq || load(h->state) == PYBRIDGE_STATE_CLOSED;
    };
    ch->in_wait.store(true, std::memory_order_relaxed);  // read by the watchdog every 100 ms: no fence needed
    // As planned from the gaps between recent requests (the driver's own work): spin-then-block
    // when they were short, block-spin-block around the expected time when they were long; the
    // driver's liveness is checked between slices.
    const auto started = pybridge::detail::Clock::now();
    const auto plan = ch->forecast.plan(started, ch->spin);
    const int64_t slice = std::chrono::duration_cast<std::chrono::nanoseconds>(kLivenessPeriod).count();
    bool done;
    while (!(done = pybridge::detail::wait_planned(ready, plan, ch->forecast, h->simulator_sleeping, ch->request_sem,
                                                   slice))) {
        if (!process_alive(ch->driver_pid)) {
            ch->in_wait.store(false, std::memory_order_relaxed);
            return driver_gone(ch);
        }
    }
    ch->in_wait.store(false, std::memory_order_relaxed);
    const auto picked = pybridge::detail::Clock::now();
    const int64_t waited = std::chrono::duration_cast<std::chrono::nanoseconds>(picked - started).count();
    ch->spin.record(waited);
    ch->forecast.record(waited);
    if (load(h->state) == PYBRIDGE_STATE_CLOSED) return PYBRIDGE_CLOSED;
    const uint64_t seq = load(h->request_seq);
    const uint32_t kind = h->request_kind;
    const uint32_t count = h->request_count;
    const bool timed = (h->request_flags & PYBRIDGE_REQUEST_TIMED) != 0;
    const agreed_layout &layout = ch->layout;
    const bool kind_ok = kind == PYBRIDGE_REQUEST_COST ||
                         (kind == PYBRIDGE_REQUEST_GRADIENT && (layout.capabilities & PYBRIDGE_CAP_GRADIENT)) ||
                         (kind == PYBRIDGE_REQUEST_RESIDUALS && (layout.capabilities & PYBRIDGE_CAP_RESIDUALS));
    if (!kind_ok) {
        return fail(ch, PYBRIDGE_E_PROTOCOL, "request %llu has kind %u, which this channel does not support",
                    static_cast<unsigned long long>(seq), kind);
    }
    if (count < 1 || count > layout.max_batch) {
        return fail(ch, PYBRIDGE_E_PROTOCOL, "request %llu carries %u parameter vectors; this channel takes 1 to %u",
                    static_cast<unsigned long long>(seq), count, layout.max_batch);
    }
    ch->last_seq = seq;
    ch->picked_at_ns = pybridge::detail::monotonic_ns(picked);
    ch->timed = timed;
    ch->pending = true;
    ch->pending_kind = kind;
    ch->pending_count = count;
    request->seq = seq;
    request->kind = kind;
    request->n_params = layout.n_params;
    request->params = layout.params;
    request->gradient = kind == PYBRIDGE_REQUEST_GRADIENT ? layout.gradient : nullptr;
    request->n_residuals = kind == PYBRIDGE_REQUEST_RESIDUALS ? layout.n_residuals : 0;
    request->residuals = kind == PYBRIDGE_REQUEST_RESIDUALS ? layout.residuals : nullptr;
    request->count = count;
    request->costs = layout.costs;
    return PYBRIDGE_OK;
}

int pybridge_channel_reply(pybridge_channel *ch, double cost) {
    if (ch == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (int rc = check_pending(ch); rc != PYBRIDGE_OK) return rc;
    if (ch->pending_count != 1) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT,
                    "request %llu carries %u parameter vectors: fill request->costs and call "
                    "pybridge_channel_reply_batch",
                    static_cast<unsigned long long>(ch->last_seq), ch->pending_count);
    }
    ch->layout.costs[0] = cost;
    return finish_reply(ch, PYBRIDGE_REPLY_OK);
}

int pybridge_channel_reply_batch(pybridge_channel *ch) {
    if (ch == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (int rc = check_pending(ch); rc != PYBRIDGE_OK) return rc;
    return finish_reply(ch, PYBRIDGE_REPLY_OK);
}

int pybridge_channel_reply_residuals(pybridge_channel *ch) {
    if (ch == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (int rc = check_pending(ch); rc != PYBRIDGE_OK) return rc;
    if (ch->pending_kind != PYBRIDGE_REQUEST_RESIDUALS) {
        return fail(ch, PYBRIDGE_E_INVALID_ARGUMENT,
                    "request %llu asked for a cost, not residuals: use pybridge_channel_reply",
                    static_cast<unsigned long long>(ch->last_seq));
    }
    std::fill_n(ch->layout.costs, ch->pending_count, std::nan(""));
    return finish_reply(ch, PYBRIDGE_REPLY_OK);
}

int pybridge_channel_reply_error(pybridge_channel *ch, const char *message) {
    if (ch == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (int rc = check_pending(ch); rc != PYBRIDGE_OK) return rc;
    char *text = ch->header()->error;
    std::snprintf(text, PYBRIDGE_ERROR_TEXT_SIZE, "%s",
                  message != nullptr && *message != '\0' ? message : "(the simulator gave no message)");
    return finish_reply(ch, PYBRIDGE_REPLY_FAILED);
}

const char *pybridge_channel_last_error(const pybridge_channel *ch) {
    if (ch == nullptr) return "out of memory while creating the channel handle";
    return ch->error;
}

const char *pybridge_channel_name(const pybridge_channel *ch) { return ch == nullptr ? "" : ch->name.c_str(); }

int pybridge_channel_driver_alive(pybridge_channel *ch) {
    if (ch == nullptr || ch->base == MAP_FAILED) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (load(ch->header()->state) == PYBRIDGE_STATE_CLOSED) return PYBRIDGE_CLOSED;
    // The watchdog's verdict costs an atomic load; without it, ask the OS.
    const bool dead = ch->watchdog.joinable() ? ch->driver_dead.load() : !process_alive(ch->driver_pid);
    if (!dead) return PYBRIDGE_OK;
    remove_channel(ch);
    return PYBRIDGE_E_DRIVER_GONE;
}

int pybridge_channel_set_watchdog(pybridge_channel *ch, int enabled) {
    if (ch == nullptr || ch->base == MAP_FAILED) return PYBRIDGE_E_INVALID_ARGUMENT;
    try {
        if (enabled) {
            start_watchdog(ch);
        } else {
            stop_watchdog(ch);
        }
    } catch (...) {  // std::system_error from a mutex: never across the C API
        return fail(ch, PYBRIDGE_E_SYSTEM, "could not change the watchdog of channel '%s'", ch->name.c_str());
    }
    return PYBRIDGE_OK;
}

const char *pybridge_version(void) { return PYBRIDGE_VERSION_STRING; }

}  // extern "C"
