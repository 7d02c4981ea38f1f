// Spin-then-block waiting, shared by the simulator end (channel.cpp) and the
// driver end (the Python module's DriverPort).
//
// Why both: a blocking semaphore wait costs 60-90 us here whenever the
// waiter's vCPU went to sleep (../shared/MEASURED.md), while spinning on a
// sequence number costs well under a microsecond, but burns a core. So a
// waiter spins for a bounded time and then blocks; and it spins only while
// recent waits were short enough for spinning to pay (see SpinPolicy).
//
// Between the two regimes (evaluations of 0.2-50 ms) neither pays: spinning
// through a millisecond burns a core, blocking costs a wake-up per evaluation.
// There a waiter forecasts the event from its recent waits (Forecast): it
// blocks until shortly before the expected time, spins through it, and blocks
// again if the event is late. An early event still wakes it (its peer posts,
// as for any blocked waiter): a wrong forecast costs a wake-up, never a hang.
//
// No lost wake-ups: the waiter raises its `sleeping` flag and re-checks the
// condition (both seq_cst) before blocking; the poster publishes the
// condition and then reads the flag (both seq_cst). One of them must see the
// other's write, so either the waiter does not block or the poster posts.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <semaphore.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>

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

// A time point as CLOCK_MONOTONIC nanoseconds (the clock steady_clock reads on Linux, in libstdc++
// and libc++ alike, and one clock for every process of the node): what the header's stamps hold.
inline int64_t monotonic_ns(Clock::time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// The share of recent events that held, as a moving average in which each new one weighs an
// eighth (about the last dozen count). The spin budget's hits, the forecast window's catches and
// the busy-machine samples are each one. Fixed point (kOne is all of them): no floating point on
// the hot path.
class MovingShare {
public:
    static constexpr int32_t kOne = 1 << 16;
    constexpr explicit MovingShare(int32_t start) noexcept : share_(start) {}
    void record(bool held) noexcept { share_ += ((held ? kOne : 0) - share_) / 8; }
    int32_t value() const noexcept { return share_; }

private:
    int32_t share_;
};

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
    int64_t budget_ns() const noexcept { return budget_ns_; }
    int64_t spin_ns() const noexcept { return hits_.value() >= MovingShare::kOne / 4 ? budget_ns_ : budget_ns_ / 16; }
    void record(int64_t waited_ns) noexcept { hits_.record(waited_ns <= budget_ns_); }

private:
    int64_t budget_ns_ = 0;
    MovingShare hits_{MovingShare::kOne};
};

// The number of runnable threads, from /proc/loadavg ("R" of its "R/T"), or -1.
// The simulator samples it as it starts waiting for the next request, on the
// critical path when the driver answers at once: open + read + close took
// 8.5 us there after 2 ms of computing (half the evaluations of a 5 ms model
// paid it), one read of a descriptor kept open 1.2 us. So the descriptor
// stays open for the thread's life (O_CLOEXEC). A program may close
// descriptors it did not open and reuse the number; each read first checks
// (fstat, ~0.4 us) that the number still names the file this reader opened,
// and otherwise forgets it (never reading or closing what is now someone
// else's) and opens its own again.
class RunnableCount {
public:
    explicit RunnableCount(const char *path = "/proc/loadavg") noexcept : path_(path) {}
    ~RunnableCount() {
        if (still_ours()) ::close(fd_);
    }
    RunnableCount(const RunnableCount &) = delete;
    RunnableCount &operator=(const RunnableCount &) = delete;

    long read() noexcept {
        if (!still_ours() && !reopen()) return -1;
        char text[128];
        const ssize_t got = ::pread(fd_, text, sizeof text - 1, 0);
        if (got <= 0) return -1;
        text[got] = '\0';
        long runnable = -1;
        return std::sscanf(text, "%*f %*f %*f %ld/", &runnable) == 1 ? runnable : -1;
    }
    int descriptor() const noexcept { return fd_; }

private:
    bool still_ours() const noexcept {
        struct stat now;
        return fd_ >= 0 && ::fstat(fd_, &now) == 0 && now.st_dev == dev_ && now.st_ino == ino_;
    }
    bool reopen() noexcept {
        fd_ = ::open(path_, O_RDONLY | O_CLOEXEC);
        struct stat opened;
        if (fd_ >= 0 && ::fstat(fd_, &opened) != 0) {
            ::close(fd_);
            fd_ = -1;
        }
        if (fd_ < 0) return false;
        dev_ = opened.st_dev;
        ino_ = opened.st_ino;
        return true;
    }

