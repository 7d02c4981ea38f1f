// The driver's end of a channel: create or take the OS objects, handshake,
// send requests, wait for replies (on one channel or several). Implements
// pybridge/driver.h; nothing here throws across it.

#include "pybridge/driver.h"

#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "names.hpp"
#include "process.hpp"
#include "report.hpp"
#include "values.hpp"
#include "wait.hpp"

struct pybridge_driver {
    std::string name;        // without '/'
    std::string doorbell;    // without '/'; "" when the channel has none
    bool created = false;    // by pybridge_driver_create: destroy removes the objects
    int fd = -1;
    void *base = MAP_FAILED;
    size_t mapped_size = 0;
    sem_t *request_sem = SEM_FAILED;
    sem_t *reply_sem = SEM_FAILED;     // NAME "-rep": waits on this channel alone
    sem_t *doorbell_sem = SEM_FAILED;  // shared with other channels: wait_any
    // The layout fixed at accept, never read from shared memory again.
    bool accepted = false;
    uint32_t n_params = 0, n_residuals = 0, capabilities = 0, max_batch = 1;
    double *params = nullptr, *gradient = nullptr, *residuals = nullptr;
    double *costs = nullptr;  // the costs region, or the reply line's `cost` when max_batch is 1
    // The latest request.
    uint64_t seq = 0;
    uint32_t kind = 0;
    uint32_t count = 0;
    int outcome = PYBRIDGE_OUTCOME_NOT_SENT;
    bool spun = false;  // its one spin is spent
    pybridge::detail::Clock::time_point sent_at{};      // just before the request was published
    pybridge::detail::Clock::time_point answered_at{};  // when its reply was seen
    pybridge::detail::SpinPolicy spin;
    pybridge::detail::Forecast forecast;  // of the time from request to reply
    pybridge::detail::Forecast::Plan plan{};  // of the pending request's wait
    bool forecasting = true;                  // pybridge_driver_set_forecast
    bool measuring = false;                   // pybridge_driver_measure_latency: ask for stamps
    bool timed = false;                       // the latest request asked for them
    char reply_error[PYBRIDGE_ERROR_TEXT_SIZE] = "";
    char error[1024] = "";

    pybridge_header *header() const { return static_cast<pybridge_header *>(base); }
};

namespace {

using pybridge::detail::load_acquire;
using pybridge::detail::store_release;

using pybridge::detail::fail;
using pybridge::detail::fail_errno;

int set_names(pybridge_driver *d, const char *name, const char *doorbell) {
    d->name = name ? (*name == '/' ? name + 1 : name) : pybridge::detail::new_name("");
    if (!pybridge::detail::valid_name(d->name.c_str(), PYBRIDGE_CHANNEL_NAME_MAX)) {
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "invalid channel name '%.64s': use 1 to %d characters from [A-Za-z0-9._-]",
                    d->name.c_str(), PYBRIDGE_CHANNEL_NAME_MAX);
    }
    d->doorbell = doorbell ? (*doorbell == '/' ? doorbell + 1 : doorbell) : "";
    if (!d->doorbell.empty() && !pybridge::detail::valid_name(d->doorbell.c_str(), PYBRIDGE_SEMAPHORE_NAME_SIZE - 1)) {
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "invalid doorbell name '%.64s'", d->doorbell.c_str());
    }
    return PYBRIDGE_OK;
}

int map_segment(pybridge_driver *d) {
    struct stat info;
    if (::fstat(d->fd, &info) != 0) return fail_errno(d, "fstat");
    if (d->base != MAP_FAILED) ::munmap(d->base, d->mapped_size);
    d->base = MAP_FAILED;
    const auto size = static_cast<size_t>(info.st_size);
    if (size < sizeof(pybridge_header)) {
        return fail(d, PYBRIDGE_E_PROTOCOL, "channel '%s' is %zu bytes, too small for a pybridge header",
                    d->name.c_str(), size);
    }
    void *base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, d->fd, 0);
    if (base == MAP_FAILED) return fail_errno(d, "mmap");
    d->base = base;
    d->mapped_size = size;
    return PYBRIDGE_OK;
}

