// Spin-then-block waiting, shared by the simulator end (channel.cpp) and the
// driver end (the Python module's DriverPort).
//
// Why both: a blocking semaphore wait costs 60-90 us here whenever the
// waiter's vCPU went to sleep (../shared/MEASURED.md), while spinning on a
// sequence number costs well under a microsecond, but burns a core. So a
// waiter spins for a bounded time and then blocks; and it spins only while
// recent waits were short enough for spinning to pay (see SpinPolicy).
//
// No lost wake-ups: the waiter raises its `sleeping` flag and re-checks the
// condition (both seq_cst) before blocking; the poster publishes the
// condition and then reads the flag (both seq_cst). One of them must see the
// other's write, so either the waiter does not block or the poster posts.
#pragma once

#include <semaphore.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

#include "pybridge/protocol.h"

namespace pybridge::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

template <typename T>
T load_acquire(const T &field) noexcept {
    return __atomic_load_n(&field, __ATOMIC_ACQUIRE);
}
template <typename T>
void store_release(T &field, T value) noexcept {
    __atomic_store_n(&field, value, __ATOMIC_RELEASE);
}

using Clock = std::chrono::steady_clock;

// How long to spin next time. Spinning pays when a wait ends within the
// budget; the policy keeps a moving share of recent waits that did ("hits")
// and spins the full budget while at least a quarter of them paid. A single
// long pause (the driver busy elsewhere between two optimisations) thus costs
// nothing later, while a peer that keeps outlasting the budget (a slow
// simulator) soon gets only short spins, to catch the odd quick answer without
// burning a core. A wait that ended by blocking still counts as a hit when it
// was short overall, so that a fast peer is recognised again even from short
// spins (with a budget above the 60-90 us a sleeping vCPU takes to wake).
class SpinPolicy {
public:
    explicit SpinPolicy(uint32_t budget_us = 0) noexcept { set_budget(budget_us); }
    void set_budget(uint32_t budget_us) noexcept { budget_ns_ = int64_t{budget_us} * 1000; }
    int64_t spin_ns() const noexcept { return hit_share_ >= kHitShareMin ? budget_ns_ : budget_ns_ / 16; }
    void record(int64_t waited_ns) noexcept {
        const int32_t hit = waited_ns <= budget_ns_ ? kOne : 0;
        hit_share_ += (hit - hit_share_) / 8;
    }

private:
    static constexpr int32_t kOne = 1 << 16;  // fixed point: no floating point on the hot path
    static constexpr int32_t kHitShareMin = kOne / 4;
    int64_t budget_ns_ = 0;
    int32_t hit_share_ = kOne;
};

// Post `sem` if the waiter announced it sleeps. Call after publishing.
inline int wake(uint32_t &sleeping, sem_t *sem) noexcept {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sleeping, __ATOMIC_SEQ_CST) != 0) return ::sem_post(sem);
    return 0;
}

// The driver's side has two semaphores: `sleeping` says which one it blocks
// on (PYBRIDGE_SLEEPING_ON_REPLY or _DOORBELL). Call after publishing.
inline int wake_driver(uint32_t &sleeping, sem_t *reply, sem_t *doorbell) noexcept {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    const uint32_t on = __atomic_load_n(&sleeping, __ATOMIC_SEQ_CST);
    if (on == PYBRIDGE_SLEEPING_ON_DOORBELL && doorbell != SEM_FAILED) return ::sem_post(doorbell);
    if (on != 0) return ::sem_post(reply);
    return 0;
}

// Spins until ready() holds or spin_end passes. True when ready.
template <typename Ready>
bool spin_until(Ready ready, Clock::time_point spin_end) noexcept {
    for (unsigned i = 1;; ++i) {
        cpu_relax();
        if (ready()) return true;
        if ((i & 63) == 0 && Clock::now() >= spin_end) return false;  // the clock costs more than a pause
    }
}

// Spins until ready() holds, for at most policy.spin_ns(). True when ready.
template <typename Ready>
bool spin(Ready ready, const SpinPolicy &policy, Clock::time_point started) noexcept {
    if (ready()) return true;
    const int64_t spin_ns = policy.spin_ns();
    return spin_ns > 0 && spin_until(ready, started + std::chrono::nanoseconds(spin_ns));
}

// The absolute CLOCK_REALTIME time `ns` from now, as sem_timedwait takes it.
inline timespec deadline_after(int64_t ns) noexcept {
    timespec deadline;
    ::clock_gettime(CLOCK_REALTIME, &deadline);
    const int64_t total = deadline.tv_nsec + ns;
    deadline.tv_sec += static_cast<time_t>(total / 1000000000);
    deadline.tv_nsec = static_cast<long>(total % 1000000000);
    return deadline;
}

// Blocks on `sem` until ready() holds, for at most `deadline` (from deadline_after).
// A post may be stale (one a waiter did not need because it saw its number
// first): each is followed by a look, and the wait goes on until the deadline.
// False at the deadline, or at once on an interrupt (EINTR) so that the caller
// can look at its signals, its peer and its own deadlines.
template <typename Ready>
bool wait_posted(Ready ready, sem_t *sem, const timespec &deadline) noexcept {
    bool done = ready();
    while (!done && ::sem_timedwait(sem, &deadline) == 0) done = ready();
    return done || ready();
}

// Announces sleep in `sleeping` (as `on`: which semaphore the peer must post),
// then blocks on `sem` for at most `slice` unless ready() already holds. True
// when ready; false when the slice ran out (the caller checks its peer and
// deadlines, then waits again).
template <typename Ready>
bool block(Ready ready, uint32_t &sleeping, sem_t *sem, std::chrono::nanoseconds slice, uint32_t on = 1u) noexcept {
    __atomic_store_n(&sleeping, on, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    const bool done = wait_posted(ready, sem, deadline_after(slice.count()));
    __atomic_store_n(&sleeping, 0u, __ATOMIC_RELAXED);
    return done;
}

inline int64_t nanoseconds_since(Clock::time_point started) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count();
}

}  // namespace pybridge::detail