    const char *path_;
    int fd_ = -1;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

// Is the machine oversubscribed: more runnable threads than online cores ("R/T" in /proc/loadavg,
// the caller included)? One sample is not enough: a kernel worker next to a driver and a simulator
// that fill a 2-core machine makes three for a moment, while another job on the node keeps the
// count high from either side's view. So the samples feed a moving share, and the machine counts as
// busy while more than half of the recent ones were. The share starts undecided (one half), not at
// the first sample: that one is taken as a simulator starts, when its start-up and the driver's keep
// 3-5 threads runnable on an idle 2-core machine, and deciding on it alone made both sides block for
// the next ~60 ms: a new Simulator's first 5000 instant evaluations took 44 ms instead of 12 (medians
// of 12 Simulators each, docs/performance-log.md). From one half, a machine that stays oversubscribed is
// busy from its first sample on, and a busy start-up costs a sample period or three.
class BusyShare {
public:
    // One sample: `runnable` threads (-1: unknown, counts as not busy) on `cores` cores.
    void sample(long runnable, long cores) noexcept { share_.record(runnable >= 0 && cores > 0 && runnable > cores); }
    bool busy() const noexcept { return share_.value() > MovingShare::kOne / 2; }

private:
    MovingShare share_{MovingShare::kOne / 2};
};

// When the next event is expected, learned from the durations of recent waits
// and from how late a timed block wakes up on this machine.
//
// The plan of a wait: block until `wake_at`, spin until `spin_end`, then block.
// While recent waits were short (under 4 wake-ups' worth), or fewer than
// kHistory/2 are known, it is plain spin-then-block (wake_at = started).
// Otherwise the spin window spans recent waits, from the shortest to the
// longest widened by their mean gap (the next wait falls that far outside
// them as often as not), and is widened by one margin (the measured oversleep
// plus a guard) on each side. Where its cost is capped below that, it is
// centred on their median, slid only as far as it takes to keep all of it
// among them (an off-centre median, from 16 random draws, would leave part of
// the budget outside the waits and part of them uncovered). An event before
// the window costs a wake-up (the peer posts, as for any blocked waiter), one
// after it costs the window's spin and a wake-up. Wide, because the median
// event is a caught one only while well over half are caught: a reply caught
// after a long halt costs ~10 us here (cold caches), a wake-up 50-100, so a
// window of the middle half left the median among the wake-ups. Its cost is
// capped (the whole span, margins included, and a centred window spins half
// its span on average): at most kMaxSpanShare of the median, kMaxSpanNs, and
// kSpanAreaNs2 / median, so that most of a 5 ms +-10 % model's replies are
// caught (82-90 % in 14 traced runs of 200) at ~8 % of a core beyond pure
// blocking; up to 10 ms the span is the full 1 ms, and beyond, where a
// wake-up is a negligible share of the evaluation, it shrinks (50 ms: 200
// us). Where the margins alone exceed that budget (evaluations of a few
// hundred us) the window keeps kMinWindowShare of the median.
//
// A change of pace (two waits in a row below half the first quartile, or
// above twice the third) restarts the history from those two waits: the next
// wait is planned around them rather than around a median that half a history
// of wake-ups would have to move.
//
// Two guards. Events that keep missing the window (a forecast gone stale)
// shrink it to +-1 margin around the median until they land in it again. And
// when more threads are runnable than there are cores, spinning takes a core
// from the peer (or from whoever else needs it) and slows the very evaluation
// it waits for: then the waiter only blocks, in every regime (pure blocking
// is what a busy machine needs). The kernel's count of runnable threads
// (/proc/loadavg) is sampled at most every 10 ms per thread, and a majority
// of recent samples decides.
class Forecast {
public:
    static constexpr int kHistory = 16;