// Opens the objects by name, maps the segment, writes a fresh header.
int take_driver_end(pybridge_driver *d) {
    const std::string object = "/" + d->name;
    if (d->fd < 0) {
        d->fd = ::shm_open(object.c_str(), O_RDWR, 0);
        if (d->fd < 0) return fail_errno(d, "shm_open");
    }
    if (int rc = map_segment(d); rc != PYBRIDGE_OK) return rc;
    if (d->request_sem == SEM_FAILED) {
        d->request_sem = ::sem_open((object + PYBRIDGE_REQUEST_SEM_SUFFIX).c_str(), 0);
        if (d->request_sem == SEM_FAILED) return fail_errno(d, "sem_open (request)");
    }
    if (d->reply_sem == SEM_FAILED) {
        d->reply_sem = ::sem_open((object + PYBRIDGE_REPLY_SEM_SUFFIX).c_str(), 0);
        if (d->reply_sem == SEM_FAILED) return fail_errno(d, "sem_open (reply)");
    }
    if (!d->doorbell.empty() && d->doorbell_sem == SEM_FAILED) {
        d->doorbell_sem = ::sem_open(("/" + d->doorbell).c_str(), 0);
        if (d->doorbell_sem == SEM_FAILED) return fail_errno(d, "sem_open (doorbell)");
    }
    pybridge_header *h = d->header();
    std::memset(h, 0, sizeof *h);
    h->magic = PYBRIDGE_MAGIC;
    h->version = PYBRIDGE_PROTOCOL_VERSION;
    h->header_size = sizeof(pybridge_header);
    h->segment_size = d->mapped_size;
    h->driver_pid = static_cast<int32_t>(::getpid());
    std::snprintf(h->reply_semaphore, sizeof h->reply_semaphore, "%s%s", d->name.c_str(), PYBRIDGE_REPLY_SEM_SUFFIX);
    std::snprintf(h->doorbell, sizeof h->doorbell, "%s", d->doorbell.c_str());
    store_release(h->state, static_cast<uint32_t>(PYBRIDGE_STATE_CREATED));
    return PYBRIDGE_OK;
}

// posix_fallocate returns its error rather than setting errno; ENOSPC gets the sizes.
int reserve(pybridge_driver *d, uint64_t size) {
    if (::ftruncate(d->fd, static_cast<off_t>(size)) != 0) return fail_errno(d, "ftruncate");
    const int error = ::posix_fallocate(d->fd, 0, static_cast<off_t>(size));
    if (error == 0) return PYBRIDGE_OK;
    if (error != ENOSPC) return fail_errno(d, "posix_fallocate", error);
    struct statvfs info;
    const double free_mib = ::statvfs("/dev/shm", &info) == 0 ? double(info.f_bavail) * info.f_frsize / 1048576.0 : -1.0;
    return fail(d, PYBRIDGE_E_NO_SPACE, "/dev/shm has no room for channel '%s': it needs %.1f MiB, %.1f MiB are free",
                d->name.c_str(), double(size) / 1048576.0, free_mib);
}

void set_state(pybridge_driver *d, uint32_t state) {
    store_release(d->header()->state, state);
    ::sem_post(d->request_sem);  // state changes always post: the simulator may be blocked
}

bool answered(const pybridge_driver *d) { return load_acquire(d->header()->reply_seq) == d->seq; }

void record_answer(pybridge_driver *d) {
    d->answered_at = pybridge::detail::Clock::now();
    const int64_t waited = std::chrono::duration_cast<std::chrono::nanoseconds>(d->answered_at - d->sent_at).count();
    d->spin.record(waited);
    d->forecast.record(waited);
    d->outcome = PYBRIDGE_OUTCOME_ANSWERED;
}

// Threads of this process waiting at once on channels of one doorbell (the starts of a multi-start run
// on a pool, each waiting for its own simulators). A ring does not say whose reply it is, so a thread
// that took another's ring, found nothing of its own and waited again could take the other's next ring
// too, and leave it asleep until its timeout (tests/channel/test_doorbell.py). So only one of them, the
// leader, blocks on the doorbell; after every ring it looks at the others' channels and wakes those
// answered, and when it leaves it hands the doorbell to one of them. The others sleep on their own
// condition variable. Waiters in different processes do not know of each other: a doorbell's waiters
// are the threads of one process (a pool's doorbell is its own).
// The channels a waiter waits on: each one's header, and the seq of the reply awaited there.
using Awaited = std::vector<std::pair<pybridge_header *, uint64_t>>;

struct DoorbellWaiter {
    const std::string *doorbell = nullptr;
    Awaited pending;
    bool leading = false;  // it blocks on the doorbell (read and written under the lock)
    bool woken = false;    // by the leader: one of its replies came, or it leads now
    std::condition_variable woke;
};

struct DoorbellWaiters {
    std::mutex mutex;
    std::vector<DoorbellWaiter *> all;  // of every doorbell of this process