    void record(int64_t waited_ns) noexcept {
        // A change of pace (a model 10x slower or faster): two waits in a row far outside the recent
        // ones, on the same side. The history then restarts from those two, so that the next wait is
        // planned around them; the median alone would take half a history to move, a wake-up each.
        // One such wait alone (a checkpoint written, a cache miss) changes nothing. Instant round
        // trips never get here: the check needs a wait long enough for a forecast to matter.
        int side = 0;
        if (count_ >= kHistory / 2 && std::max(waited_ns, last_ns_) > 4 * margin_ns()) {
            int64_t sorted[kHistory];
            sort_history(sorted);
            side = waited_ns < sorted[count_ / 4] / 2 ? -1 : waited_ns > 2 * sorted[(3 * count_) / 4] ? 1 : 0;
        }
        if (side != 0 && side == surprise_side_) {
            restart(surprise_ns_, waited_ns);
            surprise_side_ = 0;
            return;
        }
        surprise_side_ = side;
        surprise_ns_ = waited_ns;
        history_[next_] = waited_ns;
        next_ = (next_ + 1) % kHistory;
        if (count_ < kHistory) ++count_;
        last_ns_ = waited_ns;
    }
    // How late a timed block returned past the time it was asked for.
    void record_oversleep(int64_t late_ns) noexcept { oversleep_ns_ += (std::max<int64_t>(late_ns, 0) - oversleep_ns_) / 8; }
    // Whether the event came while the waiter spun in its window.
    void record_window(bool caught) noexcept { caught_.record(caught); }
    int64_t margin_ns() const noexcept { return oversleep_ns_ + oversleep_ns_ / 4 + kGuardNs; }

    struct Plan {
        Clock::time_point wake_at, spin_end;
        bool forecast;  // false: plain spin-then-block
    };
    Plan plan(Clock::time_point started, const SpinPolicy &spin, bool enabled = true) const noexcept {
        if (spin.budget_ns() > 0 && cores_oversubscribed(started)) return {started, started, false};  // block only
        return unguarded_plan(started, spin, enabled);
    }
    // The plan that recent waits alone suggest (plan() without its guard for a busy machine).
    Plan unguarded_plan(Clock::time_point started, const SpinPolicy &spin, bool enabled = true) const noexcept {
        const int64_t margin = margin_ns();
        if (enabled && spin.budget_ns() > 0 && count_ >= kHistory / 2 && last_ns_ > 4 * margin) {
            int64_t sorted[kHistory];
            sort_history(sorted);
            const int64_t median = sorted[count_ / 2];
            if (sorted[count_ / 4] > 4 * margin) {
                // The span's budget, and the window the margins leave of it (for short evaluations,
                // where the margins alone exceed it, the window keeps a floor: a share of the median).
                const int64_t span = std::min({median / 100 * kMaxSpanShare, kMaxSpanNs, kSpanAreaNs2 / median});
                int64_t half = std::max(span - 2 * margin, std::min(span, median / 100 * kMinWindowShare)) / 2;
                if (caught_.value() < MovingShare::kOne / 4) half = 0;  // missing: just the margins around the median
                // Recent waits, widened by their mean gap (the next one falls that far outside them
                // as often as not), and within them a window of the budget's width, centred on the
                // median unless that would leave part of the budget outside them.
                const int64_t gap = (sorted[count_ - 1] - sorted[0]) / (count_ - 1);
                const int64_t first = sorted[0] - gap, last = sorted[count_ - 1] + gap;
                int64_t lo = first, hi = last;
                if (last - first > 2 * half) {
                    lo = std::clamp(median - half, first, last - 2 * half);
                    hi = lo + 2 * half;
                }
                return {started + std::chrono::nanoseconds(lo - margin), started + std::chrono::nanoseconds(hi + margin),
                        true};
            }
        }
        return {started, started + std::chrono::nanoseconds(spin.spin_ns()), false};
    }

private:
    static constexpr int64_t kGuardNs = 10'000;
    static constexpr int64_t kMaxSpanShare = 20;    // per cent of the median
    static constexpr int64_t kMinWindowShare = 10;  // per cent of the median
    static constexpr int64_t kMaxSpanNs = 1'000'000;
    static constexpr int64_t kSpanAreaNs2 = 10'000'000LL * 1'000'000LL;  // 10 ms x 1 ms
    int64_t history_[kHistory] = {};
    int count_ = 0, next_ = 0;
    int64_t last_ns_ = 0;
    int64_t oversleep_ns_ = 60'000;  // until measured: a sleeping vCPU's wake-up here (../shared/MEASURED.md)
    MovingShare caught_{MovingShare::kOne};
    int surprise_side_ = 0;  // the last wait was far below (-1) or above (+1) the recent ones
    int64_t surprise_ns_ = 0;

    // The recent waits in order, into out[0, count_): quartiles at count_/4, count_/2, 3*count_/4.
    void sort_history(int64_t *out) const noexcept {
        std::copy(history_, history_ + count_, out);
        std::sort(out, out + count_);
    }

    // A full history from two waits a and b: first quartile the lower, median their middle, third
    // quartile the higher, so that the window spans what the two showed. The waits that follow
    // replace these one by one. The new pace has not missed its window yet.
    void restart(int64_t a, int64_t b) noexcept {
        static_assert(kHistory == 16, "the pattern below puts the quartiles at 4, 8 and 12");
        const int64_t low = std::min(a, b), high = std::max(a, b), middle = low + (high - low) / 2;
        for (int i = 0; i < kHistory; ++i) history_[i] = i < 5 ? low : i < 11 ? middle : high;
        count_ = kHistory;
        next_ = 0;
        last_ns_ = b;
        caught_ = MovingShare(MovingShare::kOne);
    }

    // Is the machine oversubscribed (BusyShare over this thread's samples of RunnableCount, at most one
    // per 10 ms, ~1 us each)?
    static bool cores_oversubscribed(Clock::time_point now) noexcept;
};

inline bool Forecast::cores_oversubscribed(Clock::time_point now) noexcept {
    static const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
    thread_local RunnableCount runnable;
    thread_local Clock::time_point read_at{};
    thread_local BusyShare share;
    if (now - read_at >= std::chrono::milliseconds(10)) {
        read_at = now;
        share.sample(runnable.read(), cores);
    }
    return share.busy();
}

// Timed blocks of a forecast wake up late by the timer slack on top of the
// wake-up itself: 50 us by default for a normal thread. Asked for once per
// thread that forecasts; it only makes this thread's timers more punctual.
inline void tighten_timer_slack() noexcept {
    thread_local bool done = false;
    if (!done) {
        ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
        done = true;
    }
}

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

// A spin yields the core once every this long (sched_yield at a look at the clock). A waiter that
// spins while its peer sits in this core's run queue keeps away the very request or reply it waits
// for: here, unbound on 2 vCPUs, the peer it had just woken landed there for 20-40 % of the replies
// of a sleeping 2-10 ms model, and each such handoff cost the spinner's whole budget; now it mostly
// costs up to this much (docs/performance.md). Mostly: under EEVDF a yield need not hand the core
// over, so where the two can only ever share one core, neither spins at all (pybridge_driver_accept).
// A yield with nobody else to run takes ~0.5 us: a reply that comes during one waits that long, and
// replies within the first period, the fast path, never meet one. (A yield at every look, ~2 us
// apart, raised the median added to a 0.2 ms model from 0.5-0.7 us to 1.3-2.2 us.)
constexpr std::chrono::nanoseconds kYieldEveryNs{10'000};

// Spins until ready() holds or spin_end passes, yielding the core every kYieldEveryNs. True when ready.
template <typename Ready>
bool spin_until(Ready ready, Clock::time_point spin_end) noexcept {
    Clock::time_point yield_at{};  // set at the first look at the clock: nothing extra on the fast path
    for (unsigned i = 1;; ++i) {
        cpu_relax();
        if (ready()) return true;
        if ((i & 63) == 0) {  // the clock costs more than a pause
            const auto now = Clock::now();
            if (now >= spin_end) return false;
            if (yield_at == Clock::time_point{}) {
                yield_at = now + kYieldEveryNs;
            } else if (now >= yield_at) {
                ::sched_yield();
                yield_at = now + kYieldEveryNs;
            }
        }
    }
}

// The longest wait a caller of the C API can ask for, about 31 years. A caller that means "no limit"
// passes INT64_MAX, which added to a clock overflows (undefined; in practice a wait that returned at
// once, unanswered): every timeout is capped to this where it enters the API.
constexpr int64_t kLongestWaitNs = 1000000000000000000;
inline int64_t capped_wait(int64_t ns) noexcept { return ns < kLongestWaitNs ? ns : kLongestWaitNs; }

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

// Spins through the plan's spin until `end` (plan.spin_end at the latest: the caller's to bound), and
// notes a forecast window's outcome: a catch, or a miss once the window is over (a spin cut short goes
// on in a later call). The one spin of wait_planned and spin_planned.
template <typename Ready>
bool spin_in_plan(Ready ready, const Forecast::Plan &plan, Forecast &forecast, Clock::time_point end) noexcept {
    const bool caught = spin_until(ready, end);
    if (plan.forecast && (caught || Clock::now() >= plan.spin_end)) forecast.record_window(caught);
    return caught;
}

// One call of a planned wait (Forecast::Plan): blocks until plan.wake_at (an
// early post still wakes it), spins until plan.spin_end, then blocks, for at
// most block_ns of blocking in all. The phases are times, not steps, so the
// caller may wait in slices (to check its peer, its deadline, its signals) and
// each call carries on where the last stopped. With block_ns = 0 it never
// blocks: it spins if the plan spins now, else it only looks. With
// until_window it returns when the spin window opens instead of spinning
// through it, for a caller with work to do just before the reply.
template <typename Ready>
bool wait_planned(Ready ready, const Forecast::Plan &plan, Forecast &forecast, uint32_t &sleeping, sem_t *sem,
                  int64_t block_ns, uint32_t on = 1u, bool until_window = false) noexcept {
    if (ready()) return true;
    auto now = Clock::now();
    const auto deadline = now + std::chrono::nanoseconds(std::max<int64_t>(block_ns, 0));
    if (now < plan.wake_at) {
        if (block_ns <= 0) return false;
        tighten_timer_slack();
        const auto until = std::min(plan.wake_at, deadline);
        if (block(ready, sleeping, sem, until - now, on)) return true;
        now = Clock::now();
        if (until != plan.wake_at) return ready();  // this slice ended first
        forecast.record_oversleep(std::chrono::duration_cast<std::chrono::nanoseconds>(now - plan.wake_at).count());
    }
    if (until_window) return ready();
    if (now < plan.spin_end &&
        spin_in_plan(ready, plan, forecast, block_ns > 0 ? std::min(plan.spin_end, deadline) : plan.spin_end)) {
        return true;
    }
    if (block_ns <= 0) return ready();
    now = Clock::now();
    if (now >= deadline) return ready();
    return block(ready, sleeping, sem, deadline - now, on);
}

// Spins for `ready` for at most max_ns, within the plan's spin only: never blocks, and returns at
// once before the forecast's window opens or after the spin's end. wait_planned then carries on.
template <typename Ready>
bool spin_planned(Ready ready, const Forecast::Plan &plan, Forecast &forecast, int64_t max_ns) noexcept {
    if (ready()) return true;
    const auto now = Clock::now();
    if (now < plan.wake_at || now >= plan.spin_end) return false;
    const auto end = std::min(plan.spin_end, now + std::chrono::nanoseconds(std::max<int64_t>(max_ns, 0)));
    return spin_in_plan(ready, plan, forecast, end);
}

inline int64_t nanoseconds_since(Clock::time_point started) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count();
}

}  // namespace pybridge::detail