    // Under `mutex`.
    bool has_leader(const std::string &doorbell) const {
        for (const DoorbellWaiter *w : all) {
            if (w->leading && *w->doorbell == doorbell) return true;
        }
        return false;
    }
    void wake_answered(const DoorbellWaiter &leader) {
        for (DoorbellWaiter *w : all) {
            if (w == &leader || w->woken || *w->doorbell != *leader.doorbell) continue;
            for (const auto &[header, seq] : w->pending) {
                if (load_acquire(header->reply_seq) == seq) {
                    w->woken = true;
                    w->woke.notify_one();
                    break;
                }
            }
        }
    }
    void leave(DoorbellWaiter &self) {
        all.erase(std::find(all.begin(), all.end(), &self));
        if (!self.leading) return;
        for (DoorbellWaiter *w : all) {
            if (*w->doorbell == *self.doorbell) {
                w->leading = w->woken = true;
                w->woke.notify_one();
                return;
            }
        }
    }
};

DoorbellWaiters *doorbell_waiters_now = nullptr;  // never destroyed: a thread may still wait at exit

DoorbellWaiters &doorbell_waiters() {
    static const bool made = [] {
        doorbell_waiters_now = new DoorbellWaiters;
        // A fork() child has none of its parent's threads: it starts with no waiters and with a lock no
        // thread holds. Forked while another thread held the lock, a child hung for ever on its first
        // doorbell wait (cpp/tests/test_shim.cpp).
        ::pthread_atfork(nullptr, nullptr, [] { doorbell_waiters_now = new DoorbellWaiters; });
        return true;
    }();
    static_cast<void>(made);
    return *doorbell_waiters_now;
}

// Blocks until ready() holds or `timeout_ns` passes, as one of the waiters of `doorbell` (above).
// False at the timeout, or at once on an interrupt (EINTR) as wait_posted().
template <typename Ready>
bool wait_on_doorbell(Ready ready, const std::string &doorbell, sem_t *sem, Awaited pending, int64_t timeout_ns) {
    const timespec deadline = pybridge::detail::deadline_after(timeout_ns);
    const auto until = pybridge::detail::Clock::now() + std::chrono::nanoseconds(timeout_ns);
    DoorbellWaiters &waiters = doorbell_waiters();
    DoorbellWaiter self;
    self.doorbell = &doorbell;
    self.pending = std::move(pending);
    std::unique_lock<std::mutex> lock(waiters.mutex);
    // self.leading is read and written under the lock only (a leaving leader sets it from its thread); this
    // thread's copy: once it leads, it leads until it leaves.
    bool leading = self.leading = !waiters.has_leader(doorbell);
    waiters.all.push_back(&self);  // the one step that may throw (bad_alloc), before there is anything to undo
    lock.unlock();
    bool done = ready();
    while (!done) {
        if (leading) {
            const bool rang = ::sem_timedwait(sem, &deadline) == 0;
            done = ready();
            if (!rang) break;
            lock.lock();
            waiters.wake_answered(self);
            lock.unlock();
        } else {
            lock.lock();
            const bool woken = self.woke.wait_until(lock, until, [&self] { return self.woken; });
            self.woken = false;
            leading = self.leading;
            lock.unlock();
            done = ready();
            if (!woken) break;
        }
    }
    lock.lock();
    waiters.leave(self);
    lock.unlock();
    return done || ready();
}

int checked(pybridge_driver *d) {
    if (d == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (d->base == MAP_FAILED) return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "the driver is not open");
    return PYBRIDGE_OK;
}

template <typename Body>
int guarded(pybridge_driver *d, Body body) {
    try {
        return body();
    } catch (...) {  // std::string may throw bad_alloc; it must not reach C callers
        return d ? fail(d, PYBRIDGE_E_SYSTEM, "out of memory") : PYBRIDGE_E_SYSTEM;
    }
}

int new_driver(pybridge_driver **out) {
    if (out == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    *out = new (std::nothrow) pybridge_driver;
    return *out == nullptr ? PYBRIDGE_E_SYSTEM : PYBRIDGE_OK;
}

// One request of count vectors (the body of both sends: inlined into each, since a call between two
// exported functions of a shared library goes through the PLT on the hot path).
int send_request(pybridge_driver *d, uint32_t kind, uint32_t count, const double *params) {
    if (d == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    d->outcome = PYBRIDGE_OUTCOME_NOT_SENT;
    if (!d->accepted) return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "accept the simulator before sending requests");
    const bool served = kind == PYBRIDGE_REQUEST_COST || (kind == PYBRIDGE_REQUEST_GRADIENT && d->gradient) ||
                        (kind == PYBRIDGE_REQUEST_RESIDUALS && d->residuals);
    if (!served) {
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "channel '%s' does not serve requests of kind %u (capabilities 0x%x)",
                    d->name.c_str(), kind, d->capabilities);
    }
    if (count < 1 || count > d->max_batch) {
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "%u parameter vectors in one request: channel '%s' takes 1 to %u",
                    count, d->name.c_str(), d->max_batch);
    }
    const size_t values = size_t{count} * d->n_params;
    const bool in_place = params == nullptr || params == d->params;
    const bool finite = in_place ? pybridge::detail::finite_values(d->params, values)
                                 : pybridge::detail::copy_if_finite(d->params, params, values);
    if (!finite) {
        const size_t bad = pybridge::detail::first_non_finite(d->params, values);
        if (count == 1) {
            return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "parameters must be finite; x[%zu] = %g", bad, d->params[bad]);
        }
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "parameters must be finite; vector %zu has x[%zu] = %g",
                    bad / d->n_params, bad % d->n_params, d->params[bad]);
    }
    pybridge_header *h = d->header();
    h->request_kind = kind;
    h->request_count = count;
    d->kind = kind;
    d->count = count;
    d->timed = d->measuring;
    h->request_flags = d->timed ? PYBRIDGE_REQUEST_TIMED : 0u;
    // Timed, the send time is read before the request is published (a spinning simulator may pick
    // it up at once, and its stamp must not come before this one); else after, off the critical path.
    if (d->timed) d->sent_at = pybridge::detail::Clock::now();
    __atomic_store_n(&h->request_seq, ++d->seq, __ATOMIC_SEQ_CST);
    pybridge::detail::wake(h->simulator_sleeping, d->request_sem);
    if (!d->timed) d->sent_at = pybridge::detail::Clock::now();
    d->spun = false;
    d->plan = d->forecast.plan(d->sent_at, d->spin, d->forecasting);
    d->outcome = PYBRIDGE_OUTCOME_PENDING;
    return PYBRIDGE_OK;
}

// pybridge_driver_wait, or with until_window its first part (pybridge_driver_wait_until_window).
int wait_reply(pybridge_driver *d, int64_t timeout_ns, bool until_window) {
    if (d == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    timeout_ns = pybridge::detail::capped_wait(timeout_ns);
    if (d->outcome == PYBRIDGE_OUTCOME_ANSWERED) return PYBRIDGE_OK;
    if (d->outcome != PYBRIDGE_OUTCOME_PENDING) return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "no request to wait for");
    const auto ready = [d] { return answered(d); };
    const bool done = pybridge::detail::wait_planned(ready, d->plan, d->forecast, d->header()->driver_sleeping,
                                                     d->reply_sem, timeout_ns, PYBRIDGE_SLEEPING_ON_REPLY,
                                                     until_window);
    if (!until_window) d->spun = true;
    if (!done) return PYBRIDGE_TIMEOUT;
    record_answer(d);
    return PYBRIDGE_OK;
}

}  // namespace

extern "C" {

int pybridge_driver_create(const char *name, const char *doorbell, pybridge_driver **out) {
    if (int rc = new_driver(out); rc != PYBRIDGE_OK) return rc;
    pybridge_driver *d = *out;
    return guarded(d, [&] {
        if (int rc = set_names(d, name, doorbell); rc != PYBRIDGE_OK) return rc;
        const std::string object = "/" + d->name;
        d->fd = ::shm_open(object.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        if (d->fd < 0) return fail_errno(d, "shm_open");
        d->created = true;
        if (int rc = reserve(d, sizeof(pybridge_header)); rc != PYBRIDGE_OK) return rc;
        d->request_sem = ::sem_open((object + PYBRIDGE_REQUEST_SEM_SUFFIX).c_str(), O_CREAT | O_EXCL, 0600, 0);
        if (d->request_sem == SEM_FAILED) return fail_errno(d, "sem_open (request)");
        d->reply_sem = ::sem_open((object + PYBRIDGE_REPLY_SEM_SUFFIX).c_str(), O_CREAT | O_EXCL, 0600, 0);
        if (d->reply_sem == SEM_FAILED) return fail_errno(d, "sem_open (reply)");
        if (!d->doorbell.empty()) {
            d->doorbell_sem = ::sem_open(("/" + d->doorbell).c_str(), O_CREAT, 0600, 0);  // others may share it
            if (d->doorbell_sem == SEM_FAILED) return fail_errno(d, "sem_open (doorbell)");
        }
        return take_driver_end(d);
    });
}

int pybridge_driver_open(const char *name, const char *doorbell, pybridge_driver **out) {
    if (int rc = new_driver(out); rc != PYBRIDGE_OK) return rc;
    pybridge_driver *d = *out;
    if (name == nullptr) return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "name is NULL");
    return guarded(d, [&] {
        if (int rc = set_names(d, name, doorbell); rc != PYBRIDGE_OK) return rc;
        return take_driver_end(d);
    });
}

void pybridge_driver_close(pybridge_driver *d) {
    if (d == nullptr) return;
    if (d->base != MAP_FAILED) ::munmap(d->base, d->mapped_size);
    if (d->fd >= 0) ::close(d->fd);
    if (d->request_sem != SEM_FAILED) ::sem_close(d->request_sem);
    if (d->reply_sem != SEM_FAILED) ::sem_close(d->reply_sem);
    if (d->doorbell_sem != SEM_FAILED) ::sem_close(d->doorbell_sem);
    delete d;
}

void pybridge_driver_destroy(pybridge_driver *d) {
    if (d == nullptr) return;
    if (d->created) {
        const std::string object = "/" + d->name;
        ::shm_unlink(object.c_str());
        ::sem_unlink((object + PYBRIDGE_REQUEST_SEM_SUFFIX).c_str());
        ::sem_unlink((object + PYBRIDGE_REPLY_SEM_SUFFIX).c_str());  // not the doorbell: others may share it
    }
    pybridge_driver_close(d);
}

int pybridge_driver_wait_declaration(pybridge_driver *d, int64_t timeout_ns, pybridge_declaration *declaration,
                                     int32_t *simulator_pid) {
    if (int rc = checked(d); rc != PYBRIDGE_OK) return rc;
    if (declaration == nullptr || simulator_pid == nullptr) {
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "declaration and simulator_pid must not be NULL");
    }
    pybridge_header *h = d->header();
    timeout_ns = pybridge::detail::capped_wait(timeout_ns);
    const auto declared = [h] { return load_acquire(h->state) == PYBRIDGE_STATE_DECLARED; };
    // The declaration is always posted. Look first: a post that came before this wait is not lost.
    if (!pybridge::detail::wait_posted(declared, d->reply_sem, pybridge::detail::deadline_after(timeout_ns))) {
        return PYBRIDGE_TIMEOUT;
    }
    // The simulator wrote into the header: trust nothing before checking it.
    char message[512];
    if (pybridge_header_validate(d->base, d->mapped_size, message, sizeof message) != PYBRIDGE_OK ||
        (h->declared_capabilities & ~PYBRIDGE_CAP_ALL) != 0) {
        if ((h->declared_capabilities & ~PYBRIDGE_CAP_ALL) != 0) {
            std::snprintf(message, sizeof message, "unknown capability flags 0x%x", h->declared_capabilities);
        }
        std::snprintf(h->error, sizeof h->error, "%s", message);
        set_state(d, PYBRIDGE_STATE_REJECTED);
        return fail(d, PYBRIDGE_E_PROTOCOL, "the simulator corrupted channel '%s' during the handshake: %s",
                    d->name.c_str(), message);
    }
    declaration->n_params = h->declared_n_params;
    declaration->n_residuals = h->declared_n_residuals;
    declaration->capabilities = h->declared_capabilities;
    declaration->max_batch = h->declared_max_batch;
    *simulator_pid = h->simulator_pid;
    return PYBRIDGE_OK;
}

int pybridge_driver_reject(pybridge_driver *d, const char *reason) {
    if (int rc = checked(d); rc != PYBRIDGE_OK) return rc;
    std::snprintf(d->header()->error, PYBRIDGE_ERROR_TEXT_SIZE, "%s", reason ? reason : "(no reason given)");
    set_state(d, PYBRIDGE_STATE_REJECTED);
    return PYBRIDGE_OK;
}

int pybridge_driver_accept(pybridge_driver *d, uint32_t n_params, uint32_t n_residuals, uint32_t capabilities,
                           uint32_t max_batch, uint32_t spin_us) {
    if (int rc = checked(d); rc != PYBRIDGE_OK) return rc;
    if (d->accepted) return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "channel '%s' was accepted already", d->name.c_str());
    const uint32_t declared_batch = std::max<uint32_t>(d->header()->declared_max_batch, 1);
    if (max_batch < 1 || max_batch > declared_batch) {
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT,
                    "batches of %u vectors: the simulator of channel '%s' takes 1 to %u per request", max_batch,
                    d->name.c_str(), declared_batch);
    }
    pybridge_layout layout;
    if (pybridge_layout_compute(n_params, n_residuals, capabilities, max_batch, &layout) != PYBRIDGE_OK) {
        return fail(d, PYBRIDGE_E_INVALID_ARGUMENT,
                    "no layout for %u parameters, %u residuals, capabilities 0x%x, batches of %u", n_params,
                    n_residuals, capabilities, max_batch);
    }
    if (int rc = reserve(d, layout.segment_size); rc != PYBRIDGE_OK) {
        pybridge_driver_reject(d, "the driver's /dev/shm has no room for this channel");
        return rc;
    }
    if (int rc = map_segment(d); rc != PYBRIDGE_OK) return rc;
    pybridge_header *h = d->header();
    // Confined with the simulator to one CPU, a side that spins holds the core the other needs to
    // answer: every handoff then cost the whole budget. The spin's yields (wait.hpp) mostly, but not
    // always, hand the core over (EEVDF need not), so there neither side spins, whatever was asked.
    // Judged for each simulator process as it is accepted: a restarted one is judged again.
    if (pybridge::detail::confined_to_one_cpu_with(h->simulator_pid)) spin_us = 0;
    h->n_params = n_params;
    h->n_residuals = n_residuals;
    h->capabilities = capabilities;
    h->spin_us = spin_us;
    h->params_offset = layout.params_offset;
    h->gradient_offset = layout.gradient_offset;
    h->residuals_offset = layout.residuals_offset;
    h->max_batch = max_batch;
    h->costs_offset = layout.costs_offset;
    h->segment_size = layout.segment_size;
    char message[512];
    if (pybridge_header_validate(d->base, d->mapped_size, message, sizeof message) != PYBRIDGE_OK) {
        return fail(d, PYBRIDGE_E_PROTOCOL, "pybridge wrote an invalid header (a bug in pybridge): %s", message);
    }
    char *base = static_cast<char *>(d->base);
    d->n_params = n_params;
    d->n_residuals = n_residuals;
    d->capabilities = capabilities;
    d->params = reinterpret_cast<double *>(base + layout.params_offset);
    d->gradient = (capabilities & PYBRIDGE_CAP_GRADIENT) ? reinterpret_cast<double *>(base + layout.gradient_offset) : nullptr;
    d->residuals = (capabilities & PYBRIDGE_CAP_RESIDUALS) ? reinterpret_cast<double *>(base + layout.residuals_offset) : nullptr;
    d->max_batch = max_batch;
    d->costs = max_batch > 1 ? reinterpret_cast<double *>(base + layout.costs_offset) : &h->cost;
    d->spin.set_budget(spin_us);
    d->seq = h->request_seq;
    d->accepted = true;
    set_state(d, PYBRIDGE_STATE_READY);
    return PYBRIDGE_OK;
}

int pybridge_driver_shape(const pybridge_driver *d, uint32_t *n_params, uint32_t *n_residuals,
                          uint32_t *capabilities, uint32_t *max_batch) {
    if (d == nullptr || !d->accepted) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (n_params) *n_params = d->n_params;
    if (n_residuals) *n_residuals = d->n_residuals;
    if (capabilities) *capabilities = d->capabilities;
    if (max_batch) *max_batch = d->max_batch;
    return PYBRIDGE_OK;
}

double *pybridge_driver_params(pybridge_driver *d) { return d == nullptr ? nullptr : d->params; }

int pybridge_driver_send(pybridge_driver *d, uint32_t kind, const double *params) {
    return send_request(d, kind, 1, params);
}

int pybridge_driver_send_batch(pybridge_driver *d, uint32_t kind, uint32_t count, const double *params) {
    return send_request(d, kind, count, params);
}

int pybridge_driver_wait(pybridge_driver *d, int64_t timeout_ns) { return wait_reply(d, timeout_ns, false); }

int pybridge_driver_spin(pybridge_driver *d, int64_t max_ns) {
    if (d == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (d->outcome == PYBRIDGE_OUTCOME_ANSWERED) return PYBRIDGE_OK;
    if (d->outcome != PYBRIDGE_OUTCOME_PENDING) return fail(d, PYBRIDGE_E_INVALID_ARGUMENT, "no request to wait for");
    if (!pybridge::detail::spin_planned([d] { return answered(d); }, d->plan, d->forecast, max_ns)) {
        return PYBRIDGE_TIMEOUT;
    }
    record_answer(d);
    return PYBRIDGE_OK;
}

int pybridge_driver_wait_until_window(pybridge_driver *d, int64_t timeout_ns) {
    return wait_reply(d, timeout_ns, true);
}

int64_t pybridge_driver_window_in_ns(const pybridge_driver *d) {
    if (d == nullptr || d->outcome != PYBRIDGE_OUTCOME_PENDING || !d->plan.forecast) return 0;
    const auto ahead = d->plan.wake_at - pybridge::detail::Clock::now();
    return std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(ahead).count());
}

int pybridge_driver_measure_latency(pybridge_driver *d, int enabled) {
    if (d == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    d->measuring = enabled != 0;
    return PYBRIDGE_OK;
}

int pybridge_driver_set_forecast(pybridge_driver *d, int enabled) {
    if (d == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    d->forecasting = enabled != 0;
    return PYBRIDGE_OK;
}

int pybridge_driver_wait_any(pybridge_driver *const *drivers, size_t count, int64_t timeout_ns, size_t *ready) {
    if (drivers == nullptr || count == 0 || ready == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
    timeout_ns = pybridge::detail::capped_wait(timeout_ns);
    size_t pending = 0, last_pending = 0;
    for (size_t i = 0; i < count; ++i) {
        pybridge_driver *d = drivers[i];
        if (d == nullptr) return PYBRIDGE_E_INVALID_ARGUMENT;
        if (d->doorbell_sem == SEM_FAILED || d->doorbell != drivers[0]->doorbell) {
            return fail(drivers[0], PYBRIDGE_E_INVALID_ARGUMENT,
                        "channel '%s' does not share a doorbell with channel '%s': create the channels of one "
                        "wait with the same doorbell", d->name.c_str(), drivers[0]->name.c_str());
        }
        if (d->outcome == PYBRIDGE_OUTCOME_PENDING) ++pending, last_pending = i;
    }
    const auto first_answered = [&]() -> bool {
        for (size_t i = 0; i < count; ++i) {
            pybridge_driver *d = drivers[i];
            if (d->outcome == PYBRIDGE_OUTCOME_PENDING && answered(d)) record_answer(d);
            if (d->outcome == PYBRIDGE_OUTCOME_ANSWERED) {
                *ready = i;
                return true;
            }
        }
        return false;
    };
    if (first_answered()) return PYBRIDGE_OK;
    if (pending == 0) return fail(drivers[0], PYBRIDGE_E_INVALID_ARGUMENT, "none of the channels has a request pending");
    if (pending == 1) {
        // One request pending: waited for alone, on its channel's own semaphore (and with its forecast).
        // Several threads may wait on channels of one doorbell at once (the starts of a multi-start run on
        // a pool), and a doorbell post taken by the wrong thread left the right one asleep until its
        // timeout (tests/pool/test_pool.py).
        const int rc = wait_reply(drivers[last_pending], timeout_ns, false);
        if (rc == PYBRIDGE_OK) *ready = last_pending;
        return rc;
    }
    // Spin as a single wait would, once per request: until the last of the
    // pending requests' spin budgets (each adaptive, cpp/src/wait.hpp) ends.
    auto spin_end = pybridge::detail::Clock::time_point::min();
    for (size_t i = 0; i < count; ++i) {
        pybridge_driver *d = drivers[i];
        if (d->outcome != PYBRIDGE_OUTCOME_PENDING || d->spun) continue;
        d->spun = true;
        // A pool waits on all its simulators at once and keeps plain spin-then-block: a forecast
        // wait per channel has no single time to wake at (left for later, see docs/performance.md).
        if (const int64_t spin_ns = d->spin.spin_ns(); spin_ns > 0) {
            spin_end = std::max(spin_end, d->sent_at + std::chrono::nanoseconds(spin_ns));
        }
    }
    if (spin_end > pybridge::detail::Clock::time_point::min() && pybridge::detail::spin_until(first_answered, spin_end)) {
        return PYBRIDGE_OK;
    }
    if (timeout_ns <= 0) return first_answered() ? PYBRIDGE_OK : PYBRIDGE_TIMEOUT;
    // As in wait.hpp's block(), for every pending channel at once: announce
    // sleep, look again, then block on the one semaphore they all post.
    Awaited awaited;
    try {
        awaited.reserve(pending);
        for (size_t i = 0; i < count; ++i) {
            if (drivers[i]->outcome == PYBRIDGE_OUTCOME_PENDING) awaited.emplace_back(drivers[i]->header(), drivers[i]->seq);
        }
    } catch (...) {  // bad_alloc must not reach C callers
        return fail(drivers[0], PYBRIDGE_E_SYSTEM, "out of memory");
    }
    for (const auto &[header, seq] : awaited) {
        __atomic_store_n(&header->driver_sleeping, PYBRIDGE_SLEEPING_ON_DOORBELL, __ATOMIC_SEQ_CST);
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    bool done = false;
    try {
        done = wait_on_doorbell(first_answered, drivers[0]->doorbell, drivers[0]->doorbell_sem, std::move(awaited),
                                timeout_ns);
    } catch (...) {  // std::mutex and std::vector may throw; nothing may reach C callers
        done = first_answered();
    }
    for (size_t i = 0; i < count; ++i) __atomic_store_n(&drivers[i]->header()->driver_sleeping, 0u, __ATOMIC_RELAXED);
    return done ? PYBRIDGE_OK : PYBRIDGE_TIMEOUT;
}

int pybridge_driver_outcome(const pybridge_driver *d) { return d == nullptr ? PYBRIDGE_OUTCOME_NOT_SENT : d->outcome; }

int pybridge_driver_reply(const pybridge_driver *d, pybridge_reply *reply) {
    if (d == nullptr || reply == nullptr || d->outcome != PYBRIDGE_OUTCOME_ANSWERED) return PYBRIDGE_E_INVALID_ARGUMENT;
    const pybridge_header *h = d->header();
    reply->seq = d->seq;
    reply->status = h->reply_status;
    reply->count = d->count;
    reply->costs = d->costs;
    reply->cost = d->costs[0];
    reply->gradient = d->kind == PYBRIDGE_REQUEST_GRADIENT ? d->gradient : nullptr;
    reply->residuals = d->kind == PYBRIDGE_REQUEST_RESIDUALS ? d->residuals : nullptr;
    // A bounded copy: the peer's text need not be terminated.
    auto *self = const_cast<pybridge_driver *>(d);
    if (reply->status == PYBRIDGE_REPLY_OK) {
        self->reply_error[0] = '\0';
    } else {
        std::memcpy(self->reply_error, h->error, sizeof self->reply_error);
        self->reply_error[sizeof self->reply_error - 1] = '\0';
    }
    reply->error = d->reply_error;
    return PYBRIDGE_OK;
}

int pybridge_driver_latency(const pybridge_driver *d, int64_t *request_ns, int64_t *reply_ns) {
    if (d == nullptr || request_ns == nullptr || reply_ns == nullptr || d->outcome != PYBRIDGE_OUTCOME_ANSWERED) {
        return PYBRIDGE_E_INVALID_ARGUMENT;
    }
    // Read after the reply's acquire (answered()), and the simulator writes them only before its
    // next reply: stable until the next send. Zeros (a shim older than the stamps) or stamps out of
    // order (a stale or corrupt header) are no latency at all, never a wrong one.
    if (!d->timed) {
        *request_ns = *reply_ns = -1;
        return PYBRIDGE_OK;
    }
    const pybridge_header *h = d->header();
    const int64_t picked = h->picked_at_ns, replied = h->replied_at_ns;
    const int64_t sent = pybridge::detail::monotonic_ns(d->sent_at);
    const int64_t answered = pybridge::detail::monotonic_ns(d->answered_at);
    if (sent <= picked && picked <= replied && replied <= answered) {
        *request_ns = picked - sent;
        *reply_ns = answered - replied;
    } else {
        *request_ns = *reply_ns = -1;
    }
    return PYBRIDGE_OK;
}

uint64_t pybridge_driver_seq(const pybridge_driver *d) { return d == nullptr ? 0 : d->seq; }

int64_t pybridge_driver_elapsed_ns(const pybridge_driver *d) {
    return d == nullptr ? 0 : pybridge::detail::nanoseconds_since(d->sent_at);
}

int pybridge_driver_shutdown(pybridge_driver *d) {
    if (int rc = checked(d); rc != PYBRIDGE_OK) return rc;
    struct stat info;  // a buggy peer may have truncated the segment: writing past its end would be SIGBUS
    if (::fstat(d->fd, &info) != 0 || static_cast<uint64_t>(info.st_size) < sizeof(pybridge_header)) {
        return fail(d, PYBRIDGE_E_PROTOCOL, "channel '%s' was truncated by its simulator", d->name.c_str());
    }
    set_state(d, PYBRIDGE_STATE_CLOSED);
    return PYBRIDGE_OK;
}

const char *pybridge_driver_name(const pybridge_driver *d) { return d == nullptr ? "" : d->name.c_str(); }

const char *pybridge_driver_last_error(const pybridge_driver *d) {
    return d == nullptr ? "out of memory while creating the driver handle" : d->error;
}

}  // extern "C"
